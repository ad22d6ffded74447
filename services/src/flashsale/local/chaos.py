"""`flashsale chaos` (`make chaos`): every fault-injection scenario against one local stack with its
own Valkey and PostgreSQL, then reports/<timestamp>/chaos.json and chaos.md: per scenario the
requests sent, 202s, orders in PostgreSQL, charges at the gateway, and oversold, lost, duplicated,
double-charged (all four must be 0), with `flashsale verify`'s verdict. The stack's data and its
processes' logs stay beside the report. Exit status 0 only if every scenario held.

The scenarios are in scenarios.py, hostile.py and fuzz.py; `make test` runs them with the SHORT
profile (services/tests/chaos/). Starts the product's processes; imports none of them."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flashsale.local import faults, fuzz, hostile, scenarios
from flashsale.local.chaosrun import PROFILES, ChaosRun, Profile, Tally, stack_options
from flashsale.local.report import environment
from flashsale.local.stack import Stack

console = Console()

Scenario = Callable[[ChaosRun], Awaitable[Tally]]


def _store(store: str) -> Scenario:
    return lambda run: scenarios.scenario_store(run, store)


def _gateway(mode: str) -> Scenario:
    return lambda run: scenarios.scenario_gateway(run, mode)


# In this order: the kills first, on a fresh stack; the stores next (everything reconnects); the
# gateway modes; then the scenarios that stop a process or flood one.
SCENARIOS: dict[str, Scenario] = {
    "kills": scenarios.scenario_kills,
    "valkey": _store("valkey"),
    "postgres": _store("postgres"),
    **{f"gateway-{mode}": _gateway(mode) for mode in scenarios.GATEWAY_MODES},
    "half-settled": scenarios.scenario_half_settled,
    "storms": scenarios.scenario_storms,
    "hostile": hostile.scenario_hostile,
    "fuzz": fuzz.scenario_fuzz,
    "backpressure": scenarios.scenario_backpressure,
}

COLUMNS = (
    ("requests", "requests"),
    ("202s", "answers_202"),
    ("orders", "orders"),
    ("charges", "charges"),
    ("oversold", "oversold"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("double-charged", "double_charged"),
)


async def run_scenarios(run: ChaosRun, names: list[str]) -> list[Tally]:
    """Each scenario in turn; one that raises becomes a failed row and the next one still runs."""
    tallies = []
    for name in names:
        started = time.monotonic()
        run.progress(f"{name}: starting")
        try:
            tally = await SCENARIOS[name](run)
        except (faults.FaultError, RuntimeError, OSError) as e:
            tally = Tally(name, name, sale_id="")
            tally.findings.append(f"the scenario did not complete: {e!r}")
            tally.seconds = time.monotonic() - started
            run.progress(f"{name}: did not complete ({e})")
        tallies.append(tally)
    return tallies


def build_report(tallies: list[Tally], *, profile: Profile, seconds: float) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile.name,
        "environment": environment(),
        "seconds": round(seconds, 1),
        "ok": all(t.ok for t in tallies),
        "scenarios": [t.to_doc() for t in tallies],
    }


def markdown(report: dict[str, Any]) -> str:
    """chaos.md: the table, then what each scenario did and found."""
    lines = [
        f"# flashsale chaos ({report['profile']} profile)",
        "",
        f"{report['generated_at']}, {report['environment']['cpus']} CPUs, load average "
        f"{report['environment']['load_average_1_5_15']}, {report['seconds']:.0f} s in all. "
        f"**{'Every scenario held.' if report['ok'] else 'FAILED: see the findings below.'}**",
        "",
        "| scenario | " + " | ".join(title for title, _ in COLUMNS) + " | verify | s |",
        "|---|" + "---:|" * len(COLUMNS) + "---|---:|",
    ]
    for s in report["scenarios"]:
        cells = [s["scenario"], *(str(s[key]) for _, key in COLUMNS)]
        cells += ["ok" if s["ok"] else "**FAILED**", str(s["seconds"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "oversold, lost, duplicated and double-charged must all be 0.", ""]
    for s in report["scenarios"]:
        lines += [f"## {s['scenario']}: {s['title']}", ""]
        lines += [f"- fault: {f}" for f in s["faults"]]
        lines += [f"- check {c}" for c in s["checks"]]
        lines += [f"- **finding: {f}**" for f in s["findings"]]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "chaos.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / "chaos.md").write_text(markdown(report))


def print_table(report: dict[str, Any]) -> None:
    table = Table(title=f"flashsale chaos ({report['profile']})")
    table.add_column("scenario")
    for title, _ in COLUMNS:
        table.add_column(title, justify="right")
    table.add_column("verify")
    for s in report["scenarios"]:
        table.add_row(
            s["scenario"],
            *(str(s[key]) for _, key in COLUMNS),
            "[green]ok[/]" if s["ok"] else "[red]FAILED[/]",
        )
    console.print(table)
    for s in report["scenarios"]:
        for finding in s["findings"]:
            console.print(f"[red]{s['scenario']}: {finding}[/]")


# --- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="long", help="scenario sizes (default long)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios (default all): " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--reports", default="reports", help="where reports are written")
    parser.add_argument("--seed", type=int, default=7, help="seeds the buyers and the gateway")


def selected(only: str) -> list[str]:
    names = [n.strip() for n in only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios: {', '.join(unknown)}")
    return names


def run_chaos(args: argparse.Namespace) -> int:
    """The command: a stack, the scenarios, the report. 0 when every scenario held."""
    names = selected(args.only)
    profile = PROFILES[args.profile]
    out_dir = Path(args.reports) / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    stack = Stack(stack_options(profile, out_dir / "stack"))
    console.print(f"[bold]flashsale chaos[/] ({profile.name}): starting the stack…")
    started = time.monotonic()
    stack.start()
    supervisor = faults.Supervisor(stack).start()
    try:
        run = ChaosRun(stack, profile, supervisor=supervisor, seed=args.seed)
        run.progress = lambda message: console.print(f"  {message}")
        tallies = asyncio.run(run_scenarios(run, names))
    finally:
        supervisor.stop()
        console.print("stopping the stack…")
        stack.stop()
    report = build_report(tallies, profile=profile, seconds=time.monotonic() - started)
    write_report(report, out_dir)
    print_table(report)
    console.print(f"report: {out_dir / 'chaos.md'}")
    return 0 if report["ok"] else 1


def main() -> int:
    """`python -m flashsale.local.chaos`: the same as `flashsale chaos`."""
    parser = argparse.ArgumentParser(prog="python -m flashsale.local.chaos")
    add_arguments(parser)
    return run_chaos(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
