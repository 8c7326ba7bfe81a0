"""The seccomp profiles: checked-in files, OCI shape, and what each one decides."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.policy import seccomp
from harness.policy.seccomp import (
    VARIANTS,
    allowed_syscalls,
    blocked_syscalls,
    default_directory,
    profile_for,
    render,
    write_profiles,
)

RESTRICTED = ("read-only", "workspace-write")

ALLOW = ("SCMP_ACT_ALLOW", 0)
EPERM = ("SCMP_ACT_ERRNO", 1)
ENOSYS = ("SCMP_ACT_ERRNO", 38)

AF_UNIX, AF_INET, AF_INET6, AF_KEY, AF_NETLINK, AF_PACKET = 1, 2, 10, 15, 16, 17
AF_BLUETOOTH, AF_ALG, AF_VSOCK = 31, 38, 40
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET, SOCK_PACKET = 1, 2, 3, 5, 10
SOCK_NONBLOCK, SOCK_CLOEXEC = 0o4000, 0o2000000
NETLINK_ROUTE, NETLINK_SOCK_DIAG, NETLINK_AUDIT, NETLINK_KOBJECT_UEVENT = 0, 4, 9, 15

CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND = 0x100, 0x200, 0x400, 0x800
CLONE_THREAD, CLONE_SYSVSEM, CLONE_SETTLS = 0x10000, 0x40000, 0x80000
CLONE_PARENT_SETTID, CLONE_CHILD_CLEARTID = 0x100000, 0x200000
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x2000000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
SIGCHLD = 17
PTHREAD_CREATE_FLAGS = (
    CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
)
NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)

# <linux/net.h>: the call numbers i386 passes as socketcall's first argument.
SOCKETCALL_NUMBERS = {
    "socket": 1,
    "bind": 2,
    "connect": 3,
    "listen": 4,
    "accept": 5,
    "getsockname": 6,
    "getpeername": 7,
    "socketpair": 8,
    "send": 9,
    "recv": 10,
    "sendto": 11,
    "recvfrom": 12,
    "shutdown": 13,
    "setsockopt": 14,
    "getsockopt": 15,
    "sendmsg": 16,
    "recvmsg": 17,
    "accept4": 18,
    "recvmmsg": 19,
    "sendmmsg": 20,
}

# ---------------------------------------------------------------------------
# A tiny model of how runc + libseccomp turn the JSON into a decision.
# ---------------------------------------------------------------------------

_U64 = (1 << 64) - 1


def _holds(condition: dict[str, Any], args: tuple[int, ...]) -> bool:
    index: int = condition["index"]
    arg = (args[index] if index < len(args) else 0) & _U64
    value: int = condition["value"]
    value_two: int = condition.get("valueTwo", 0)
    op: str = condition["op"]
    return {
        "SCMP_CMP_NE": arg != value,
        "SCMP_CMP_LT": arg < value,
        "SCMP_CMP_LE": arg <= value,
        "SCMP_CMP_EQ": arg == value,
        "SCMP_CMP_GE": arg >= value,
        "SCMP_CMP_GT": arg > value,
        # libseccomp: (arg & datum_a) == datum_b; runc passes value, valueTwo.
        "SCMP_CMP_MASKED_EQ": (arg & value) == value_two,
    }[op]


def _rules_for_syscall(profile: dict[str, Any], syscall: str, arch: str) -> list[dict[str, Any]]:
    rules = [rule for rule in profile["syscalls"] if syscall in rule["names"]]
    if arch == "x86" and syscall == "socketcall":
        # libseccomp (arch-x86 abi_rule_add) copies every rule for a socket
        # call into a socketcall rule: the comparison on argument 0 becomes
        # `call == SYS_<name>`, the comparisons on other arguments are kept.
        for rule in profile["syscalls"]:
            for name in rule["names"]:
                if name in SOCKETCALL_NUMBERS:
                    kept = [c for c in rule.get("args", []) if c["index"] != 0]
                    call = {"index": 0, "op": "SCMP_CMP_EQ", "value": SOCKETCALL_NUMBERS[name]}
                    rules.append({**rule, "names": ["socketcall"], "args": [call, *kept]})
    return rules


def _outcome(profile: dict[str, Any], rule: dict[str, Any]) -> tuple[str, int]:
    if rule["action"] == "SCMP_ACT_ALLOW":
        return ALLOW
    return (rule["action"], rule.get("errnoRet", profile["defaultErrnoRet"]))


def evaluate(
    profile: dict[str, Any], syscall: str, *args: int, arch: str = "x86_64"
) -> tuple[str, int]:
    """(action, errno) the kernel would apply to `syscall(*args)`."""
    rules = _rules_for_syscall(profile, syscall, arch)
    # libseccomp keeps a syscall's unconditional rule over its conditional
    # ones, in whatever order they were added (db.c, db_rule_add).
    unconditional = [rule for rule in rules if not rule.get("args")]
    if unconditional:
        return _outcome(profile, unconditional[0])
    outcomes = {
        _outcome(profile, rule)
        for rule in rules
        if all(_holds(condition, args) for condition in rule["args"])
    }
    assert len(outcomes) <= 1, f"{syscall}{args}: matching rules disagree: {outcomes}"
    return outcomes.pop() if outcomes else (profile["defaultAction"], profile["defaultErrnoRet"])


# ---------------------------------------------------------------------------
# A small OCI runtime-spec schema check.
# ---------------------------------------------------------------------------

OCI_ACTIONS = {
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
}
OCI_OPS = {
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
}
OCI_ARCHES = {
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
}
TOP_LEVEL_KEYS = {
    "defaultAction",
    "defaultErrnoRet",
    "architectures",
    "flags",
    "listenerPath",
    "listenerMetadata",
    "syscalls",
}
RULE_KEYS = {"names", "action", "errnoRet", "args"}
ARG_KEYS = {"index", "value", "valueTwo", "op"}
SYSCALL_NAME = re.compile(r"^_?[a-z][a-z0-9_]*$")


def oci_problems(profile: dict[str, Any]) -> list[str]:
    """Everything about `profile` that runc, crun, Docker or Podman would reject."""
    problems = []
    if set(profile) - TOP_LEVEL_KEYS:
        problems.append(f"unknown top-level keys {sorted(set(profile) - TOP_LEVEL_KEYS)}")
    if profile.get("defaultAction") not in OCI_ACTIONS:
        problems.append(f"defaultAction {profile.get('defaultAction')!r}")
    if not isinstance(profile.get("defaultErrnoRet", 0), int):
        problems.append("defaultErrnoRet is not an integer")
    arches = profile.get("architectures")
    if not arches or set(arches) - OCI_ARCHES or len(set(arches)) != len(arches):
        problems.append(f"architectures {arches!r}")
    if not isinstance(profile.get("syscalls"), list) or not profile["syscalls"]:
        return [*problems, "syscalls missing or empty"]
    for number, rule in enumerate(profile["syscalls"]):
        where = f"syscalls[{number}]"
        if set(rule) - RULE_KEYS:
            problems.append(f"{where}: unknown keys {sorted(set(rule) - RULE_KEYS)}")
        names = rule.get("names")
        if not names or not all(isinstance(n, str) and SYSCALL_NAME.match(n) for n in names):
            problems.append(f"{where}: names {names!r}")
        elif len(set(names)) != len(names):
            problems.append(f"{where}: repeated names")
        if rule.get("action") not in OCI_ACTIONS:
            problems.append(f"{where}: action {rule.get('action')!r}")
        if "errnoRet" in rule and rule.get("action") not in {"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"}:
            problems.append(f"{where}: errnoRet without an errno action")
        if (rule.get("action"), rule.get("errnoRet", profile.get("defaultErrnoRet"))) == (
            profile.get("defaultAction"),
            profile.get("defaultErrnoRet"),
        ):
            # libseccomp refuses a rule whose action is the default action.
            problems.append(f"{where}: repeats the default action")
        indexes = []
        for arg in rule.get("args", []):
            if set(arg) - ARG_KEYS or not {"index", "value", "op"} <= set(arg):
                problems.append(f"{where}: arg keys {sorted(arg)}")
                continue
            if not 0 <= arg["index"] <= 5:
                problems.append(f"{where}: arg index {arg['index']}")
            if arg["op"] not in OCI_OPS:
                problems.append(f"{where}: op {arg['op']!r}")
            for key in ("value", "valueTwo"):
                if not 0 <= arg.get(key, 0) <= _U64:
                    problems.append(f"{where}: {key} out of 64-bit range")
            indexes.append(arg["index"])
        if len(set(indexes)) != len(indexes):
            # runc splits such a rule into OR'ed rules (runc#2735).
            problems.append(f"{where}: two comparisons on one argument")
    return problems


# ---------------------------------------------------------------------------
# The checked-in files and the API.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_checked_in_profile_is_current(variant: str) -> None:
    path = default_directory() / f"{variant}.json"
    stale = (
        f"{path} is missing or stale: run `harness seccomp generate` (or "
        "python -c 'from harness.policy.seccomp import write_profiles, default_directory; "
        "write_profiles(default_directory())') and commit the result"
    )
    assert path.is_file(), stale
    assert path.read_text(encoding="utf-8") == render(variant), stale


def test_default_directory_is_the_repo_seccomp_folder() -> None:
    assert default_directory() == Path(__file__).parents[3] / "seccomp"


def test_write_profiles_writes_every_variant(tmp_path: Path) -> None:
    written = write_profiles(tmp_path / "out")
    assert [p.name for p in written] == [f"{v}.json" for v in VARIANTS]
    for path, variant in zip(written, VARIANTS, strict=True):
        assert json.loads(path.read_text(encoding="utf-8")) == profile_for(variant)


def test_render_is_deterministic_sorted_json() -> None:
    for variant in VARIANTS:
        text = render(variant)
        assert text == render(variant)
        assert text.endswith("}\n")
        assert json.loads(text) == profile_for(variant)


def test_unknown_variant_names_the_variants() -> None:
    with pytest.raises(ValueError, match="read-only, workspace-write, danger-full-access"):
        profile_for("full-access")


def test_readme_documents_every_variant_and_regeneration() -> None:
    readme = (default_directory() / "README.md").read_text(encoding="utf-8")
    for variant in VARIANTS:
        assert f"{variant}.json" in readme
    assert "harness seccomp generate" in readme


@pytest.mark.parametrize("variant", VARIANTS)
def test_profile_is_valid_oci(variant: str) -> None:
    profile = profile_for(variant)
    assert oci_problems(profile) == []
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
    ]


def test_schema_check_catches_docker_extensions_and_split_rules() -> None:
    bad = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [],
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {}},
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "value": 38, "op": "SCMP_CMP_NE"},
                    {"index": 0, "value": 40, "op": "SCMP_CMP_NE"},
                ],
            },
            {"names": ["mount", "mount"], "action": "SCMP_ACT_ERRNO"},
            {
                "names": ["x"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 6, "value": 0, "op": "EQ"}],
            },
        ],
    }
    problems = "\n".join(oci_problems(bad))
    for expected in (
        "archMap",
        "includes",
        "two comparisons on one argument",
        "repeated names",
        "arg index 6",
        "op 'EQ'",
    ):
        assert expected in problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_conditional_rule_is_shadowed_by_an_unconditional_one(variant: str) -> None:
    rules = profile_for(variant)["syscalls"]
    unconditional = {name for rule in rules if not rule.get("args") for name in rule["names"]}
    conditional = {name for rule in rules if rule.get("args") for name in rule["names"]}
    assert not unconditional & conditional


# ---------------------------------------------------------------------------
# What the restricted variants decide.
# ---------------------------------------------------------------------------

REQUIRED_BLOCKED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "mount",
    "umount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
    "pivot_root",
    "chroot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "adjtimex",
    "syslog",
    "vhangup",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    "lookup_dcookie",
    "uselib",
    "sysfs",
    "_sysctl",
    "fanotify_init",
    "kcmp",
    "vm86",
    "vm86old",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "set_mempolicy_home_node",
    "move_pages",
    "migrate_pages",
    "pidfd_getfd",
    "process_madvise",
    "sethostname",
    "setdomainname",
    "clone3",
    "socketcall",
    "modify_ldt",
)

REQUIRED_ALLOWED = (
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "openat",
    "openat2",
    "close",
    "close_range",
    "newfstatat",
    "statx",
    "faccessat2",
    "getdents64",
    "lseek",
    "readlink",
    "readlinkat",
    "rename",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "chmod",
    "execve",
    "execveat",
    "fork",
    "vfork",
    "clone",
    "wait4",
    "waitid",
    "exit_group",
    "kill",
    "tgkill",
    "futex",
    "mmap",
    "munmap",
    "mprotect",
    "brk",
    "madvise",
    "arch_prctl",
    "set_tls",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_yield",
    "getpid",
    "socket",
    "socketpair",
    "bind",
    "listen",
    "connect",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "pipe",
    "pipe2",
    "dup3",
    "fcntl",
    "ioctl",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "eventfd2",
    "timerfd_create",
    "timerfd_settime",
    "inotify_init1",
    "inotify_add_watch",
    "memfd_create",
    "shmget",
    "shmat",
    "semget",
    "semop",
    "prctl",
    "seccomp",
    "getrandom",
    "pidfd_open",
    "pidfd_send_signal",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "uname",
    "sysinfo",
    "prlimit64",
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    "personality",
    "capget",
    "setsid",
    "setpgid",
    "umask",
    "getcwd",
    "chdir",
)

CHOWN_AND_XATTR_WRITES = (
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


@pytest.mark.parametrize("variant", RESTRICTED)
def test_restricted_blocks_the_required_list(variant: str) -> None:
    allowed = allowed_syscalls(variant)
    assert sorted(set(REQUIRED_BLOCKED) & allowed) == []
    assert set(REQUIRED_BLOCKED) <= blocked_syscalls(variant)


@pytest.mark.parametrize("variant", RESTRICTED)
def test_restricted_keeps_what_agents_and_test_suites_need(variant: str) -> None:
    assert sorted(set(REQUIRED_ALLOWED) - allowed_syscalls(variant)) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_clone3_returns_enosys_so_libc_falls_back_to_clone(variant: str) -> None:
    assert evaluate(profile_for(variant), "clone3", 0, 88) == ENOSYS


@pytest.mark.parametrize("variant", VARIANTS)
def test_clone_without_namespace_flags_is_allowed(variant: str) -> None:
    profile = profile_for(variant)
    assert evaluate(profile, "clone", PTHREAD_CREATE_FLAGS) == ALLOW
    assert evaluate(profile, "clone", SIGCHLD) == ALLOW
    assert evaluate(profile, "clone", CLONE_VM | SIGCHLD, 0, arch="aarch64") == ALLOW


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("flag", NAMESPACE_FLAGS)
def test_clone_with_any_namespace_flag_is_denied(variant: str, flag: int) -> None:
    profile = profile_for(variant)
    assert evaluate(profile, "clone", flag | SIGCHLD) == EPERM
    assert evaluate(profile, "clone", flag | PTHREAD_CREATE_FLAGS) == EPERM
    # A zero stack pointer in argument 1 must not help (Docker's s390 rule would).
    assert evaluate(profile, "clone", flag | SIGCHLD, 0) == EPERM


@pytest.mark.parametrize("variant", RESTRICTED)
@pytest.mark.parametrize(
    ("family", "sock_type", "protocol", "expected"),
    [
        (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, ALLOW),
        (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 6, ALLOW),
        (AF_INET, SOCK_DGRAM, 0, ALLOW),
        (AF_INET6, SOCK_STREAM, 0, ALLOW),
        (AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 17, ALLOW),
        (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ALLOW),
        (AF_UNIX, SOCK_DGRAM, 0, ALLOW),
        (AF_UNIX, SOCK_SEQPACKET, 0, ALLOW),
        (AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE, ALLOW),
        (AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG, ALLOW),
        (AF_NETLINK, SOCK_RAW, NETLINK_AUDIT, EPERM),
        (AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT, EPERM),
        (AF_INET, SOCK_RAW, 1, EPERM),
        (AF_INET6, SOCK_RAW, 58, EPERM),
        (AF_INET, SOCK_PACKET, 0, EPERM),
        (AF_UNIX, SOCK_RAW, 0, EPERM),
        (AF_PACKET, SOCK_RAW, 0, EPERM),
        (AF_PACKET, SOCK_DGRAM, 0, EPERM),
        (AF_VSOCK, SOCK_STREAM, 0, EPERM),
        (AF_ALG, SOCK_SEQPACKET, 0, EPERM),
        (AF_BLUETOOTH, SOCK_STREAM, 0, EPERM),
        (AF_KEY, SOCK_RAW, 2, EPERM),
        (0, SOCK_STREAM, 0, EPERM),
        # The high half of the register must not turn a denied family into an allowed one.
        ((1 << 32) | AF_INET, SOCK_STREAM, 0, EPERM),
    ],
)
def test_restricted_socket_families_and_types(
    variant: str, family: int, sock_type: int, protocol: int, expected: tuple[str, int]
) -> None:
    assert evaluate(profile_for(variant), "socket", family, sock_type, protocol) == expected


@pytest.mark.parametrize("variant", RESTRICTED)
def test_restricted_socket_rules_admit_exactly_the_listed_pairs(variant: str) -> None:
    profile = profile_for(variant)
    admitted = {
        (family, sock_type)
        for family in range(46)
        for sock_type in range(1, 11)
        if evaluate(profile, "socket", family, sock_type | SOCK_CLOEXEC, 0) == ALLOW
    }
    expected = {
        (family, sock_type)
        for family in (AF_UNIX, AF_INET, AF_INET6)
        for sock_type in (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET)
    }
    netlink_route = {(AF_NETLINK, sock_type) for sock_type in range(1, 11)}
    assert admitted == expected | netlink_route


@pytest.mark.parametrize("variant", RESTRICTED)
def test_restricted_socketpair_is_unix_only(variant: str) -> None:
    profile = profile_for(variant)
    assert evaluate(profile, "socketpair", AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) == ALLOW
    assert evaluate(profile, "socketpair", AF_UNIX, SOCK_SEQPACKET, 0) == ALLOW
    assert evaluate(profile, "socketpair", AF_INET, SOCK_STREAM, 0) == EPERM
    assert evaluate(profile, "socketpair", 30, SOCK_SEQPACKET, 0) == EPERM  # AF_TIPC


@pytest.mark.parametrize("variant", RESTRICTED)
def test_i386_socketcall_cannot_bypass_the_family_rules(variant: str) -> None:
    profile = profile_for(variant)
    # socketcall(SYS_SOCKET, args) with an args pointer whose low bits look
    # like SOCK_STREAM, and zero in the unused third register: the rewritten
    # socket rules alone would allow it whatever family *args holds.
    for pointer in (0xFFFF0001, 0xFFFF0002, 0xFFFF0005, 0x10):
        assert evaluate(profile, "socketcall", 1, pointer, 0, arch="x86") == ENOSYS
    # The direct i386 socket syscall keeps its checks.
    assert evaluate(profile, "socket", AF_INET, SOCK_STREAM, 0, arch="x86") == ALLOW
    assert evaluate(profile, "socket", AF_PACKET, SOCK_RAW, 0, arch="x86") == EPERM


def test_the_socketcall_model_shows_why_the_explicit_rule_exists() -> None:
    profile = profile_for("workspace-write")
    without = {
        **profile,
        "syscalls": [rule for rule in profile["syscalls"] if rule["names"] != ["socketcall"]],
    }
    assert evaluate(without, "socketcall", 1, 0xFFFF0001, 0, arch="x86") == ALLOW


@pytest.mark.parametrize("variant", VARIANTS)
def test_personality_only_with_dockers_harmless_values(variant: str) -> None:
    profile = profile_for(variant)
    for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF):
        assert evaluate(profile, "personality", persona) == ALLOW
    for persona in (0x0040000, 0x0400000, 0x0200000, 0x0008 | 0x0040000):
        # ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, ADDR_COMPAT_LAYOUT
        assert evaluate(profile, "personality", persona) == EPERM


def test_read_only_is_workspace_write_without_chown_and_xattr_writes() -> None:
    read_only = allowed_syscalls("read-only")
    workspace_write = allowed_syscalls("workspace-write")
    assert read_only <= workspace_write
    assert workspace_write - read_only == set(CHOWN_AND_XATTR_WRITES)
    assert {"getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr"} <= read_only


@pytest.mark.parametrize("variant", RESTRICTED)
def test_restricted_allows_only_what_docker_allows_without_capabilities(variant: str) -> None:
    docker_without_capabilities = {
        *seccomp.DOCKER_UNCONDITIONAL,
        *seccomp.DOCKER_ARCH_SPECIFIC,
        # allowed by Docker under argument checks, compared call by call below
        "socket",
        "personality",
        "clone",
    }
    assert sorted(allowed_syscalls(variant) - docker_without_capabilities) == []
    assert allowed_syscalls(variant) <= allowed_syscalls("danger-full-access")
    capability_gated = {
        name for names in seccomp.DOCKER_CAPABILITY_GATED.values() for name in names
    }
    # clone without namespace flags is allowed under an argument check, not by CAP_SYS_ADMIN.
    assert sorted(allowed_syscalls(variant) & capability_gated) == ["clone"]


@pytest.mark.parametrize("variant", RESTRICTED)
def test_every_argument_checked_call_restricted_allows_docker_allows(variant: str) -> None:
    restricted, docker = profile_for(variant), profile_for("danger-full-access")
    flag_samples = [0, SIGCHLD, PTHREAD_CREATE_FLAGS, *NAMESPACE_FLAGS]
    calls = [
        *(
            ("socket", (family, sock_type, protocol))
            for family, sock_type, protocol in itertools.product(
                range(47), (1, 2, 3, 5, 10, SOCK_STREAM | SOCK_CLOEXEC), (0, 1, 4, 6, 9, 17)
            )
        ),
        *(("socketpair", (family, SOCK_STREAM, 0)) for family in range(47)),
        *(("clone", (flags,)) for flags in flag_samples),
        *(("personality", (persona,)) for persona in (0, 8, 0x20000, 0x40000, 0xFFFFFFFF)),
    ]
    for name, args in calls:
        if evaluate(restricted, name, *args) == ALLOW:
            assert evaluate(docker, name, *args) == ALLOW, (name, args)


# ---------------------------------------------------------------------------
# danger-full-access: Docker's default for Docker's default capabilities.
# ---------------------------------------------------------------------------


def test_danger_full_access_is_dockers_default_for_default_capabilities() -> None:
    allowed = allowed_syscalls("danger-full-access")
    assert {"ptrace", "process_vm_readv", "process_vm_writev", "chroot"} <= allowed
    assert {"socketcall", "socketpair", "modify_ldt", "name_to_handle_at", "adjtimex"} <= allowed
    assert set(seccomp.DOCKER_UNCONDITIONAL) <= allowed
    # clone is also allowed under an argument check, ptrace & co. by Docker's kernel >= 4.8 rule.
    allowed_otherwise = {"clone", *seccomp.DOCKER_MIN_KERNEL_4_8}
    for capability, names in seccomp.DOCKER_CAPABILITY_GATED.items():
        if capability not in seccomp.DOCKER_DEFAULT_CAPABILITIES:
            assert not set(names) & (allowed - allowed_otherwise), capability
    assert {"mount", "kexec_load", "kexec_file_load", "unshare", "setns", "bpf"} <= (
        blocked_syscalls("danger-full-access")
    )


@pytest.mark.parametrize(
    ("family", "sock_type", "expected"),
    [
        (AF_INET, SOCK_RAW, ALLOW),  # CAP_NET_RAW is a Docker default
        (AF_PACKET, SOCK_RAW, ALLOW),
        (AF_NETLINK, SOCK_RAW, ALLOW),
        (AF_BLUETOOTH, SOCK_STREAM, ALLOW),
        (AF_VSOCK, SOCK_STREAM, EPERM),
        (AF_ALG, SOCK_SEQPACKET, EPERM),
        (12, SOCK_STREAM, EPERM),  # AF_DECnet, removed from the kernel
        (46, SOCK_STREAM, EPERM),
    ],
)
def test_danger_full_access_socket_rules_match_docker(
    family: int, sock_type: int, expected: tuple[str, int]
) -> None:
    assert evaluate(profile_for("danger-full-access"), "socket", family, sock_type, 0) == expected


def test_docker_socket_domains_render_as_a_range_and_equalities() -> None:
    socket_rules = [
        rule
        for rule in profile_for("danger-full-access")["syscalls"]
        if rule["names"] == ["socket"]
    ]
    first = socket_rules[0]["args"]
    assert first == [{"index": 0, "op": "SCMP_CMP_LT", "value": 12, "valueTwo": 0}]
    equalities = {rule["args"][0]["value"] for rule in socket_rules[1:]}
    assert equalities == set(seccomp.DOCKER_SOCKET_DOMAINS) - set(range(1, 12))
    assert not {AF_ALG, AF_VSOCK} & set(seccomp.DOCKER_SOCKET_DOMAINS)


def test_blocked_and_allowed_partition_the_known_names() -> None:
    known = seccomp.known_syscalls()
    for variant in VARIANTS:
        assert blocked_syscalls(variant) | allowed_syscalls(variant) >= known
        assert not blocked_syscalls(variant) & allowed_syscalls(variant)
