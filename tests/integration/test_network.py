"""Network plans on the real engines. All traffic goes to servers these tests start on the
host's loopback; the sandbox reaches them only through the egress proxy, which resolves
test names (allowed.test, ...) to 127.0.0.1 through HARNESS_PROXY_RESOLVE."""

from __future__ import annotations

import http.server
import json
import signal
import socketserver
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

NAMES = (
    "allowed.test",
    "denied.test",
    "other.test",
    "x.wild.test",
    "api.corp.test",
    "secret.corp.test",
    "mismatch.test",
)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A plain HTTP server on 127.0.0.1 serving a folder (with a bare git repo in it)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_text("hello from the test server\n")
    source = tmp_path / "src"
    subprocess.run(["git", "init", "-q", str(source)], check=True)
    (source / "README").write_text("cloned through the proxy\n")
    subprocess.run(["git", "-C", str(source), "add", "README"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(source),
            "-c",
            "user.email=t@t",
            "-c",
            "user.name=t",
            "commit",
            "-qm",
            "one",
        ],
        check=True,
    )
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(source), str(root / "repo.git")], check=True
    )
    subprocess.run(["git", "-C", str(root / "repo.git"), "update-server-info"], check=True)

    def handler(*args: object) -> _Handler:
        return _Handler(*args, directory=str(root))  # type: ignore[arg-type]

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], root
    server.shutdown()
    server.server_close()


@pytest.fixture
def tls_web(tmp_path: Path, web: tuple[int, Path]) -> Iterator[tuple[int, Path]]:
    """The same folder over HTTPS, with a certificate for allowed.test from a test CA."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    cert = authority.issue_cert("allowed.test", "mismatch.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    _, root = web

    def handler(*args: object) -> _Handler:
        return _Handler(*args, directory=str(root))  # type: ignore[arg-type]

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    yield server.server_address[1], ca_file
    server.shutdown()
    server.server_close()


@pytest.fixture
def net_env(harness_env: dict[str, str]) -> dict[str, str]:
    return {**harness_env, "HARNESS_PROXY_RESOLVE": ",".join(f"{n}=127.0.0.1" for n in NAMES)}


ALLOW = (
    "--allow-domain",
    "allowed.test",
    "--deny-domain",
    "denied.test",
    "--allow-domain",
    "*.wild.test",
    "--allow-domain",
    "*.corp.test",
    "--deny-domain",
    "secret.corp.test",
    "--allow-domain",
    "denied.test",
)


def sandbox(
    harness_cli, engine: str, script: str, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return harness_cli(
        "run", "--backend", engine, "-a", "never", *extra, "--", "sh", "-c", script, env=env
    )


def test_none_means_only_loopback(engine: str, harness_cli, harness_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    script = (
        "ls /sys/class/net; "
        'python3 -c "import socket; s=socket.socket(); s.settimeout(2)\n'
        "try:\n s.connect(('127.0.0.1', 3128)); print('proxy reachable')\n"
        "except OSError as e: print('proxy', e.errno)\"; "
        "curl -sS -m 3 http://192.0.2.1/ 2>&1 | head -1; "
        'python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n'
        "try:\n s.sendto(b'x', ('192.0.2.1', 53)); print('udp sent')\n"
        "except OSError as e: print('udp', e.errno)\"; "
        "ping -c1 -W1 192.0.2.1 >/dev/null 2>&1 && echo ping-ok || echo ping-failed"
    )
    result = sandbox(harness_cli, engine, script, harness_env, "--network", "none")
    lines = result.stdout.splitlines()
    assert lines[0] == "lo"
    assert "proxy 111" in result.stdout  # ECONNREFUSED: nothing listens, nothing forwards
    assert "udp 101" in result.stdout  # ENETUNREACH
    assert "ping-failed" in result.stdout
    assert "proxy reachable" not in result.stdout


def test_allowlist_through_the_proxy(
    engine: str,
    harness_cli,
    net_env: dict[str, str],
    web: tuple[int, Path],
    harness_env: dict[str, str],
) -> None:  # type: ignore[no-untyped-def]
    port, _ = web
    script = f"""
