"""Escape attempts, run INSIDE the sandbox by the security tests.

Each attempt prints one JSON line: {"name", "ok" (the operation succeeded),
"errno", "detail"}. The tests on the host decide what the sandbox must have
refused, and check that it refused for the right reason (the errno), not by
accident. Only the standard library: the session image's python3 runs this.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import stat
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 system call numbers
SYS = {
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "bpf": 321,
    "io_uring_setup": 425,
    "userfaultfd": 323,
    "perf_event_open": 298,
    "ptrace": 101,
    "setns": 308,
    "unshare": 272,
    "mount": 165,
    "chroot": 161,
    "process_vm_readv": 310,
    "kexec_load": 246,
    "init_module": 175,
    "pivot_root": 155,
    "open_by_handle_at": 304,
}
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PTRACE_ATTACH = 16


def report(name: str, ok: bool, err: int = 0, detail: str = "") -> None:
    print(
        json.dumps(
            {
                "name": name,
                "ok": ok,
                "errno": err,
                "errname": errno.errorcode.get(err, ""),
                "detail": detail,
            }
        )
    )
    sys.stdout.flush()


def syscall(name: str, *args: int) -> None:
    ctypes.set_errno(0)
    result = libc.syscall(SYS[name], *[ctypes.c_long(a) for a in args])
    err = ctypes.get_errno()
    report(name, result >= 0, 0 if result >= 0 else err)


def attempt(name: str, action) -> None:  # type: ignore[no-untyped-def]
    try:
        detail = action()
    except OSError as exc:
        report(name, False, exc.errno or 0, str(exc))
    else:
        report(name, True, 0, str(detail or ""))


def ptrace_other() -> None:
    child = os.fork()
    if child == 0:
        time.sleep(5)
        os._exit(0)
    ctypes.set_errno(0)
    result = libc.ptrace(ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(child), None, None)
    err = ctypes.get_errno()
    report("ptrace-attach", result == 0, 0 if result == 0 else err)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)


def write_file(path: str) -> str:
    with open(path, "w") as handle:
        handle.write("x")
    return path


def write_in_dir(directory: str, name: str) -> str:
    os.makedirs(directory, exist_ok=True)
    return write_file(os.path.join(directory, name))


def read_file(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read(64).decode("utf-8", "replace")


def raw_socket(family: int, kind: int, proto: int) -> str:
    sock = socket.socket(family, kind, proto)
    sock.close()
    return "created"


def loopback_server() -> str:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=2)
    conn, _ = server.accept()
    client.sendall(b"ping")
    data = conn.recv(4)
    for s in (client, conn, server):
        s.close()
    return data.decode()


def outside_connect() -> str:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is never routed: with only `lo` this must fail at once
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(("192.0.2.1", 80))
    finally:
        sock.close()
    return "connected"


def capabilities() -> str:
    for line in read_file_all("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            value = int(line.split()[1], 16)
            if value:
                raise PermissionError(errno.EEXIST, f"effective capabilities {value:#x}")
            return "0"
    return "?"


def read_file_all(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else "all"
    workspace = os.getcwd()
    if target in ("all", "syscalls"):
        ptrace_other()
        syscall("mount", 0, 0, 0, 0, 0)
        attempt("mount-tmpfs", lambda: _mount_tmpfs())
        syscall("unshare", CLONE_NEWUSER)
        report_unshare("unshare-net", CLONE_NEWNET)
        report_unshare("unshare-mount", CLONE_NEWNS)
        attempt("setns", lambda: _setns())
        attempt("chroot", lambda: os.chroot("/tmp"))
        for name in (
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "io_uring_setup",
            "userfaultfd",
            "perf_event_open",
            "process_vm_readv",
            "kexec_load",
            "init_module",
            "pivot_root",
            "open_by_handle_at",
        ):
            syscall(name, 0, 0, 0, 0, 0)
        attempt(
            "mknod", lambda: os.mknod("/tmp/harness-null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        )
        attempt(
            "raw-socket", lambda: raw_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        )
        attempt("packet-socket", lambda: raw_socket(17, socket.SOCK_RAW, 0))
        attempt("vsock-socket", lambda: raw_socket(40, socket.SOCK_STREAM, 0))
        attempt("alg-socket", lambda: raw_socket(38, socket.SOCK_SEQPACKET, 0))
        attempt("proc-sys-write", lambda: write_file("/proc/sys/kernel/hostname"))
        attempt("sysrq-trigger", lambda: write_file("/proc/sysrq-trigger"))
        attempt("kmsg", lambda: read_file("/dev/kmsg"))
        attempt("capabilities", capabilities)
    if target in ("all", "host"):
        for path in (
            "/var/run/docker.sock",
            "/run/docker.sock",
            "/run/podman/podman.sock",
            "/run/containerd/containerd.sock",
        ):
            attempt(f"engine-socket:{path}", lambda p=path: str(os.stat(p).st_mode))
        attempt("symlink-to-host", lambda: read_file(os.path.join(workspace, "planted-link")))
        report(
            "host-env-secret",
            "AWS_SECRET_ACCESS_KEY" in os.environ,
            0,
            os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        )
        report("host-home", os.path.exists("/root/.ssh") or os.path.exists("/root/.aws"), 0)
    if target in ("all", "files"):
        attempt(
            "write-workspace", lambda: write_file(os.path.join(workspace, "written-inside.txt"))
        )
        attempt("write-root", lambda: write_file("/harness-root-test"))
        attempt("write-etc", lambda: write_file("/etc/harness-test"))
        attempt("write-tmp", lambda: write_file("/tmp/harness-test"))
        attempt("write-home", lambda: write_file(os.path.expanduser("~/harness-test")))
        attempt(
            "write-git-hooks",
            lambda: write_file(os.path.join(workspace, ".git", "hooks", "pre-commit")),
        )
        attempt("write-git-config", lambda: write_file(os.path.join(workspace, ".git", "config")))
        attempt(
            "write-harness-dir",
            lambda: write_in_dir(os.path.join(workspace, ".harness"), "config.toml"),
        )
        attempt(
            "write-outside",
            lambda: write_file(os.path.join(os.path.dirname(workspace), "outside.txt")),
        )
        attempt("dev-null", lambda: write_file("/dev/null"))
        attempt("dev-shm", lambda: write_file("/dev/shm/harness-test"))
    if target in ("all", "network", "network-isolated"):
        report("interfaces", True, 0, ",".join(sorted(os.listdir("/sys/class/net"))))
        attempt("inet-socket", lambda: raw_socket(socket.AF_INET, socket.SOCK_STREAM, 0))
        attempt("inet6-socket", lambda: raw_socket(socket.AF_INET6, socket.SOCK_STREAM, 0))
        attempt("udp-socket", lambda: raw_socket(socket.AF_INET, socket.SOCK_DGRAM, 0))
        attempt("loopback-server", loopback_server)
        attempt("unix-socketpair", lambda: str(len(socket.socketpair())))
    if target in ("all", "network-isolated"):
        # only where the sandbox has nothing but `lo`: no packet can leave, so nothing is sent
        attempt("outside-connect", outside_connect)
    if target == "forkbomb":
        forkbomb()
    if target == "memory":
        memory()


def report_unshare(name: str, flag: int) -> None:
    ctypes.set_errno(0)
    result = libc.unshare(ctypes.c_int(flag))
    err = ctypes.get_errno()
    report(name, result == 0, 0 if result == 0 else err)


def _mount_tmpfs() -> str:
    ctypes.set_errno(0)
    result = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", ctypes.c_ulong(0), None)
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "mounted"


def _setns() -> str:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        ctypes.set_errno(0)
        if libc.setns(ctypes.c_int(fd), ctypes.c_int(0)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return "joined"


def forkbomb() -> None:
    """Fork until the kernel says no; report how many and with which errno, then clean up."""
    children = []
    failure = 0
    try:
        for _ in range(100_000):
            try:
                pid = os.fork()
            except OSError as exc:
                failure = exc.errno or 0
                break
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            children.append(pid)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    report("forkbomb", failure == 0, failure, str(len(children)))


def memory() -> None:
    size = int(os.environ.get("ALLOCATE_BYTES", str(6 << 30)))
    report("memory-start", True, 0, str(size))
    block = bytearray(size)
    for index in range(0, size, 4096):
        block[index] = 1
    report("memory-allocated", True, 0, str(size))


if __name__ == "__main__":
    main()
