"""SSE capacity benchmark: clients per process, RSS and fan-out delay at growing client counts.

    python -m flashsale.sse.capacity --redis-url redis://127.0.0.1:16379/0 --clients 1000,5000,10000

Starts `python -m flashsale.sse` as a child process on a free port (or measures a running one with
--sse-url and --pid), creates a throwaway sale, then from THIS process opens raw keep-alive sockets
to its event stream, step by step, each from a loopback source address (127.0.0.2, .3, ...) holding
at most --per-addr of them, so the server's per-address bound is respected, not lifted. At each step
it waits for every client's first `sale` event, reads the server's RSS, then makes --rounds
stock messages --gap-s apart and times each from its PUBLISH to its `stock` event arriving at every
client (end to end: Redis, the subscription, the hub, fan-out, loopback). Loopback only, every
wait bounded; the child server and the sale are removed at the end. Prints a table (and --json).
Imports config, adapters and domain; runs the server only as a child process; never flashsale.api
or flashsale.local (pass the Redis URL that `flashsale up` prints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import httpx
import orjson

from flashsale import config
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.domain.sales import SaleDefinition

BENCH_STOCK = 1_000_000
CONNECT_CONCURRENCY = 200  # connects in flight: fast, yet far below the server's accept backlog
_STOCK_ID = re.compile(rb"event: stock\nid: (\d+)\n")


@dataclass
class Step:
    clients: int
    rss_mb: float
    kb_per_client: float
    connect_s: float
    fanout_p50_ms: float
    fanout_p95_ms: float
    fanout_p99_ms: float
    fanout_max_ms: float
    missed: int


class StreamClient(asyncio.Protocol):
    """One raw SSE client: sends the request, then notes when each stock id arrives."""

    def __init__(self, request: bytes, first: asyncio.Future[None]) -> None:
        self.request = request
        self.first = first
        self.arrivals: dict[int, float] = {}
        self.transport: asyncio.Transport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.first.done() and b"event: sale" in data:
            self.first.set_result(None)
        chunk = self._tail + data
        for match in _STOCK_ID.finditer(chunk):
            self.arrivals.setdefault(int(match.group(1)), now)
        self._tail = chunk[-64:]  # a frame split across reads is found next time

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first.done():
            self.first.set_exception(ConnectionError(f"closed before the first event: {exc}"))


class Crowd:
    def __init__(self, *, host: str, port: int, path: str, per_addr: int) -> None:
        self.host, self.port, self.per_addr = host, port, per_addr
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        self.clients: list[StreamClient] = []

    async def grow_to(self, count: int, *, within_s: float) -> float:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        started = time.perf_counter()

        async def one(index: int) -> None:
            async with gate:
                first: asyncio.Future[None] = loop.create_future()
                client = StreamClient(self.request, first)
                source = f"127.0.0.{2 + index // self.per_addr}"
                await loop.create_connection(
                    lambda: client, self.host, self.port, local_addr=(source, 0)
                )
                self.clients.append(client)
                await first

        async with asyncio.timeout(within_s):
            await asyncio.gather(*(one(i) for i in range(len(self.clients), count)))
        return time.perf_counter() - started

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()


async def measure_fanout(
    crowd: Crowd, stock: RedisStock, sale_id: str, *, first_seq: int, rounds: int, gap_s: float
) -> tuple[list[float], int]:
    """Delays (ms) from each publish to its stock event at every client; and misses.

    The stock messages are published as reserve.lua publishes them, without reserving: a real
    reservation would queue an order for a sale PostgreSQL has never heard of, which the order
    worker of a running stack would then have to dead-letter."""
    delays: list[float] = []
    missed = 0
    for seq in range(first_seq, first_seq + rounds):
        await asyncio.sleep(gap_s)  # past the coalescing window: each message is a leading edge
        message = orjson.dumps({"type": "stock", "remaining": BENCH_STOCK - seq, "seq": seq})
        sent = time.perf_counter()
        await stock.client.publish(keys.sale_events(sale_id), message)
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline:
            if all(seq in c.arrivals for c in crowd.clients):
                break
            await asyncio.sleep(0.01)
        for client in crowd.clients:
            arrived = client.arrivals.get(seq)
            if arrived is None:
                missed += 1
            else:
                delays.append((arrived - sent) * 1000)
    return delays, missed


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc, where the benchmark runs)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def start_child(redis_url: str, *, max_clients: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    """`python -m flashsale.sse` on a free port: (process, url, its log file)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "FLASHSALE_REDIS__URL": redis_url,
        "FLASHSALE_SSE__HOST": "127.0.0.1",
        "FLASHSALE_SSE__PORT": str(port),
        "FLASHSALE_SSE__MAX_CLIENTS": str(max_clients),
        "FLASHSALE_LOG_LEVEL": "WARNING",
    }
    log = Path(tempfile.mkstemp(prefix="flashsale-sse-capacity-", suffix=".log")[1])
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "flashsale.sse"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return child, f"http://127.0.0.1:{port}", log


def stop_child(child: subprocess.Popen[bytes], log: Path) -> None:
    child.terminate()
    try:
        child.wait(timeout=15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)
    log.unlink(missing_ok=True)


