"""bench.json -> the Markdown tables of bench.md (and docs/benchmarks.md) and the terminal summary:
absolute figures, ratios to the bare baseline measured in the same run, and each target of issue 4
with what was measured against it. Pure: works on the results dict alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markdown import Markdown

# A step is sustained when the server kept up: nearly every planned arrival answered, almost none
# dropped for want of a free VU, and nothing outside the contract or unanswered.
SUSTAINED_SHARE = 0.97
MAX_DROPPED_SHARE = 0.01
TARGET_RATE = 2500  # purchase attempts/s sustained with 0 unexpected errors
LATENCY_RATE = 1700  # the rate the latency targets are read at
LATENCY_TARGETS_MS = {"p50": 5.0, "p95": 11.0, "p99": 20.0}
BASELINE_SHARE = 0.5
ORDER_WORKER_TARGET = 10_000  # orders/s into PostgreSQL
SSE_CLIENTS_TARGET = 10_000  # per process
SSE_RSS_TARGET_MB = 256.0


def sustained(step: dict[str, Any]) -> bool:
    target, duration = step["target_rate"], step["duration_s"]
    statuses = step.get("statuses", {})
    return (
        step["achieved_rate"] >= SUSTAINED_SHARE * target
        and step["dropped_iterations"] <= MAX_DROPPED_SHARE * target * duration
        and not statuses.get("other")
        and not step.get("failed_rate")
    )


def best_sustained(steps: Sequence[dict[str, Any]]) -> int | None:
    rates = [s["target_rate"] for s in steps if sustained(s)]
    return max(rates) if rates else None


def peak(steps: Sequence[dict[str, Any]]) -> float:
    return max((s["achieved_rate"] for s in steps), default=0.0)


def _step(steps: Sequence[dict[str, Any]], rate: int) -> dict[str, Any] | None:
    return next((s for s in steps if s["target_rate"] == rate), None)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pct(share: Any) -> str:
    return "-" if share is None else f"{share:.0%}"


def _latency(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    lat = step["latency_ms"]
    return " / ".join(_num(lat.get(k), 2) for k in ("p50", "p95", "p99"))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_num(c) if not isinstance(c, str) else c for c in row) + " |"
              for row in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


def _phase(results: dict[str, Any], name: str) -> dict[str, Any]:
    phase = results.get("phases", {}).get(name) or {}
    return phase if "error" not in phase else {}


def _steps_of(results: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """The throughput phase's steps against `target` (baseline or purchase)."""
    steps: list[dict[str, Any]] = _phase(results, "throughput").get(target, {}).get("steps", [])
    return steps


# --- targets --------------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target of issue 4 the phases that ran can speak to."""
    out: list[tuple[str, str, bool | None]] = []
    purchase, baseline = _steps_of(results, "purchase"), _steps_of(results, "baseline")
    if purchase:
        best = best_sustained(purchase)
        out.append((f"≥ {TARGET_RATE:,} purchase attempts/s sustained, 0 unexpected errors",
                    f"{_num(best)}/s sustained (peak {_num(peak(purchase))}/s)",
                    best is not None and best >= TARGET_RATE))  # fmt: skip
        at = _step(purchase, LATENCY_RATE)
        if at is not None:
            lat = at["latency_ms"]
            met = all((lat.get(k) or 1e9) <= limit for k, limit in LATENCY_TARGETS_MS.items())
            measured = f"{_latency(at)} ms (achieved {_num(at['achieved_rate'])}/s)"
            out.append(
                (f"ack p50 ≤ 5 / p95 ≤ 11 / p99 ≤ 20 ms at {LATENCY_RATE:,}/s", measured, met)
            )
    if purchase and baseline and peak(baseline):
        ratio = peak(purchase) / peak(baseline)
        out.append((f"throughput ≥ {BASELINE_SHARE:.0%} of the bare baseline",
                    f"{ratio:.0%} ({_num(peak(purchase))} / {_num(peak(baseline))} req/s peak)",
                    ratio >= BASELINE_SHARE))  # fmt: skip
    for target in _phase(results, "sellout").get("targets", []):
        out.append((target["target"], f"{_num(target['value'], 2)} s", bool(target["met"])))
    drain = _phase(results, "drain")
    if drain.get("orders_per_s"):
        rate = drain["orders_per_s"]
        out.append((f"order worker ≥ {ORDER_WORKER_TARGET:,} orders/s into PostgreSQL",
                    f"{_num(rate)} orders/s", rate >= ORDER_WORKER_TARGET))  # fmt: skip
    out.extend(_sse_target(results))
    return out


