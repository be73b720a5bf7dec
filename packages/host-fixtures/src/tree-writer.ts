/**
 * File and link primitives for a host tree. Every path is relative to the host root and uses `/`,
 * so kernel paths read the same here as in docs/host-files.md; links are written relative, as
 * sysfs writes them, so a tree stays valid wherever it is moved or copied.
 */
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

export class TreeWriter {
  constructor(readonly root: string) {}

  private abs(relPath: string): string {
    return path.join(this.root, ...relPath.split('/'));
  }

  async dir(relPath: string): Promise<void> {
    await mkdir(this.abs(relPath), { recursive: true });
  }

  async file(relPath: string, content: string): Promise<void> {
    await mkdir(path.dirname(this.abs(relPath)), { recursive: true });
    await writeFile(this.abs(relPath), content);
  }

  /** A sysfs attribute: one value and a newline, as the kernel's show() functions print it. */
  async attr(relPath: string, value: string | number): Promise<void> {
    await this.file(relPath, `${value}\n`);
  }

  /** Symlink whose text is `target` verbatim: /proc fd links (`/dev/vfio/7`, `anon_inode:[…]`). */
  async rawLink(linkPath: string, target: string): Promise<void> {
    await mkdir(path.dirname(this.abs(linkPath)), { recursive: true });
    await symlink(target, this.abs(linkPath));
  }

  /** Symlink at `linkPath` to `targetPath` (both root-relative), with a relative target. */
  async link(linkPath: string, targetPath: string): Promise<void> {
    await mkdir(path.dirname(this.abs(linkPath)), { recursive: true });
    await symlink(relativeTarget(linkPath, targetPath), this.abs(linkPath));
  }
}

/**
 * The relative target sysfs would store: `../../../bus/pci/drivers/pcieport` and the like.
 * kernfs_get_target_path climbs from the link's directory to an ancestor of the target's
 * *parent*, so a link to an ancestor (a netdev's `device`) reads `../../../0000:65:00.0`, never
 * `../..`; plain path.relative would give the latter.
 */
export function relativeTarget(linkPath: string, targetPath: string): string {
  const targetParent = path.posix.dirname(targetPath);
  let base = path.posix.dirname(linkPath);
  let ups = 0;
  while (base !== '.' && !isAncestorOrSelf(base, targetParent)) {
    base = path.posix.dirname(base);
    ups++;
  }
  const down = base === '.' ? targetPath : targetPath.slice(base.length + 1);
  return `${'../'.repeat(ups)}${down}`;
}

function isAncestorOrSelf(dir: string, of: string): boolean {
  return of === dir || of.startsWith(`${dir}/`);
}
