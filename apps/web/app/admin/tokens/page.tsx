'use client';
/**
 * Enrollment (admins): create an enrollment token and copy the exact agent command line (shown
 * once: only the token's hash is stored), list and revoke tokens, and list and revoke enrolled
 * agents. Revoking an agent disconnects it at once; revoking a token only stops new enrollments.
 */
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import Link from 'next/link';
import { type FormEvent, type ReactNode, useId, useRef, useState } from 'react';
import { HostStateBadge } from '../../components/badges';
import { CopyButton } from '../../components/copy-button';
import { Pager, useCursorPager } from '../../components/pager';
import { RelativeTime } from '../../components/relative-time';
import { useCan } from '../../components/shell';
import { Empty, ErrorState, Loading } from '../../components/states';
import { api, errorText, LIVE_MS, type RouterOutputs } from '../../lib/api';
import styles from '../admin.module.css';
import { ConfirmDialog } from '../confirm-dialog';
import { Field } from '../field';

type Created = RouterOutputs['tokens']['create'];
type Token = RouterOutputs['tokens']['list']['items'][number];
type Agent = RouterOutputs['agents']['list']['items'][number];

/** The agent's own label rules (protocol v1): checked here too so mistakes show before submit. */
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$/;

/** `key=value` lines into labels, or the first problem in words. */
function parseLabelLines(text: string): { labels: Record<string, string> } | { error: string } {
  const labels: Record<string, string> = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0) return { error: `Line ${i + 1}: write key=value (for example rack=r12).` };
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (!LABEL_KEY.test(key) || key in Object.prototype || key === 'prototype') {
      return {
        error: `Line ${i + 1}: "${key}" is not a label key (up to 63 letters, digits, _ . / - starting with a letter or digit).`,
      };
    }
    if (value.length > 256) return { error: `Line ${i + 1}: the value is over 256 characters.` };
    if (Object.hasOwn(labels, key)) return { error: `Line ${i + 1}: "${key}" is given twice.` };
    labels[key] = value;
  }
  if (Object.keys(labels).length > 64) return { error: 'At most 64 labels.' };
  return { labels };
}

export default function TokensPage() {
  const isAdmin = useCan('admin');
  if (!isAdmin) {
    return (
      <>
        <h1>Enrollment</h1>
        <ErrorState error={new Error('Only admins manage enrollment tokens and agents.')} />
      </>
    );
  }
  return (
    <>
      <h1>Enrollment</h1>
      <p className="muted">
        A host joins the fleet when its agent starts with an enrollment token. Create a token, run
        the command on the host, and it appears under Hosts within seconds.
      </p>
      <CreateToken />
      <TokenList />
      <AgentList />
    </>
  );
}

// --- create -------------------------------------------------------------------------------------

