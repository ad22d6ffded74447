"""`flashsale demo`'s core end to end on a tiny sale: the local stack's real processes (API, SSE,
workers, mock gateway in fast mode) over the session's embedded stores, the k6 crowd of
flash_sale.js, the drain, the invariants, and the report files. No timing is asserted: only that
the run completed, everything settled, every invariant holds and the report is all there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsale.local import demo, report
from flashsale.local.embedded import Stores, free_port
from flashsale.local.stack import FAST_GATEWAY_ENV, Stack, StackOptions
from flashsale.testing import random_sale_id

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def stack_options(stores: Stores, data_dir: Path) -> StackOptions:
    options = StackOptions(
        data_dir=data_dir,
        redis_url=stores.redis_url,
        postgres_dsn=stores.postgres_dsn,
        api_workers=1,
    )
    for name in ("api", "sse", "gateway", "order", "payment"):
        setattr(options, f"{name}_port", free_port())
    options.env.update(FAST_GATEWAY_ENV)
    options.env["FLASHSALE_API__RATE_LIMIT_ADDR_PER_S"] = "0"
    options.env["FLASHSALE_LOG_LEVEL"] = "WARNING"
    return options


@pytest.fixture
def stack(clean: Stores, tmp_path: Path) -> Iterator[Stack]:
    """The whole local stack as `flashsale up` runs it, on free ports, for one test."""
    running = Stack(stack_options(clean, tmp_path / "stack"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_tiny_sale_end_to_end(stack: Stack, tmp_path: Path) -> None:
    plan = demo.CrowdPlan(users=300, stock=50, ramp_s=1, hold_s=2, decay_s=1, sold_out_wait_s=0.5)
    out = tmp_path / "report"
    run = await demo.run_sale(
        stack.settings(),
        plan,
        out_dir=out,
        sale_id=random_sale_id(),
        gateway="fast gateway",
        quiet_k6=True,
    )
    summary = report.write(run, out)

    assert summary["ok"], summary["failures"]
    assert [c["ok"] for c in summary["invariants"]] == [True, True, True, True]
    assert summary["quiescent"]
    outcomes = summary["crowd"]["outcomes"]
    assert outcomes["unexpected"] == 0
    assert outcomes["reserved"] == 50  # 300 buyers for 50 units: every unit sells
    assert summary["units"]["confirmed"] == 50
    assert summary["units"]["remaining"] == 0
    assert summary["timeline_s"]["stock_reserved_s"] is not None
    for name in ("summary.json", "series.json", "index.html", "k6-crowd-summary.json"):
        assert (out / name).stat().st_size > 0, name
    for name in ("latency.png", "throughput.png", "stock.png", "orders.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC), name
    assert "data:image/png;base64," in (out / "index.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_flashsale_demo_command(tmp_path: Path) -> None:
    """The command itself, as `make demo` runs it: its own embedded stores and stack on free ports,
    a tiny crowd, exit 0, the report written."""
    from flashsale import cli

    reports = tmp_path / "reports"
    code = cli.main([
        "--data-dir", str(tmp_path / "data"), "demo", "--free-ports", "--gateway-fast",
        "--users", "200", "--stock", "20", "--ramp", "1", "--hold", "1", "--decay", "1",
        "--api-workers", "1", "--no-linger", "--reports", str(reports),
    ])  # fmt: skip
    assert code == 0
    (report_dir,) = reports.iterdir()
    assert (report_dir / "index.html").is_file()
    assert (report_dir / "summary.json").is_file()
