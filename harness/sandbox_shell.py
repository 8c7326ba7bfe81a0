#!/bin/sh
# fmt: off
''''command -v python3 >/dev/null 2>&1 && exec python3 -I -S "$0" "$@"; echo "harness-sh: this image has no python3, which harness-sh needs to ask the host before running anything, so nothing ran; use an image with python3 (harness's default image has it)" >&2; exit 126 #
harness-sh: the session's $SHELL inside the sandbox. Every command asks the host first.

A file that is both a POSIX sh script and Python: /bin/sh runs the line above, which
hands the file to the image's python3, or refuses (exit 126) in an image without one.
Mounted read-only into the sandbox; imports nothing from harness.

Agents run commands as `$SHELL -c 'CMD'`; this asks the session's gateway on the
host (a unix socket mounted read-only), then:

  allowed   → runs CMD with /bin/bash (/bin/sh without bash), exit code passes through;
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
'''
# fmt: on

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # the public modules describe the same names
    import signal as signals
    import socket as sockets
    from collections.abc import Callable
    from json.encoder import encode_basestring_ascii as quote
    from typing import Any
else:
    # The C halves of signal, socket and json: harness-sh starts before every command an
    # agent runs, and the pure-Python wrappers (enum, re, typing) would cost more than the
    # rest of its run. Another Python than CPython takes the public modules.
    try:
        import _signal as signals
        import _socket as sockets
        from _json import encode_basestring_ascii as quote
    except ImportError:  # pragma: no cover - the images' python3 is CPython
        import signal as signals
        import socket as sockets
        from json.encoder import encode_basestring_ascii as quote

STDOUT, STDERR, EXIT = 2, 3, 4
MAX_ANSWER = 65536
DENIED = 126
BASH = "/bin/bash"
SH = "/bin/sh"  # runs -c commands in an image without bash
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
LONGEST_REFUSAL = max(len(marker) for marker in SANDBOX_REFUSALS)


# -- the wire: a 4-byte big-endian length, then one JSON object ----------------------------


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _StrictJSON:
    """What the C scanner reads from a decoder: standard JSON into plain dicts and lists."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _no_constant


def _raw_decoder() -> Callable[[str, int], tuple[Any, int]]:
    """`JSONDecoder.raw_decode`, from CPython's C scanner when it is there."""
    try:
        from _json import make_scanner
    except ImportError:  # pragma: no cover - as above
        from json import JSONDecoder

        return JSONDecoder(parse_constant=_no_constant).raw_decode
    scan = make_scanner(_StrictJSON)  # type: ignore[arg-type]  # a decoder's parsing attributes

    def raw_decode(text: str, index: int) -> tuple[Any, int]:
        try:
            return scan(text, index)
        except StopIteration as stop:
            raise ValueError(f"not JSON at character {stop.value}") from None

    return raw_decode


_raw_decode = _raw_decoder()


def encode(message: dict[str, str | bool | None]) -> bytes:
    """A flat object of strings, booleans and nulls (all harness-sh sends) as JSON."""
    fields = (f"{quote(key)}:{_literal(value)}" for key, value in message.items())
    return ("{" + ",".join(fields) + "}").encode()