function CreateToken() {
  const queryClient = useQueryClient();
  const labelsErrorId = useId();
  const [label, setLabel] = useState('');
  const [ttlHours, setTtlHours] = useState('24');
  const [maxUses, setMaxUses] = useState('1');
  const [labelText, setLabelText] = useState('');
  const [allowRebind, setAllowRebind] = useState(false);
  const [formError, setFormError] = useState<string | null>(null);
  const [created, setCreated] = useState<Created | null>(null);
  const create = useMutation({
    mutationFn: (input: {
      label?: string;
      ttlHours: number;
      maxUses?: number;
      labels: Record<string, string>;
      allowRebind: boolean;
    }) => api.tokens.create.mutate(input),
    onSuccess: (data) => {
      setCreated(data);
      void queryClient.invalidateQueries({ queryKey: ['tokens.list'] });
    },
  });

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const parsed = parseLabelLines(labelText);
    if ('error' in parsed) {
      setFormError(parsed.error);
      return;
    }
    const hours = Number(ttlHours);
    if (!Number.isFinite(hours) || hours <= 0 || hours > 24 * 365) {
      setFormError('Expiry: a number of hours from 1 to 8760.');
      return;
    }
    const uses = maxUses.trim() === '' ? undefined : Number(maxUses);
    if (uses !== undefined && (!Number.isInteger(uses) || uses < 1)) {
      setFormError('Max uses: a whole number of at least 1, or empty for unlimited.');
      return;
    }
    setFormError(null);
    create.mutate({
      label: label.trim() === '' ? undefined : label.trim(),
      ttlHours: hours,
      maxUses: uses,
      labels: parsed.labels,
      allowRebind,
    });
  };

  if (created !== null) {
    return (
      <CreatedToken
        created={created}
        onDone={() => {
          setCreated(null);
          create.reset();
          setLabel('');
          setLabelText('');
          setAllowRebind(false);
        }}
      />
    );
  }
  return (
    <section className="card" aria-labelledby="new-token-title">
      <h2 id="new-token-title" style={{ marginTop: 0 }}>
        New enrollment token
      </h2>
      <form className={styles.form} onSubmit={submit} noValidate>
        <Field label="Token label" hint="For you: shown in the list below.">
          {({ id, describedBy }) => (
            <input
              id={id}
              name="label"
              value={label}
              maxLength={200}
              placeholder="rack 12 GPU nodes"
              aria-describedby={describedBy}
              onChange={(e) => setLabel(e.target.value)}
            />
          )}
        </Field>
        <Field label="Expires in (hours)">
          {({ id }) => (
            <input
              id={id}
              name="ttlHours"
              type="number"
              min={1}
              max={8760}
              required
              value={ttlHours}
              onChange={(e) => setTtlHours(e.target.value)}
            />
          )}
        </Field>
        <Field label="Max uses" hint="How many hosts may enroll with it; empty: unlimited.">
          {({ id, describedBy }) => (
            <input
              id={id}
              name="maxUses"
              type="number"
              min={1}
              value={maxUses}
              aria-describedby={describedBy}
              onChange={(e) => setMaxUses(e.target.value)}
            />
          )}
        </Field>
        <Field
          label="Host labels"
          className={styles.wide}
          hint={
            <>
              One key=value per line, passed to the agent as <code>--label</code>. Capacity views
              and bulk rebinds select hosts by them.
            </>
          }
        >
          {({ id, describedBy }) => (
            <textarea
              id={id}
              name="labels"
              rows={3}
              value={labelText}
              placeholder={'rack=r12\nrole=gpu'}
              aria-describedby={
                formError === null ? describedBy : `${describedBy} ${labelsErrorId}`
              }
              onChange={(e) => setLabelText(e.target.value)}
            />
          )}
        </Field>
        <Field
          label="Allow rebinding"
          className={styles.wide}
          hint={
            <>
              Starts the agent with <code>--allow-rebind</code>, in every command below: this
              console may then move the host's devices between drivers. Without it the host is
              read-only: it reports, and the console offers no rebind on it.
            </>
          }
        >
          {({ id, describedBy }) => (
            <input
              id={id}
              name="allowRebind"
              type="checkbox"
              checked={allowRebind}
              aria-describedby={describedBy}
              onChange={(e) => setAllowRebind(e.target.checked)}
            />
          )}
        </Field>
        {formError !== null ? (
          <p className={`state state-error ${styles.wide}`} role="alert" id={labelsErrorId}>
            {formError}
          </p>
        ) : null}
        {create.isError ? (
          <p className={`state state-error ${styles.wide}`} role="alert">
            Could not create the token: {errorText(create.error)}
          </p>
        ) : null}
        <div className={styles.actions}>
          <button type="submit" className="btn btn-primary" disabled={create.isPending}>
            {create.isPending ? 'Creating…' : 'Create token'}
          </button>
        </div>
      </form>
    </section>
  );
}

