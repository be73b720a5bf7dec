'use client';
/**
 * One host: its kernel, IOMMU and command line state, loaded vfio modules, problems and labels,
 * then its IOMMU groups as boxes holding their devices (with the vfio driver each would get and
 * why). Live: polls, so a rebind's effect shows without a reload. Operators can rebind a group.
 */
import { useQuery } from '@tanstack/react-query';
import Link from 'next/link';
import { useParams } from 'next/navigation';
import { useState } from 'react';
import { AgentVersion, HostStateBadge, ReadOnlyBadge } from '../../components/badges';
import { GroupBox, type RebindRequest } from '../../components/group-box';
import { RebindDialog } from '../../components/rebind-dialog';
import { RelativeTime } from '../../components/relative-time';
import { useCan } from '../../components/shell';
import { Empty, ErrorState, Loading } from '../../components/states';
import { api, LIVE_MS } from '../../lib/api';
import { Distinguisher } from '../distinguisher';
import type { HostView } from '../host-view-api';
import { Labels } from '../labels';
import styles from './host.module.css';

export default function HostPage() {
  const params = useParams<{ hostId: string }>();
  const hostId = typeof params.hostId === 'string' ? params.hostId : '';
  const canRebind = useCan('operator');
  const [rebind, setRebind] = useState<RebindRequest | null>(null);
  const host = useQuery({
    queryKey: ['hostView.get', { hostId }],
    queryFn: () => api.hostView.get.query({ hostId }),
    refetchInterval: LIVE_MS,
  });

  if (host.isPending) return <Loading what="Loading host" />;
  if (host.isError) {
    return (
      <>
        <h1>Host</h1>
        <ErrorState error={host.error} retry={() => host.refetch()} />
      </>
    );
  }
  const h = host.data;
  const readOnly = h.allowRebind !== true;
  return (
    <>
      <div className="row">
        <h1 className={styles.h1}>{h.hostname}</h1>
        <Distinguisher value={h.distinguisher} />
        <HostStateBadge state={h.state} />
        <ReadOnlyBadge allowRebind={h.allowRebind} />
        <span className="muted">
          last seen <RelativeTime iso={h.lastSeenAt} />
        </span>
        <span className="spacer" />
        <Link href={`/jobs?hostId=${h.id}`}>Jobs on this host</Link>
      </div>
      {readOnly ? <ReadOnlyNote allowRebind={h.allowRebind} /> : null}
      <HostFacts host={h} />
      <h2>IOMMU groups</h2>
      <p className="muted small">
        {h.devices.total} devices: {h.devices.inUse} in use, {h.devices.bound} bound,{' '}
        {h.devices.ready} ready, {h.devices.blocked} blocked. A group moves as a whole: every device
        in a box changes driver together.
      </p>
      {h.groups.length === 0 ? (
        <Empty>This host reported no PCI devices.</Empty>
      ) : (
        <div className={styles.groups}>
          {h.groups.map((g) => (
            <GroupBox
              key={g.group ?? 'none'}
              hostId={h.id}
              group={g}
              canRebind={canRebind}
              readOnly={readOnly}
              onRebind={setRebind}
            />
          ))}
        </div>
      )}
      {canRebind && !readOnly && rebind !== null ? (
        <RebindDialog
          hostId={h.id}
          hostname={h.hostname}
          group={rebind.group}
          address={rebind.address}
          target={rebind.target}
          keep={rebind.keep === true}
          onClose={() => setRebind(null)}
        />
      ) : null}
    </>
  );
}

/** Why this host offers no rebind, and how to allow it. */
function ReadOnlyNote({ allowRebind }: { allowRebind: boolean | null }) {
  return (
    <div className="callout-warn" role="note" aria-label="Read-only host">
      <strong>Read-only:</strong>{' '}
      {allowRebind === false
        ? 'its agent runs without --allow-rebind, so it reports but never rebinds.'
        : 'its agent has not said that it may rebind (an agent older than this server), so no job is sent to it.'}{' '}
      To allow rebinding, restart the agent with <code>--allow-rebind</code> (installed from the
      .deb or the script: add it to <code>VFIO_FLEET_AGENT_ARGS</code> in{' '}
      <code>/etc/vfio-fleet/agent.env</code>, then <code>systemctl restart vfio-fleet-agent</code>).
    </div>
  );
}

