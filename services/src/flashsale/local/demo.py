"""`flashsale demo`: the product's main job end to end on this machine. Starts the local stack,
creates a sale that opens a few seconds later, lets the k6 crowd of loadtest/flash_sale.js arrive
around the opening, waits for every order to settle, checks the invariants and writes
reports/<timestamp>/ (summary.json, plots, index.html).

`run_sale` is the core, on any running stack (the bench's sell-out phase and the tests call it
too); `run_demo` adds the stack's lifecycle and the terminal. Exit status: non-zero when an
invariant fails, an order stays unsettled, or k6 saw an answer outside the contract."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.adapters.tokens import mint
from flashsale.config import Settings
from flashsale.local import k6, report
from flashsale.local.embedded import PortInUse, free_port
from flashsale.local.sampler import Sampler
from flashsale.local.series import bucketize, read_csv
from flashsale.local.stack import FAST_GATEWAY_ENV, Stack, StackOptions
from flashsale.verify import verify

console = Console()

# Buyers per CPU by default: 2 vCPUs give the reference's own sell-out test, 5,000 buyers for 1,000
# units, compressed into ~10 s of arrivals; --full is the real event, 100,000 buyers in a minute.
USERS_PER_CPU = 2_500
FULL_USERS = 100_000
# k6 builds its VUs before setup() (a few seconds for thousands of them); allowed for in the bound.
K6_START_S = 30.0
# The sale stays open 10 minutes: longer than any crowd here, so "closed" never ends a run.
SALE_DURATION_S = 600
# Orders settle within seconds with the fast gateway; the default model's hangs and reconciliation
# take up to a minute (the reconcile deadline), so wait that long and a margin before giving up.
SETTLE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class CrowdPlan:
    """The crowd's shape: USERS arrivals over RAMP (0 -> peak, ending at the opening), HOLD and
    DECAY (peak -> 0)."""

    users: int
    stock: int
    ramp_s: float = 2.0
    hold_s: float = 6.0
    decay_s: float = 2.0
    sold_out_retries: int = 1
    sold_out_wait_s: float = 2.0

    @property
    def peak_rate(self) -> int:
        return max(1, round(self.users / (self.ramp_s / 2 + self.hold_s + self.decay_s / 2)))

    @property
    def max_vus(self) -> int:
        # A VU is busy for as long as its buyer: the ramp's arrivals all sleep until the opening
        # (half the ramp at the peak rate), a sold-out buyer waits before looking again, and a
        # second of answers is in flight. k6 VUs are cheap (~120 KB each measured), dropped
        # arrivals are not: they thin the crowd silently.
        holding_s = self.ramp_s / 2 + 1 + self.sold_out_retries * self.sold_out_wait_s * 1.2
        return max(50, int(self.peak_rate * holding_s * 1.2))

    def k6_timeout_s(self) -> float:
        arrivals = self.ramp_s + self.hold_s + self.decay_s
        # A late buyer's retries: 5 polite retries capped at 5 s, sold-out retries, the grace.
        return K6_START_S + arrivals + 25 + self.sold_out_retries * self.sold_out_wait_s * 1.2 + 60

    def k6_env(self, *, base_url: str, sale_id: str, jwt_secret: str) -> dict[str, str]:
        return {
            "BASE_URL": base_url,
            "SALE_ID": sale_id,
            "JWT_SECRET": jwt_secret,
            "CREATE_SALE": "true",
            "STOCK": str(self.stock),
            "OPENS_IN_S": f"{self.ramp_s:g}",
            "DURATION_S": str(SALE_DURATION_S),
            "PER_USER_LIMIT": "1",
            "USERS": str(self.users),
            "RATE": str(self.peak_rate),
            "RAMP": f"{self.ramp_s:g}s",
            "HOLD": f"{self.hold_s:g}s",
            "DECAY": f"{self.decay_s:g}s",
            # All built before setup(): k6 builds VUs it lacks mid-run only slowly on a busy
            # machine, and every arrival without a free VU is dropped (a buyer who never came).
            "PRE_VUS": str(self.max_vus),
            "MAX_VUS": str(self.max_vus),
            "SOLD_OUT_RETRIES": str(self.sold_out_retries),
            "SOLD_OUT_WAIT_S": f"{self.sold_out_wait_s:g}",
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stock", type=int, default=1000, help="units on sale (default 1000)")
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help=f"distinct buyers (default {USERS_PER_CPU:,} per CPU; --full: {FULL_USERS:,})",
    )
    parser.add_argument(
        "--full", action="store_true", help="the real event: 100,000 buyers in about a minute"
    )
    parser.add_argument("--ramp", type=float, default=None, help="seconds of rising arrivals")
    parser.add_argument("--hold", type=float, default=None, help="seconds of peak arrivals")
    parser.add_argument("--decay", type=float, default=None, help="seconds of falling arrivals")
    parser.add_argument("--reports", default="reports", help="where reports are written")
    parser.add_argument("--gateway-fast", action="store_true", help="no gateway failures/latency")
    parser.add_argument(
        "--free-ports", action="store_true", help="run the stack on free ports, not 8000-8002/91xx"
    )
    parser.add_argument("--api-workers", type=int, default=None, help="default: CPU count")
    parser.add_argument(
        "--no-linger",
        action="store_true",
        help=f"stop at once after the report (default: the pages stay up {LINGER_S} s)",
    )


def plan_from_args(args: argparse.Namespace) -> CrowdPlan:
    cpus = os.cpu_count() or 1
    full = bool(args.full)
    users = args.users or (FULL_USERS if full else USERS_PER_CPU * cpus)
    # The full event: 100,000 buyers in about a minute, the reference's claim; the crowd starts
    # gathering 4 s before the opening.
    ramp, hold, decay = (4.0, 56.0, 10.0) if full else (2.0, 6.0, 2.0)
    return CrowdPlan(
        users=users,
        stock=args.stock,
        ramp_s=args.ramp if args.ramp is not None else ramp,
        hold_s=args.hold if args.hold is not None else hold,
        decay_s=args.decay if args.decay is not None else decay,
    )


# --- the core: one sale on a running stack ------------------------------------------------------


async def run_sale(
    settings: Settings,
    plan: CrowdPlan,
    *,
    out_dir: Path,
    sale_id: str,
    gateway: str,
    quiet_k6: bool = False,
) -> report.SaleRun:
    """Let the crowd at a new sale, wait for its orders to settle, verify; the facts.

    k6's setup() creates the sale (admin API) to open plan.ramp_s later: setup runs once every
    VU is built, so the crowd's ramp ends at the opening however long k6 took to start."""
    redis = connect(settings.redis)
    sampler = Sampler(RedisStock(redis, api=settings.api), sale_id)
    sampler.start()
    try:
        env = plan.k6_env(
            base_url=settings.api.url, sale_id=sale_id, jwt_secret=settings.auth.jwt_secret
        )
        crowd = await k6.run(
            k6.script("flash_sale.js"),
            env=env,
            out_dir=out_dir,
            name="k6-crowd",
            timeout_s=plan.k6_timeout_s(),
            csv=True,
            quiet=quiet_k6,
        )
        verdict, quiet = await verify(settings, sale_id, wait_s=SETTLE_TIMEOUT_S)
    finally:
        await sampler.stop()
        await redis.aclose()
    opens_at = crowd.summary.get("opens_at")
    if not opens_at or crowd.csv_path is None:
        raise k6.K6Error("the k6 summary has no opening time (did setup() run?)")
    origin_ms = int(datetime.fromisoformat(opens_at.replace("Z", "+00:00")).timestamp() * 1000)
    samples, reserved = read_csv(crowd.csv_path)
    duration_s = max(1.0, plan.ramp_s + plan.hold_s + plan.decay_s)
    series = bucketize(
        samples, reserved, origin_ms=origin_ms, bucket_s=0.25 if duration_s < 30 else 1.0
    )
    return report.SaleRun(
        sale_id=sale_id,
        stock=plan.stock,
        users=plan.users,
        opens_at_ms=origin_ms,
        k6=crowd.summary,
        series=series,
        samples=sampler.samples,
        verdict=verdict,
        quiescent=quiet.quiescent,
        k6_exit_code=crowd.exit_code,
        gateway=gateway,
        environment=report.environment(),
    )


