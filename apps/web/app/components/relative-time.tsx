'use client';
/**
 * A timestamp as people read it ("3 minutes ago", "in 2 hours"), with the exact local time as a
 * tooltip and in `dateTime` for machines. It re-renders every 30 s so a page left open stays true.
 */
import { useEffect, useState } from 'react';

/**
 * [unit, its length in seconds, from how many seconds on it is used]. Days and longer take over
 * only at two of them ("36 hours ago", not "1 day ago"), and numbers are always numbers: "tomorrow"
 * for a token that expires in 25 hours reads as a calendar day, which it is not.
 */
const UNITS: [Intl.RelativeTimeFormatUnit, number, number][] = [
  ['year', 365 * 24 * 3600, 2 * 365 * 24 * 3600],
  ['month', 30 * 24 * 3600, 60 * 24 * 3600],
  ['week', 7 * 24 * 3600, 14 * 24 * 3600],
  ['day', 24 * 3600, 48 * 3600],
  ['hour', 3600, 3600],
  ['minute', 60, 60],
  ['second', 1, 0],
];

const relative = new Intl.RelativeTimeFormat('en', { numeric: 'always' });
const absolute = new Intl.DateTimeFormat('en', { dateStyle: 'medium', timeStyle: 'medium' });

/** "3 minutes ago" / "in 2 hours" for `iso` seen at `now` (ms); "just now" within 10 s. */
export function formatRelative(iso: string, now: number): string {
  const seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  if (Math.abs(seconds) < 10) return 'just now';
  for (const [unit, size, from] of UNITS) {
    if (Math.abs(seconds) >= from) return relative.format(Math.trunc(seconds / size), unit);
  }
  return relative.format(seconds, 'second');
}

/** The exact time in the viewer's zone, e.g. "Nov 23, 2026, 3:24:06 PM". */
export function formatAbsolute(iso: string): string {
  return absolute.format(new Date(iso));
}

/** Shared clock: one timer however many timestamps a table shows. */
function useNow(intervalMs = 30_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(timer);
  }, [intervalMs]);
  return now;
}

export function RelativeTime({ iso, fallback = '—' }: { iso: string | null; fallback?: string }) {
  const now = useNow();
  if (iso === null) return <span className="muted">{fallback}</span>;
  return (
    // The server render and the first client render may differ by the seconds between them.
    <time dateTime={iso} title={formatAbsolute(iso)} suppressHydrationWarning>
      {formatRelative(iso, now)}
    </time>
  );
}
