"""What a demo run produced, judged and written down: `summary.json` (machine-readable), the
plots, `index.html`, and the tables printed in the terminal.

Pure apart from writing files and printing: the run's facts come in as a `SaleRun` (the k6
summary, the k6 time series, the sampled counters, the invariant verdict), so the whole report can
be built from synthetic data in tests."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flashsale.domain.invariants import Verdict
from flashsale.local import reportpage
from flashsale.local.sampler import CounterSample, first_sold_out_ms, settled_ms
from flashsale.local.series import Series, sellout_ms

# The targets of issue 4 a sale run can show (the throughput ones come from `flashsale bench`).
SELLOUT_TARGET_S = 1.0  # all of a 1,000-unit stock reserved within 1 s of the opening
SETTLED_TARGET_S = 5.0  # every order final within 5 s of the last unit reserved


@dataclass
class SaleRun:
    sale_id: str
    stock: int
    users: int
    opens_at_ms: int
    k6: dict[str, Any]
    series: Series
    samples: list[CounterSample]
    verdict: Verdict
    quiescent: bool
    k6_exit_code: int = 0
    gateway: str = "default failure model"
    environment: dict[str, Any] = field(default_factory=dict)


def environment() -> dict[str, Any]:
    """The machine, for reading figures later: CPUs, load average (others' work skews timings)."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average_1_5_15": [round(x, 2) for x in load],
    }


def _since(t_ms: int | None, origin_ms: int) -> float | None:
    return None if t_ms is None else round((t_ms - origin_ms) / 1000, 3)


def timeline(run: SaleRun) -> dict[str, float | None]:
    """Seconds from the opening, as seen by the buyers (k6) and by Redis (the sampler)."""
    origin = run.opens_at_ms
    reserved = run.series.reserved_ms
    last_unit = reserved[-1] if reserved else None
    settled = settled_ms(run.samples)
    return {
        "first_reserved_s": _since(reserved[0] if reserved else None, origin),
        "stock_reserved_s": _since(sellout_ms(reserved, stock=run.stock), origin),
        "first_sold_out_sample_s": _since(first_sold_out_ms(run.samples), origin),
        "first_sold_out_answer_s": _first_sold_out_answer(run),
        "last_unit_s": _since(last_unit, origin),
        "settled_s": _since(settled, origin),
        # Never below 0: the sampler may see the last unit settled before k6 notes its 202.
        "settled_after_last_unit_s": (
            None
            if settled is None or last_unit is None
            else round(max(0, settled - last_unit) / 1000, 3)
        ),
    }


def _first_sold_out_answer(run: SaleRun) -> float | None:
    """k6 times sold_out answers from its own start; moved to the opening's clock."""
    first = run.k6.get("first_sold_out_s")
    start = run.k6.get("test_start_ms")
    if first is None or start is None:
        return None
    return round((float(start) + float(first) * 1000 - run.opens_at_ms) / 1000, 3)


def units(run: SaleRun) -> dict[str, int]:
    last = run.samples[-1] if run.samples else None
    if last is None:
        return {}
    return {
        "initial": run.stock,
        "remaining": last.remaining,
        "pending": last.pending,
        "confirmed": last.confirmed,
        "failed_released": last.failed,
        "needs_reconciliation": last.needs_reconciliation,
    }


def targets(run: SaleRun, times: dict[str, float | None]) -> list[dict[str, Any]]:
    sold = times["stock_reserved_s"]
    settled = times["settled_after_last_unit_s"]
    return [
        {
            "target": f"all {run.stock} units reserved within {SELLOUT_TARGET_S:g} s of opening",
            "value": sold,
            "met": sold is not None and sold <= SELLOUT_TARGET_S,
        },
        {
            "target": f"every order final within {SETTLED_TARGET_S:g} s of the last unit "
            f"({run.gateway})",
            "value": settled,
            "met": settled is not None and settled <= SETTLED_TARGET_S,
        },
    ]


def failures(run: SaleRun) -> list[str]:
    """Why the run failed (empty: it passed). Targets are reported, not judged here."""
    out = []
    outcomes = run.k6.get("outcomes", {})
    if outcomes.get("unexpected", 0):
        out.append(f"{outcomes['unexpected']} answers outside the contract")
    if run.k6.get("contract_checks_passed") not in (1, 1.0, None):
        out.append("k6 contract checks failed")
    if not run.verdict.ok:
        broken = ", ".join(c.name for c in run.verdict.checks if not c.ok)
        out.append(f"invariants violated: {broken}")
    if not run.quiescent:
        out.append("orders still unsettled when the wait ended")
    return out


