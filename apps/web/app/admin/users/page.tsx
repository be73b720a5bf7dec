'use client';
/**
 * Users (admins): create users, change a role, disable a user. The server refuses to demote or
 * disable the last admin; its message is shown as it is, next to the action that caused it.
 */
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import Link from 'next/link';
import { type FormEvent, useState } from 'react';
import { Pager, useCursorPager } from '../../components/pager';
import { RelativeTime } from '../../components/relative-time';
import { useCan, useMe } from '../../components/shell';
import { Empty, ErrorState, Loading } from '../../components/states';
import { api, errorText, LIVE_MS, type RouterOutputs } from '../../lib/api';
import styles from '../admin.module.css';
import { ConfirmDialog } from '../confirm-dialog';
import { Field } from '../field';

type User = RouterOutputs['users']['list']['items'][number];
type Role = User['role'];
const ROLES: { value: Role; text: string }[] = [
  { value: 'viewer', text: 'viewer: reads the fleet' },
  { value: 'operator', text: 'operator: also rebinds devices and reads the audit log' },
  { value: 'admin', text: 'admin: also manages enrollment and users' },
];

export default function UsersPage() {
  const isAdmin = useCan('admin');
  return (
    <>
      <h1>Users</h1>
      {isAdmin ? (
        <>
          <CreateUser />
          <UserList />
        </>
      ) : (
        <ErrorState error={new Error('Only admins manage users.')} />
      )}
      <p className="small muted">
        To change your own password, go to <Link href="/account">your account</Link>.
      </p>
    </>
  );
}

