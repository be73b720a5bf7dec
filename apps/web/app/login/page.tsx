'use client';
import { useMutation, useQueryClient } from '@tanstack/react-query';
import { useRouter } from 'next/navigation';
import { type FormEvent, useState } from 'react';
import { api, errorText } from '../lib/api';
import { afterLoginPath } from './next-path';

export default function LoginPage() {
  const router = useRouter();
  const queryClient = useQueryClient();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const login = useMutation({
    mutationFn: () => api.auth.login.mutate({ username, password }),
    onSuccess: async () => {
      await queryClient.invalidateQueries();
      // Read at submit time, not with useSearchParams: the form then renders on the server too,
      // usable before the page's script has loaded. Only a page of this console: an open
      // redirect would let a link send users elsewhere.
      const next = new URLSearchParams(window.location.search).get('next');
      router.replace(afterLoginPath(next, window.location.origin));
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    login.mutate();
  };
  return (
    <form className="login card" onSubmit={submit} aria-labelledby="login-title">
      <h1 id="login-title">vfio-fleet</h1>
      <p className="muted">Sign in to the fleet console.</p>
      <label>
        Username
        <input
          name="username"
          autoComplete="username"
          required
          value={username}
          onChange={(e) => setUsername(e.target.value)}
        />
      </label>
      <label>
        Password
        <input
          name="password"
          type="password"
          autoComplete="current-password"
          required
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
      </label>
      {login.isError ? (
        <p className="state state-error" role="alert">
          {errorText(login.error)}
        </p>
      ) : null}
      <button type="submit" className="btn btn-primary" disabled={login.isPending}>
        {login.isPending ? 'Signing in…' : 'Sign in'}
      </button>
      <p className="muted small">
        On the first start the server printed the password of the user <code>admin</code>.
      </p>
    </form>
  );
}
