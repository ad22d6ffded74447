"""Duplicate storms against the real API processes: one Idempotency-Key sent 50 times at once makes
one order; the same key with another body is 422; a request abandoned before its answer and then
retried gets the original answer, replayed."""

from __future__ import annotations

import pytest

from flashsale.local import scenarios
from flashsale.local.chaosrun import ChaosRun, Tally

from .conftest import assert_held


@pytest.mark.timeout(120)
async def test_duplicate_storms_make_one_order_per_key(run: ChaosRun, record: list[Tally]) -> None:
    tally = await scenarios.scenario_storms(run)
    record.append(tally)
    assert_held(tally)
    p = run.profile
    for storm in tally.details["storms"]:
        assert storm["order_ids"] == 1
        assert storm["status"] == {"202": p.storm_size}
    assert tally.details["codes"] == {"idempotency_key_reused": p.storm_keys}
    retries = tally.details["timeout_retries"]
    assert all(r["consistent"] for r in retries)
    # The first request reached the server before the client gave up: its answer comes back.
    assert any(r["abandoned"] and r["replayed"] for r in retries)
    assert tally.orders == p.storm_keys + p.timeout_retries
