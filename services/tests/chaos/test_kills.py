"""kill -9 of the order worker, the payment worker, one of the API's uvicorn workers and the API's
supervisor itself while a crowd buys out a sale on the real local stack: the supervisor (or uvicorn)
brings each back, the new worker processes claim what their predecessors left (XAUTOCLAIM), and no
order is lost, duplicated or charged twice."""

from __future__ import annotations

import pytest

from flashsale.local import scenarios
from flashsale.local.chaosrun import ChaosRun, Tally

from .conftest import assert_held


@pytest.mark.timeout(180)
async def test_kill_9_of_every_process_during_a_sellout_loses_nothing(
    run: ChaosRun, record: list[Tally]
) -> None:
    tally = await scenarios.scenario_kills(run)
    record.append(tally)
    assert_held(tally)
    kills = tally.details["kills"]
    assert [k["target"] for k in kills] == [
        "worker-order-1",
        "worker-payment-1",
        "one uvicorn worker of the API",
        "api",
    ]
    for kill in kills:  # each came back as a new process
        assert kill["replaced_by"]
        assert kill["pid"] not in kill["replaced_by"]
    # uvicorn replaced its killed worker and kept the other: two workers again, one of them new.
    api_worker = next(k for k in kills if k["target"] != "api" and "uvicorn" in k["target"])
    assert len(api_worker["replaced_by"]) == 2
    assert run.supervisor.restarted("api") >= 1  # the supervisor, after the API's own kill -9
    assert tally.details["statuses"].get("confirmed", 0) <= run.profile.kill_stock
