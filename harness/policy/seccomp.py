"""OCI seccomp profiles for the three sandbox modes, rendered as static JSON.

The profiles are data computed from data: Docker's default profile is
transcribed below, `danger-full-access` is that profile evaluated for Docker's
default capability set, and the restricted variants start from what Docker
allows a container with no capabilities and take more away. Nothing here reads
the running kernel or engine, so the checked-in files in `seccomp/` are the
same on every machine and a unit test can tell when they are stale.

Semantics the rules rely on (runc, crun and libseccomp): rules naming the same
syscall are OR'ed, the `args` of one rule are AND'ed, and a syscall name
unknown on the running architecture is skipped. runc splits a rule holding two
comparisons on the same argument index into separate OR'ed rules
(opencontainers/runc#2735), which would silently turn "not A and not B" into
"allow everything"; so no rule here compares the same argument twice, and the
unit tests reject any rule that does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

VARIANTS: tuple[str, ...] = ("read-only", "workspace-write", "danger-full-access")

# The plain OCI `architectures` list, which Docker, Podman, runc and crun all
# read; `archMap` is an engine-side extension that needs resolving for the
# host first. x32 and x86 are the sub-architectures a 64-bit x86 kernel can
# run, arm the one arm64 can.
ARCHITECTURES: Final[tuple[str, ...]] = (
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
)

EPERM: Final = 1
ENOSYS: Final = 38

ALLOW: Final = "SCMP_ACT_ALLOW"
ERRNO: Final = "SCMP_ACT_ERRNO"

# <linux/socket.h>, <linux/net.h>, <linux/netlink.h>
AF_UNIX: Final = 1
AF_INET: Final = 2
AF_INET6: Final = 10
AF_NETLINK: Final = 16
SOCK_STREAM: Final = 1
SOCK_DGRAM: Final = 2
SOCK_SEQPACKET: Final = 5
# The kernel reads the socket type through this mask; the bits above it are
# SOCK_NONBLOCK and SOCK_CLOEXEC, which every modern runtime sets.
SOCK_TYPE_MASK: Final = 0xF
NETLINK_ROUTE: Final = 0
NETLINK_SOCK_DIAG: Final = 4

# <linux/sched.h>: every namespace flag clone(2) accepts. CLONE_NEWTIME is
# absent because clone(2) cannot take it (it overlaps CSIGNAL); only clone3 and
# unshare can, and both are denied.
CLONE_NAMESPACE_FLAGS: Final = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

# Docker's harmless personality(2) values: PER_LINUX, PER_LINUX32,
# UNAME26, UNAME26|PER_LINUX32, and 0xffffffff which only queries.
# Anything else (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ...) weakens the
# process's own hardening and is what exploits ask for.
DOCKER_PERSONALITY_VALUES: Final[tuple[int, ...]] = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)

# ---------------------------------------------------------------------------
# Docker's default profile, transcribed.
#
# Source: moby/profiles seccomp/default_linux.go, commit 02e898b137ae (2026;
# the generator of moby's profiles/seccomp/default.json since 2025). Only the
# rules that apply to x86_64/x32/x86 and aarch64/arm are kept: the ppc64le,
# s390(x), mips and riscv64 `includes.arches` rules never fire on those
# architectures. Update by diffing against a newer default_linux.go.
# ---------------------------------------------------------------------------

DOCKER_UNCONDITIONAL: Final[tuple[str, ...]] = (
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
)

# Docker allows these only on kernels >= 4.8, where seccomp is re-checked
# after a ptrace stop and ptrace can no longer be used to skip the filter.
# Every kernel harness supports is newer, so the rule is rendered as true.
DOCKER_MIN_KERNEL_4_8: Final[tuple[str, ...]] = ("process_vm_readv", "process_vm_writev", "ptrace")

# Docker's `includes.arches` rules for the architectures rendered here. A
# name that does not exist on the running architecture is skipped by the
# runtime, so listing all of them in one multi-arch file is equivalent.
DOCKER_ARCH_SPECIFIC: Final[tuple[str, ...]] = (
    # arm, arm64
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
    # amd64, x32
    "arch_prctl",
    # amd64, x32, x86
    "modify_ldt",
)

# Docker's `includes.caps` rules: allowed only when the container's bounding
# set holds the capability.
DOCKER_CAPABILITY_GATED: Final[dict[str, tuple[str, ...]]] = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": (
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "lsm_get_self_attr",
        "lsm_list_modules",
        "lsm_set_self_attr",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": (
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}

# Docker's socket(2) allow-list: every domain in the kernel UAPI except the
# removed ones (DECnet 12, ECONET 19, ATMSVC 20, IRDA 23, WANPIPE 25, ISDN 34,
# CAIF 37) and the deliberately blocked AF_ALG (38, kernel crypto API) and
# AF_VSOCK (40, global across network namespaces).
DOCKER_SOCKET_DOMAINS: Final[tuple[int, ...]] = (
    *range(1, 12),  # AF_UNIX .. AF_ROSE
    13,  # AF_NETBEUI
    14,  # AF_SECURITY
    15,  # AF_KEY
    16,  # AF_NETLINK
    17,  # AF_PACKET
    18,  # AF_ASH
    21,  # AF_RDS
    22,  # AF_SNA
    24,  # AF_PPPOX
    26,  # AF_LLC
    27,  # AF_IB
    28,  # AF_MPLS
    29,  # AF_CAN
    30,  # AF_TIPC
    31,  # AF_BLUETOOTH
    32,  # AF_IUCV
    33,  # AF_RXRPC
    35,  # AF_PHONET
    36,  # AF_IEEE802154
    39,  # AF_NFC
    41,  # AF_KCM
    42,  # AF_QIPCRTR
    43,  # AF_SMC
    44,  # AF_XDP
    45,  # AF_MCTP
)

# What `docker run` grants when no --cap-add/--cap-drop is given
# (moby oci/caps/defaults.go).
DOCKER_DEFAULT_CAPABILITIES: Final[frozenset[str]] = frozenset(
    {
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    }
)

# Syscalls Docker allows under no capability at all. They are listed so that
# `blocked_syscalls` names them; the profiles deny them by not allowing them.
NEVER_ALLOWED: Final[tuple[str, ...]] = (
    "add_key",
    "create_module",
    "get_kernel_syms",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "migrate_pages",
    "move_pages",
    "nfsservctl",
    "pivot_root",
    "query_module",
    "request_key",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "userfaultfd",
    "uselib",
    "ustat",
    "vm86",
    "vm86old",
)

# ---------------------------------------------------------------------------
# What the restricted variants take away from Docker-without-capabilities.
# The capability-gated and never-allowed syscalls are already absent; these
# are the ones Docker allows unconditionally that harness does not.
# ---------------------------------------------------------------------------

RESTRICTED_DROPS: Final[tuple[str, ...]] = (
    # Hands out a handle that open_by_handle_at resolves outside the mount;
    # nothing an agent runs needs it.
    "name_to_handle_at",
    # Setting time already needs CAP_SYS_TIME, but the modes that decide
    # read vs write live inside a struct seccomp cannot see, so the calls go.
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    # Replaced by an explicit ENOSYS rule; see _socketcall_unavailable.
    "socketcall",
    # Replaced by an AF_UNIX-only rule.
    "socketpair",
    # 16-bit segments for Wine/dosemu; a steady source of x86 kernel bugs.
    "modify_ldt",
)

# Read-only mode writes only to tmpfs, where ownership and extended
# attributes have no legitimate use. With every capability dropped a chown
# to another owner fails anyway; this also refuses the no-op chown to oneself.
READ_ONLY_DROPS: Final[tuple[str, ...]] = (
    "chown",
    "chown32",
    "fchown",
    "fchown32",
    "fchownat",
    "lchown",
    "lchown32",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "setxattrat",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "removexattrat",
)

# (family, type) pairs the restricted socket rules admit. Loopback servers
# for test suites need inet stream/dgram; the network namespace, not
# seccomp, keeps traffic from leaving the box.
RESTRICTED_SOCKET_FAMILIES: Final[tuple[int, ...]] = (AF_UNIX, AF_INET, AF_INET6)
RESTRICTED_SOCKET_TYPES: Final[tuple[int, ...]] = (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET)
# NETLINK_ROUTE backs getifaddrs() and getaddrinfo(AI_ADDRCONFIG);
# NETLINK_SOCK_DIAG backs `ss` and psutil. Other netlink families (audit,
# uevent, netfilter, generic) configure the kernel.
RESTRICTED_NETLINK_PROTOCOLS: Final[tuple[int, ...]] = (NETLINK_ROUTE, NETLINK_SOCK_DIAG)


@dataclass(frozen=True)
class _Arg:
    """One comparison on a syscall argument, as the OCI spec spells it."""

    index: int
    value: int
    op: str
    value_two: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "value": self.value, "valueTwo": self.value_two, "op": self.op}


@dataclass(frozen=True)
class _Rule:
    """One entry of an OCI seccomp profile's syscalls list."""

    names: tuple[str, ...]
    args: tuple[_Arg, ...] = ()
    action: str = ALLOW
    errno_ret: int | None = None

    def to_json(self) -> dict[str, Any]:
        rendered: dict[str, Any] = {"names": sorted(set(self.names)), "action": self.action}
        if self.args:
            rendered["args"] = [arg.to_json() for arg in self.args]
        if self.errno_ret is not None:
            rendered["errnoRet"] = self.errno_ret
        return rendered


