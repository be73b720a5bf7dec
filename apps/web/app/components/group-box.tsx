'use client';
/**
 * One IOMMU group drawn as a box holding its devices: what each device is, the driver it has, the
 * vfio driver it would get and why (the matching modules.alias candidates), its status and every
 * reason with its remedy, and for a device on vfio whether its binding survives a reboot.
 * Operators get the group's rebind buttons; a viewer gets none at all, and nobody gets them on a
 * read-only host or for a group a VM holds a device of (say why instead). Keeping a binding across
 * reboots moves no device, so it is offered for a held group too.
 */
import { bootFate, describeBootFate } from '@vfio-fleet/core';
import Link from 'next/link';
import type { HostViewDevice, HostViewGroup } from '../hosts/host-view-api';
import { JobStateBadge, StatusBadge } from './badges';
import styles from './group-box.module.css';
import { HolderText, heldGroupMessage } from './holder';

export type RebindRequest = {
  group: number | null;
  address: string;
  target: 'vfio' | 'host';
  /** Keep an existing vfio binding across reboots (no device moves). */
  keep?: boolean;
};

/** A driver that is vfio-pci or one of its variants (mlx5_vfio_pci, nvgrace_gpu_vfio_pci...). */
export function isVfioDriver(driver: string | null): boolean {
  return driver !== null && (/^vfio/.test(driver) || /vfio[-_]pci$/.test(driver));
}

/**
 * The device a group move is planned from: the plan covers the whole group whichever member is
 * named, so the first member that can move stands for it.
 */
export function groupMoves(group: HostViewGroup): {
  toVfio: string | null;
  toHost: string | null;
  /**
   * A member nothing binds to vfio again at boot, in a group wholly on vfio: keeping it then moves
   * no device (a group partly on vfio is moved, not kept).
   */
  toKeep: string | null;
} {
  const endpoints = group.devices.filter((d) => d.kind === 'endpoint');
  const allOnVfio = endpoints.every((d) => isVfioDriver(d.driver));
  return {
    toVfio: endpoints.find((d) => d.status === 'ready')?.address ?? null,
    toHost: endpoints.find((d) => isVfioDriver(d.driver))?.address ?? null,
    toKeep: allOnVfio
      ? (endpoints.find((d) => bootFate(d).kind === 'lost')?.address ?? null)
      : null,
  };
}

export function groupLabel(group: number | null): string {
  return group === null ? 'No IOMMU group' : `IOMMU group ${group}`;
}

export function GroupBox({
  hostId,
  group,
  canRebind,
  readOnly,
  onRebind,
}: {
  hostId: string;
  group: HostViewGroup;
  canRebind: boolean;
  /** The host's agent runs no jobs: the host page says so once, the boxes offer nothing. */
  readOnly: boolean;
  onRebind: (request: RebindRequest) => void;
}) {
  const label = groupLabel(group.group);
  const moves = groupMoves(group);
  const job = group.activeJob;
  const held = group.devices.filter((d) => d.inUse);
  const statuses = new Set(group.devices.map((d) => d.status));
  return (
    <section
      aria-label={label}
      // Devices without a group (IOMMU off) can be the whole host: that box spans the row.
      className={group.group === null ? `${styles.box} ${styles.noGroup}` : styles.box}
      data-status={[...statuses].join(' ')}
    >
      <header className={styles.head}>
        <h3 className={styles.title}>{label}</h3>
        <span className="muted small">
          {group.deviceCount} device{group.deviceCount === 1 ? '' : 's'}
        </span>
      </header>
      {job === null ? null : (
        <p className={styles.job}>
          Job <JobStateBadge state={job.state} /> moving to {job.target}:{' '}
          <Link href={`/jobs/${job.id}`}>view job</Link>
        </p>
      )}
      {held.length === 0 ? null : (
        <p className={`callout-warn small ${styles.held}`} role="note">
          {heldGroupMessage(held)}
        </p>
      )}
      {canRebind &&
      !readOnly &&
      group.group !== null &&
      job === null &&
      (held.length === 0 || moves.toKeep !== null) ? (
        <div className={styles.actions}>
          {moves.toVfio === null || held.length > 0 ? null : (
            <button
              type="button"
              className="btn btn-small btn-primary"
              onClick={() =>
                onRebind({ group: group.group, address: moves.toVfio ?? '', target: 'vfio' })
              }
            >
              Move group to vfio
            </button>
          )}
          {moves.toHost === null || held.length > 0 ? null : (
            <button
              type="button"
              className="btn btn-small"
              onClick={() =>
                onRebind({ group: group.group, address: moves.toHost ?? '', target: 'host' })
              }
            >
              Restore host drivers
            </button>
          )}
          {moves.toKeep === null ? null : (
            // Keeping moves no device, so a group a VM holds can be kept too.
            <button
              type="button"
              className="btn btn-small"
              onClick={() =>
                onRebind({
                  group: group.group,
                  address: moves.toKeep ?? '',
                  target: 'vfio',
                  keep: true,
                })
              }
            >
              Keep across reboots
            </button>
          )}
        </div>
      ) : null}
      <ul className={styles.devices} aria-label={`Devices in ${label}`}>
        {group.devices.map((d) => (
          <DeviceCard key={d.address} device={d} />
        ))}
      </ul>
      {group.deviceCount > group.devices.length ? (
        <p className="muted small">
          The first {group.devices.length} of its {group.deviceCount} devices are shown;{' '}
          <Link href={`/devices?hostId=${hostId}`}>the devices page lists them all</Link>.
        </p>
      ) : null}
    </section>
  );
}

