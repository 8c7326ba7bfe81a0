#!/usr/bin/env python3
"""harness-sh: the session's $SHELL inside the sandbox. Every command asks the host first.

Mounted read-only into the sandbox and run by the image's python3; imports
nothing from harness. Agents run commands as `$SHELL -c 'CMD'`; this asks
the session's gateway on the host (a unix socket mounted read-only), then:

  allowed   → runs CMD with /bin/bash, exit code passes through;
  denied    → exit 126, the reason and the human's feedback on stderr, so the agent adapts;
  refused by the sandbox (read-only file system, no network) under on-request
            → asks to retry outside the sandbox; once approved, it runs in a sibling
              sandbox with the escalated plan and its output comes back here.

    harness-sh -c CMD [ARG...]        run CMD through approval
    harness-sh --escalate [--justification TEXT] -c CMD
    harness-sh --check -c CMD         only ask (the interactive bash hook uses this)
    harness-sh                        an interactive bash whose every line is checked

The sandbox enforces the plan whatever the gateway says: this is defence in
depth, never the only barrier. No gateway reachable means no (exit 126).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from typing import Any

HEAD = struct.Struct(">I")
FRAME = struct.Struct(">BI")
STDOUT, STDERR, EXIT = 2, 3, 4
DENIED = 126
BASH = "/bin/bash"
RCFILE = "/opt/harness/bashrc"
# what tools print when the sandbox, not the command, said no
SANDBOX_REFUSALS = (
    b"Read-only file system",
    b"Network is unreachable",
    b"Could not resolve host",
    b"Temporary failure in name resolution",
    b"Name or service not known",
    b"getaddrinfo failed",
    b"No route to host",
)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the gateway closed the connection")
        data += chunk
    return data


def _ask(message: dict[str, Any]) -> tuple[dict[str, Any], socket.socket]:
    path = os.environ.get("HARNESS_GATEWAY", "/run/harness-gateway/gateway.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(None)
    sock.connect(path)
    data = json.dumps(
        {**message, "op": "run", "token": os.environ.get("HARNESS_GATEWAY_TOKEN", "")}
    ).encode()
    sock.sendall(HEAD.pack(len(data)) + data)
    (length,) = HEAD.unpack(_read_exact(sock, HEAD.size))
    if length > 65536:
        raise OSError("oversized answer")
    return json.loads(_read_exact(sock, length)), sock


def _deny(answer: dict[str, Any]) -> int:
    reason = answer.get("reason") or "denied"
    sys.stderr.write(f"harness: denied ({answer.get('approval_id', '-')}): {reason}\n")
    if answer.get("feedback"):
        sys.stderr.write(f"harness: feedback: {answer['feedback']}\n")
    return DENIED


def _stream_escalated(sock: socket.socket) -> int:
    """Relay the sibling sandbox's output until its exit code arrives."""
    while True:
        kind, length = FRAME.unpack(_read_exact(sock, FRAME.size))
        payload = _read_exact(sock, length) if length else b""
        if kind == STDOUT:
            os.write(1, payload)
        elif kind == STDERR:
            os.write(2, payload)
        elif kind == EXIT:
            return int(payload.decode() or 125)


def request(
    command: str, *, escalate: bool, justification: str | None, after_denial: bool = False
) -> tuple[int | None, socket.socket | None, dict[str, Any]]:
    """Ask the gateway. Returns (exit code if done here, socket if escalated output follows, answer)."""
    try:
        answer, sock = _ask(
            {
                "shell": command,
                "cwd": os.getcwd(),
                "escalate": escalate,
                "justification": justification,
                "after_denial": after_denial,
            }
        )
    except (OSError, ValueError) as exc:
        sys.stderr.write(
            f"harness: the approval gateway is not reachable ({exc}); nothing runs without it\n"
        )
        return DENIED, None, {}
    if answer.get("decision") != "allow":
        sock.close()
        return _deny(answer), None, answer
    if answer.get("escalated"):
        return None, sock, answer
    sock.close()
    return None, None, answer


def run(command: str, args: list[str], *, escalate: bool, justification: str | None) -> int:
    code, sock, _ = request(command, escalate=escalate, justification=justification)
    if code is not None:
        return code
    if sock is not None:
        with sock:
            return _stream_escalated(sock)
    child = subprocess.Popen([BASH, "-c", command, *args], stderr=subprocess.PIPE)
    refused = False
    assert child.stderr is not None  # noqa: S101
    for line in iter(child.stderr.readline, b""):
        os.write(2, line)
        refused = refused or any(marker in line for marker in SANDBOX_REFUSALS)
    code = child.wait()
    if code != 0 and refused and os.environ.get("HARNESS_APPROVAL_POLICY") == "on-request":
        sys.stderr.write(
            "harness: the sandbox refused this; asking to retry it outside the sandbox\n"
        )
        retry, sock, _ = request(command, escalate=False, justification=None, after_denial=True)
        if retry is not None:
            return retry
        if sock is not None:
            with sock:
                return _stream_escalated(sock)
    return code


def main(argv: list[str]) -> int:
    escalate = check_only = False
    justification = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--escalate":
            escalate = True
        elif arg == "--check":
            check_only = True
        elif arg == "--justification" and index + 1 < len(argv):
            index += 1
            justification = argv[index]
        elif arg.startswith("-") and "c" in arg[1:] and not arg.startswith("--"):
            # -c, -lc, -ec, ...: the next word is the command, the rest its $0, $1, ...
            if index + 1 >= len(argv):
                sys.stderr.write("harness-sh: -c needs a command\n")
                return 2
            command = argv[index + 1]
            if check_only:
                code, sock, _ = request(command, escalate=False, justification=None)
                if sock is not None:
                    sock.close()
                return code if code is not None else 0
            return run(command, argv[index + 2 :], escalate=escalate, justification=justification)
        elif arg in ("-l", "-i", "--login"):
            pass
        else:
            break
        index += 1
    # no command: an interactive bash whose lines are checked by the hook in the rcfile
    os.execv(BASH, [BASH, "--rcfile", RCFILE, "-i"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
