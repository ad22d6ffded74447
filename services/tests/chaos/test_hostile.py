"""Hostile input against the real processes: forged tokens, roles, another buyer's order, oversized
bodies and request heads, rate limits per user and per address, 5,000 SSE streams from one address;
and schemathesis against the running API's OpenAPI. No 5xx, nothing reserved by a refused request,
every process up afterwards."""

from __future__ import annotations

import pytest

from flashsale.local import fuzz, hostile
from flashsale.local.chaosrun import ChaosRun, Tally

from .conftest import assert_held


@pytest.mark.timeout(180)
async def test_hostile_input_is_refused_and_every_process_stays_up(
    run: ChaosRun, record: list[Tally]
) -> None:
    tally = await hostile.scenario_hostile(run)
    record.append(tally)
    assert_held(tally)
    assert tally.details["checks_passed"] > 50
    flood = tally.details["sse_flood"]
    assert flood["held"] == 1000  # the per-address cap
    assert flood["answers"] == {"200": 1000, "429": flood["connections"] - 1000}
    assert 500 not in {int(k) for k in tally.details["answers"]}


@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_5xx_and_no_reservation_without_a_202(
    run: ChaosRun, record: list[Tally]
) -> None:
    assert fuzz.schemathesis_binary() is not None, "the test dependency group installs it"
    tally = await fuzz.scenario_fuzz(run)
    record.append(tally)
    assert_held(tally)
    (buyer,) = tally.details["passes"]
    assert buyer["exit_code"] == 0, buyer
    assert buyer["requests"] > 100
    assert not any(int(status) >= 500 for status in buyer["answers"])
    assert buyer["purchases_202"] > 0  # valid purchases were generated and did reserve