async def wait_ready(url: str, child: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(base_url=url, timeout=1) as http:
        while time.monotonic() < deadline:
            if child is not None and child.poll() is not None:
                raise RuntimeError(f"the SSE server exited with {child.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} was not ready within 20 s")


async def run_steps(args: argparse.Namespace, url: str, pid: int) -> list[Step]:
    stock = RedisStock(connect(config.RedisSettings(url=args.redis_url)))
    sale_id = f"capacity-{secrets.token_hex(4)}"
    now = datetime.now(UTC)
    await stock.upsert_sale(
        SaleDefinition(sale_id, "capacity benchmark", Decimal("1.00"), BENCH_STOCK,
                       now - timedelta(seconds=1), now + timedelta(hours=1))
    )  # fmt: skip
    host, port = url.removeprefix("http://").rsplit(":", 1)
    crowd = Crowd(
        host=host, port=int(port), path=f"/v1/sales/{sale_id}/events", per_addr=args.per_addr
    )
    steps: list[Step] = []
    next_seq = (await stock.get_sale(sale_id)).seq + 1
    try:
        base_rss = rss_bytes(pid)
        for count in args.clients:
            connect_s = await crowd.grow_to(count, within_s=args.step_timeout_s)
            await asyncio.sleep(args.hold_s)  # idle: let allocations settle before reading RSS
            rss = rss_bytes(pid)
            delays, missed = await measure_fanout(
                crowd, stock, sale_id, first_seq=next_seq, rounds=args.rounds, gap_s=args.gap_s
            )
            next_seq += args.rounds  # ids only go up, or the server would drop them as stale
            steps.append(
                _step(count, rss=rss, base_rss=base_rss, connect_s=connect_s, delays=delays,
                      missed=missed)
            )  # fmt: skip
            _say(_row(steps[-1]))
    finally:
        crowd.close()
        with contextlib.suppress(Exception):
            await stock.delete_sale(sale_id)
        await stock.client.aclose()
    return steps


def _step(
    count: int, *, rss: int, base_rss: int, connect_s: float, delays: list[float], missed: int
) -> Step:
    return Step(
        clients=count,
        rss_mb=round(rss / 2**20, 1),
        kb_per_client=round((rss - base_rss) / 1024 / count, 1),
        connect_s=round(connect_s, 2),
        fanout_p50_ms=round(_quantile(delays, 0.5), 1),
        fanout_p95_ms=round(_quantile(delays, 0.95), 1),
        fanout_p99_ms=round(_quantile(delays, 0.99), 1),
        fanout_max_ms=round(max(delays, default=float("nan")), 1),
        missed=missed,
    )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _row(step: Step) -> str:
    return (
        f"{step.clients:>8} {step.rss_mb:>9} {step.kb_per_client:>8} {step.connect_s:>8} "
        f"{step.fanout_p50_ms:>8} {step.fanout_p95_ms:>8} {step.fanout_p99_ms:>8} "
        f"{step.fanout_max_ms:>8} {step.missed:>6}"
    )


async def bench(
    args: argparse.Namespace, url: str, pid: int, child: subprocess.Popen[bytes] | None
) -> list[Step]:
    _say("clients   rss_MB   KB/cli  conn_s   p50_ms   p95_ms   p99_ms   max_ms missed")
    async with asyncio.timeout(args.max_s):
        await wait_ready(url, child)
        return await run_steps(args, url, pid)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flashsale.sse.capacity", description=__doc__)
    parser.add_argument("--redis-url", required=True, help="the Redis/Valkey the server uses")
    parser.add_argument("--clients", default="1000,5000,10000", help="cumulative client counts")
    parser.add_argument("--per-addr", type=int, default=1000, help="clients per source address")
    parser.add_argument("--rounds", type=int, default=5, help="reservations timed per step")
    parser.add_argument("--gap-s", type=float, default=0.5, help="pause before each reservation")
    parser.add_argument("--hold-s", type=float, default=2.0, help="idle time before reading RSS")
    parser.add_argument("--step-timeout-s", type=float, default=120.0, help="bound per step")
    parser.add_argument("--max-s", type=float, default=600.0, help="bound for the whole run")
    parser.add_argument("--sse-url", help="measure this running server instead of a child")
    parser.add_argument("--pid", type=int, help="its process id (with --sse-url)")
    parser.add_argument("--json", type=Path, help="also write the steps here as JSON")
    args = parser.parse_args(argv)
    args.clients = sorted(int(n) for n in args.clients.split(","))
    if args.sse_url and not args.pid:
        parser.error("--sse-url needs --pid (the RSS is read from the server process)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Every client is a socket of this process too.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    child: subprocess.Popen[bytes] | None = None
    if args.sse_url:
        url, pid = args.sse_url, args.pid
    else:
        child, url, log = start_child(args.redis_url, max_clients=max(args.clients) + 100)
        pid = child.pid
    try:
        import uvloop

        steps = uvloop.run(bench(args, url, pid, child))
    finally:
        if child is not None:
            stop_child(child, log)
    if args.json:
        args.json.write_bytes(orjson.dumps([asdict(s) for s in steps], option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
