'use client';
import styles from './hosts.module.css';

/** A host's labels as key=value chips (text, so they read and search as typed). */
export function Labels({ labels }: { labels: Record<string, string> }) {
  const entries = Object.entries(labels);
  if (entries.length === 0) return <span className="muted">—</span>;
  return (
    <ul className={styles.labels} aria-label="Labels">
      {entries.map(([k, v]) => (
        <li key={k} className="mono">
          {k}={v}
        </li>
      ))}
    </ul>
  );
}
