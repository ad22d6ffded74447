"""Pieces of `flashsale bench` that are not k6: the bare baseline server as a child process, sales
made through the admin API, waiting for the order stream to drain, the invariant check after a
purchase run, the order worker's drain rate and the payment worker's settle rate.

Every wait is bounded; every process started here is stopped here. Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.adapters.redis_stream import Stream
from flashsale.adapters.tokens import mint
from flashsale.config import ApiSettings, Settings
from flashsale.domain.ids import uuid7
from flashsale.domain.purchase import fingerprint
from flashsale.local.embedded import die_with_parent, free_port
from flashsale.local.stack import Child
from flashsale.verify import quiet_state, verify

READY_TIMEOUT_S = 30.0
PUT_ATTEMPTS = 3
# Reservations in flight while pre-filling the order stream (one Redis connection each).
PREFILL_CONCURRENCY = 64
# per_user_limit is at most 1000: this many units per synthetic buyer keeps far from it.
UNITS_PER_PREFILL_USER = 100


# --- the baseline ---------------------------------------------------------------------------------


class BaselineServer:
    """`python -m flashsale.local.baseline` on a free port, with `workers` processes."""

    def __init__(self, *, redis_url: str, workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable, "-m", "flashsale.local.baseline", "--port", str(self.port),
            "--redis-url", redis_url, "--workers", str(workers),
        ]  # fmt: skip
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BaselineServer:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        wait_http(f"{self.url}/healthz", process=self.process)
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def wait_http(url: str, *, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{url}: the server exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {READY_TIMEOUT_S:.0f} s")


# --- whose CPU (Linux /proc; zeros elsewhere) -----------------------------------------------------


# Linux accounts CPU time in clock ticks (USER_HZ) in /proc.
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: user nice system irq
    softirq; idle and iowait left out)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) * TICK_S


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of it and of its waited-for children) for every process."""
    out: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        rest = text[text.rindex(")") + 2 :].split()
        ppid = int(rest[1])
        utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
        out[int(stat.parent.name)] = (ppid, (utime + stime + cutime + cstime) * TICK_S)
    return out


def _tree_s() -> float:
    """CPU seconds of this process and everything under it: live descendants, plus the ones that
    ended (their time is in their parent's children fields once it has waited for them)."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo.extend(children.get(pid, []))
    return total


class CpuWatch:
    """How much of the machine went to other work than ours during a phase: the figure that says
    whether a measurement is clean (the load average also counts our own processes)."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.busy = _busy_s()
        self.ours = _tree_s()

    def shares(self) -> dict[str, float]:
        capacity = (time.monotonic() - self.wall) * (os.cpu_count() or 1)
        busy, ours = _busy_s() - self.busy, _tree_s() - self.ours
        return {
            "cpu_ours": round(min(1.0, ours / capacity), 3) if capacity > 0 else 0.0,
            "cpu_others": round(max(0.0, busy - ours) / capacity, 3) if capacity > 0 else 0.0,
        }


# --- sales and checks -----------------------------------------------------------------------------


async def put_sale(
    settings: Settings, sale_id: str, *, stock: int, per_user_limit: int, duration_s: int = 3600
) -> None:
    """Create a sale that is open now, through the admin API (an idempotent upsert, so a lost
    connection is simply tried again, a few times)."""
    admin = mint(settings.auth, user_id="bench-admin", admin=True, ttl_s=600)
    now = datetime.now(UTC)
    body = {
        "name": f"bench {sale_id}",
        "price": "1.00",
        "stock": stock,
        "opens_at": (now - timedelta(seconds=1)).isoformat(),
        "closes_at": (now + timedelta(seconds=duration_s)).isoformat(),
        "per_user_limit": per_user_limit,
    }
    async with httpx.AsyncClient(base_url=settings.api.url, timeout=10) as client:
        for attempt in range(PUT_ATTEMPTS):
            try:
                response = await client.put(
                    f"/v1/admin/sales/{sale_id}",
                    headers={"Authorization": f"Bearer {admin}"},
                    json=body,
                )
                break
            except httpx.TransportError:
                if attempt == PUT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5)
        response.raise_for_status()


