"""harness-agent: runs commands inside a session's sandbox for `harness exec`.

This file is mounted read-only into the sandbox and run by the image's own
python3 as the session's keeper process; it never runs on the host and
imports nothing from harness. It listens on a unix socket in the sandbox's
own /run; the host reaches that socket through /proc/PID/root of the
sandbox, without following any link (see agent_client.py).

Why: `docker exec` asks the runtime to enter the container's namespaces
for every command (~100 ms here). The agent is already inside, so a command
costs a fork. It changes nothing about what the command may do: it runs with
the sandbox's own mounts, seccomp filter, capabilities and limits, exactly
like the agent itself. Any process in the sandbox could run the same command
directly, so the socket needs no credentials; the host treats what comes back
(output, exit code) as untrusted data.

Protocol, in frames of (kind: u8, length: u32 big-endian, payload):
  client → agent: REQUEST (JSON: argv, cwd, env, tty, rows, cols, stdin) first,
                  then STDIN data, EOF, RESIZE (rows, cols as u16 u16), SIGNAL (u8)
  agent → client: STDOUT, STDERR data, then EXIT (JSON: {"code": N}) or ERROR (text)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import termios
import threading
from typing import Any

REQUEST, STDIN, STDOUT, STDERR, EXIT, EOF, RESIZE, SIGNAL, ERROR = range(9)
HEAD = struct.Struct(">BI")
MAX_FRAME = 1 << 20
CHUNK = 65536


def read_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(conn: socket.socket) -> tuple[int | None, bytes]:
    head = read_exact(conn, HEAD.size)
    if head is None:
        return None, b""
    kind, length = HEAD.unpack(head)
    if length > MAX_FRAME:
        raise ValueError("frame too large")
    payload = read_exact(conn, length) if length else b""
    if payload is None:
        return None, b""
    return int(kind), payload


def send_frame(conn: socket.socket, lock: threading.Lock, kind: int, payload: bytes) -> None:
    with lock:
        conn.sendall(HEAD.pack(kind, len(payload)) + payload)


def set_size(fd: int, rows: int | None, cols: int | None) -> None:
    if rows and cols:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def exit_code(status: int) -> int:
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 255


def spawn(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Fork the command; return (pid, fds) where fds maps our end → its meaning."""
    argv = [str(a) for a in request["argv"]]
    env = {str(k): str(v) for k, v in request.get("env", {}).items()}
    cwd = str(request.get("cwd") or "/")
    if request.get("tty"):
        master, slave = os.openpty()
        set_size(slave, request.get("rows"), request.get("cols"))
        pid = os.fork()
        if pid == 0:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.close(master)
            if slave > 2:
                os.close(slave)
            run(argv, cwd, env)
        os.close(slave)
        return pid, {"stdin": master, "stdout": master, "stderr": None, "tty": True}
    stdin_w: int | None
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)  # its own group, so a signal reaches everything it started
        os.dup2(stdin_r, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (stdin_r, stdin_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        run(argv, cwd, env)
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)
    if not request.get("stdin"):
        os.close(stdin_w)
        stdin_w = None
    return pid, {"stdin": stdin_w, "stdout": out_r, "stderr": err_r, "tty": False}


def run(argv: list[str], cwd: str, env: dict[str, str]) -> None:
    try:
        os.chdir(cwd)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        os.write(2, (f"harness-agent: {argv[0]}: command not found\n").encode())
        os._exit(127)
    except OSError as exc:
        os.write(2, (f"harness-agent: {argv[0]}: {exc.strerror}\n").encode())
        os._exit(126)
    os._exit(127)


def _signal(pid: int, number: int) -> None:
    """To the command's process group (its session, with a tty); to the pid if that fails."""
    try:
        os.killpg(pid, number)
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, number)


def handle(conn: socket.socket) -> None:
    lock = threading.Lock()
    pid: int | None = None
    try:
        kind, payload = read_frame(conn)
        if kind != REQUEST:
            return
        request = json.loads(payload.decode("utf-8"))
        if not isinstance(request.get("argv"), list) or not request["argv"]:
            send_frame(conn, lock, ERROR, b"empty command")
            return
        pid, fds = spawn(request)
        outputs = {fds["stdout"]: STDOUT}
        if fds["stderr"] is not None:
            outputs[fds["stderr"]] = STDERR
        stdin = fds["stdin"]
        open_outputs = set(outputs)
        watching_client = True
        while open_outputs:
            readable: list[Any] = list(open_outputs) + ([conn] if watching_client else [])
            ready, _, _ = select.select(readable, [], [])
            for fd in ready:
                if fd is conn:
                    kind, data = read_frame(conn)
                    if kind is None:  # the client is gone: so is its command
                        _signal(pid, signal.SIGKILL)
                        watching_client = False
                    elif kind == STDIN and stdin is not None:
                        os.write(stdin, data)
                    elif kind == EOF and stdin is not None and not fds["tty"]:
                        os.close(stdin)
                        stdin = None
                    elif kind == RESIZE and fds["tty"]:
                        rows, cols = struct.unpack(">HH", data)
                        set_size(fds["stdout"], rows, cols)
                    elif kind == SIGNAL and data:
                        _signal(pid, data[0])
                    continue
                try:
                    data = os.read(fd, CHUNK)
                except OSError:  # a pty reports EIO when the last writer is gone
                    data = b""
                if not data:
                    open_outputs.discard(fd)
                    continue
                send_frame(conn, lock, outputs[fd], data)
        _, status = os.waitpid(pid, 0)
        pid = None
        send_frame(conn, lock, EXIT, json.dumps({"code": exit_code(status)}).encode())
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            send_frame(conn, lock, ERROR, str(exc).encode("utf-8", "replace"))
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        conn.close()


def _exit_now(*_: object) -> None:
    sys.exit(0)


def serve(path: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".new")
    os.chmod(path + ".new", 0o600)
    os.rename(path + ".new", path)  # the host never sees a half-made socket
    server.listen(64)
    signal.signal(signal.SIGTERM, _exit_now)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "/run/harness/agent.sock")
