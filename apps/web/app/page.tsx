'use client';
/**
 * Fleet overview: the first screen. Hosts online/offline, devices by readiness (each number opens
 * the matching device search), what blocks passthrough most and how to fix it, hosts that need
 * attention, and driver drift. Three polled aggregate queries; nothing per host or per device.
 */
import { useQuery } from '@tanstack/react-query';
import Link from 'next/link';
import { HostStateBadge } from './components/badges';
import { Empty, ErrorState, Loading } from './components/states';
import { WithCode } from './devices/inline-code';
import { deviceTypeName } from './devices/names';
import { reasonTitle } from './devices/reason-titles';
import { api, LIVE_MS, type RouterOutputs } from './lib/api';
import styles from './overview.module.css';

type Summary = RouterOutputs['fleet']['summary'];
type Drift = RouterOutputs['fleet']['drift'];

export default function Overview() {
  const summary = useQuery({
    queryKey: ['fleet.summary', {}],
    queryFn: () => api.fleet.summary.query({}),
    refetchInterval: LIVE_MS,
  });
  const drift = useQuery({
    queryKey: ['fleet.drift', {}],
    queryFn: () => api.fleet.drift.query({}),
    refetchInterval: LIVE_MS,
  });
  return (
    <>
      <h1>Fleet overview</h1>
      {summary.isPending ? (
        <Loading what="Loading the fleet summary" />
      ) : summary.isError ? (
        <ErrorState error={summary.error} retry={() => summary.refetch()} />
      ) : (
        <SummaryView summary={summary.data} />
      )}
      <section aria-labelledby="drift-heading">
        <h2 id="drift-heading">Driver drift</h2>
        <p className="muted small">
          Identical devices (same vendor:device and subsystem ids) that resolve to different vfio
          drivers on different kernels: a VM moved between these hosts gets a different driver.
        </p>
        {drift.isPending ? (
          <Loading what="Looking for driver drift" />
        ) : drift.isError ? (
          <ErrorState error={drift.error} retry={() => drift.refetch()} />
        ) : (
          <DriftTable drift={drift.data} />
        )}
      </section>
    </>
  );
}

function Stat({
  label,
  value,
  href,
  tone,
}: {
  label: string;
  value: number;
  href?: string;
  tone?: string;
}) {
  const body = (
    <>
      <div className={`value ${tone === undefined ? '' : styles[tone]}`}>
        {value.toLocaleString('en')}
      </div>
      <div className="label">{label}</div>
    </>
  );
  return href === undefined ? (
    <div className="stat">{body}</div>
  ) : (
    <Link
      href={href}
      className={`stat ${styles.statLink}`}
      aria-label={`${value} ${label}: show them`}
    >
      {body}
    </Link>
  );
}

function SummaryView({ summary }: { summary: Summary }) {
  const { hosts, devices } = summary;
  if (hosts.total === 0) {
    return (
      <Empty>
        No hosts have reported yet. Create an enrollment token under Enrollment and start an agent
        on a host with the command shown there.
      </Empty>
    );
  }
  return (
    <>
      <section aria-labelledby="hosts-heading">
        <h2 id="hosts-heading">Hosts</h2>
        <div className="grid">
          <Stat label="hosts online" value={hosts.online} href="/hosts" tone="bound" />
          <Stat
            label="hosts offline"
            value={hosts.offline}
            href="/hosts"
            tone={hosts.offline > 0 ? 'blocked' : undefined}
          />
          <Stat label="hosts in total" value={hosts.total} />
        </div>
      </section>
      <section aria-labelledby="devices-heading">
        <h2 id="devices-heading">Devices</h2>
        <div className="grid">
          <Stat
            label="devices in use by a VM"
            value={devices.inUse}
            href="/devices?status=in-use"
            tone="inUse"
          />
          <Stat
            label="devices bound to vfio"
            value={devices.bound}
            href="/devices?status=bound"
            tone="bound"
          />
          <Stat
            label="devices ready to pass through"
            value={devices.ready}
            href="/devices?status=ready"
            tone="ready"
          />
          <Stat
            label="devices blocked"
            value={devices.blocked}
            href="/devices?status=blocked"
            tone="blocked"
          />
          <Stat label="devices in total" value={devices.total} href="/devices" />
        </div>
      </section>
      <div className={styles.columns}>
        <section aria-labelledby="reasons-heading">
          <h2 id="reasons-heading">Top blocking reasons</h2>
          {summary.topBlockingReasons.length === 0 ? (
            <Empty>Nothing blocks passthrough: every device is bound or ready.</Empty>
          ) : (
            <ul className={styles.reasons}>
              {summary.topBlockingReasons.map((r) => (
                <li key={r.code} className="card">
                  <div className="row">
                    <strong>{reasonTitle(r.code)}</strong>
                    <code className="muted">{r.code}</code>
                    <span className="spacer" />
                    <Link
                      href={`/devices?status=blocked&reason=${encodeURIComponent(r.code)}`}
                      aria-label={`${r.count} devices blocked by ${reasonTitle(r.code)}`}
                    >
                      {r.count.toLocaleString('en')} {r.count === 1 ? 'device' : 'devices'}
                    </Link>
                  </div>
                  {r.message === null ? null : (
                    <p className="small muted">
                      <span className={styles.term}>For example:</span>{' '}
                      <WithCode text={r.message} />
                    </p>
                  )}
                  <p className="small">
                    <span className={styles.term}>Remedy:</span>{' '}
                    {r.remedy === null ? (
                      'No remedy on the host: this device cannot be passed through.'
                    ) : (
                      <WithCode text={r.remedy} />
                    )}
                  </p>
                </li>
              ))}
            </ul>
          )}
        </section>
        <section aria-labelledby="attention-heading">
          <h2 id="attention-heading">Hosts needing attention</h2>
          <AttentionTable hosts={summary.hostsNeedingAttention} />
        </section>
      </div>
    </>
  );
}