function CreatedToken({ created, onDone }: { created: Created; onDone: () => void }) {
  const commandRef = useRef<HTMLPreElement>(null);
  return (
    <section className={`card ${styles.created}`} aria-labelledby="created-token-title">
      <h2 id="created-token-title">Token created: run this on the new host</h2>
      <p>
        This is the only time the token is shown: the server keeps only its hash. It expires{' '}
        <RelativeTime iso={created.expiresAt} />
        {created.maxUses === null
          ? ' and can enroll any number of hosts until then.'
          : ` and can enroll ${created.maxUses} host${created.maxUses === 1 ? '' : 's'}.`}
      </p>
      <figure className={styles.figure}>
        <figcaption className="small muted">
          Agent command line (where the agent is installed already; the token goes in its
          environment, where <code>ps</code> does not show it)
        </figcaption>
        <pre className={styles.command} ref={commandRef}>
          {created.command}
        </pre>
      </figure>
      <div className="row">
        <CopyButton text={created.command} label="Copy command" target={commandRef} />
      </div>
      <InstallCommands install={created.install} />
      <p className="small muted">
        The agent runs as root on the host.{' '}
        {created.allowRebind
          ? 'These commands start it with --allow-rebind: this console may rebind its devices.'
          : 'These commands start it read-only: to let this console rebind its devices, add --allow-rebind to its command line, or to VFIO_FLEET_AGENT_ARGS in /etc/vfio-fleet/agent.env, and restart it.'}{' '}
        Token alone: <code className="mono">{created.token}</code>
      </p>
      <div className="row">
        <span className="spacer" />
        <button type="button" className="btn" onClick={onDone}>
          Done
        </button>
      </div>
    </section>
  );
}

/** One install path: a caption, the command as shown, and its copy button. */
function InstallBlock({
  title,
  hint,
  text,
  copyLabel,
}: {
  title: string;
  hint: ReactNode;
  text: string;
  copyLabel: string;
}) {
  const ref = useRef<HTMLPreElement>(null);
  const titleId = useId();
  return (
    <figure className={styles.figure} aria-labelledby={titleId}>
      <figcaption id={titleId}>
        <strong>{title}</strong> <span className="small muted">{hint}</span>
      </figcaption>
      <pre className={styles.command} ref={ref}>
        {text}
      </pre>
      <CopyButton text={text} label={copyLabel} target={ref} />
    </figure>
  );
}

/** The install commands for a host without the agent: the script, the .deb, Ansible. */
function InstallCommands({ install }: { install: Created['install'] }) {
  return (
    <section aria-labelledby="install-title" className={styles.install}>
      <h3 id="install-title">Install the agent on a new host</h3>
      {install.packaged ? (
        <p className="small muted">
          Agent {install.version}, downloaded from this server (the host needs no internet access),
          each download checked against its SHA-256.
        </p>
      ) : (
        <p className="state state-error small" role="note">
          <span>
            The agent has not been packaged on this server, so its downloads and install script
            answer 503 for now. Build it in the server&apos;s checkout with{' '}
            <code>npm run build -w packaging</code> (or set <code>VFIO_FLEET_DOWNLOADS_DIR</code>
            ), then create a new token.
          </span>
        </p>
      )}
      {install.omittedLabels.length > 0 ? (
        <p className="state state-error small" role="note">
          <span>
            Left out of these commands: the label{install.omittedLabels.length === 1 ? '' : 's'}{' '}
            {install.omittedLabels.map((key, i) => (
              <span key={key}>
                {i > 0 ? ', ' : ''}
                <code>{key}</code>
              </span>
            ))}
            . The agent&apos;s env file passes its arguments split at spaces, so label values there
            may hold only letters, digits and <code>_ . : / @ + , = ~ -</code>. The agent command
            line above carries every label.
          </span>
        </p>
      ) : null}
      <InstallBlock
        title="Install script"
        hint="(any Linux with systemd and curl)"
        text={install.script}
        copyLabel="Copy script"
      />
      {install.deb !== null ? (
        <InstallBlock
          title="Debian package"
          hint="(Debian, Ubuntu)"
          text={install.deb}
          copyLabel="Copy .deb steps"
        />
      ) : null}
      {install.ansible !== null ? (
        <InstallBlock
          title="Ansible playbook"
          hint="(for many hosts at once)"
          text={install.ansible}
          copyLabel="Copy playbook"
        />
      ) : null}
    </section>
  );
}

// --- tokens -------------------------------------------------------------------------------------

const TOKEN_STATE_CLASS: Record<Token['state'], string> = {
  active: 'badge badge-ready',
  expired: 'badge',
  'used-up': 'badge',
  revoked: 'badge badge-blocked',
};

