"""The k6 scripts of loadtest/ (the ones the chart's k6 Job mounts): each one parses and builds its
options (`k6 inspect`), and `flashsale bench`'s phases run them for real, in miniature, against the
local stack's processes: the bare baseline, purchase steps, both AOF fsync policies, the order
worker's drain, SSE capacity and SSE under purchases, the payment settle rate. Each phase ends with
its invariant check. Nothing here asserts a timing."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsale.local import bench, benchreport, k6
from flashsale.local.embedded import Stores, free_port
from flashsale.local.stack import FAST_GATEWAY_ENV, Stack, StackOptions

SCRIPTS = sorted(k6.scripts_dir().glob("*.js"))


def test_the_chart_mounts_every_script_this_suite_runs() -> None:
    assert {p.name for p in SCRIPTS} >= {"flash_sale.js", "throughput.js", "sse.js", "lib.js"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_k6_inspect(script: Path) -> None:
    done = subprocess.run(
        [str(k6.k6_binary()), "inspect", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "JWT_SECRET": "x" * 32},
    )
    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout)
    if script.name != "lib.js":
        assert options["scenarios"], script.name


@pytest.fixture(scope="module")
def stack(migrated: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local stack as `flashsale bench` runs it (free ports, no per-address limit), over the
    session's stores, shared by this module's tests (each uses sales of its own)."""
    options = StackOptions(
        data_dir=tmp_path_factory.mktemp("bench-stack"),
        redis_url=migrated.redis_url,
        postgres_dsn=migrated.postgres_dsn,
        api_workers=1,
    )
    for name in ("api", "sse", "gateway", "order", "payment"):
        setattr(options, f"{name}_port", free_port())
    options.env.update(FAST_GATEWAY_ENV)
    options.env["FLASHSALE_API__RATE_LIMIT_ADDR_PER_S"] = "0"
    options.env["FLASHSALE_LOG_LEVEL"] = "WARNING"
    running = Stack(options)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def tiny_args(reports: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(
        [
            "--steps=40,80", "--step-s=1", "--warmup-s=1", "--durability-rates=40",
            "--drain-orders=300", "--sse-clients=50", "--sse-load-clients=10", "--sse-hold-s=5",
            "--payments-window-s=1", f"--reports={reports}",
        ]
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_bench_phases_in_miniature(stack: Stack, tmp_path: Path) -> None:
    run = bench.Bench(stack, stack.settings(), tiny_args(tmp_path), tmp_path)
    run.results = {"started_at": "test", "environment": {}, "phases": {}}
    phases = ["throughput", "durability", "drain", "sse", "payments"]

    await bench._run_phases(run, phases)

    results = run.results["phases"]
    assert not [name for name, phase in results.items() if "error" in phase], results
    for name in ("baseline", "purchase"):
        steps = results["throughput"][name]["steps"]
        assert [s["target_rate"] for s in steps] == [40, 80]
        assert all(s["requests"] > 0 and s["statuses"]["other"] == 0 for s in steps), steps
        assert all(s["statuses"]["202"] > 0 for s in steps), [s["statuses"] for s in steps]
    runs = results["durability"]["runs"]
    assert [(r["appendfsync"], r["round"]) for r in runs] == [
        ("always", 1), ("everysec", 1), ("always", 2), ("everysec", 2),
    ]  # fmt: skip
    assert results["drain"]["complete"]
    assert results["drain"]["drained"] == 300
    sse = results["sse"]
    assert [s["clients"] for s in sse["capacity"]["steps"]] == [50]
    assert sse["under_load"]["k6"]["connected"] == 10
    assert sse["under_load"]["event_delay"]["connected"] > 0
    assert "payments_per_s" in results["payments"]
    assert benchreport.all_invariants_hold(run.results), json.dumps(results, indent=1)[:4000]
    assert "## Purchase throughput vs the bare baseline" in benchreport.markdown(run.results)
