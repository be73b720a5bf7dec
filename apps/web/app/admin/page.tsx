import { redirect } from 'next/navigation';

/** /admin has no page of its own: the administration pages are in the main navigation. */
export default function AdminIndex() {
  redirect('/admin/tokens');
}