def _literal(value: str | bool | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return quote(value)


def decode(data: bytes) -> dict[str, Any]:
    text = data.decode()
    value, end = _raw_decode(text, 0)
    if end != len(text) or not isinstance(value, dict):
        raise ValueError("the gateway's answer is not one JSON object")
    return value


def _read_exact(sock: sockets.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the gateway closed the connection")
        data += chunk
    return data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _ask(message: dict[str, str | bool | None]) -> tuple[dict[str, Any], sockets.socket]:
    path = os.environ.get("HARNESS_GATEWAY", "/run/harness-gateway/gateway.sock")
    sock = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    try:
        sock.connect(path)
        data = encode(
            {**message, "op": "run", "token": os.environ.get("HARNESS_GATEWAY_TOKEN", "")}
        )
        sock.sendall(len(data).to_bytes(4, "big") + data)
        length = int.from_bytes(_read_exact(sock, 4), "big")
        if length > MAX_ANSWER:
            raise OSError("oversized answer")
        return decode(_read_exact(sock, length)), sock
    except BaseException:
        sock.close()
        raise


def _deny(answer: dict[str, Any]) -> int:
    reason = answer.get("reason") or "denied"
    sys.stderr.write(f"harness: denied ({answer.get('approval_id', '-')}): {reason}\n")
    if answer.get("feedback"):
        sys.stderr.write(f"harness: feedback: {answer['feedback']}\n")
    return DENIED


def _stream_escalated(sock: sockets.socket) -> int:
    """Relay the sibling sandbox's output until its exit code arrives."""
    try:
        while True:
            head = _read_exact(sock, 5)
            kind, length = head[0], int.from_bytes(head[1:], "big")
            payload = _read_exact(sock, length) if length else b""
            if kind == STDOUT:
                _write_all(1, payload)
            elif kind == STDERR:
                _write_all(2, payload)
            elif kind == EXIT:
                return int(payload.decode() or 125)
    finally:
        sock.close()


def request(
    command: str, *, escalate: bool, justification: str | None, after_denial: bool = False
) -> tuple[int | None, sockets.socket | None, dict[str, Any]]:
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


# -- running the command here --------------------------------------------------------------


def run_here(command: str, args: list[str]) -> tuple[int, bool]:
    """`bash -c CMD ARGS`; its stderr relayed and watched. Returns (exit code, refused)."""
    read_end, write_end = os.pipe()
    # like system(3): ^C and ^\ are the command's to handle while harness-sh waits for it
    interrupt = signals.signal(signals.SIGINT, signals.SIG_IGN)
    quit_ = signals.signal(signals.SIGQUIT, signals.SIG_IGN)
    try:
        pid = os.fork()
        if pid == 0:
            _exec_child(command, args, read_end, write_end)
        os.close(write_end)
        with open(read_end, "rb", buffering=0, closefd=True) as errors:
            refused = _relay(errors.fileno())
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        signals.signal(signals.SIGINT, interrupt)
        signals.signal(signals.SIGQUIT, quit_)
    # killed by a signal: the shell's convention, 128 + its number
    return (128 - code if code < 0 else code), refused


def _exec_child(command: str, args: list[str], read_end: int, write_end: int) -> None:
    """In the forked child: nothing but exec, whatever happens."""
    try:
        os.close(read_end)
        os.dup2(write_end, 2)
        os.close(write_end)
        # python3 ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored across exec
        for number in (signals.SIGINT, signals.SIGQUIT, signals.SIGPIPE, signals.SIGXFSZ):
            signals.signal(number, signals.SIG_DFL)
        shell = BASH if os.access(BASH, os.X_OK) else SH
        os.execv(shell, [shell, "-c", command, *args])
    except OSError as error:
        os.write(2, f"harness-sh: cannot run {shell}: {error.strerror}\n".encode())
    finally:
        os._exit(127)


def _relay(fd: int) -> bool:
    """Copy the command's stderr to ours; True if it shows the sandbox refusing something."""
    refused = False
    relaying = True
    carry = b""
    while chunk := os.read(fd, 65536):
        if relaying:
            try:
                _write_all(2, chunk)
            except OSError:  # our stderr is gone: keep draining so that the command is not stuck
                relaying = False
        seen = carry + chunk
        refused = refused or any(marker in seen for marker in SANDBOX_REFUSALS)
        carry = seen[-LONGEST_REFUSAL:]
    return refused


def run(command: str, args: list[str], *, escalate: bool, justification: str | None) -> int:
    code, sock, _ = request(command, escalate=escalate, justification=justification)
    if code is not None:
        return code
    if sock is not None:
        return _stream_escalated(sock)
    code, refused = run_here(command, args)
    if code != 0 and refused and os.environ.get("HARNESS_APPROVAL_POLICY") == "on-request":
        sys.stderr.write(
            "harness: the sandbox refused this; asking to retry it outside the sandbox\n"
        )
        retry, sock, _ = request(command, escalate=False, justification=None, after_denial=True)
        if retry is not None:
            return retry
        if sock is not None:
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
    if not os.access(BASH, os.X_OK):
        sys.stderr.write(
            "harness-sh: the interactive shell needs bash in the image (each line is checked"
            " by a bash hook); run commands with `harness exec`, or use an image with bash\n"
        )
        return DENIED
    os.execv(BASH, [BASH, "--rcfile", RCFILE, "-i"])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
