/** The acting user, as the job service and the audit log want it. */
import type { SessionUser } from '../auth/sessions';
import type { Actor } from '../jobs/job-service';

export function actorOf(user: SessionUser): Actor {
  return { userId: user.id, username: user.username, role: user.role };
}
