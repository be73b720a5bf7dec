'use client';
/**
 * The signed-in user's account: who they are, and "Change my password" (needs the current one;
 * the server signs out their other sessions, this one stays).
 */
import { useMutation } from '@tanstack/react-query';
import { type FormEvent, useState } from 'react';
import styles from '../admin/admin.module.css';
import { Field } from '../admin/field';
import { useMe } from '../components/shell';
import { api, errorCode, errorText } from '../lib/api';

export default function AccountPage() {
  const me = useMe();
  return (
    <>
      <h1>Account</h1>
      <p>
        Signed in as <strong>{me.username}</strong> <span className="muted">({me.role})</span>.
      </p>
      <ChangePassword />
    </>
  );
}

function ChangePassword() {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [repeat, setRepeat] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const change = useMutation({
    mutationFn: () =>
      api.users.changePassword.mutate({ currentPassword: current, newPassword: next }),
    onSuccess: () => {
      setCurrent('');
      setNext('');
      setRepeat('');
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    change.reset();
    if (next.length < 12) return setProblem('The new password needs at least 12 characters.');
    if (next !== repeat) return setProblem('The two new passwords differ.');
    if (next === current) return setProblem('The new password is the same as the current one.');
    setProblem(null);
    change.mutate();
  };
  const refusal = change.isError
    ? errorCode(change.error) === 'FORBIDDEN'
      ? 'The current password is wrong.'
      : `Could not change the password: ${errorText(change.error)}`
    : null;
  return (
    <section className={`card ${styles.narrow}`} aria-labelledby="password-title">
      <h2 id="password-title" style={{ marginTop: 0 }}>
        Change my password
      </h2>
      <form className={styles.form} style={{ gridTemplateColumns: '1fr' }} onSubmit={submit}>
        <Field label="Current password">
          {({ id }) => (
            <input
              id={id}
              type="password"
              name="currentPassword"
              autoComplete="current-password"
              required
              value={current}
              onChange={(e) => setCurrent(e.target.value)}
            />
          )}
        </Field>
        <Field label="New password" hint="At least 12 characters.">
          {({ id, describedBy }) => (
            <input
              id={id}
              type="password"
              name="newPassword"
              autoComplete="new-password"
              required
              value={next}
              aria-describedby={describedBy}
              onChange={(e) => setNext(e.target.value)}
            />
          )}
        </Field>
        <Field label="Confirm" hint="Type the new password again.">
          {({ id, describedBy }) => (
            <input
              id={id}
              aria-describedby={describedBy}
              type="password"
              name="repeatPassword"
              autoComplete="new-password"
              required
              value={repeat}
              onChange={(e) => setRepeat(e.target.value)}
            />
          )}
        </Field>
        {problem !== null || refusal !== null ? (
          <p className="state state-error" role="alert">
            {problem ?? refusal}
          </p>
        ) : null}
        <div className={styles.actions}>
          <button type="submit" className="btn btn-primary" disabled={change.isPending}>
            {change.isPending ? 'Changing…' : 'Change password'}
          </button>
          <span role="status" aria-live="polite">
            {change.isSuccess
              ? 'Password changed. Your other sessions were signed out; this one stays.'
              : ''}
          </span>
        </div>
      </form>
    </section>
  );
}