def _sse_target(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    steps = _phase(results, "sse").get("capacity", {}).get("steps", [])
    if not steps:
        return []
    held = [s for s in steps if not s.get("missed") and s["rss_mb"] <= SSE_RSS_TARGET_MB]
    best = max(held, key=lambda s: s["clients"], default=None)
    measured = (
        f"{_num(best['clients'])} clients in {_num(best['rss_mb'])} MB" if best else "none held"
    )
    met = best is not None and best["clients"] >= SSE_CLIENTS_TARGET
    return [(f"SSE ≥ {SSE_CLIENTS_TARGET:,} clients per process under 256 MB", measured, met)]


def all_invariants_hold(results: dict[str, Any]) -> bool:
    """True when every phase that checked a sale found its invariants holding (a phase that
    failed before its check counts as failed)."""
    ok = True
    for phase in results.get("phases", {}).values():
        if "error" in phase:
            ok = False
        for check in _invariant_checks(phase):
            ok = ok and bool(check.get("ok"))
    return ok


def _invariant_checks(node: Any) -> list[dict[str, Any]]:
    """Every `invariants` verdict anywhere in a phase's result (nested dicts and lists)."""
    found = []
    if isinstance(node, list):
        for item in node:
            found.extend(_invariant_checks(item))
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "invariants" and isinstance(value, dict):
                found.append(value)
            else:
                found.extend(_invariant_checks(value))
    return found


# --- Markdown -------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    parts = [
        f"# flashsale bench {results.get('started_at', '')}\n",
        f"Machine: {env.get('cpus')} CPUs ({env.get('cpu_model')}), Python {env.get('python')}, "
        f"{env.get('k6')}; load average (1/5/15 min) {env.get('load_average_1_5_15')} at the "
        f"start, {env.get('load_average_at_end')} at the end. k6 runs on the same machine. "
        f"Code: {env.get('git')}.\n",
        "## Targets\n",
        _table(
            ["target", "measured", "met"],
            [(t, m, "yes" if ok else "no") for t, m, ok in targets(results)],
        ),  # fmt: skip
    ]
    parts += _throughput_md(results)
    parts += _durability_md(results)
    parts += _other_md(results)
    parts.append(
        "## Noise: CPU of other processes per phase\n\nShare of both CPUs used by processes "
        "outside this benchmark (other work on the machine) while the phase ran; our own share "
        "includes k6. The load average counts our processes too.\n"
    )
    parts.append(_table(["phase", "others' CPU", "ours", "load avg before", "seconds"], [
        (name, _pct(p.get("cpu_others")), _pct(p.get("cpu_ours")),
         str(p.get("load_average_before")), p.get("seconds"))
        for name, p in results.get("phases", {}).items()
    ]))  # fmt: skip
    return "\n".join(parts)


def _throughput_md(results: dict[str, Any]) -> list[str]:
    purchase, baseline = _steps_of(results, "purchase"), _steps_of(results, "baseline")
    if not purchase and not baseline:
        return []
    rows = []
    for rate in sorted({s["target_rate"] for s in [*purchase, *baseline]}):
        api, base = _step(purchase, rate), _step(baseline, rate)
        ratio = (
            f"{api['achieved_rate'] / base['achieved_rate']:.0%}"
            if api and base and base["achieved_rate"]
            else "-"
        )
        rows.append((
            rate, _num(base and base["achieved_rate"]), _latency(base),
            _num(api and api["achieved_rate"]), _latency(api),
            _num(api and api["dropped_iterations"]), _statuses(api), ratio,
            f"{_pct(base and base.get('cpu_others'))} / {_pct(api and api.get('cpu_others'))}",
        ))  # fmt: skip
    return [
        "## Purchase throughput vs the bare baseline\n",
        "Each rate ran against the baseline, then at once against the purchase endpoint. "
        "'others' CPU' is the share of both CPUs other work on the machine used during each run: "
        "figures next to a high share are not clean.\n",
        _table(["target/s", "baseline req/s", "baseline p50/p95/p99 ms", "purchase req/s",
                "purchase p50/p95/p99 ms", "dropped", "answers", "purchase/baseline",
                "others' CPU (baseline / purchase)"], rows),
    ]  # fmt: skip