ls /sys/class/net
echo "proxy=$HTTPS_PROXY"
curl -sS -m 10 http://allowed.test:{port}/hello.txt
curl -sS -m 10 -o /dev/null -w 'other %{{http_code}}\\n' http://other.test:{port}/hello.txt
curl -sS -m 10 -w '\\ndenied %{{http_code}}\\n' http://denied.test:{port}/hello.txt
curl -sS -m 10 -o /dev/null -w 'literal %{{http_code}}\\n' --noproxy '' http://127.0.0.1:{port}/hello.txt
curl -sS -m 10 -o /dev/null -w 'wild %{{http_code}}\\n' http://x.wild.test:{port}/hello.txt
curl -sS -m 10 -o /dev/null -w 'corp %{{http_code}}\\n' http://api.corp.test:{port}/hello.txt
curl -sS -m 10 -o /dev/null -w 'secret %{{http_code}}\\n' http://secret.corp.test:{port}/hello.txt
GIT_TERMINAL_PROMPT=0 git clone -q http://allowed.test:{port}/repo.git /tmp/clone && cat /tmp/clone/README
"""
    result = sandbox(harness_cli, engine, script, net_env, *ALLOW[:4])
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert out.splitlines()[0] == "lo"  # no veth: the proxy is the only way out
    assert "proxy=http://127.0.0.1:3128" in out
    assert "hello from the test server" in out
    assert "other 403" in out
    assert "denied 403" in out
    assert "denied.test" in out  # the 403 body names the rule
    assert "literal 403" in out
    assert "wild 403" in out  # not listed at all here
    assert "cloned through the proxy" in out
    log = Path(harness_env["XDG_STATE_HOME"]) / "harness" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    network = [r for r in records if r["event"] == "network.request"]
    refused = {r["host"] for r in network if not r["allowed"]}
    assert {"other.test", "denied.test", "127.0.0.1", "x.wild.test"} <= refused
    assert any(
        r["host"] == "allowed.test" and r["allowed"] and r["bytes_down"] > 0 for r in network
    )


def test_wildcards_and_deny_wins(
    engine: str, harness_cli, net_env: dict[str, str], web: tuple[int, Path]
) -> None:  # type: ignore[no-untyped-def]
    port, _ = web
    script = f"""