def _allow_when(name: str, *args: _Arg) -> _Rule:
    return _Rule(names=(name,), args=args)


def _personality_rules() -> list[_Rule]:
    return [
        _allow_when("personality", _Arg(0, value, "SCMP_CMP_EQ"))
        for value in DOCKER_PERSONALITY_VALUES
    ]


def _clone_rules() -> list[_Rule]:
    # Argument 0 holds the flags on every architecture rendered here (s390
    # swaps the first two; Docker's s390-only rule on argument 1 would match
    # any x86 clone with a zero stack pointer, so it is not rendered).
    without_namespaces = _Arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)
    # clone3 passes its flags in a struct seccomp cannot read. ENOSYS (not
    # EPERM) makes glibc and other runtimes fall back to clone(2), whose
    # flags the rule above does check.
    clone3_unavailable = _Rule(names=("clone3",), action=ERRNO, errno_ret=ENOSYS)
    return [_allow_when("clone", without_namespaces), clone3_unavailable]


def _docker_socket_rules() -> list[_Rule]:
    # Mirrors moby's socketSyscallsForDomains: the leading contiguous run of
    # domains from AF_UNIX becomes one `<` comparison (one-sided, because a
    # two-sided range would be split into OR'ed rules), the rest equalities.
    domains = sorted(DOCKER_SOCKET_DOMAINS)
    run_end = 0
    while run_end + 1 < len(domains) and domains[run_end + 1] == domains[run_end] + 1:
        run_end += 1
    rules = [_allow_when("socket", _Arg(0, domains[run_end] + 1, "SCMP_CMP_LT"))]
    rules += [
        _allow_when("socket", _Arg(0, domain, "SCMP_CMP_EQ")) for domain in domains[run_end + 1 :]
    ]
    return rules