def _statuses(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    return " ".join(f"{k}:{v}" for k, v in step["statuses"].items() if v)


def _durability_md(results: dict[str, Any]) -> list[str]:
    runs = _phase(results, "durability").get("runs", [])
    if not runs:
        return []
    rows = [
        (run["appendfsync"], run["round"], step["target_rate"], step["achieved_rate"],
         _latency(step), _pct(step.get("cpu_others")))
        for run in runs
        for step in run["steps"]
    ]  # fmt: skip
    header = ["appendfsync", "round", "target/s", "achieved/s", "p50/p95/p99 ms", "others' CPU"]
    return ["## Durability: Valkey appendfsync always vs everysec (alternated)\n",
            _table(header, rows)]  # fmt: skip


def _other_md(results: dict[str, Any]) -> list[str]:
    rows = [*_drain_rows(results), *_sse_rows(results), *_payment_rows(results)]
    if not rows:
        return []
    return ["## Workers, SSE, sell-out\n", _table(["figure", "measured"], rows)]


def _drain_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    drain = _phase(results, "drain")
    if drain:
        took = drain.get("seconds_from_first_batch")
        rows.append(("order worker drain", f"{_num(drain.get('orders_per_s'))} orders/s "
                     f"({_num(drain.get('drained'))} orders in {took} s)"))  # fmt: skip
    sellout = _phase(results, "sellout")
    if sellout:
        t = sellout.get("timeline_s", {})
        rows.append((f"sell-out ({_num(sellout.get('stock'))} units, "
                     f"{_num(sellout.get('users'))} buyers, {sellout.get('gateway')})",
                     f"all reserved {_num(t.get('stock_reserved_s'), 2)} s after opening; "
                     f"all final {_num(t.get('settled_after_last_unit_s'), 2)} s after the "
                     "last unit"))  # fmt: skip
    return rows


def _sse_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for s in _phase(results, "sse").get("capacity", {}).get("steps", []):
        fanout = f"{s['fanout_p50_ms']}/{s['fanout_p99_ms']} ms"
        rows.append((f"SSE {s['clients']:,} idle clients",
                     f"{s['rss_mb']} MB RSS, {s['kb_per_client']} KB/client, fan-out p50/p99 "
                     f"{fanout}, missed {s['missed']}"))  # fmt: skip
    load = _phase(results, "sse").get("under_load", {})
    if load:
        k6sum, delay = load.get("k6", {}), load.get("event_delay", {}).get("delay_ms", {})
        first = (k6sum.get("first_event_ms") or {}).get("p95")
        rows.append(("SSE under purchases (sse.js)",
                     f"{_num(k6sum.get('connected'))}/{_num(k6sum.get('clients'))} connected, "
                     f"first event p95 {_num(first, 2)} ms, event delay p50/p99 "
                     f"{_num(delay.get('p50'))}/{_num(delay.get('p99'))} ms"))  # fmt: skip
    return rows


def _payment_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    payments = _phase(results, "payments")
    if not payments:
        return []
    return [("payment worker (fast gateway)",
             f"{_num(payments.get('payments_per_s'))} payments settled/s")]  # fmt: skip


# --- the terminal ---------------------------------------------------------------------------------


def print_phase(console: Console, name: str, result: dict[str, Any]) -> None:
    if "error" in result:
        console.print(f"[red]{name}: {result['error']}[/]")
        return
    steps = result.get("steps") or []
    for step in steps:
        console.print(
            f"  {step['target_rate']:>6}/s -> {step['achieved_rate']:>8}/s  "
            f"p50/p95/p99 {_latency(step)} ms  dropped {step['dropped_iterations']}"
        )
    console.print(f"  {name} done in {result.get('seconds')} s")


def print_pair(console: Console, base: dict[str, Any], api: dict[str, Any]) -> None:
    """One rate as it finishes: the baseline's figures, then the purchase endpoint's."""
    for label, step in (("baseline", base), ("purchase", api)):
        console.print(
            f"  {step['target_rate']:>6}/s {label:<8} -> {step['achieved_rate']:>8}/s  "
            f"p50/p95/p99 {_latency(step)} ms  dropped {step['dropped_iterations']}  "
            f"others' CPU {_pct(step.get('cpu_others'))}"
        )


def print_tables(console: Console, results: dict[str, Any]) -> None:
    console.print(Markdown(markdown(results)))
