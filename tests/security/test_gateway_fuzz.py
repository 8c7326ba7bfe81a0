"""The session's gateway attacked from inside a real sandbox, on Docker and on Podman.

A script in the workspace, run in the sandbox with `harness exec`, throws oversized,
malformed, slow, concurrent and wrongly authenticated requests at
/run/harness-gateway/gateway.sock. Afterwards the session must work as before: harness-sh
runs an allowed command, a command forbidden by a managed rule is refused with exit 126,
the gateway process is the one that started and it logged no crash. The sandbox can
neither write to the gateway's folder (mounted read-only) nor reach the host-only control
socket (not mounted at all).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.paths import Locations
from harness.procs import ProcessId

Harness = Callable[..., subprocess.CompletedProcess[str]]

# Runs on the image's own python3; prints one JSON object with everything it saw.
ATTACK = r'''
import errno
import json
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

PATH = os.environ["HARNESS_GATEWAY"]
TOKEN = os.environ["HARNESS_GATEWAY_TOKEN"]
SHELL = os.environ["SHELL"]
CONTROL = sys.argv[1]
HEAD = struct.Struct(">I")
LIMIT = 64 * 1024
CWD = os.getcwd()


def frame(body):
    return HEAD.pack(len(body)) + body


def as_json(message):
    return frame(json.dumps(message).encode())


def run(**fields):
    return {"op": "run", "token": TOKEN, "cwd": CWD, **fields}


def recv_exact(sock, size):
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data
        data += chunk
    return data


def read_reply(sock):
    """{"reply": ...} or {"closed": True}, or {"hang": True} when the gateway neither answers
    nor hangs up within the socket's timeout."""
    try:
        head = recv_exact(sock, 4)
        if len(head) < 4:
            return {"closed": True}
        (length,) = HEAD.unpack(head)
        if length > LIMIT:
            return {"oversized-reply": length}
        body = recv_exact(sock, length)
        if len(body) < length:
            return {"closed": True, "torn": True}
        return {"reply": json.loads(body)}
    except socket.timeout:
        return {"hang": True}