def _restricted_socket_rules() -> list[_Rule]:
    rules = [
        _allow_when(
            "socket",
            _Arg(0, family, "SCMP_CMP_EQ"),
            _Arg(1, SOCK_TYPE_MASK, "SCMP_CMP_MASKED_EQ", sock_type),
        )
        for family in RESTRICTED_SOCKET_FAMILIES
        for sock_type in RESTRICTED_SOCKET_TYPES
    ]
    rules += [
        _allow_when("socket", _Arg(0, AF_NETLINK, "SCMP_CMP_EQ"), _Arg(2, protocol, "SCMP_CMP_EQ"))
        for protocol in RESTRICTED_NETLINK_PROTOCOLS
    ]
    rules.append(_allow_when("socketpair", _Arg(0, AF_UNIX, "SCMP_CMP_EQ")))
    return rules


def _socketcall_unavailable() -> _Rule:
    # i386 multiplexes every socket call through socketcall(call, args*),
    # whose socket arguments sit behind a pointer seccomp cannot read. Worse,
    # on the x86 sub-architecture libseccomp copies each socket rule into a
    # socketcall rule, replacing the comparison on argument 0 by
    # `call == SYS_SOCKET` and keeping the others, which then test the
    # pointer and an unused register: any family would pass. An unconditional socketcall rule
    # absorbs those copies (libseccomp keeps the unconditional rule of a
    # syscall over its conditional ones). Its errno must differ from the
    # default action, which runc and libseccomp refuse to repeat in a rule.
    return _Rule(names=("socketcall",), action=ERRNO, errno_ret=ENOSYS)