/** For a device on vfio: who binds it again at boot (with where), or that nothing does. */
function BootFateFact({ device }: { device: HostViewDevice }) {
  const fate = bootFate(device);
  if (fate.kind === 'not-bound') return null;
  const sources = device.keptBy.map((k) => `${k.keeper}: ${k.source} → ${k.driver}`).join('\n');
  return (
    <>
      <dt>At reboot</dt>
      <dd
        className={fate.kind === 'lost' ? styles.lost : undefined}
        title={sources === '' ? undefined : sources}
      >
        {describeBootFate(fate)}
      </dd>
    </>
  );
}

function DeviceCard({ device: d }: { device: HostViewDevice }) {
  const known = [d.vendorName, d.deviceName].filter((s) => s !== null).join(' ');
  // Without pci.ids on the host there are no names: the class says more than "unknown".
  const name = known === '' ? (d.className ?? `PCI device class ${d.classCode}`) : known;
  return (
    <li className={styles.device} aria-label={d.address}>
      <div className={styles.deviceHead}>
        <span className="mono">{d.address}</span>
        <StatusBadge status={d.status} />
      </div>
      <div className={styles.name}>{name}</div>
      <div className="muted small">
        {known === '' ? null : `${d.className ?? `class ${d.classCode}`} · `}
        <span className="mono">
          {d.vendorId}:{d.deviceId}
        </span>
        {d.kind === 'bridge' ? ' · bridge' : ''}
        {d.numaNode === null ? '' : ` · NUMA ${d.numaNode}`}
        {d.physfn === null ? '' : ` · VF of ${d.physfn}`}
        {d.sriovTotalVfs === null ? '' : ` · SR-IOV ${d.sriovNumVfs ?? 0}/${d.sriovTotalVfs} VFs`}
      </div>
      <dl className={styles.facts}>
        {d.inUse ? (
          <>
            <dt>Held by</dt>
            <dd>
              <HolderText holder={d.holder} />
            </dd>
          </>
        ) : null}
        <dt>Driver</dt>
        <dd className="mono">{d.driver ?? 'none'}</dd>
        <BootFateFact device={d} />
        <dt>vfio driver</dt>
        <dd>
          <span className="mono">{d.vfio?.module ?? d.vfioDriver ?? 'none'}</span>
          {d.vfio === null ? null : (
            <span className="muted small">
              {' '}
              ({d.vfio.source === 'alias' ? 'matched alias' : 'fallback'}
              {d.vfio.ambiguous ? ', ambiguous' : ''})
            </span>
          )}
        </dd>
        {d.driverOverride === null ? null : (
          <>
            <dt>driver_override</dt>
            <dd className="mono">{d.driverOverride}</dd>
          </>
        )}
        {d.netInterfaces.length === 0 ? null : (
          <>
            <dt>Interfaces</dt>
            <dd className="mono">{d.netInterfaces.join(', ')}</dd>
          </>
        )}
      </dl>
      {d.vfio === null ? null : (
        <details className={styles.why}>
          <summary>Why {d.vfio.module}?</summary>
          <p className="small">{d.vfio.explanation}</p>
          {d.vfio.candidates.length === 0 ? null : (
            <table className={styles.candidates}>
              <caption className="small">modules.alias candidates</caption>
              <thead>
                <tr>
                  <th scope="col">Module</th>
                  <th scope="col">Pattern</th>
                  <th scope="col" className="num">
                    Wildcards
                  </th>
                  <th scope="col" className="num">
                    Line
                  </th>
                </tr>
              </thead>
              <tbody>
                {d.vfio.candidates.map((c) => (
                  <tr key={`${c.line}:${c.pattern}`}>
                    <td className="mono">
                      {c.module}
                      {c.module === d.vfio?.module ? ' (chosen)' : ''}
                    </td>
                    <td className={`mono ${styles.pattern}`}>{c.pattern}</td>
                    <td className="num">{c.wildcards}</td>
                    <td className="num">{c.line}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </details>
      )}
      {d.reasons.length === 0 ? null : (
        <ul className={styles.reasons} aria-label={`Reasons for ${d.address}`}>
          {d.reasons.map((r) => (
            <li key={r.code} className={styles[`sev-${r.severity}`]}>
              <span className={styles.sev}>{r.severity}</span> <code>{r.code}</code>: {r.message}
              {r.remedy === null ? null : (
                <div className={styles.remedy}>
                  <strong>Remedy:</strong> {r.remedy}
                </div>
              )}
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}