curl -sS -m 10 -o /dev/null -w 'wild %{{http_code}}\\n' http://x.wild.test:{port}/hello.txt
curl -sS -m 10 -o /dev/null -w 'corp %{{http_code}}\\n' http://api.corp.test:{port}/hello.txt
curl -sS -m 10 -o /dev/null -w 'secret %{{http_code}}\\n' http://secret.corp.test:{port}/hello.txt
"""
    rules = (
        "--allow-domain",
        "*.wild.test",
        "--allow-domain",
        "api.corp.test",
        "--allow-domain",
        "*.corp.test",
        "--deny-domain",
        "secret.corp.test",
        "--allow-domain",
        "secret.corp.test",
    )
    result = sandbox(harness_cli, engine, script, net_env, *rules)
    # x.wild.test resolves to 127.0.0.1: a wildcard is not enough to reach a private address
    assert "wild 403" in result.stdout
    assert "corp 200" in result.stdout  # listed exactly: loopback is allowed for it
    assert "secret 403" in result.stdout  # deny wins over an exact allow


def test_https_connect_and_sni(
    engine: str, harness_cli, net_env: dict[str, str], tls_web: tuple[int, Path], workspace: Path
) -> None:  # type: ignore[no-untyped-def]
    port, ca = tls_web
    (workspace / "ca.pem").write_text(ca.read_text())
    mismatch = (
        "import socket, ssl\n"
        "s = socket.create_connection(('127.0.0.1', 3128))\n"
        f"s.sendall(b'CONNECT allowed.test:{port} HTTP/1.1\\r\\nHost: allowed.test:{port}\\r\\n\\r\\n')\n"
        "print(s.recv(100).split(b'\\r\\n')[0].decode())\n"
        "ctx = ssl.create_default_context(cafile='ca.pem')\n"
        "try:\n"
        "    t = ctx.wrap_socket(s, server_hostname='mismatch.test'); print('tls ok')\n"
        "except (OSError, ssl.SSLError) as e: print('sni refused', type(e).__name__)\n"
    )
    (workspace / "sni.py").write_text(mismatch)
    script = f"curl -sS -m 10 --cacert ca.pem https://allowed.test:{port}/hello.txt; python3 sni.py"
    result = sandbox(
        harness_cli,
        engine,
        script,
        net_env,
        "--allow-domain",
        "allowed.test",
        "--allow-domain",
        "mismatch.test",
    )
    assert "hello from the test server" in result.stdout, result.stderr
    assert "200" in result.stdout  # the tunnel opens for allowed.test...
    assert "sni refused" in result.stdout  # ...and closes when the ClientHello names another host
    assert "tls ok" not in result.stdout


def _networks_left(session_hint: str = "") -> list[str]:
    netns = Path("/run/netns")
    return (
        [p.name for p in netns.iterdir() if p.name.startswith("harness-" + session_hint)]
        if netns.is_dir()
        else []
    )


def test_nothing_left_after_normal_end_ctrl_c_and_kill_9(
    engine: str, harness_cli, harness_in_background, net_env: dict[str, str], containers
) -> None:  # type: ignore[no-untyped-def]
    before = set(_networks_left())
    ok = harness_cli(
        "run",
        "--backend",
        engine,
        "-a",
        "never",
        "--allow-domain",
        "allowed.test",
        "--",
        "true",
        env=net_env,
    )
    assert ok.returncode == 0, ok.stderr
    assert set(_networks_left()) == before

    for how in ("sigint", "sigkill"):
        process = harness_in_background(
            engine,
            "run",
            "--backend",
            engine,
            "-a",
            "never",
            "--allow-domain",
            "allowed.test",
            "--",
            "sleep",
            "120",
            env=net_env,
            ready=lambda: bool(set(_networks_left()) - before),
        )
        assert set(_networks_left()) - before, "no namespace appeared"
        if how == "sigint":
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        else:
            process.kill()
            process.wait()
            assert set(_networks_left()) - before  # harness died: nothing cleaned up by itself
            pruned = harness_cli("prune", env=net_env)
            assert pruned.returncode == 0, pruned.stderr
        assert containers(engine) == []
        assert set(_networks_left()) == before
        proxies = subprocess.run(
            ["pgrep", "-f", "harness.net serve"], capture_output=True, text=True, check=False
        )
        assert not [
            pid
            for pid in proxies.stdout.split()
            if net_env["XDG_STATE_HOME"] in Path(f"/proc/{pid}/environ").read_text(errors="replace")
        ], "a network process of this test is still running"


def test_unlisted_domains_are_asked_through_the_console(
    engine: str, harness_cli, net_env: dict[str, str], web: tuple[int, Path]
) -> None:  # type: ignore[no-untyped-def]
    from harness.gateway.client import ask  # noqa: F401 - the console speaks the same protocol
    from harness.gateway.protocol import HEAD, encode

    port, _ = web
    up = harness_cli(
        "up",
        "-d",
        "--backend",
        engine,
        "--profile",
        "auto",
        "--allow-domain",
        "allowed.test",
        env=net_env,
    )
    assert up.returncode == 0, up.stderr
    session = up.stdout.split()[-1]
    record = json.loads(
        (Path(net_env["XDG_STATE_HOME"]) / "harness" / "sessions" / f"{session}.json").read_text()
    )
    console = __import__("socket").socket(__import__("socket").AF_UNIX)
    console.connect(record["gateway_control"])
    console.sendall(encode({"op": "console", "token": record["gateway_token"]}))
    answers = iter(["approve-once", "deny", "approve-session"])
    asked: list[str] = []

    def answer_questions() -> None:
        try:
            while True:
                head = console.recv(HEAD.size, __import__("socket").MSG_WAITALL)
                if len(head) < HEAD.size:
                    return
                message = json.loads(
                    console.recv(HEAD.unpack(head)[0], __import__("socket").MSG_WAITALL)
                )
                if message.get("type") == "pending":
                    asked.append(message["command"])
                    console.sendall(
                        encode(
                            {
                                "type": "answer",
                                "id": message["id"],
                                "choice": next(answers),
                                "feedback": None,
                            }
                        )
                    )
        except (OSError, StopIteration):
            return

    threading.Thread(target=answer_questions, daemon=True).start()
    try:
        # other.test is a test name on loopback: after the human's yes the request gets past the
        # rules and stops at the DNS-rebinding check (a yes never opens private addresses), so
        # the 403's reason tells which step refused it.
        fetch = f"curl -sS -m 20 http://other.test:{port}/hello.txt"
        bodies = [
            harness_cli("exec", "--session", session, "--", "sh", "-c", fetch, env=net_env).stdout
            for _ in range(4)
        ]
        past_rules = "resolves to 127.0.0.1"
        assert past_rules in bodies[0]  # approved once
        assert "other.test" in bodies[1] and past_rules not in bodies[1]  # asked again, denied
        assert past_rules in bodies[2]  # approved for the session
        assert past_rules in bodies[3]  # ...so the fourth is not asked
        assert asked == [f"connect to other.test:{port}"] * 3
    finally:
        console.close()
        harness_cli("down", session, env=net_env)