function AttentionTable({ hosts }: { hosts: Summary['hostsNeedingAttention'] }) {
  if (hosts.length === 0) return <Empty>No host has the IOMMU off or reports problems.</Empty>;
  return (
    <div className="table-wrap">
      <table>
        <caption className={styles.srOnly}>Hosts needing attention</caption>
        <thead>
          <tr>
            <th scope="col">Host</th>
            <th scope="col">State</th>
            <th scope="col">IOMMU</th>
            <th scope="col" className="num">
              Problems
            </th>
            <th scope="col">First problem</th>
          </tr>
        </thead>
        <tbody>
          {hosts.map((h) => (
            <tr key={h.hostId}>
              <td className={styles.nowrap}>
                <Link href={`/hosts/${h.hostId}`}>{h.hostname}</Link>
              </td>
              <td>
                <HostStateBadge state={h.state} />
              </td>
              <td>{h.iommuEnabled ? 'on' : <span className="badge badge-blocked">off</span>}</td>
              <td className="num">{h.problemCount}</td>
              <td className="small">{h.firstProblem ?? '—'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function DriftTable({ drift }: { drift: Drift }) {
  if (drift.types.length === 0) {
    return <Empty>No drift: identical devices resolve to the same vfio driver everywhere.</Empty>;
  }
  return (
    <>
      <div className="table-wrap">
        <table>
          <caption className={styles.srOnly}>Driver drift</caption>
          <thead>
            <tr>
              <th scope="col">Device type</th>
              <th scope="col">Kernel</th>
              <th scope="col">vfio driver</th>
              <th scope="col" className="num">
                Hosts
              </th>
              <th scope="col" className="num">
                Devices
              </th>
            </tr>
          </thead>
          {drift.types.map((t) => (
            // One row group per device type, so its header cell can span its variants.
            <tbody
              key={`${t.vendorId}:${t.deviceId}:${t.subsystemVendorId}:${t.subsystemDeviceId}`}
              className={styles.group}
            >
              {t.variants.map((v, i) => (
                <tr key={`${v.kernelRelease}:${v.vfioDriver}`}>
                  {i === 0 ? (
                    <th scope="rowgroup" rowSpan={t.variants.length} className={styles.typeCell}>
                      <div>{deviceTypeName(t)}</div>
                      <div className="mono muted">
                        {t.vendorId}:{t.deviceId}
                        {t.subsystemVendorId === null
                          ? ''
                          : ` (subsystem ${t.subsystemVendorId}:${t.subsystemDeviceId ?? '????'})`}
                      </div>
                      <div className="small muted">on {t.hosts} hosts</div>
                    </th>
                  ) : null}
                  <td className="mono">{v.kernelRelease ?? 'unknown'}</td>
                  <td className="mono">{v.vfioDriver}</td>
                  <td className="num">{v.hosts}</td>
                  <td className="num">{v.devices}</td>
                </tr>
              ))}
            </tbody>
          ))}
        </table>
      </div>
      {drift.truncated ? (
        <p className="small muted">
          Only the {drift.types.length} most widespread types are shown.
        </p>
      ) : null}
    </>
  );
}
