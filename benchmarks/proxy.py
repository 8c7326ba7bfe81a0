"""The egress proxy against a direct connection, on loopback, alternately in one run.

    .venv/bin/python benchmarks/proxy.py [--runs 15] [--small 1000] [--size-mb 100]
                                         [--audit log|none] [--no-splice] [--buffer-kb 1024]

Three processes: an origin server, the proxy (`EgressProxy` with a rule for
`origin.test` and a static resolver pointing it at 127.0.0.1), and this client.
The client is the same raw-socket code for both paths; only the address it
connects to and the request target (absolute-form through the proxy) differ.

- bulk: one GET of SIZE MB (Content-Length) on a new connection, timed from
  connect to the last byte; `--runs` times each way, alternating. Goal: the
  proxy's median <= 1.5x the direct median.
- small: `--small` GETs of a 13-byte body each way, on one keep-alive connection
  per side (the proxy keeps the client connection and its origin connection),
  alternating in batches of 50; per-request latency. Goal: <= 2 ms added at the
  median. The same with a new connection per request (both sides) is printed
  for comparison.

By default the proxy writes its audit records to a real hash-chained log in a
temporary directory (fsync per record, on its worker thread); `--audit none`
turns that off. `--no-splice` makes the proxy relay through user-space buffers
instead of `splice`; the CPU time the proxy process spent per bulk transfer is
printed (Linux) so the two can be compared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL_BODY = b"hello, world\n"
CHUNK = 1024 * 1024


# -- the origin -----------------------------------------------------------------------------


class _Origin(socketserver.BaseRequestHandler):
    big: bytes = b""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        view = memoryview(self.big)
        while True:
            while b"\r\n\r\n" not in buffer:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1]
            if path.endswith(b"/big"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.big))
                for start in range(0, len(view), CHUNK):
                    sock.sendall(view[start : start + CHUNK])
            else:
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(SMALL_BODY), SMALL_BODY)
                )


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def serve_origin(size: int) -> None:
    _Origin.big = os.urandom(1024 * 1024) * (size // (1024 * 1024))
    with _Server(("127.0.0.1", 0), _Origin) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


# -- the proxy ------------------------------------------------------------------------------


def serve_proxy(audit: str, splice: bool, buffer_kb: int) -> None:
    sys.path.insert(0, str(ROOT))
    import harness.net.proxy
    from harness.audit import AuditLog
    from harness.net.proxy import EgressProxy, ProxyLimits, StaticResolver
    from harness.policy.rules import NetworkRule

    if not splice:
        harness.net.proxy._splice_works = False

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="harness-proxy-bench-") as scratch:
            log = AuditLog(Path(scratch) / "audit.jsonl") if audit == "log" else None
            proxy = EgressProxy(
                [NetworkRule("origin.test", True)],
                resolver=StaticResolver({"origin.test": "127.0.0.1"}),
                audit=log.append if log else None,
                session="bench",
                limits=ProxyLimits(buffer_size=buffer_kb * 1024),
            )
            _, port = await proxy.start_on("127.0.0.1", 0)
            print(port, flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
            await proxy.close()

    asyncio.run(main())


# -- the client -----------------------------------------------------------------------------


class Client:
    """A keep-alive HTTP/1.1 client on a raw socket, reading into one reused buffer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray(4 * CHUNK)
        self.view = memoryview(self.buffer)
        self.pending = b""

    def get(self, target: str) -> int:
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: origin.test\r\n\r\n".encode())
        data = self.pending
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        got = min(len(rest), length)
        self.pending = rest[length:]
        while got < length:
            n = self.sock.recv_into(self.view[: min(len(self.buffer), length - got)])
            if not n:
                raise RuntimeError("connection closed mid-body")
            got += n
        return got

    def close(self) -> None:
        self.sock.close()


def bulk_once(port: int, target: str, size: int) -> float:
    start = time.perf_counter()
    client = Client(port)
    try:
        if client.get(target) != size:
            raise RuntimeError("short body")
    finally:
        client.close()
    return time.perf_counter() - start


