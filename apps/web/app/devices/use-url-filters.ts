'use client';
/**
 * Filters kept in the URL query string (so a filtered view is a link, and back/forward work), with
 * a draft the form edits: text fields apply on submit, selects apply at once through `apply`.
 * When the URL changes from outside (a link, back), the draft follows it.
 */
import { usePathname, useRouter, useSearchParams } from 'next/navigation';
import { type ChangeEvent, useState } from 'react';
import { queryString } from './filters';

export type FilterValues<K extends string> = Partial<Record<K, string>>;

export function useUrlFilters<K extends string>(names: readonly K[]) {
  const searchParams = useSearchParams();
  const router = useRouter();
  const pathname = usePathname();
  const applied: FilterValues<K> = {};
  for (const name of names) {
    const value = searchParams.get(name);
    if (value !== null && value !== '') applied[name] = value;
  }
  const urlKey = queryString(applied);
  const [draft, setDraft] = useState<FilterValues<K>>(applied);
  // Reset the draft during render when the URL moved (React's "adjust state on prop change").
  const [syncedKey, setSyncedKey] = useState(urlKey);
  if (syncedKey !== urlKey) {
    setSyncedKey(urlKey);
    setDraft(applied);
  }
  const apply = (next: FilterValues<K>) => {
    setDraft(next);
    router.replace(`${pathname}${queryString(next)}`);
  };
  /** Props for a text input or select bound to the draft. */
  const field = (name: K) => ({
    name,
    value: draft[name] ?? '',
    onChange: (event: ChangeEvent<HTMLInputElement | HTMLSelectElement>) => {
      const value = event.currentTarget.value;
      setDraft((d) => ({ ...d, [name]: value }));
    },
  });
  return { applied, urlKey, draft, apply, field };
}