function flag(name: string, value: string | null) {
  return value === null ? null : `${name}=${value}`;
}

function HostFacts({ host: h }: { host: HostView }) {
  const facts = h.facts;
  const cmdline = facts?.cmdline;
  const flags = [
    flag('intel_iommu', cmdline?.intelIommu ?? null),
    flag('amd_iommu', cmdline?.amdIommu ?? null),
    flag('iommu', cmdline?.iommu ?? null),
    flag('iommu.passthrough', cmdline?.iommuPassthrough ?? null),
    flag('pcie_acs_override', cmdline?.pcieAcsOverride ?? null),
    cmdline === undefined || cmdline.vfioPciIds.length === 0
      ? null
      : `vfio-pci.ids=${cmdline.vfioPciIds.join(',')}`,
  ].filter((f): f is string => f !== null);
  return (
    <section className="card" aria-label="Host facts">
      <dl className={styles.facts}>
        <dt>Machine ID</dt>
        <dd className="mono">{h.machineId ?? 'unknown'}</dd>
        <dt>Host ID</dt>
        <dd className="mono">{h.id}</dd>
        <dt>Kernel</dt>
        <dd className="mono">{h.kernelRelease ?? 'unknown'}</dd>
        <dt>Agent</dt>
        <dd>
          <AgentVersion version={h.agentVersion} status={h.agentVersionStatus} />
        </dd>
        <dt>CPU vendor</dt>
        <dd>
          {h.cpuVendor ?? 'unknown'}
          {facts?.virtualMachine ? ' (virtual machine)' : ''}
        </dd>
        <dt>IOMMU</dt>
        <dd>
          <strong className={h.iommuEnabled ? styles.on : styles.off}>
            {h.iommuEnabled ? 'on' : 'off'}
          </strong>
          {facts === null ? null : (
            <span className="muted">
              {' '}
              · {facts.iommu.groupCount} groups
              {facts.iommu.units.length > 0 ? ` · units ${facts.iommu.units.join(', ')}` : ''}
            </span>
          )}
        </dd>
        <dt>Interrupt remapping</dt>
        <dd>{h.interruptRemapping ?? 'unknown'}</dd>
        <dt>IOMMU cmdline flags</dt>
        <dd className="mono">{flags.length === 0 ? 'none' : flags.join(' ')}</dd>
        <dt>vfio modules loaded</dt>
        <dd className="mono">
          {facts === null || facts.vfio.modulesLoaded.length === 0
            ? 'none'
            : facts.vfio.modulesLoaded.join(', ')}
        </dd>
        <dt>Labels</dt>
        <dd>
          <Labels labels={h.labels} />
        </dd>
        {facts === null || facts.critical.length === 0 ? null : (
          <>
            <dt>Host-critical devices</dt>
            <dd>
              <ul className={styles.plain}>
                {facts.critical.map((c) => (
                  <li key={`${c.address}:${c.kind}`}>
                    <span className="mono">{c.address}</span> {c.kind}: {c.detail}
                  </li>
                ))}
              </ul>
            </dd>
          </>
        )}
      </dl>
      {cmdline === undefined ? null : (
        <details className={styles.cmdline}>
          <summary>Full kernel command line</summary>
          <code>{cmdline.raw}</code>
        </details>
      )}
      {h.problems.length === 0 ? null : (
        <div className="callout-warn" role="note" aria-label="Problems">
          <strong>Problems reading this host</strong>
          <ul className={styles.plain}>
            {h.problems.map((p) => (
              <li key={`${p.source}:${p.message}`}>
                <code>{p.source}</code>: {p.message}
              </li>
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}
