"""`flashsale demo`: the product's main job end to end on this machine. Starts the local stack,
creates a sale, lets a crowd of buyers at it the moment it opens, waits for every order to settle,
runs the invariant checks, prints the result and writes it under reports/<timestamp>/.

The crowd here is a Python asyncio client (one connection pool, many users, each retrying politely
on 429/503 and replaying its Idempotency-Key after a network error)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from flashsale.adapters.tokens import mint
from flashsale.config import AuthSettings, Settings
from flashsale.local.embedded import PortInUse
from flashsale.local.stack import FAST_GATEWAY_ENV, Stack, StackOptions

console = Console()

# Contract codes a buyer may see during a sale; anything else is an unexpected error.
EXPECTED = {202, 409, 429, 503}


@dataclass
class CrowdResult:
    attempts: int = 0
    accepted: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)
    network_errors: int = 0
    unexpected: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    first_sold_out_s: float | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stock", type=int, default=1000, help="units on sale (default 1000)")
    parser.add_argument("--users", type=int, default=5000, help="distinct buyers (default 5000)")
    parser.add_argument("--duration", type=int, default=300, help="sale window in seconds")
    parser.add_argument("--concurrency", type=int, default=200, help="requests in flight at once")
    parser.add_argument("--reports", default="reports", help="where reports are written")
    parser.add_argument("--gateway-fast", action="store_true", help="no gateway failures/latency")


async def _buyer(
    client: httpx.AsyncClient,
    *,
    base: str,
    sale_id: str,
    token: str,
    result: CrowdResult,
    started: float,
) -> None:
    """One buyer: a new Idempotency-Key per attempt, the same key again after a network error,
    Retry-After honoured; stops at a 202 or a final 409."""
    key = f"demo-{random.getrandbits(64):016x}"
    for _ in range(20):
        t0 = time.perf_counter()
        try:
            response = await client.post(
                f"{base}/v1/sales/{sale_id}/orders",
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                json={"quantity": 1},
            )
        except httpx.HTTPError:
            result.network_errors += 1
            await asyncio.sleep(0.2)
            continue  # same key: a replay gets the first answer if it got through
        result.attempts += 1
        result.latencies_ms.append((time.perf_counter() - t0) * 1000)
        result.by_status[response.status_code] = result.by_status.get(response.status_code, 0) + 1
        if response.status_code not in EXPECTED:
            result.unexpected += 1
            return
        if response.status_code == 202:
            result.accepted += 1
            return
        code = response.json().get("code", "?")
        result.by_code[code] = result.by_code.get(code, 0) + 1
        if code == "sold_out" and result.first_sold_out_s is None:
            result.first_sold_out_s = time.perf_counter() - started
        if response.status_code == 409 and code != "sale_not_open":
            return
        retry_after = float(response.headers.get("retry-after", "0.2"))
        await asyncio.sleep(retry_after * (0.5 + random.random()))
        key = f"demo-{random.getrandbits(64):016x}"


async def _crowd(*, base: str, sale_id: str, users: int, concurrency: int) -> CrowdResult:
    auth = AuthSettings()
    tokens = [mint(auth, user_id=f"buyer-{i}", ttl_s=3600) for i in range(users)]
    result = CrowdResult()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def one(token: str) -> None:
            async with gate:
                await _buyer(
                    client, base=base, sale_id=sale_id, token=token, result=result, started=started
                )

        await asyncio.gather(*(one(t) for t in tokens))
    return result


def run_demo(args: argparse.Namespace) -> int:
    options = StackOptions(data_dir=Path(args.data_dir))
    options.env.update(
        {
            # One address (127.0.0.1) stands for the whole crowd here: lift the per-address limit.
            "FLASHSALE_API__RATE_LIMIT_ADDR_PER_S": "0",
        }
    )
    if args.gateway_fast:
        options.env.update(FAST_GATEWAY_ENV)
    stack = Stack(options)
    console.print("[bold]flashsale demo[/]: starting the local stack…")
    try:
        stack.start()
    except PortInUse as e:
        console.print(f"[red]{e}[/]")
        return 1
    try:
        return asyncio.run(_run(stack, args))
    finally:
        stack.stop()


async def _run(stack: Stack, args: argparse.Namespace) -> int:
    from flashsale.verify import verify

    sale_id = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    opens_at = datetime.now(UTC) + timedelta(seconds=2)
    admin = mint(AuthSettings(), user_id="demo-admin", admin=True)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        response = await client.put(
            f"/v1/admin/sales/{sale_id}",
            headers={"Authorization": f"Bearer {admin}"},
            json={
                "name": "Demo sneaker",
                "price": "49.99",
                "stock": args.stock,
                "opens_at": opens_at.isoformat(),
                "closes_at": (opens_at + timedelta(seconds=args.duration)).isoformat(),
                "per_user_limit": 1,
            },
        )
        response.raise_for_status()
    console.print(f"sale [bold]{sale_id}[/]: {args.stock} units, {args.users} buyers, opens in 2 s")
    await asyncio.sleep(max(0.0, (opens_at - datetime.now(UTC)).total_seconds()))
    t0 = time.perf_counter()
    crowd = await _crowd(
        base=stack.api_url, sale_id=sale_id, users=args.users, concurrency=args.concurrency
    )
    crowd_s = time.perf_counter() - t0
    console.print(f"crowd done in {crowd_s:.1f} s; waiting for every order to settle…")
    settings = Settings(
        redis={"url": stack.redis_url},
        postgres={"dsn": stack.postgres_dsn},
        gateway={"url": stack.gateway_url},
    )
    t1 = time.perf_counter()
    verdict, quiet = await verify(settings, sale_id, wait_s=120)
    settle_s = time.perf_counter() - t1
    _print(crowd, crowd_s=crowd_s, settle_s=settle_s)
    table = Table(title=f"invariants of {sale_id}")
    for col in ("#", "invariant", "holds", "detail"):
        table.add_column(col, overflow="fold")
    for check in verdict.checks:
        table.add_row(str(check.number), check.name, "yes" if check.ok else "NO", check.detail)
    console.print(table)
    report_dir = Path(args.reports) / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "sale_id": sale_id,
        "stock": args.stock,
        "users": args.users,
        "crowd_seconds": round(crowd_s, 3),
        "settle_seconds": round(settle_s, 3),
        "quiescent": quiet.quiescent,
        "crowd": {k: v for k, v in asdict(crowd).items() if k != "latencies_ms"},
        "latency_ms": _percentiles(crowd.latencies_ms),
        "invariants": [asdict(c) for c in verdict.checks],
        "ok": verdict.ok and crowd.unexpected == 0,
    }
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"report: {report_dir / 'summary.json'}")
    ok = verdict.ok and crowd.unexpected == 0 and quiet.quiescent
    console.print("[green]demo passed[/]" if ok else "[red]demo failed[/]")
    return 0 if ok else 1


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": round(ordered[-1], 2)}


def _print(crowd: CrowdResult, *, crowd_s: float, settle_s: float) -> None:
    table = Table(title="the crowd", show_header=False)
    table.add_row("purchase attempts", str(crowd.attempts))
    table.add_row("accepted (202)", str(crowd.accepted))
    table.add_row("answers", ", ".join(f"{k}: {v}" for k, v in sorted(crowd.by_status.items())))
    table.add_row("refusals", ", ".join(f"{k}: {v}" for k, v in sorted(crowd.by_code.items())))
    table.add_row("unexpected answers", str(crowd.unexpected))
    table.add_row("network errors (replayed)", str(crowd.network_errors))
    table.add_row("latency ms", json.dumps(_percentiles(crowd.latencies_ms)))
    if crowd.first_sold_out_s is not None:
        table.add_row("first sold_out after", f"{crowd.first_sold_out_s:.2f} s")
    table.add_row("crowd time", f"{crowd_s:.1f} s")
    table.add_row("settle time", f"{settle_s:.1f} s")
    console.print(table)
