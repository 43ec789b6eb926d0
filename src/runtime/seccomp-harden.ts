// Podman's profile (the one Debian ships) leaves namespace, mount and keyring calls open, because
// Podman relies on the capability set to refuse them. Hangar's machines are hostile by assumption,
// so their filter is at least as strict as Docker's default for a container without
// CAP_SYS_ADMIN (moby's profiles/seccomp/default.json), whatever the capabilities say.
//
// An app may opt in to nested namespaces (its nested_namespaces setting): its machines, each in a
// user namespace of its own, get a second variant of the filter that lets them make namespaces and
// mount in them, as rootless Podman or bubblewrap would. The kernel still checks every such call
// against the capabilities held in the user namespace that owns the target, and a machine holds
// none over anything of the host's; the calls no namespace confines stay refused in both variants.
import type { OciSeccomp, OciSyscall } from './seccomp-profile.ts';

export type SeccompVariant = 'default' | 'nested-namespaces';

/** New namespaces, joining them, and mounts: what the nested-namespaces variant allows. */
export const NAMESPACE_SYSCALLS = [
  'unshare', 'setns',
  // Old and new mount API: by default a machine's mount table is set up for it and stays as it is.
  'mount', 'umount', 'umount2', 'pivot_root', 'fsopen', 'fsconfig', 'fsmount', 'fspick', 'open_tree', 'move_mount', 'mount_setattr',
] as const;

/** Calls refused in every variant, each with EPERM. */
export const ALWAYS_REFUSED_SYSCALLS = [
  // The kernel keyring is not namespaced the way a machine's other state is.
  'keyctl', 'add_key', 'request_key',
  // Kernel-wide facilities Docker gates behind CAP_SYS_ADMIN, CAP_SYS_NICE, CAP_SYS_PTRACE or CAP_SYS_BOOT.
  'bpf', 'perf_event_open', 'fanotify_init', 'lookup_dcookie', 'quotactl', 'quotactl_fd', 'syslog',
  'sethostname', 'setdomainname', 'name_to_handle_at', 'open_by_handle_at',
  'get_mempolicy', 'mbind', 'set_mempolicy', 'set_mempolicy_home_node', 'migrate_pages', 'move_pages',
  'pidfd_getfd', 'kcmp', 'process_madvise', 'reboot', 'userfaultfd',
] as const;

/** Calls a machine of the default variant may not make at all; each answers EPERM. */
export const REFUSED_SYSCALLS = [...NAMESPACE_SYSCALLS, ...ALWAYS_REFUSED_SYSCALLS] as const;

/** clone's flags for a new namespace (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET). */
const CLONE_NAMESPACE_FLAGS = 0x7e020000;
const EPERM = 1;
const ENOSYS = 38;

export function hardenSeccomp(profile: OciSeccomp, variant: SeccompVariant = 'default'): OciSeccomp {
  const refused = new Set<string>([...REFUSED_SYSCALLS, 'clone', 'clone3']);
  const syscalls: OciSyscall[] = [];
  for (const rule of profile.syscalls) {
    const names = rule.names.filter((n) => !refused.has(n));
    if (names.length > 0) syscalls.push({ ...rule, names });
  }
  if (variant === 'nested-namespaces') {
    syscalls.push(
      { names: [...ALWAYS_REFUSED_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      { names: [...NAMESPACE_SYSCALLS, 'clone', 'clone3'], action: 'SCMP_ACT_ALLOW' },
    );
  } else {
    syscalls.push(
      { names: [...REFUSED_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
      // fork and threads, yes; a clone into new namespaces, no.
      { names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] },
      // clone3 takes its flags in memory, out of a filter's reach: ENOSYS makes libc fall back to clone.
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    );
  }
  return { ...profile, syscalls };
}