def build_summary(run: SaleRun) -> dict[str, Any]:
    times = timeline(run)
    k6 = run.k6
    reasons = failures(run)
    return {
        "sale_id": run.sale_id,
        "stock": run.stock,
        "users": run.users,
        "gateway": run.gateway,
        "opens_at_ms": run.opens_at_ms,
        "crowd": {
            key: k6.get(key)
            for key in (
                "buyers",
                "buyers_reserved",
                "requests",
                "peak_rate_per_s",
                "dropped_iterations",
                "retries",
                "gave_up",
                "outcomes",
                "contract_checks_passed",
                "failed_rate",
                "max_vus",
            )
        },
        "ack_ms": k6.get("ack_ms"),
        "purchase_ms": k6.get("purchase_ms"),
        "k6_thresholds": k6.get("thresholds"),
        "k6_exit_code": run.k6_exit_code,
        "timeline_s": times,
        "units": units(run),
        "targets": targets(run, times),
        "invariants": [asdict(c) for c in run.verdict.checks],
        "quiescent": run.quiescent,
        "environment": run.environment,
        "ok": not reasons,
        "failures": reasons,
    }


def write(run: SaleRun, out_dir: Path) -> dict[str, Any]:
    """summary.json, series.json, the PNGs and index.html into out_dir; returns the summary."""
    from flashsale.local import plots  # matplotlib: loaded only when a report is drawn

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(run)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "series.json").write_text(json.dumps(run.series.to_doc()) + "\n")
    times = summary["timeline_s"]
    marks = plots.Marks(sold_out_s=times["stock_reserved_s"], settled_s=times["settled_s"])
    images = plots.all_plots(run.series, run.samples, marks, out_dir)
    (out_dir / "index.html").write_text(reportpage.render(summary, images))
    return summary


# --- the terminal -------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def _counts(outcomes: dict[str, int], *keys: str) -> str:
    return " / ".join(_fmt(outcomes.get(k)) for k in keys)


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    crowd, ack, times = summary["crowd"], summary["ack_ms"] or {}, summary["timeline_s"]
    outcomes = crowd.get("outcomes") or {}
    table = Table(title=f"sale {summary['sale_id']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("buyers / requests", f"{_fmt(crowd['buyers'])} / {_fmt(crowd['requests'])}"),
        ("reserved (202)", _fmt(outcomes.get("reserved"))),
        (
            "sold out / limit / not open (409)",
            _counts(outcomes, "sold_out", "purchase_limit_reached", "sale_not_open"),
        ),
        ("rate limited (429) / overloaded (503)", _counts(outcomes, "rate_limited", "overloaded")),
        ("store unavailable (503, replayed)", _fmt(outcomes.get("unavailable"))),
        ("network errors (replayed)", _fmt(outcomes.get("network_error"))),
        ("arrivals k6 dropped (no free VU)", _fmt(crowd.get("dropped_iterations"))),
        ("unexpected answers", _fmt(outcomes.get("unexpected"))),
        ("ack p50 / p95 / p99 ms", " / ".join(_fmt(ack.get(k)) for k in ("p50", "p95", "p99"))),
        ("all units reserved after", _fmt(times["stock_reserved_s"], " s")),
        ("first sold_out answer after", _fmt(times["first_sold_out_answer_s"], " s")),
        ("last unit reserved after", _fmt(times["last_unit_s"], " s")),
        ("all orders final after", _fmt(times["settled_s"], " s")),
    ]
    for label, value in rows:
        table.add_row(label, value)
    for key, value in summary["units"].items():
        table.add_row(f"units {key.replace('_', ' ')}", _fmt(value))
    console.print(table)
    _print_checks(console, summary)


def _print_checks(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="invariants and targets", title_justify="left")
    for col in ("check", "holds", "detail"):
        table.add_column(col, overflow="fold")
    for check in summary["invariants"]:
        mark = "[green]yes[/]" if check["ok"] else "[red]NO[/]"
        table.add_row(f"{check['number']}. {check['name']}", mark, check["detail"])
    for target in summary["targets"]:
        mark = "[green]met[/]" if target["met"] else "[yellow]missed[/]"
        table.add_row(target["target"], mark, _fmt(target["value"], " s"))
    console.print(table)