function TokenList() {
  const queryClient = useQueryClient();
  const pager = useCursorPager();
  const [revoking, setRevoking] = useState<Token | null>(null);
  const tokens = useQuery({
    queryKey: ['tokens.list', pager.cursor],
    queryFn: () => api.tokens.list.query({ limit: 50, cursor: pager.cursor }),
    refetchInterval: LIVE_MS,
    placeholderData: keepPreviousData,
  });
  const revoke = useMutation({
    mutationFn: (id: string) => api.tokens.revoke.mutate({ id }),
    onSuccess: async () => {
      setRevoking(null);
      await queryClient.invalidateQueries({ queryKey: ['tokens.list'] });
    },
  });

  return (
    <section aria-labelledby="tokens-title">
      <h2 id="tokens-title">Enrollment tokens</h2>
      {tokens.isPending ? (
        <Loading what="Loading tokens" />
      ) : tokens.isError ? (
        <ErrorState error={tokens.error} retry={() => tokens.refetch()} />
      ) : tokens.data.items.length === 0 && pager.page === 1 ? (
        <Empty>No enrollment tokens yet. Create one above to enroll a host.</Empty>
      ) : (
        <>
          <div className="table-wrap">
            <table>
              <caption className={styles.visuallyHidden}>Enrollment tokens</caption>
              <thead>
                <tr>
                  <th scope="col">Label</th>
                  <th scope="col">Created by</th>
                  <th scope="col">Created</th>
                  <th scope="col">Expires</th>
                  <th scope="col" className="num">
                    Uses
                  </th>
                  <th scope="col">State</th>
                  <th scope="col">
                    <span className={styles.visuallyHidden}>Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {tokens.data.items.map((t) => (
                  <tr key={t.id}>
                    <td>{t.label ?? <span className="muted">(no label)</span>}</td>
                    <td>{t.createdBy ?? <span className="muted">(deleted user)</span>}</td>
                    <td>
                      <RelativeTime iso={t.createdAt} />
                    </td>
                    <td>
                      <RelativeTime iso={t.expiresAt} />
                    </td>
                    <td className="num">
                      {t.uses} / {t.maxUses ?? '∞'}
                    </td>
                    <td>
                      <span className={TOKEN_STATE_CLASS[t.state]}>
                        {t.state.replace('-', ' ')}
                      </span>
                      {t.revokedAt !== null ? (
                        <span className="small muted">
                          {' '}
                          <RelativeTime iso={t.revokedAt} />
                        </span>
                      ) : null}
                    </td>
                    <td>
                      {t.state === 'active' ? (
                        <button
                          type="button"
                          className="btn btn-small"
                          onClick={() => {
                            revoke.reset();
                            setRevoking(t);
                          }}
                        >
                          Revoke
                          <span className={styles.visuallyHidden}> token {t.label ?? t.id}</span>
                        </button>
                      ) : null}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            page={pager.page}
            nextCursor={tokens.data.nextCursor}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      )}
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke token ${revoking?.label ?? ''}?`.replace(' ?', '?')}
        confirmLabel="Revoke token"
        pending={revoke.isPending}
        error={revoke.error}
        onConfirm={() => {
          if (revoking !== null) revoke.mutate(revoking.id);
        }}
        onClose={() => setRevoking(null)}
      >
        <p>
          No new host can enroll with this token. Hosts that already enrolled with it keep their own
          credentials and stay connected; revoke those under Enrolled agents.
        </p>
      </ConfirmDialog>
    </section>
  );
}

// --- agents -------------------------------------------------------------------------------------

type AgentFilter = 'live' | 'revoked' | 'all';

function AgentList() {
  const queryClient = useQueryClient();
  const pager = useCursorPager();
  const showId = useId();
  const [filter, setFilter] = useState<AgentFilter>('live');
  const [revoking, setRevoking] = useState<Agent | null>(null);
  const [revokedNote, setRevokedNote] = useState<string | null>(null);
  const agents = useQuery({
    queryKey: ['agents.list', filter, pager.cursor],
    queryFn: () =>
      api.agents.list.query({
        limit: 50,
        cursor: pager.cursor,
        state: filter === 'all' ? undefined : filter,
      }),
    refetchInterval: LIVE_MS,
    placeholderData: keepPreviousData,
  });
  const revoke = useMutation({
    mutationFn: (agentId: string) => api.agents.revoke.mutate({ agentId }),
    onSuccess: async () => {
      setRevokedNote(
        `Revoked the agent of ${revoking?.hostname ?? revoking?.agentId ?? 'the host'}: it was disconnected.`,
      );
      setRevoking(null);
      await queryClient.invalidateQueries({ queryKey: ['agents.list'] });
    },
  });

  return (
    <section aria-labelledby="agents-title">
      <div className={styles.sectionHead}>
        <h2 id="agents-title">Enrolled agents</h2>
        <span className="spacer" />
        <span className="row small">
          <label htmlFor={showId}>Show</label>
          <select
            id={showId}
            value={filter}
            onChange={(e) => {
              setFilter(e.target.value as AgentFilter);
              pager.reset();
            }}
          >
            <option value="live">Connected or allowed to connect</option>
            <option value="revoked">Revoked</option>
            <option value="all">All</option>
          </select>
        </span>
      </div>
      <p role="status" aria-live="polite" className="small">
        {revokedNote}
      </p>
      {agents.isPending ? (
        <Loading what="Loading agents" />
      ) : agents.isError ? (
        <ErrorState error={agents.error} retry={() => agents.refetch()} />
      ) : agents.data.items.length === 0 && pager.page === 1 ? (
        <Empty>{filter === 'revoked' ? 'No revoked agents.' : 'No agent has enrolled yet.'}</Empty>
      ) : (
        <>
          <div className="table-wrap">
            <table>
              <caption className={styles.visuallyHidden}>Enrolled agents</caption>
              <thead>
                <tr>
                  <th scope="col">Host</th>
                  <th scope="col">State</th>
                  <th scope="col">Labels</th>
                  <th scope="col">Agent id</th>
                  <th scope="col">Enrolled</th>
                  <th scope="col">Last seen</th>
                  <th scope="col">
                    <span className={styles.visuallyHidden}>Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {agents.data.items.map((a) => (
                  <tr key={a.agentId}>
                    <td>
                      {a.hostId !== null && a.hostname !== null ? (
                        <Link href={`/hosts/${a.hostId}`}>{a.hostname}</Link>
                      ) : (
                        <span className="muted">(no host reported yet)</span>
                      )}
                    </td>
                    <td>
                      {a.revokedAt !== null ? (
                        <span className="badge badge-blocked">revoked</span>
                      ) : a.hostState !== null ? (
                        <HostStateBadge state={a.hostState} />
                      ) : (
                        <span className="badge">enrolled</span>
                      )}
                    </td>
                    <td>
                      <span className={styles.labels}>
                        {Object.entries(a.labels).map(([k, v]) => (
                          <span key={k} className={styles.label}>
                            {k}={v}
                          </span>
                        ))}
                      </span>
                    </td>
                    <td className="mono small">{a.agentId}</td>
                    <td>
                      <RelativeTime iso={a.enrolledAt} />
                    </td>
                    <td>
                      <RelativeTime iso={a.lastSeenAt} fallback="never" />
                    </td>
                    <td>
                      {a.revokedAt === null ? (
                        <button
                          type="button"
                          className="btn btn-small"
                          onClick={() => {
                            revoke.reset();
                            setRevoking(a);
                          }}
                        >
                          Revoke agent
                          <span className={styles.visuallyHidden}>
                            {' '}
                            on {a.hostname ?? a.agentId}
                          </span>
                        </button>
                      ) : (
                        <span className="small muted">
                          revoked <RelativeTime iso={a.revokedAt} />
                        </span>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            page={pager.page}
            nextCursor={agents.data.nextCursor}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      )}
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke the agent on ${revoking?.hostname ?? revoking?.agentId ?? ''}?`}
        confirmLabel="Revoke agent"
        pending={revoke.isPending}
        error={revoke.error}
        onConfirm={() => {
          if (revoking !== null) revoke.mutate(revoking.agentId);
        }}
        onClose={() => setRevoking(null)}
      >
        <p>
          The agent&apos;s credential stops working now and the agent is{' '}
          <strong>disconnected at once</strong>: the host shows as offline with its last known
          inventory, and jobs for it can no longer be delivered.
        </p>
        <p className="muted">
          To bring the host back, enroll it again with a new enrollment token.
        </p>
      </ConfirmDialog>
    </section>
  );
}
