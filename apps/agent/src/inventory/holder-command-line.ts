/**
 * The VM a holder process runs, from its command line (`/proc/<pid>/cmdline`, NUL-separated): only
 * what the VMM's own options say, never a guess. QEMU (libvirt's too) `-name [guest=]NAME[,…]`,
 * else `-uuid`; crosvm `run --name`; firecracker `--id`. cloud-hypervisor has no name option.
 */

/** A name longer than this is clipped: it travels in every snapshot (the wire allows 512). */
export const MAX_VM_NAME = 256;

/** argv from cmdline bytes; a trailing NUL ends the last argument, it starts no new one. */
export function splitCmdline(raw: string): string[] {
  if (raw === '') return [];
  const args = raw.split('\0');
  if (args.at(-1) === '') args.pop();
  return args;
}

/** `qemu-system-x86_64` from `/usr/bin/qemu-system-x86_64`. */
export function argv0Basename(argv: readonly string[]): string | null {
  const first = argv[0];
  if (first === undefined || first === '') return null;
  return (
    first
      .split('/')
      .filter((part) => part !== '')
      .at(-1) ?? null
  );
}

/** The options a VMM names its VM with, by its program name; none for other programs. */
function nameFlags(program: string): { name: string[]; fallback: string[] } {
  if (/^qemu/.test(program) || program === 'kvm') {
    return { name: ['-name', '--name'], fallback: ['-uuid', '--uuid'] };
  }
  if (program === 'crosvm') return { name: ['--name'], fallback: [] };
  if (program === 'firecracker' || program === 'jailer') return { name: ['--id'], fallback: [] };
  return { name: [], fallback: [] };
}

export function vmNameOf(argv: readonly string[]): string | null {
  const program = argv0Basename(argv) ?? '';
  const flags = nameFlags(program);
  let name = optionValue(argv, flags.name);
  if (name !== null && flags.name.includes('-name')) name = qemuGuestName(name);
  if (name === null || name === '') name = optionValue(argv, flags.fallback);
  if (name === null || name === '') return null;
  return name.length > MAX_VM_NAME ? `${name.slice(0, MAX_VM_NAME - 1)}…` : name;
}

/**
 * argv[0] and the options vmNameOf reads, nothing else: what `capture` keeps of a holder's
 * command line (the rest can carry secrets: libvirt passes `-object secret,data=…`).
 */
export function nameArgs(argv: readonly string[]): string[] {
  const first = argv[0];
  if (first === undefined) return [];
  const flags = nameFlags(argv0Basename(argv) ?? '');
  const all = [...flags.name, ...flags.fallback];
  const kept = [first];
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const next = argv[i + 1];
    if (all.includes(arg) && next !== undefined) {
      kept.push(arg, next);
      i++;
    } else if (all.some((flag) => flag.startsWith('--') && arg.startsWith(`${flag}=`))) {
      kept.push(arg);
    }
  }
  return kept;
}

/** The last value given to any of `flags` (`--flag value` or `--flag=value`): the VMMs keep the last. */
function optionValue(argv: readonly string[], flags: readonly string[]): string | null {
  let value: string | null = null;
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    for (const flag of flags) {
      if (arg === flag && i + 1 < argv.length) value = argv[i + 1] ?? null;
      else if (arg.startsWith(`${flag}=`) && flag.startsWith('--'))
        value = arg.slice(flag.length + 1);
    }
  }
  return value;
}

/**
 * QEMU's `-name` is a QemuOpts list with `guest` implied: `NAME,debug-threads=on`, `guest=NAME`,
 * `process=p,guest=NAME`; `,,` stands for a comma (util/qemu-option.c get_opt_value). The last
 * `guest` wins, as qemu_opt_get returns the last one set.
 */
export function qemuGuestName(value: string): string | null {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === ',' && value[i + 1] === ',') {
      current += ',';
      i++;
    } else if (ch === ',') {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  let guest: string | null = null;
  for (const [index, part] of parts.entries()) {
    const eq = part.indexOf('=');
    if (index === 0 && eq < 0) guest = part;
    else if (eq >= 0 && part.slice(0, eq) === 'guest') guest = part.slice(eq + 1);
  }
  return guest;
}
