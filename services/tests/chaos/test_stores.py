"""Valkey and PostgreSQL stopped cleanly and killed with SIGKILL mid-sale: every 202 a buyer saw is
an order afterwards (the buyers' own record against PostgreSQL, besides verify's view from Redis),
the stock balances, the workers back off and resume, and no batch is written twice."""

from __future__ import annotations

import asyncpg
import pytest

from flashsale import errors
from flashsale.adapters import pg
from flashsale.local import scenarios
from flashsale.local.chaosrun import ChaosRun, Tally

from .conftest import assert_held


@pytest.mark.timeout(180)
@pytest.mark.parametrize("store", ["valkey", "postgres"])
async def test_a_store_restarted_and_killed_mid_sale_loses_nothing(
    run: ChaosRun, record: list[Tally], store: str
) -> None:
    tally = await scenarios.scenario_store(run, store)
    record.append(tally)
    assert_held(tally)
    assert len(tally.faults) == 2  # a clean restart, then a kill -9
    assert tally.accepted > 0


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("cannot switch to state 15; another operation is in progress"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another process"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
    ],
)
async def test_what_a_postgresql_kill_raises_is_store_unavailable(error: Exception) -> None:
    """Found by the kill scenario: a connection dropped mid-transaction fails again when the pool
    resets it; that, too, must read as "unavailable" (back off), never as a crash."""
    with pytest.raises(errors.StoreUnavailable):
        async with pg.unavailable_on_error("update order"):
            raise error
