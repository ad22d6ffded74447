"""`flashsale bench`: the benchmark suite on this machine, every phase against one local stack on
free ports (127.0.0.1 only), written to reports/<timestamp>/bench.json and bench.md.

Phases, in this order (--only picks some):
  sellout     1,000 units, the demo's crowd, the default gateway failure model: time to sell out
              and until every order is final (the payment worker runs only in this phase).
  throughput  throughput.js step by step, each rate first against a bare endpoint (one Redis call,
              same uvicorn, same processes: the baseline) and then against the purchase endpoint,
              so both see the same machine; the purchase's ratio to the baseline.
  durability  one purchase step with Valkey's appendfsync always, then everysec.
  drain       the order worker through a backlog of N orders into PostgreSQL.
  sse         clients per process and RSS (sse.capacity), then sse.js under purchases with the
              event delay timed by a Python client.
  payments    the payment worker's settle rate over the payments the phases above queued.
Each purchase phase ends with the invariant check on its sale. Every phase is bounded in time."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from flashsale.config import Settings
from flashsale.local import benchparts, benchreport, demo, k6, report
from flashsale.local.embedded import PortInUse, free_port
from flashsale.local.stack import FAST_GATEWAY_ENV, Stack, StackOptions

console = Console()

PHASES = ("sellout", "throughput", "durability", "drain", "sse", "payments")
# Beyond the planned run time, what a k6 run may take to start and to wind down.
K6_MARGIN_S = 120.0
SSE_CAPACITY_TIMEOUT_S = 600.0


@dataclass
class Bench:
    """One bench run: its stack, where it writes, what it found."""

    stack: Stack
    settings: Settings
    args: argparse.Namespace
    out_dir: Path
    results: dict[str, Any] = field(default_factory=dict)

    def k6_env(self, **extra: str) -> dict[str, str]:
        return {
            "BASE_URL": self.settings.api.url,
            "SSE_URL": self.stack.sse_url,
            "JWT_SECRET": self.settings.auth.jwt_secret,
            **extra,
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", default=",".join(PHASES), help="phases, comma-separated")
    parser.add_argument("--steps", default="500,1000,1700,2500,4000", help="purchase rates/s")
    parser.add_argument("--step-s", type=int, default=15, help="seconds per throughput step")
    parser.add_argument("--warmup-s", type=int, default=5, help="warm-up before the steps")
    parser.add_argument("--durability-rates", default="1700,4000", help="rates of that phase")
    parser.add_argument("--drain-orders", type=int, default=50_000, help="backlog for the drain")
    parser.add_argument("--sse-clients", default="1000,5000,10000", help="capacity steps")
    parser.add_argument("--sse-load-clients", type=int, default=1000, help="sse.js listeners")
    parser.add_argument("--sse-hold-s", type=float, default=20.0, help="sse.js stream length")
    parser.add_argument("--payments-window-s", type=float, default=20.0, help="settle-rate window")
    parser.add_argument("--api-workers", type=int, default=None, help="default: CPU count")
    parser.add_argument("--sellout-users", type=int, default=None, help="default: 2,500 per CPU")
    parser.add_argument("--sellout-stock", type=int, default=1000, help="units of the sell-out")
    parser.add_argument("--gateway-fast", action="store_true", help="no gateway failures/latency")
    parser.add_argument("--reports", default="reports", help="where reports are written")
    parser.add_argument("--keep-data", action="store_true", help="keep the stack's data dir")


def _stack_options(args: argparse.Namespace, stamp: str) -> StackOptions:
    options = StackOptions(data_dir=Path(args.data_dir) / f"bench-{stamp}")
    for name in ("api", "sse", "gateway", "order", "payment", "redis", "postgres"):
        setattr(options, f"{name}_port", free_port())
    if args.api_workers:
        options.api_workers = args.api_workers
    # k6 is one address: the per-address limits (API rate, SSE connections) would measure
    # themselves. Per-user limits stay on.
    options.env["FLASHSALE_API__RATE_LIMIT_ADDR_PER_S"] = "0"
    options.env["FLASHSALE_SSE__MAX_CLIENTS_PER_ADDR"] = "20000"
    options.env.setdefault("FLASHSALE_LOG_LEVEL", "WARNING")
    if args.gateway_fast:
        options.env.update(FAST_GATEWAY_ENV)
    return options


def run_bench(args: argparse.Namespace) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.reports) / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    options = _stack_options(args, stamp)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        console.print(f"[red]unknown phases: {', '.join(sorted(unknown))}[/]")
        return 2
    console.print(f"[bold]flashsale bench[/]: {', '.join(phases)}; starting a stack on free ports…")
    stack = Stack(options)
    try:
        stack.start()
    except (PortInUse, RuntimeError) as e:
        console.print(f"[red]the stack did not start: {e}[/]")
        return 1
    bench = Bench(stack, stack.settings(), args, out_dir)
    bench.results = {"started_at": stamp, "environment": _environment(), "phases": {}}
    try:
        asyncio.run(_run_phases(bench, phases))
    finally:
        stack.stop()
        if not args.keep_data:
            shutil.rmtree(options.data_dir, ignore_errors=True)
        bench.results["environment"]["load_average_at_end"] = _load()
        (out_dir / "bench.json").write_text(json.dumps(bench.results, indent=2) + "\n")
        markdown = benchreport.markdown(bench.results)
        (out_dir / "bench.md").write_text(markdown)
    benchreport.print_tables(console, bench.results)
    console.print(f"written: {out_dir / 'bench.json'}, {out_dir / 'bench.md'}")
    return 0 if benchreport.all_invariants_hold(bench.results) else 1


async def _run_phases(bench: Bench, phases: list[str]) -> None:
    steps: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
        "sellout": phase_sellout,
        "throughput": phase_throughput,
        "durability": phase_durability,
        "drain": phase_drain,
        "sse": phase_sse,
        "payments": phase_payments,
    }
    for name in PHASES:
        if name not in phases:
            continue
        if name != "sellout":
            # Only the sell-out settles payments as it goes; for the rest the payment worker waits
            # (the last phase times it), so its charges do not share the CPUs being measured.
            bench.stack.child("worker-payment-1").stop()
        console.rule(f"[bold]{name}")
        started, load, cpu = time.monotonic(), _load(), benchparts.CpuWatch()
        try:
            result = await steps[name](bench)
        except (k6.K6Error, RuntimeError, OSError, httpx.HTTPError) as e:
            result = {"error": str(e)}
            console.print(f"[red]{name} failed: {e}[/]")
        result["load_average_before"] = load
        result["load_average_after"] = _load()
        result["seconds"] = round(time.monotonic() - started, 1)
        result.update(cpu.shares())
        bench.results["phases"][name] = result
        benchreport.print_phase(console, name, result)


# --- phases ---------------------------------------------------------------------------------------


async def phase_sellout(bench: Bench) -> dict[str, Any]:
    args = bench.args
    users = args.sellout_users or demo.USERS_PER_CPU * (os.cpu_count() or 1)
    plan = demo.CrowdPlan(users=users, stock=args.sellout_stock)
    out = bench.out_dir / "sellout"
    run = await demo.run_sale(
        bench.settings,
        plan,
        out_dir=out,
        sale_id=f"bench-sellout-{bench.results['started_at']}",
        gateway="fast gateway" if args.gateway_fast else "default gateway failure model",
        quiet_k6=True,
    )
    summary = report.write(run, out)
    return {
        "sale_id": run.sale_id,
        "users": plan.users,
        "stock": plan.stock,
        "gateway": run.gateway,
        "timeline_s": summary["timeline_s"],
        "ack_ms": summary["ack_ms"],
        "crowd": summary["crowd"],
        "targets": summary["targets"],
        "invariants": {"ok": run.verdict.ok and run.quiescent, "checks": summary["invariants"]},
        "report": str(out / "index.html"),
    }


def _steps(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


async def _throughput(bench: Bench, name: str, *, steps: list[int], **env: str) -> dict[str, Any]:
    """One throughput.js run; each step carries the share of the CPUs other work used meanwhile."""
    args = bench.args
    planned = (args.warmup_s + 2) + len(steps) * (args.step_s + 2)  # with graceful stops
    cpu = benchparts.CpuWatch()
    run = await k6.run(
        k6.script("throughput.js"),
        env=bench.k6_env(
            STEPS=",".join(str(s) for s in steps),
            STEP_S=str(args.step_s),
            WARMUP_S=str(args.warmup_s),
            **env,
        ),
        out_dir=bench.out_dir,
        name=f"k6-{name}",
        timeout_s=planned + K6_MARGIN_S,
        quiet=True,
    )
    noise = cpu.shares()["cpu_others"]
    for step in run.summary["steps"]:
        step["cpu_others"] = noise
    return run.summary


async def phase_throughput(bench: Bench) -> dict[str, Any]:
    """Baseline and purchase, rate by rate, one right after the other: other work on the machine
    then weighs on both alike, and their ratio stays meaningful when the absolute figures do not."""
    workers = bench.stack.options.api_workers
    sale_id = f"bench-tp-{bench.results['started_at']}"
    baseline: list[dict[str, Any]] = []
    purchase: list[dict[str, Any]] = []
    log = bench.out_dir / "baseline-server.log"
    with benchparts.BaselineServer(redis_url=bench.stack.redis_url, workers=workers, log=log) as b:
        for rate in _steps(bench.args.steps):
            base = await _throughput(
                bench, f"baseline-{rate}", steps=[rate], BASE_URL=b.url, CHECK_SALE="false"
            )
            baseline += base["steps"]
            api = await _throughput(bench, f"purchase-{rate}", steps=[rate], SALE_ID=sale_id)
            purchase += api["steps"]
            benchreport.print_pair(console, baseline[-1], purchase[-1])
    invariants = await benchparts.check_sale(bench.settings, sale_id)
    return {
        "workers": workers,
        "baseline": {"steps": baseline},
        "purchase": {"steps": purchase, "sale_id": sale_id, "invariants": invariants},
    }


async def phase_durability(bench: Bench) -> dict[str, Any]:
    """The same steps with appendfsync always and everysec, alternated over two rounds, so a
    machine that gets busier or quieter meanwhile shows as a difference between rounds rather than
    between the policies."""
    runs: list[dict[str, Any]] = []
    try:
        for round_ in (1, 2):
            for mode in ("always", "everysec"):
                await benchparts.set_appendfsync(bench.stack.redis_url, mode)
                sale_id = f"bench-aof-{mode}-{round_}-{bench.results['started_at']}"
                summary = await _throughput(
                    bench,
                    f"aof-{mode}-{round_}",
                    steps=_steps(bench.args.durability_rates),
                    SALE_ID=sale_id,
                )
                invariants = await benchparts.check_sale(bench.settings, sale_id)
                runs.append({"appendfsync": mode, "round": round_, "steps": summary["steps"],
                             "invariants": invariants})  # fmt: skip
    finally:
        await benchparts.set_appendfsync(bench.stack.redis_url, "always")  # the product's setting
    return {"runs": runs}


async def phase_drain(bench: Bench) -> dict[str, Any]:
    orders = bench.args.drain_orders
    sale_id = f"bench-drain-{bench.results['started_at']}"
    worker = bench.stack.child("worker-order-1")
    await benchparts.put_sale(bench.settings, sale_id, stock=orders, per_user_limit=1000)
    worker.stop()
    try:
        prefill_s = await benchparts.prefill(bench.settings, sale_id, orders=orders)
        result = await benchparts.time_drain(bench.settings, worker, orders=orders, timeout_s=300)
    finally:
        if not worker.alive():
            worker.start()
    result["prefill_s"] = round(prefill_s, 2)
    result["invariants"] = await benchparts.check_sale(bench.settings, sale_id)
    return result


async def phase_sse(bench: Bench) -> dict[str, Any]:
    return {
        "capacity": await asyncio.to_thread(_sse_capacity, bench),
        "under_load": await _sse_under_load(bench),
    }


def _sse_capacity(bench: Bench) -> dict[str, Any]:
    """The SSE package's own capacity benchmark, run by module (local/ never imports sse/)."""
    path = bench.out_dir / "sse-capacity.json"
    log = bench.out_dir / "sse-capacity.log"
    args = [
        sys.executable, "-m", "flashsale.sse.capacity", "--redis-url", bench.stack.redis_url,
        "--clients", bench.args.sse_clients, "--json", str(path),
        "--max-s", str(int(SSE_CAPACITY_TIMEOUT_S - 30)),
    ]  # fmt: skip
    with log.open("wb") as out:
        done = subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, timeout=SSE_CAPACITY_TIMEOUT_S, check=False
        )
    if done.returncode != 0 or not path.exists():
        return {"error": f"sse.capacity exited with {done.returncode}; see {log}"}
    return {"steps": json.loads(path.read_text())}