# --- the command ----------------------------------------------------------------------------------


def stack_options(args: argparse.Namespace) -> StackOptions:
    options = StackOptions(data_dir=Path(args.data_dir))
    if args.api_workers:
        options.api_workers = args.api_workers
    if args.free_ports:
        for name in ("api", "sse", "gateway", "order", "payment", "redis", "postgres"):
            setattr(options, f"{name}_port", free_port())
    # One address (127.0.0.1) stands for the whole crowd here: lift the per-address limit; the
    # per-user limit stays as configured.
    options.env["FLASHSALE_API__RATE_LIMIT_ADDR_PER_S"] = "0"
    options.env.setdefault("FLASHSALE_LOG_LEVEL", "WARNING")
    if args.gateway_fast:
        options.env.update(FAST_GATEWAY_ENV)
    return options


@contextmanager
def running_stack(options: StackOptions) -> Iterator[Stack]:
    stack = Stack(options)
    stack.start()
    try:
        yield stack
    finally:
        console.print("stopping the stack…")
        stack.stop()


# --- the pages (issue 9): their URLs while the stack is up, and a minute to look after the load ---

# A minute: long enough to open the pages and look at the settled sale; --no-linger skips it.
LINGER_S = 60


def announce_pages(stack: Stack, sale_id: str) -> None:
    """The buyer page and the dashboard of this sale; the dashboard link carries an admin token in
    its fragment (never sent to a server)."""
    admin = mint(stack.settings().auth, user_id="demo-ops", admin=True)
    # soft_wrap: a URL broken over two lines could not be copied or clicked.
    console.print(f"buyer page: {stack.api_url}/?sale={sale_id}", soft_wrap=True)
    console.print(
        f"dashboard:  {stack.api_url}/dashboard?sale={sale_id}#token={admin}", soft_wrap=True
    )


