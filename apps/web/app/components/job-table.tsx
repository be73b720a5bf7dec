'use client';
/** A page of jobs as a table: shared by the queue and the bulk page's "created jobs". */
import Link from 'next/link';
import { shortId } from '../jobs/job-format';
import type { RouterOutputs } from '../lib/api';
import { JobStateBadge } from './badges';
import styles from './job-table.module.css';
import { RelativeTime } from './relative-time';

export type JobListItem = RouterOutputs['jobs']['list']['items'][number];

export function JobTable({ jobs, caption }: { jobs: JobListItem[]; caption: string }) {
  return (
    <div className="table-wrap">
      <table>
        <caption className={styles.caption}>{caption}</caption>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Created</th>
            <th scope="col">Host</th>
            <th scope="col" className="num">
              Group
            </th>
            <th scope="col">Address</th>
            <th scope="col">Target</th>
            <th scope="col">State</th>
            <th scope="col">Created by</th>
            <th scope="col">Reason</th>
          </tr>
        </thead>
        <tbody>
          {jobs.map((j) => (
            <tr key={j.id}>
              <td>
                <Link href={`/jobs/${j.id}`} className="mono">
                  job {shortId(j.id)}
                </Link>
                {j.canaryOf === null && j.bulkId !== null ? (
                  <span className="muted small"> bulk</span>
                ) : null}
                {j.canaryOf !== null ? <span className="muted small"> after canary</span> : null}
              </td>
              <td>
                <RelativeTime iso={j.createdAt} />
              </td>
              <td>
                <Link href={`/hosts/${j.hostId}`}>{j.hostname}</Link>
              </td>
              <td className="num">{j.iommuGroup}</td>
              <td className="mono">{j.address}</td>
              <td>{j.target === 'vfio' ? 'to vfio' : 'to host'}</td>
              <td>
                <JobStateBadge state={j.state} />
                {j.cancelRequested && (j.state === 'dispatched' || j.state === 'running') ? (
                  <span className="muted small"> cancel requested</span>
                ) : null}
              </td>
              <td>{j.createdByName ?? <span className="muted">—</span>}</td>
              <td className="small">
                {j.reasonCode === null ? (
                  <span className="muted">—</span>
                ) : (
                  <>
                    <code>{j.reasonCode}</code>
                    {j.reasonMessage === null ? null : `: ${j.reasonMessage}`}
                  </>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
