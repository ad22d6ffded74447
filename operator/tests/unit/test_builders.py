"""The pure builders: the admin API body, Observed from the API's answers, the status patch and
its conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale_operator import builders, lifecycle

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SALE = lifecycle.SaleSpec(
    sale_id="shop-summer",
    product="Sneakers",
    price="49.99",
    stock=1000,
    opens_at=T0,
    duration=timedelta(minutes=5),
    per_user_limit=2,
)
DOCUMENT = {
    "sale_id": "shop-summer",
    "name": "Sneakers",
    "price": "49.99",
    "initial_stock": 1000,
    "remaining": 990,
    "state": "open",
    "opens_at": "2026-11-27T12:00:00.000Z",
    "closes_at": "2026-11-27T12:05:00.000Z",
    "per_user_limit": 2,
}
STATS = {
    "initial_stock": 1000,
    "remaining": 990,
    "pending": 4,
    "confirmed": 5,
    "failed": 1,
    "needs_reconciliation": 0,
}
OBSERVED = builders.build_observed(DOCUMENT, STATS)


def status_for(
    decision: lifecycle.Decision,
    *,
    observed: lifecycle.Observed | None = OBSERVED,
    recorded: lifecycle.Recorded | None = None,
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return builders.build_status(
        sale=SALE,
        decision=decision,
        observed=observed,
        recorded=recorded or lifecycle.Recorded(sale_created=True, observed_generation=1),
        current=current or {},
        generation=1,
        now=T0,
    )


def test_sale_body_is_the_admin_api_upsert() -> None:
    upsert = lifecycle.Upsert(stock=900, opens_at=T0, closes_at=T0 + timedelta(minutes=10))
    assert builders.build_sale_body(SALE, upsert) == {
        "name": "Sneakers",
        "price": "49.99",
        "stock": 900,
        "opens_at": "2026-11-27T12:00:00.000Z",
        "closes_at": "2026-11-27T12:10:00.000Z",
        "per_user_limit": 2,
    }


def test_times_are_written_in_utc_with_milliseconds() -> None:
    local = datetime(2026, 11, 27, 13, 0, 0, 123456, tzinfo=UTC).astimezone()
    assert builders.rfc3339(local) == "2026-11-27T13:00:00.123Z"


def test_observed_combines_the_sale_document_and_the_stats() -> None:
    assert (
        lifecycle.Observed(
            state="open",
            opens_at=T0,
            closes_at=T0 + timedelta(minutes=5),
            initial_stock=1000,
            remaining=990,
            pending=4,
            confirmed=5,
            failed=1,
            needs_reconciliation=0,
        )
        == OBSERVED
    )


def test_status_mirrors_the_counts_window_and_bookkeeping() -> None:
    recorded = lifecycle.Recorded(
        sale_created=True, observed_generation=1, opened_at=T0, closed_at=None
    )
    status = status_for(lifecycle.Decision(lifecycle.Phase.OPEN), recorded=recorded)
    conditions = status.pop("conditions")
    assert status == {
        "phase": "Open",
        "saleId": "shop-summer",
        "initialStock": 1000,
        "remaining": 990,
        "pending": 4,
        "confirmed": 5,
        "failed": 1,
        "needsReconciliation": 0,
        "opensAt": "2026-11-27T12:00:00.000Z",
        "closesAt": "2026-11-27T12:05:00.000Z",
        "openedAt": "2026-11-27T12:00:00.000Z",
        "observedGeneration": 1,
    }
    assert conditions == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "SaleLive",
            "message": "sale shop-summer is mirrored from the API",
            "lastTransitionTime": "2026-11-27T12:00:00Z",
            "observedGeneration": 1,
        }
    ]


def test_status_without_a_sale_shows_the_spec_window_and_no_sale_id() -> None:
    expired = lifecycle.Condition("Ready", False, "WindowExpired", "too late")
    decision = lifecycle.Decision(lifecycle.Phase.CLOSED, conditions=(expired,))
    status = status_for(decision, observed=None, recorded=lifecycle.Recorded())
    assert "saleId" not in status
    assert "remaining" not in status
    assert (status["opensAt"], status["closesAt"]) == (
        "2026-11-27T12:00:00.000Z",
        "2026-11-27T12:05:00.000Z",
    )
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Ready", "False", "WindowExpired")
    ]


def test_conditions_keep_their_transition_time_until_their_status_flips() -> None:
    first = builders.merge_conditions(
        [], [lifecycle.Condition("Ready", True, "SaleLive", "ok")], generation=1, now=T0
    )
    later = T0 + timedelta(minutes=1)
    same = builders.merge_conditions(
        first, [lifecycle.Condition("Ready", True, "SaleLive", "still ok")], generation=2, now=later
    )
    assert same[0]["lastTransitionTime"] == "2026-11-27T12:00:00Z"
    assert (same[0]["message"], same[0]["observedGeneration"]) == ("still ok", 2)
    flipped = builders.merge_conditions(
        same,
        [lifecycle.Condition("Ready", False, "ApiUnavailable", "down")],
        generation=2,
        now=later,
    )
    assert flipped[0]["lastTransitionTime"] == "2026-11-27T12:01:00Z"


def test_conditions_are_listed_ready_first_and_others_are_kept() -> None:
    current = [{"type": "Zeta", "status": "True"}, {"type": "SpecApplied", "status": "True"}]
    merged = builders.merge_conditions(
        current, [lifecycle.Condition("Ready", True, "SaleLive", "ok")], generation=1, now=T0
    )
    assert [c["type"] for c in merged] == ["Ready", "SpecApplied", "Zeta"]


def test_status_patch_carries_only_what_changed() -> None:
    current = {"phase": "Open", "remaining": 10, "conditions": [{"type": "Ready"}]}
    desired = {"phase": "Open", "remaining": 9, "conditions": [{"type": "Ready"}]}
    assert builders.status_patch(current, desired) == {"remaining": 9}
    assert builders.status_patch(desired, desired) == {}


def test_error_status_sets_the_phase_and_a_false_condition_per_type() -> None:
    status = builders.build_error_status(
        {},
        reason="InvalidSpec",
        message="spec.price is wrong",
        generation=3,
        now=T0,
        types=(lifecycle.READY, lifecycle.SPEC_APPLIED),
    )
    assert status["phase"] == "Error"
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Ready", "False", "InvalidSpec"),
        ("SpecApplied", "False", "InvalidSpec"),
    ]


def test_error_status_can_leave_the_phase_alone() -> None:
    status = builders.build_error_status(
        {"phase": "Open"}, reason="ApiUnavailable", message="down", generation=1, now=T0, phase=None
    )
    assert "phase" not in status
