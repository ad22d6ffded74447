"""spec.waitingRoom: parsed and validated as the API would, passed through to the admin API's body,
read back from the sale document, its mode kept once the sale has opened, and the CRD schema that
validates it with the same limits."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest

from flashsale_operator import builders, lifecycle

from .test_crd import EXAMPLE, SPEC_PROPS, validate

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "product": "Sneakers", "price": "49.99", "stock": 1000, "opensAt": "2026-11-27T12:00:00Z",
}  # fmt: skip
ROOM = {"enabled": True, "mode": "random", "admitPerSecond": 250, "sessionSeconds": 90}
UPSERTED = lifecycle.Recorded(sale_created=True, observed_generation=1)


def parse(**changes: Any) -> lifecycle.SaleSpec:
    return lifecycle.parse_spec({**SPEC, **changes}, namespace="shop", name="s", created=T0)


def test_an_enabled_room_is_read_with_its_defaults() -> None:
    assert parse(waitingRoom=ROOM).waiting_room == lifecycle.WaitingRoomSpec("random", 250, 90)
    assert parse(waitingRoom={"enabled": True}).waiting_room == lifecycle.WaitingRoomSpec(
        "fifo", lifecycle.DEFAULT_ADMIT_PER_SECOND, lifecycle.DEFAULT_SESSION_S
    )
    assert parse(waitingRoom={**ROOM, "enabled": False}).waiting_room is None
    assert parse().waiting_room is None


@pytest.mark.parametrize(
    ("room", "problem"),
    [
        ("yes", "spec.waitingRoom must be an object"),
        ({"enabled": "true"}, "spec.waitingRoom.enabled"),
        ({"enabled": True, "mode": "lottery"}, "spec.waitingRoom.mode"),
        ({"enabled": True, "admitPerSecond": 0}, "spec.waitingRoom.admitPerSecond"),
        ({"enabled": True, "sessionSeconds": 5}, "spec.waitingRoom.sessionSeconds"),
        ({"enabled": False, "sessionSeconds": 5}, "spec.waitingRoom.sessionSeconds"),
    ],
)
def test_a_bad_room_is_an_invalid_spec(room: Any, problem: str) -> None:
    with pytest.raises(lifecycle.InvalidSpec, match=problem):
        parse(waitingRoom=room)


def test_the_room_is_passed_through_to_the_admin_api() -> None:
    sale = parse(waitingRoom=ROOM)
    decision = lifecycle.decide(
        sale, observed=None, recorded=lifecycle.Recorded(), generation=1, now=T0,
        tolerance=timedelta(seconds=1),
    )  # fmt: skip
    assert decision.upsert is not None
    body = builders.build_sale_body(sale, decision.upsert)
    assert body["waiting_room"] == {
        "enabled": True, "mode": "random", "admit_per_second": 250, "session_seconds": 90,
    }  # fmt: skip
    plain = parse()
    assert decision.upsert is not None
    assert "waiting_room" not in builders.build_sale_body(
        plain, dataclasses.replace(decision.upsert, waiting_room=None)
    )


def test_the_mode_is_kept_once_the_sale_has_opened() -> None:
    seen = builders.build_observed(
        {"state": "open", "opens_at": "2026-11-27T12:00:00Z", "closes_at": "2026-11-27T12:05:00Z",
         "waiting_room": {"enabled": True, "mode": "random"}},
        {"initial_stock": 1000, "remaining": 1000, "pending": 0, "confirmed": 0, "failed": 0,
         "needs_reconciliation": 0},
    )  # fmt: skip
    assert seen.waiting_room_mode == "random"
    edited = parse(waitingRoom={**ROOM, "mode": "fifo", "admitPerSecond": 50})
    decision = lifecycle.decide(
        edited, observed=seen, recorded=UPSERTED,
        generation=2, now=T0 + timedelta(seconds=5), tolerance=timedelta(seconds=1),
    )  # fmt: skip
    assert decision.upsert is not None
    assert decision.upsert.waiting_room == lifecycle.WaitingRoomSpec("random", 50, 90)
    (applied,) = decision.conditions
    assert (applied.status, applied.reason) == (False, "WaitingRoomModeLocked")
    before = dataclasses.replace(seen, state="scheduled")
    scheduled = lifecycle.decide(
        edited, observed=before, recorded=UPSERTED,
        generation=2, now=T0 - timedelta(seconds=5), tolerance=timedelta(seconds=1),
    )  # fmt: skip
    assert scheduled.upsert is not None
    assert scheduled.upsert.waiting_room == lifecycle.WaitingRoomSpec("fifo", 50, 90)


def test_the_crd_validates_the_room_with_the_operators_limits() -> None:
    props = SPEC_PROPS["waitingRoom"]["properties"]
    assert props["mode"]["enum"] == list(lifecycle.WAITING_ROOM_MODES)
    assert props["admitPerSecond"]["maximum"] == lifecycle.MAX_ADMIT_PER_SECOND
    assert props["admitPerSecond"]["default"] == lifecycle.DEFAULT_ADMIT_PER_SECOND
    assert props["sessionSeconds"]["minimum"] == lifecycle.MIN_SESSION_S
    assert props["sessionSeconds"]["maximum"] == lifecycle.MAX_SESSION_S
    assert props["sessionSeconds"]["default"] == lifecycle.DEFAULT_SESSION_S
    resource = copy.deepcopy(EXAMPLE)
    resource["spec"]["waitingRoom"] = ROOM
    validate(resource)
    for bad in ({"mode": "lottery"}, {"admitPerSecond": 0}, {"sessionSeconds": 9},
                {"enabled": "yes"}):  # fmt: skip
        resource["spec"]["waitingRoom"] = {**ROOM, **bad}
        with pytest.raises(jsonschema.ValidationError):
            validate(resource)