def exchange(data, half_close=False, timeout=30.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(PATH)
    sock.settimeout(timeout)
    try:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_reply(sock)
    finally:
        sock.close()


def together(count, work):
    results = [None] * count
    barrier = threading.Barrier(count, timeout=60)

    def client(index):
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def slow(interval=1.0, limit=60.0):
    """One byte per `interval` until the gateway speaks or hangs up."""
    data = as_json(run(shell="echo slow"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(PATH)
    sock.settimeout(limit)
    started = time.monotonic()
    sent = 0
    try:
        for byte in data:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            if select.select([sock], [], [], interval)[0]:
                break
            if time.monotonic() - started > limit:
                return {"kept": True, "sent": sent}
        outcome = read_reply(sock)
        outcome["elapsed"] = round(time.monotonic() - started, 2)
        outcome["sent"] = sent
        return outcome
    finally:
        sock.close()


def refill():
    """Let the rate limit's bucket fill up again (burst 60 at 20 per second)."""
    time.sleep(3.5)


out = {}

# -- slow clients, in the background while the rest goes on
slow_results = []
slow_threads = [
    threading.Thread(target=lambda: slow_results.append(slow())) for _ in range(3)
]
for thread in slow_threads:
    thread.start()

# -- malformed, oversized, wrongly typed, wrongly authenticated
same_length = ("0" if TOKEN[0] != "0" else "1") + TOKEN[1:]
attacks = {
    "length-over-limit": HEAD.pack(LIMIT + 1) + b"x" * (1 << 20),
    "length-max-u32": HEAD.pack(0xFFFFFFFF) + b"x" * 1024,
    "body-over-limit": as_json(run(argv=["echo"] + ["x" * 100] * 2000)),
    "zero-length": HEAD.pack(0),
    "not-json": frame(b"GET / HTTP/1.1\r\n\r\n"),
    "not-utf8": frame(b"\xff\xfe\xfd"),
    "json-array": frame(b'["run"]'),
    "json-string": frame(b'"run"'),
    "json-null": frame(b"null"),
    "token-int": as_json(run(shell="echo x", token=1)),
    "token-missing": as_json({k: v for k, v in run(shell="echo x").items() if k != "token"}),
    "token-wrong-same-length": as_json(run(shell="echo x", token=same_length)),
    "token-empty": as_json(run(shell="echo x", token="")),
    "op-unknown": as_json(run(shell="echo x", op="exec")),
    "op-console": as_json({"op": "console", "token": TOKEN}),
    "op-network": as_json({"op": "network", "token": TOKEN, "host": "example.com", "port": 443}),
    "answer": as_json({"type": "answer", "id": "x-1", "choice": "approve-session", "token": TOKEN}),
    "argv-str": as_json(run(argv="echo x")),
    "argv-ints": as_json(run(argv=[1, 2])),
    "argv-empty": as_json(run(argv=[])),
    "argv-huge": as_json(run(argv=["true"] * 4097)),
    "both-argv-and-shell": as_json(run(argv=["true"], shell="true")),
    "shell-list": as_json(run(shell=["echo", "x"])),
    "shell-nul": as_json(run(shell="echo x\x00; rm -rf /")),
    "argv-nul": as_json(run(argv=["echo", "x\x00y"])),
    "cwd-nul": as_json(run(shell="echo x", cwd=CWD + "\x00")),
    "cwd-relative": as_json(run(shell="echo x", cwd="relative/dir")),
    "cwd-int": as_json(run(shell="echo x", cwd=0)),
    "escalate-str": as_json(run(shell="echo x", escalate="yes")),
    "justification-list": as_json(run(shell="echo x", justification=["why"])),
    "deeply-nested-json": frame(b'{"op": "run", "argv": ' + b"[" * 50000),
    "token-lone-surrogate": frame(b'{"op": "run", "token": "\\ud800", "shell": "echo x", "cwd": "/"}'),
}
truncated = {
    "nothing": b"",
    "half-a-length": b"\x00\x00",
    "length-only": HEAD.pack(100),
    "body-cut-short": HEAD.pack(100) + b'{"op": "run", "tok',
}
out["attacks"] = {name: exchange(data) for name, data in attacks.items()}
out["truncated"] = {name: exchange(data, half_close=True) for name, data in truncated.items()}

# -- concurrent: 50 valid requests at once, allowed and forbidden mixed
refill()
mix = [("shell", "echo hi"), ("argv", ["rm", "-rf", "/"]), ("shell", "ls -la"), ("shell", "rm -rf /")]


def mixed(index):
    kind, command = mix[index % len(mix)]
    return exchange(as_json(run(**{kind: command})))


out["concurrent"] = together(50, mixed)

# -- a flood: 200 requests from 40 clients at once
refill()
flood = []
flood_lock = threading.Lock()


def flooder(index):
    for n in range(5):
        outcome = mixed(index * 5 + n)
        with flood_lock:
            flood.append((index * 5 + n, outcome))


together(40, flooder)
out["flood"] = flood

for thread in slow_threads:
    thread.join(120)
out["slow"] = slow_results

# -- the session still works: allowed runs, forbidden is refused, a wrong token is refused
refill()


def shell(command, **env):
    done = subprocess.run(
        [SHELL, "-c", command],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


out["shell_ok"] = shell("echo ok")
out["shell_forbidden"] = shell("rm -rf /")
out["shell_wrong_token"] = shell("echo ok", HARNESS_GATEWAY_TOKEN=same_length)

# -- the gateway folder is read-only, the control socket is out of reach


def attempt(action):
    try:
        action()
    except OSError as error:
        return {"ok": False, "errno": error.errno, "errname": errno.errorcode.get(error.errno)}
    return {"ok": True}


folder = os.path.dirname(PATH)
fs = {
    "create": attempt(lambda: open(os.path.join(folder, "planted"), "w").close()),
    "mkdir": attempt(lambda: os.mkdir(os.path.join(folder, "dir"))),
    "unlink": attempt(lambda: os.unlink(PATH)),
    "rename": attempt(lambda: os.rename(PATH, os.path.join(folder, "moved.sock"))),
    "chmod": attempt(lambda: os.chmod(PATH, 0o600)),
    "symlink": attempt(lambda: os.symlink("/tmp", os.path.join(folder, "link"))),
    "rmdir": attempt(lambda: os.rmdir(folder)),
    "listing": sorted(os.listdir(folder)),
    "control_exists": os.path.lexists(CONTROL),
    "control_dir_exists": os.path.lexists(os.path.dirname(CONTROL)),
}
with open("/proc/self/mountinfo") as mounts:
    for line in mounts:
        fields = line.split()
        if fields[4] == folder:
            fs["mount_options"] = fields[5].split(",")
with open("/proc/net/unix") as sockets:
    fs["control_in_proc_net_unix"] = CONTROL in sockets.read()
try:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(CONTROL)
    fs["control_connect"] = {"ok": True}
    sock.close()
except OSError as error:
    fs["control_connect"] = {"ok": False, "errname": errno.errorcode.get(error.errno)}
sockets_found = []
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for name in files:
        full = os.path.join(root, name)
        try:
            if stat.S_ISSOCK(os.lstat(full).st_mode):
                sockets_found.append(full)
        except OSError:
            pass
fs["sockets"] = sorted(sockets_found)
out["fs"] = fs
print(json.dumps(out))
'''


def _bad_request(outcome: dict[str, Any]) -> bool:
    reply = outcome.get("reply")
    return (
        isinstance(reply, dict)
        and reply.get("decision") == "deny"
        and str(reply.get("reason")).startswith("bad request")
    )


def _refused_or_closed(outcome: dict[str, Any]) -> bool:
    return outcome.get("closed") is True or _bad_request(outcome)


def _right_answer(index: int, outcome: dict[str, Any] | None) -> bool:
    """The mix alternates an allowed and a forbidden command."""
    assert outcome is not None
    reply = outcome.get("reply")
    if not isinstance(reply, dict):
        return False
    if index % 2 == 0:
        return reply.get("decision") == "allow"
    return reply.get("decision") == "deny" and "forbidden rule 'rm -rf /'" in str(
        reply.get("reason")
    )


def test_the_gateway_survives_attacks_from_inside_the_sandbox(
    engine: str,
    harness_cli: Harness,
    harness_env: dict[str, str],
    workspace: Path,
    tmp_path: Path,
) -> None:
    managed = tmp_path / "managed.toml"
    managed.write_text('[[prefix_rules]]\npattern = "rm -rf /"\naction = "forbidden"\n')
    env = {**harness_env, "HARNESS_MANAGED_CONFIG": str(managed)}
    (workspace / "gateway_attack.py").write_text(ATTACK)
    up = harness_cli("up", "-d", "--backend", engine, "--profile", "auto", env=env)
    assert up.returncode == 0, up.stderr
    session = up.stdout.split()[-1]
    try:
        locations = Locations.from_environment(env)
        record = json.loads((locations.sessions_dir / f"{session}.json").read_text())
        control = record["gateway_control"]
        assert Path(control).exists()
        daemon = json.loads((locations.state_dir / "gateway" / f"{session}.json").read_text())
        gateway = ProcessId.from_json(daemon["process"])
        assert gateway is not None
        assert gateway.alive()

        result = harness_cli(
            "exec",
            "--session",
            session,
            "--",
            "python3",
            "gateway_attack.py",
            control,
            env=env,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])

        # every malformed request: a refusal or a closed connection, never a hang or an allow
        for group in ("attacks", "truncated"):
            for name, outcome in seen[group].items():
                assert _refused_or_closed(outcome), f"{group}/{name}: {outcome}"
        for name in (
            "token-int",
            "token-missing",
            "token-wrong-same-length",
            "token-empty",
            "op-console",
            "op-network",
            "argv-huge",
            "shell-nul",
            "argv-nul",
            "cwd-nul",
            "cwd-relative",
        ):
            assert _bad_request(seen["attacks"][name]), f"{name}: {seen['attacks'][name]}"
        assert "token" in seen["attacks"]["token-wrong-same-length"]["reply"]["reason"]

        # 50 at once: every one gets its own right answer
        concurrent = seen["concurrent"]
        assert len(concurrent) == 50
        wrong = [(i, o) for i, o in enumerate(concurrent) if not _right_answer(i, o)]
        assert not wrong, wrong[:5]
        ids = {o["reply"]["approval_id"] for o in concurrent}
        assert len(ids) == 50

        # the flood: the rate limit says no to some; none is answered wrongly
        flood = seen["flood"]
        assert len(flood) == 200
        limited = [o for _, o in flood if "rate limit" in str(o.get("reply", {}).get("reason"))]
        assert limited, "200 requests at once never hit the rate limit"
        for index, outcome in flood:
            reply = outcome.get("reply")
            assert isinstance(reply, dict), outcome
            if "approval_id" in reply:
                assert _right_answer(index, outcome), (index, outcome)
            else:
                assert reply["decision"] == "deny", outcome

        # slow clients (1 byte a second) are dropped, never kept
        assert len(seen["slow"]) == 3
        for outcome in seen["slow"]:
            assert not outcome.get("kept"), outcome
            assert _refused_or_closed(outcome), outcome
            assert outcome["elapsed"] < 2 * 10 + 3, outcome

        # afterwards the session works as before
        assert seen["shell_ok"] == {"code": 0, "stdout": "ok\n", "stderr": ""}
        assert seen["shell_forbidden"]["code"] == 126, seen["shell_forbidden"]
        assert "forbidden rule 'rm -rf /'" in seen["shell_forbidden"]["stderr"]
        assert seen["shell_wrong_token"]["code"] == 126, seen["shell_wrong_token"]
        assert "token" in seen["shell_wrong_token"]["stderr"]

        # the gateway folder is read-only; the control socket is nowhere in the sandbox
        fs = seen["fs"]
        for action in ("create", "mkdir", "unlink", "rename", "chmod", "symlink", "rmdir"):
            assert fs[action]["ok"] is False, f"{action} succeeded: {fs}"
        for action in ("create", "mkdir", "unlink", "rename", "chmod", "symlink"):
            assert fs[action]["errname"] == "EROFS", f"{action}: {fs[action]}"
        assert "ro" in fs["mount_options"]
        assert fs["listing"] == ["gateway.sock"]
        assert fs["control_exists"] is False
        assert fs["control_dir_exists"] is False
        assert fs["control_in_proc_net_unix"] is False
        assert fs["control_connect"] == {"ok": False, "errname": "ENOENT"}
        assert control not in fs["sockets"]
        assert not [s for s in fs["sockets"] if s.endswith(".control")], fs["sockets"]

        # the host side: the same gateway process, alive, and it never crashed
        assert gateway.alive(), "the gateway process died"
        log = (locations.state_dir / "gateway" / f"{session}.log").read_text()
        assert "Traceback" not in log, f"the gateway logged unhandled exceptions:\n{log[-4000:]}"
    finally:
        down = harness_cli("down", session, env=env)
        assert down.returncode == 0, down.stderr
