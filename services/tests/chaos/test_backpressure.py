"""Backpressure on the real processes: with the order worker stopped the queue reaches the API's
bound, purchases get 503 overloaded with Retry-After before anything is reserved, and once the
worker is back and the queue drained, the refused buyers get in with the same keys."""

from __future__ import annotations

import pytest

from flashsale.local import scenarios
from flashsale.local.chaosrun import ChaosRun, Tally

from .conftest import assert_held


@pytest.mark.timeout(120)
async def test_a_full_queue_sheds_load_and_recovers(run: ChaosRun, record: list[Tally]) -> None:
    tally = await scenarios.scenario_backpressure(run)
    record.append(tally)
    assert_held(tally)
    details = tally.details
    assert details["accepted_before_shedding"] > 0
    assert details["shed"]
    assert all(
        status == 503 and code == "overloaded" and retry_after == "1"
        for status, code, retry_after in details["shed"]
    )
    assert not details["reserved_while_shedding"]
    assert details["recovered"] == [202] * len(details["shed"])