function CreateUser() {
  const queryClient = useQueryClient();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState<Role>('viewer');
  const [tooShort, setTooShort] = useState(false);
  const [createdName, setCreatedName] = useState<string | null>(null);
  const create = useMutation({
    mutationFn: () => api.users.create.mutate({ username: username.trim(), password, role }),
    onSuccess: async (user) => {
      setCreatedName(`Created ${user.username} (${user.role}).`);
      setUsername('');
      setPassword('');
      setRole('viewer');
      await queryClient.invalidateQueries({ queryKey: ['users.list'] });
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setCreatedName(null);
    if (password.length < 12) {
      setTooShort(true);
      return;
    }
    setTooShort(false);
    create.mutate();
  };
  return (
    <section className="card" aria-labelledby="new-user-title">
      <h2 id="new-user-title" style={{ marginTop: 0 }}>
        New user
      </h2>
      <form className={styles.form} onSubmit={submit}>
        <Field label="Username" hint="Letters, digits and . _ @ -">
          {({ id, describedBy }) => (
            <input
              id={id}
              name="username"
              autoComplete="off"
              required
              maxLength={64}
              pattern="[A-Za-z0-9][A-Za-z0-9._@\-]*"
              value={username}
              aria-describedby={describedBy}
              onChange={(e) => setUsername(e.target.value)}
            />
          )}
        </Field>
        <Field label="Password" hint="At least 12 characters.">
          {({ id, describedBy }) => (
            <input
              id={id}
              name="password"
              type="password"
              autoComplete="new-password"
              required
              value={password}
              aria-describedby={describedBy}
              onChange={(e) => setPassword(e.target.value)}
            />
          )}
        </Field>
        <Field label="Role">
          {({ id }) => (
            <select
              id={id}
              name="role"
              value={role}
              onChange={(e) => setRole(e.target.value as Role)}
            >
              {ROLES.map((r) => (
                <option key={r.value} value={r.value}>
                  {r.text}
                </option>
              ))}
            </select>
          )}
        </Field>
        {tooShort ? (
          <p className={`state state-error ${styles.wide}`} role="alert">
            The password needs at least 12 characters.
          </p>
        ) : null}
        {create.isError ? (
          <p className={`state state-error ${styles.wide}`} role="alert">
            Could not create the user: {errorText(create.error)}
          </p>
        ) : null}
        <div className={styles.actions}>
          <button type="submit" className="btn btn-primary" disabled={create.isPending}>
            {create.isPending ? 'Creating…' : 'Create user'}
          </button>
          <span role="status" aria-live="polite">
            {createdName}
          </span>
        </div>
      </form>
    </section>
  );
}

function UserList() {
  const queryClient = useQueryClient();
  const me = useMe();
  const pager = useCursorPager();
  const [disabling, setDisabling] = useState<User | null>(null);
  /** The outcome of the last role change, shown above the table (a refusal is role=alert). */
  const [notice, setNotice] = useState<{ ok: boolean; text: string } | null>(null);
  /** Bumped when a role change is refused: remounts the rows so each select shows the stored role. */
  const [refusals, setRefusals] = useState(0);
  const users = useQuery({
    queryKey: ['users.list', pager.cursor],
    queryFn: () => api.users.list.query({ limit: 50, cursor: pager.cursor }),
    refetchInterval: LIVE_MS,
    placeholderData: keepPreviousData,
  });
  const setRole = useMutation({
    mutationFn: (input: { user: User; role: Role }) =>
      api.users.setRole.mutate({ userId: input.user.id, role: input.role }),
    onSuccess: async (user) => {
      setNotice({ ok: true, text: `${user.username} is now ${user.role}.` });
      await queryClient.invalidateQueries({ queryKey: ['users.list'] });
      if (user.id === me.id) await queryClient.invalidateQueries({ queryKey: ['auth.me'] });
    },
    onError: (error, input) => {
      setRefusals((n) => n + 1);
      setNotice({
        ok: false,
        text: `Could not change the role of ${input.user.username}: ${errorText(error)}`,
      });
    },
  });
  const disable = useMutation({
    mutationFn: (user: User) => api.users.disable.mutate({ userId: user.id }),
    onSuccess: async (user) => {
      setDisabling(null);
      setNotice({ ok: true, text: `${user.username} is disabled and was signed out.` });
      await queryClient.invalidateQueries({ queryKey: ['users.list'] });
    },
  });

  return (
    <section aria-labelledby="users-title">
      <h2 id="users-title">All users</h2>
      {notice === null ? null : notice.ok ? (
        <p role="status" className="small">
          {notice.text}
        </p>
      ) : (
        <p role="alert" className="state state-error">
          {notice.text}
        </p>
      )}
      {users.isPending ? (
        <Loading what="Loading users" />
      ) : users.isError ? (
        <ErrorState error={users.error} retry={() => users.refetch()} />
      ) : users.data.items.length === 0 ? (
        <Empty>No users.</Empty>
      ) : (
        <>
          <div className="table-wrap">
            <table>
              <caption className={styles.visuallyHidden}>Users</caption>
              <thead>
                <tr>
                  <th scope="col">Username</th>
                  <th scope="col">Role</th>
                  <th scope="col">Created</th>
                  <th scope="col">Status</th>
                  <th scope="col">
                    <span className={styles.visuallyHidden}>Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {users.data.items.map((u) => (
                  <UserRow
                    key={`${u.id}:${u.role}:${refusals}`}
                    user={u}
                    isMe={u.id === me.id}
                    saving={setRole.isPending && setRole.variables?.user.id === u.id}
                    onSaveRole={(role) => {
                      setNotice(null);
                      setRole.mutate({ user: u, role });
                    }}
                    onDisable={() => {
                      disable.reset();
                      setDisabling(u);
                    }}
                  />
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            page={pager.page}
            nextCursor={users.data.nextCursor}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      )}
      <ConfirmDialog
        open={disabling !== null}
        title={`Disable ${disabling?.username ?? 'this user'}?`}
        confirmLabel="Disable user"
        pending={disable.isPending}
        error={disable.error}
        onConfirm={() => {
          if (disabling !== null) disable.mutate(disabling);
        }}
        onClose={() => setDisabling(null)}
      >
        <p>
          {disabling?.id === me.id
            ? 'You will be signed out at once'
            : 'They are signed out at once'}{' '}
          and can no longer sign in. Their past actions stay in the audit log.
        </p>
      </ConfirmDialog>
    </section>
  );
}

function UserRow({
  user,
  isMe,
  saving,
  onSaveRole,
  onDisable,
}: {
  user: User;
  isMe: boolean;
  saving: boolean;
  onSaveRole: (role: Role) => void;
  onDisable: () => void;
}) {
  // Keyed on the stored role by the parent, so a saved (or refused) change starts over from it.
  const [role, setRole] = useState<Role>(user.role);
  const disabled = user.disabledAt !== null;
  return (
    <tr>
      <td>
        <strong>{user.username}</strong>
        {isMe ? <span className="muted"> (you)</span> : null}
      </td>
      <td>
        <div className={styles.roleCell}>
          <select
            aria-label={`Role of ${user.username}`}
            value={role}
            onChange={(e) => setRole(e.target.value as Role)}
          >
            {ROLES.map((r) => (
              <option key={r.value} value={r.value}>
                {r.value}
              </option>
            ))}
          </select>
          <button
            type="button"
            className="btn btn-small"
            disabled={role === user.role || saving}
            onClick={() => onSaveRole(role)}
          >
            {saving ? 'Saving…' : 'Save role'}
            <span className={styles.visuallyHidden}> of {user.username}</span>
          </button>
        </div>
      </td>
      <td>
        <RelativeTime iso={user.createdAt} />
      </td>
      <td>
        {disabled ? (
          <span className="badge badge-blocked">disabled</span>
        ) : (
          <span className="badge badge-bound">active</span>
        )}
        {user.disabledAt !== null ? (
          <span className="small muted">
            {' '}
            <RelativeTime iso={user.disabledAt} />
          </span>
        ) : null}
      </td>
      <td>
        {disabled ? null : (
          <button type="button" className="btn btn-small" onClick={onDisable}>
            Disable
            <span className={styles.visuallyHidden}> {user.username}</span>
          </button>
        )}
      </td>
    </tr>
  );
}
