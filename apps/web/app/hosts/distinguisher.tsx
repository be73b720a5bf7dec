/**
 * The short id next to a hostname that another host also reports (src/fleet/same-hostname.ts):
 * without it two such hosts look the same in the list and on their pages.
 */
export function Distinguisher({ value, small }: { value: string | null; small?: boolean }) {
  if (value === null) return null;
  return (
    <span
      className={small === true ? 'muted small mono' : 'muted mono'}
      title="Another host reports the same hostname: this id tells them apart"
    >
      {value}
    </span>
  );
}