def small_batch(client: Client, target: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.get(target)
        times.append(time.perf_counter() - start)
    return times


def small_fresh(port: int, target: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client = Client(port)
        try:
            client.get(target)
        finally:
            client.close()
        times.append(time.perf_counter() - start)
    return times


def start(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def stop(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--audit", choices=["log", "none"], default="log")
    parser.add_argument(
        "--no-splice", action="store_true", help="relay through a user-space buffer instead"
    )
    parser.add_argument("--buffer-kb", type=int, default=1024, help="ProxyLimits.buffer_size")
    parser.add_argument("--serve-origin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = args.size_mb * 1024 * 1024
    if args.serve_origin:
        serve_origin(size)
        return 0
    if args.serve_proxy:
        serve_proxy(args.audit, not args.no_splice, args.buffer_kb)
        return 0

    origin, origin_port = start(["--serve-origin", "--size-mb", str(args.size_mb)])
    proxy, proxy_port = start(
        [
            "--serve-proxy",
            "--audit",
            args.audit,
            "--buffer-kb",
            str(args.buffer_kb),
            *(["--no-splice"] if args.no_splice else []),
        ]
    )
    try:
        direct_big, proxied_big = "/big", f"http://origin.test:{origin_port}/big"
        direct_small, proxied_small = "/small", f"http://origin.test:{origin_port}/small"
        bulk_once(origin_port, direct_big, size)  # warm-up
        bulk_once(proxy_port, proxied_big, size)
        direct_times: list[float] = []
        proxy_times: list[float] = []
        proxy_cpu = 0.0
        for _ in range(args.runs):
            direct_times.append(bulk_once(origin_port, direct_big, size))
            before = cpu_seconds(proxy.pid)
            proxy_times.append(bulk_once(proxy_port, proxied_big, size))
            proxy_cpu += cpu_seconds(proxy.pid) - before
        d, p = statistics.median(direct_times), statistics.median(proxy_times)
        ratio = p / d
        print(
            f"bulk {args.size_mb} MB     direct {d * 1000:7.1f} ms ({size / d / 1e9:4.2f} GB/s)   "
            f"proxy {p * 1000:7.1f} ms ({size / p / 1e9:4.2f} GB/s)   ratio {ratio:4.2f}  "
            f"({'meets' if ratio <= 1.5 else 'MISSES'} the 1.5 goal; {args.runs} runs each, "
            f"alternating, new connection per run; proxy CPU "
            f"{proxy_cpu / args.runs * 1000:.0f} ms per transfer, "
            f"{'user-space copy' if args.no_splice else 'splice'})"
        )

        direct_client, proxy_client = Client(origin_port), Client(proxy_port)
        try:
            small_batch(direct_client, direct_small, 50)
            small_batch(proxy_client, proxied_small, 50)
            direct_small_times: list[float] = []
            proxy_small_times: list[float] = []
            batch = 50
            for done in range(0, args.small, batch):
                n = min(batch, args.small - done)
                direct_small_times += small_batch(direct_client, direct_small, n)
                proxy_small_times += small_batch(proxy_client, proxied_small, n)
        finally:
            direct_client.close()
            proxy_client.close()
        report_small("small, keep-alive", direct_small_times, proxy_small_times, goal=True)

        fresh = max(args.small // 5, 20)
        direct_fresh: list[float] = []
        proxy_fresh: list[float] = []
        for _ in range(0, fresh, 20):
            direct_fresh += small_fresh(origin_port, direct_small, 20)
            proxy_fresh += small_fresh(proxy_port, proxied_small, 20)
        report_small("small, new connections", direct_fresh, proxy_fresh, goal=False)
    finally:
        stop(proxy)
        origin.terminate()
        origin.wait(10)
    print(f"(audit: {'hash-chained log, fsync per record' if args.audit == 'log' else 'off'})")
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report_small(name: str, direct: list[float], proxied: list[float], *, goal: bool) -> None:
    d, p = statistics.median(direct), statistics.median(proxied)
    added = (p - d) * 1000
    verdict = f"({'meets' if added <= 2.0 else 'MISSES'} the 2 ms goal)" if goal else "(for scale)"
    print(
        f"{name:<24} direct {d * 1e6:7.0f} us   proxy {p * 1e6:7.0f} us   "
        f"added {added:6.3f} ms per request at the median   "
        f"p90 {statistics.quantiles(proxied, n=10)[-1] * 1e6:6.0f} us  {verdict}; "
        f"{len(direct)} requests each, alternating"
    )


if __name__ == "__main__":
    raise SystemExit(main())