async def wait_orders_drained(stock: RedisStock, sale_id: str, *, timeout_s: float) -> float:
    """Until the order stream holds nothing undelivered or unacked; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if (await quiet_state(stock, sale_id)).queued_orders == 0:
            break
        await asyncio.sleep(0.05)
    return round(time.monotonic() - started, 2)


async def check_sale(settings: Settings, sale_id: str, *, timeout_s: float = 120) -> dict[str, Any]:
    """The invariants of a sale the bench used, once its orders are in PostgreSQL. Payments may
    still be pending (the payment worker is paused during throughput runs): the four invariants
    must hold then too."""
    redis = connect(settings.redis)
    try:
        stock = RedisStock(redis, api=settings.api)
        waited = await wait_orders_drained(stock, sale_id, timeout_s=timeout_s)
    finally:
        await redis.aclose()
    verdict, quiet = await verify(settings, sale_id)
    return {
        "sale_id": sale_id,
        "ok": verdict.ok,
        "waited_for_orders_s": waited,
        "payments_queued": quiet.queued_payments,
        "checks": [asdict(c) for c in verdict.checks],
    }


# --- the order worker's drain rate ----------------------------------------------------------------


async def prefill(settings: Settings, sale_id: str, *, orders: int) -> float:
    """Reserve `orders` units through the real reserve script (so every invariant still applies),
    with no order worker reading; returns the seconds it took."""
    redis = connect(settings.redis.model_copy(update={"max_connections": PREFILL_CONCURRENCY}))
    # Our own client, without the API's limits: this is set-up, not load.
    stock = RedisStock(redis, api=ApiSettings(rate_limit_user_per_s=0, rate_limit_addr_per_s=0))
    gate = asyncio.Semaphore(PREFILL_CONCURRENCY)
    started = time.perf_counter()

    async def one(n: int) -> None:
        async with gate:
            order_id = str(uuid7())
            user_id = f"drain-{n // UNITS_PER_PREFILL_USER}"
            await stock.reserve(
                sale_id=sale_id, user_id=user_id, qty=1, idempotency_key=f"drain-{n}",
                fingerprint=fingerprint(sale_id=sale_id, quantity=1), order_id=order_id,
                body=orjson.dumps({"order_id": order_id, "sale_id": sale_id, "user_id": user_id,
                                   "quantity": 1, "status": "pending"}),
                client_addr="bench",
            )  # fmt: skip

    try:
        await asyncio.gather(*(one(n) for n in range(orders)))
    finally:
        await redis.aclose()
    return time.perf_counter() - started


async def _group_backlog(stream: Stream) -> int:
    info = await stream.info()
    return info.lag + info.pending


async def time_drain(
    settings: Settings, worker: Child, *, orders: int, timeout_s: float
) -> dict[str, Any]:
    """Start the (stopped) order worker and time it through a backlog of `orders` entries: from
    its first acknowledged batch to an empty stream, and from its start (process start included)."""
    redis = connect(settings.redis)
    stream = Stream(redis, stream=keys.ORDER_STREAM, group=keys.ORDER_GROUP, consumer="bench")
    try:
        backlog = await _group_backlog(stream)
        started = time.perf_counter()
        worker.start()
        first: float | None = None
        left = backlog
        while left and time.perf_counter() - started < timeout_s:
            await asyncio.sleep(0.01)
            left = await _group_backlog(stream)
            if first is None and left < backlog:
                first = time.perf_counter()
        ended = time.perf_counter()
    finally:
        await redis.aclose()
    drained = backlog - left
    busy_s = ended - (first or ended)
    return {
        "orders": orders,
        "backlog_at_start": backlog,
        "drained": drained,
        "seconds_from_first_batch": round(busy_s, 3),
        "seconds_from_process_start": round(ended - started, 3),
        "orders_per_s": round(drained / busy_s) if busy_s > 0 else None,
        "orders_per_s_incl_start": round(drained / (ended - started)),
        "complete": left == 0,
    }


async def payment_rate(settings: Settings, worker: Child, *, window_s: float) -> dict[str, Any]:
    """Start the payment worker on the queued payments and measure settlements per second over a
    bounded window (it does not have to finish)."""
    redis = connect(settings.redis)
    stream = Stream(redis, stream=keys.PAYMENT_STREAM, group=keys.PAYMENT_GROUP, consumer="bench")
    try:
        before = await _group_backlog(stream)
        worker.start()
        await asyncio.sleep(min(3.0, window_s / 4))  # process start and first charges
        t0, b0 = time.perf_counter(), await _group_backlog(stream)
        await asyncio.sleep(window_s)
        t1, b1 = time.perf_counter(), await _group_backlog(stream)
    finally:
        await redis.aclose()
    return {
        "queued_at_start": before,
        "window_s": round(t1 - t0, 2),
        "settled_in_window": b0 - b1,
        "payments_per_s": round((b0 - b1) / (t1 - t0), 1),
    }


async def set_appendfsync(redis_url: str, mode: str) -> None:
    """Switch the running Valkey's AOF fsync policy (always | everysec) without a restart."""
    client = connect(Settings(redis={"url": redis_url}).redis)
    try:
        await client.config_set("appendfsync", mode)
    finally:
        await client.aclose()