def _docker_rules(capabilities: frozenset[str]) -> list[_Rule]:
    """Docker's default profile with its includes/excludes evaluated."""
    unconditional = {*DOCKER_UNCONDITIONAL, *DOCKER_MIN_KERNEL_4_8, *DOCKER_ARCH_SPECIFIC}
    for capability, names in DOCKER_CAPABILITY_GATED.items():
        if capability in capabilities:
            unconditional.update(names)
    rules = [_Rule(names=tuple(unconditional))]
    rules += _docker_socket_rules()
    rules += _personality_rules()
    if "CAP_SYS_ADMIN" not in capabilities:
        rules += _clone_rules()
    return rules


def _restricted_rules(extra_drops: Iterable[str]) -> list[_Rule]:
    unconditional = {*DOCKER_UNCONDITIONAL, *DOCKER_ARCH_SPECIFIC}
    unconditional -= {*RESTRICTED_DROPS, *extra_drops}
    return [
        _Rule(names=tuple(unconditional)),
        *_restricted_socket_rules(),
        _socketcall_unavailable(),
        *_personality_rules(),
        *_clone_rules(),
    ]


def _rules_for(variant: str) -> list[_Rule]:
    if variant == "danger-full-access":
        return _docker_rules(DOCKER_DEFAULT_CAPABILITIES)
    if variant == "workspace-write":
        return _restricted_rules(())
    if variant == "read-only":
        return _restricted_rules(READ_ONLY_DROPS)
    raise ValueError(f"unknown seccomp variant {variant!r}; expected one of {', '.join(VARIANTS)}")


def profile_for(variant: str) -> dict[str, Any]:
    """The OCI seccomp profile for a sandbox mode, ready for json.dumps."""
    return {
        "defaultAction": ERRNO,
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": [rule.to_json() for rule in _rules_for(variant)],
    }


def render(variant: str) -> str:
    """The exact bytes of `seccomp/<variant>.json`."""
    return json.dumps(profile_for(variant), indent=2, sort_keys=True) + "\n"


def default_directory() -> Path:
    """The repository's top-level `seccomp/` folder."""
    return Path(__file__).parents[2] / "seccomp"


def write_profiles(directory: Path) -> list[Path]:
    """Write every variant to `directory/<variant>.json`; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for variant in VARIANTS:
        path = directory / f"{variant}.json"
        path.write_text(render(variant), encoding="utf-8")
        written.append(path)
    return written


def allowed_syscalls(variant: str) -> frozenset[str]:
    """Names allowed by at least one rule, with or without argument checks."""
    return frozenset(
        name
        for rule in profile_for(variant)["syscalls"]
        if rule["action"] == ALLOW
        for name in rule["names"]
    )


def known_syscalls() -> frozenset[str]:
    """Every name this module has an opinion on: Docker's and the never-allowed."""
    gated = (name for names in DOCKER_CAPABILITY_GATED.values() for name in names)
    return frozenset(
        {
            *DOCKER_UNCONDITIONAL,
            *DOCKER_MIN_KERNEL_4_8,
            *DOCKER_ARCH_SPECIFIC,
            *gated,
            *NEVER_ALLOWED,
            "personality",
            "socket",
        }
    )


def blocked_syscalls(variant: str) -> frozenset[str]:
    """Known names no rule allows in any form (they fail with EPERM or ENOSYS)."""
    return known_syscalls() - allowed_syscalls(variant)
