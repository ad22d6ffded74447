"""bench.json -> bench.md and the verdict, on synthetic phase results; and the demo's crowd plan."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from rich.console import Console

from flashsale.local import benchreport
from flashsale.local.demo import CrowdPlan, plan_from_args


def step(rate: int, achieved: float, *, dropped: int = 0, other: int = 0, p50: float = 2.0,
         p95: float = 8.0, p99: float = 15.0) -> dict[str, Any]:  # fmt: skip
    return {
        "target_rate": rate,
        "duration_s": 10,
        "requests": int(achieved * 10),
        "achieved_rate": achieved,
        "dropped_iterations": dropped,
        "failed_rate": 0,
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
        "statuses": {"202": int(achieved * 10), "409": 0, "429": 0, "503": 0, "other": other},
    }


def results() -> dict[str, Any]:
    ok = {"ok": True, "checks": [{"number": 1, "ok": True}]}
    return {
        "started_at": "20260101-000000",
        "environment": {"cpus": 2, "load_average_1_5_15": [0.5, 0.4, 0.3]},
        "phases": {
            "throughput": {
                "baseline": {"steps": [step(1700, 1700), step(2500, 2500), step(4000, 3000)]},
                "purchase": {
                    "steps": [
                        step(1700, 1700, p50=3.0, p95=9.0),
                        step(2500, 2490),
                        step(4000, 1800, dropped=5000),
                    ],
                    "invariants": ok,
                },
            },
            "durability": {
                "runs": [
                    {
                        "appendfsync": "always",
                        "round": 1,
                        "steps": [step(1700, 1650)],
                        "invariants": ok,
                    },
                    {
                        "appendfsync": "everysec",
                        "round": 1,
                        "steps": [step(1700, 1700)],
                        "invariants": ok,
                    },
                ]
            },  # fmt: skip  # fmt: skip
            "drain": {
                "orders_per_s": 12000,
                "drained": 50000,
                "seconds_from_first_batch": 4.2,
                "invariants": ok,
            },  # fmt: skip
            "sse": {
                "capacity": {
                    "steps": [
                        {
                            "clients": 10000,
                            "rss_mb": 180.0,
                            "kb_per_client": 12.0,
                            "fanout_p50_ms": 40,
                            "fanout_p99_ms": 90,
                            "missed": 0,
                        }
                    ]
                }
            },  # fmt: skip
            "payments": {"payments_per_s": 900.0},
            "sellout": {
                "targets": [
                    {"target": "all 1000 units reserved within 1 s", "value": 0.8, "met": True}
                ],
                "timeline_s": {"stock_reserved_s": 0.8, "settled_after_last_unit_s": 4.0},
                "invariants": ok,
            },  # fmt: skip
        },
    }


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (step(1000, 1000), True),
        (step(1000, 960), False),  # fell behind
        (step(1000, 1000, dropped=101), False),  # > 1 % of 10,000 arrivals dropped
        (step(1000, 1000, other=1), False),  # an answer outside the contract
    ],
)
def test_sustained(s: dict[str, Any], expected: bool) -> None:
    assert benchreport.sustained(s) is expected


def test_targets_against_the_issue() -> None:
    found = {t: (m, ok) for t, m, ok in benchreport.targets(results())}
    rate = found["≥ 2,500 purchase attempts/s sustained, 0 unexpected errors"]
    assert rate == ("2,500/s sustained (peak 2,490/s)", True)
    latency = found["ack p50 ≤ 5 / p95 ≤ 11 / p99 ≤ 20 ms at 1,700/s"]
    assert latency[1] is True
    ratio = found["throughput ≥ 50% of the bare baseline"]
    assert ratio == ("83% (2,490 / 3,000 req/s peak)", True)
    assert found["order worker ≥ 10,000 orders/s into PostgreSQL"][1] is True
    assert found["SSE ≥ 10,000 clients per process under 256 MB"] == (
        "10,000 clients in 180.0 MB",
        True,
    )
    assert found["all 1000 units reserved within 1 s"] == ("0.80 s", True)


def test_markdown_has_the_tables() -> None:
    md = benchreport.markdown(results())
    for heading in (
        "## Targets",
        "## Purchase throughput vs the bare baseline",
        "## Durability",
        "## Workers, SSE, sell-out",
        "## Noise: CPU of other processes per phase",
    ):
        assert heading in md  # fmt: skip
    assert "| 4,000 | 3,000 |" in md
    assert "60%" in md  # 1,800 of the baseline's 3,000 at 4,000/s
    assert "| everysec | 1 | 1,700 | 1,700 |" in md
    assert "others' CPU (baseline / purchase)" in md


def test_a_failed_phase_or_invariant_fails_the_bench() -> None:
    good = results()
    assert benchreport.all_invariants_hold(good)
    broken = results()
    broken["phases"]["drain"]["invariants"] = {"ok": False, "checks": []}
    assert not benchreport.all_invariants_hold(broken)
    in_a_list = results()
    in_a_list["phases"]["durability"]["runs"][1]["invariants"] = {"ok": False, "checks": []}
    assert not benchreport.all_invariants_hold(in_a_list)
    errored = results()
    errored["phases"]["sse"] = {"error": "sse.capacity exited with 1"}
    assert not benchreport.all_invariants_hold(errored)
    assert not [t for t, _, _ in benchreport.targets(errored) if t.startswith("SSE")]


def test_terminal_output() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    benchreport.print_phase(console, "durability", {"steps": [step(500, 500)], "seconds": 17.0})
    benchreport.print_phase(console, "drain", {"error": "boom"})
    benchreport.print_pair(console, {**step(700, 690), "cpu_others": 0.05}, step(700, 650))
    text = out.getvalue()
    assert "500/s" in text
    assert "boom" in text
    assert "others' CPU 5%" in text
    benchreport.print_tables(console, results())
    assert "Targets" in out.getvalue()


def test_crowd_plan_brings_every_user_once() -> None:
    plan = CrowdPlan(users=5000, stock=1000, ramp_s=2, hold_s=6, decay_s=2)
    assert plan.peak_rate == 625  # 5,000 over 1 + 6 + 1 s
    env = plan.k6_env(base_url="http://127.0.0.1:1", sale_id="s", jwt_secret="x" * 32)
    assert env["RATE"] == "625"
    assert env["OPENS_IN_S"] == "2"  # the ramp ends at the opening
    assert int(env["MAX_VUS"]) >= plan.peak_rate * plan.ramp_s / 2


def test_plan_from_args_full_and_scaled() -> None:
    def args(**kw: Any) -> argparse.Namespace:
        base = {"full": False, "users": None, "stock": 1000, "ramp": None, "hold": None,
                "decay": None}  # fmt: skip
        return argparse.Namespace(**{**base, **kw})

    assert plan_from_args(args(full=True)).users == 100_000
    assert plan_from_args(args(users=300, hold=1.0)).hold_s == 1.0
    assert plan_from_args(args()).users >= 2500
