'use client';
/**
 * A form field: a label for the control (so its accessible name is exactly the label text), and
 * a hint outside the label, linked by aria-describedby.
 */
import { type ReactNode, useId } from 'react';
import styles from './admin.module.css';

export function Field({
  label,
  hint,
  className,
  children,
}: {
  label: string;
  hint?: ReactNode;
  className?: string;
  /** Renders the control with this `id` and `aria-describedby` (undefined without a hint). */
  children: (control: { id: string; describedBy: string | undefined }) => ReactNode;
}) {
  const id = useId();
  const hintId = `${id}-hint`;
  return (
    <div className={className === undefined ? styles.field : `${styles.field} ${className}`}>
      <label htmlFor={id}>{label}</label>
      {children({ id, describedBy: hint === undefined ? undefined : hintId })}
      {hint === undefined ? null : (
        <span id={hintId} className={styles.hint}>
          {hint}
        </span>
      )}
    </div>
  );
}