async def _sse_under_load(bench: Bench) -> dict[str, Any]:
    from flashsale.adapters.redis_stock import connect
    from flashsale.local.sseprobe import probe

    sale_id = f"bench-sse-{bench.results['started_at']}"
    await benchparts.put_sale(bench.settings, sale_id, stock=10_000_000, per_user_limit=1000)
    hold_s = bench.args.sse_hold_s
    connect_s = min(5.0, hold_s / 4)  # listeners connect over this, spread like page loads
    redis = connect(bench.settings.redis)
    try:
        timed, run = await asyncio.gather(
            probe(redis=redis, sse_url=bench.stack.sse_url, sale_id=sale_id, clients=20,
                  hold_s=hold_s + connect_s),
            k6.run(
                k6.script("sse.js"),
                env=bench.k6_env(SALE_ID=sale_id, CREATE_SALE="false", HOLD_S=f"{hold_s:g}",
                                 CONNECT_S=f"{connect_s:g}",
                                 CLIENTS=str(bench.args.sse_load_clients), PURCHASE_RATE="500"),
                out_dir=bench.out_dir, name="k6-sse", timeout_s=hold_s + connect_s + K6_MARGIN_S,
                quiet=True,
            ),
        )  # fmt: skip
    finally:
        await redis.aclose()
    invariants = await benchparts.check_sale(bench.settings, sale_id)
    return {"k6": run.summary, "event_delay": timed.to_doc(), "invariants": invariants}


async def phase_payments(bench: Bench) -> dict[str, Any]:
    worker = bench.stack.child("worker-payment-1")
    return await benchparts.payment_rate(
        bench.settings, worker, window_s=bench.args.payments_window_s
    )


# --- the machine ----------------------------------------------------------------------------------


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _environment() -> dict[str, Any]:
    env = report.environment()
    try:
        version = subprocess.run(
            [str(k6.k6_binary()), "version"], capture_output=True, text=True, timeout=10
        ).stdout.split(" (")[0]
    except (k6.K6Error, OSError, subprocess.SubprocessError):
        version = None
    env["k6"] = version
    env["cpu_model"] = _cpu_model()
    env["git"] = _git_revision()
    return env


def _git_revision() -> str | None:
    """The code measured: commit, and -dirty when the working tree differs from it."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
