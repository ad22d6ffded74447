"""Hostile input against the real processes: forged tokens, roles, another buyer's order, oversized
bodies and request heads, rate limits per user and per address, 5,000 SSE streams from one address;
and schemathesis against the running API's OpenAPI. No 5xx, nothing reserved by a refused request,
every process up afterwards."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from flashsale import errors
from flashsale.adapters import pg
from flashsale.domain import sales
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


def test_a_sale_name_with_control_characters_is_invalid() -> None:
    """Found by the hostile input: a NUL in a sale's name was written to Redis, then refused by
    PostgreSQL, leaving the sale in one store only."""
    sale = sales.SaleDefinition(
        sale_id="shoes",
        name="shoes",
        price=Decimal("1.00"),
        stock=1,
        opens_at=datetime(2030, 1, 1, tzinfo=UTC),
        closes_at=datetime(2030, 1, 1, 1, tzinfo=UTC),
        per_user_limit=1,
    )
    assert sales.validate_definition(sale) is sale
    for name in ("sho\x00es", "tab\there", "bell\x07", "del\x7f"):
        with pytest.raises(errors.InvalidSale, match="control characters"):
            sales.validate_definition(replace(sale, name=name))
    assert sales.validate_definition(replace(sale, name="Chaussures — édition d'été")).name


async def test_text_postgresql_cannot_store_is_an_invalid_request() -> None:
    """Found by schemathesis: a NUL in a login's email reached PostgreSQL and answered 500."""
    with pytest.raises(errors.InvalidRequest):
        async with pg.unavailable_on_error("read user"):
            raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding")