def after_report(stack: Stack, args: argparse.Namespace) -> None:
    """The stack is still up here and the report written: keep the pages up a minute."""
    if args.no_linger:
        return
    console.print(
        f"the stack stays up {LINGER_S} s for the pages ({stack.api_url}/ and /dashboard above); "
        "Ctrl-C stops it now, --no-linger skips this"
    )
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(LINGER_S)


def run_demo(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    options = stack_options(args)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.reports) / stamp
    gateway = "fast gateway" if args.gateway_fast else "default gateway failure model"
    console.print("[bold]flashsale demo[/]: starting the local stack…")
    try:
        with running_stack(options) as stack:
            console.print(
                f"sale demo-{stamp}: {plan.stock:,} units, {plan.users:,} buyers arriving at up to "
                f"{plan.peak_rate:,}/s; {gateway}; k6 output follows"
            )
            announce_pages(stack, f"demo-{stamp}")
            run = asyncio.run(
                run_sale(
                    stack.settings(),
                    plan,
                    out_dir=out_dir,
                    sale_id=f"demo-{stamp}",
                    gateway=gateway,
                )
            )
            summary = report.write(run, out_dir)
            report.print_summary(console, summary)
            console.print(f"report: {out_dir / 'index.html'}")
            after_report(stack, args)
    except PortInUse as e:
        console.print(f"[red]{e}[/] (or use --free-ports)")
        return 1
    except (k6.K6Error, RuntimeError, httpx.HTTPError) as e:
        console.print(f"[red]demo failed: {e}[/]")
        return 1
    return _verdict(summary)


def _verdict(summary: dict[str, Any]) -> int:
    if summary["ok"]:
        console.print("[green]demo passed[/]: every invariant holds, every answer in the contract")
        return 0
    console.print("[red]demo failed[/]: " + "; ".join(summary["failures"]))
    return 1
