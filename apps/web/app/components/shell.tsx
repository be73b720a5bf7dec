'use client';
/**
 * The frame of every page but /login: who is signed in, the navigation, and the sign-in gate.
 * The server refuses everything without a session anyway; the gate only sends people to /login
 * instead of showing them a page of errors.
 */
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import Link from 'next/link';
import { usePathname, useRouter } from 'next/navigation';
import { createContext, type ReactNode, useContext, useEffect } from 'react';
import { api, errorCode, type RouterOutputs } from '../lib/api';
import { ErrorState, Loading } from './states';

export type Me = RouterOutputs['auth']['me'];
const MeContext = createContext<Me | null>(null);

/** The signed-in user (inside the shell there always is one). */
export function useMe(): Me {
  const me = useContext(MeContext);
  if (me === null) throw new Error('useMe() outside the signed-in shell');
  return me;
}

const RANK = { viewer: 0, operator: 1, admin: 2 } as const;
/** Whether the signed-in user's role is at least `role`: hides controls the server would refuse. */
export function useCan(role: keyof typeof RANK): boolean {
  return RANK[useMe().role] >= RANK[role];
}

const LINKS: { href: string; label: string; role: keyof typeof RANK }[] = [
  { href: '/', label: 'Overview', role: 'viewer' },
  { href: '/capacity', label: 'Capacity', role: 'viewer' },
  { href: '/hosts', label: 'Hosts', role: 'viewer' },
  { href: '/devices', label: 'Devices', role: 'viewer' },
  { href: '/jobs', label: 'Jobs', role: 'viewer' },
  { href: '/admin/tokens', label: 'Enrollment', role: 'admin' },
  { href: '/admin/users', label: 'Users', role: 'admin' },
  { href: '/admin/audit', label: 'Audit log', role: 'operator' },
];

function isCurrent(pathname: string, href: string): boolean {
  return href === '/' ? pathname === '/' : pathname === href || pathname.startsWith(`${href}/`);
}

export function Shell({ children }: { children: ReactNode }) {
  const pathname = usePathname();
  if (pathname === '/login') return <main className="login-main">{children}</main>;
  return <SignedIn pathname={pathname}>{children}</SignedIn>;
}

function SignedIn({ pathname, children }: { pathname: string; children: ReactNode }) {
  const router = useRouter();
  const queryClient = useQueryClient();
  const me = useQuery({ queryKey: ['auth.me'], queryFn: () => api.auth.me.query() });
  const unauthorized = me.isError && errorCode(me.error) === 'UNAUTHORIZED';
  useEffect(() => {
    if (unauthorized) router.replace(`/login?next=${encodeURIComponent(pathname)}`);
  }, [unauthorized, pathname, router]);
  const logout = useMutation({
    mutationFn: () => api.auth.logout.mutate(),
    onSettled: () => {
      queryClient.clear();
      router.replace('/login');
    },
  });

  if (me.isPending || unauthorized) return <Loading what="Signing in" />;
  if (me.isError) return <ErrorState error={me.error} retry={() => me.refetch()} />;
  const user = me.data;
  return (
    <MeContext.Provider value={user}>
      <header className="topbar">
        <Link href="/" className="brand">
          vfio-fleet
        </Link>
        <nav aria-label="Main" className="mainnav">
          {LINKS.filter((l) => RANK[user.role] >= RANK[l.role]).map((l) => (
            <Link
              key={l.href}
              href={l.href}
              aria-current={isCurrent(pathname, l.href) ? 'page' : undefined}
            >
              {l.label}
            </Link>
          ))}
        </nav>
        <div className="whoami">
          <Link href="/account" className="whoami-link" title="Account: change my password">
            {user.username} <span className="muted">({user.role})</span>
          </Link>
          <button
            type="button"
            className="btn btn-small"
            onClick={() => logout.mutate()}
            disabled={logout.isPending}
          >
            Sign out
          </button>
        </div>
      </header>
      <main className="page">{children}</main>
    </MeContext.Provider>
  );
}
