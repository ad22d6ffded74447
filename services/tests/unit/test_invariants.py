"""The four invariants of the contract (domain/invariants.py), judged on hand-built facts: each
check passes on a healthy sale and fails in every way it can (lost order, duplicate, row without a
202, oversell, a user over the limit, an unpaid confirmed order, an unrefunded charge of a failed
order, an orphan charge, a double charge, the gateway unavailable, entries still queued). Pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flashsale.domain.invariants import (
    ChargeFact,
    Check,
    OrderFact,
    SaleFacts,
    Verdict,
    judge,
)


def healthy() -> SaleFacts:
    """Stock 10, limit 2: 3 confirmed (one of 2 units), 1 failed and refunded, 1 failed unpaid,
    1 pending, 1 in reconciliation (with a charge we have not settled yet); 3 units left."""
    orders = [
        OrderFact("o1", "alice", 2, "confirmed"),
        OrderFact("o2", "bob", 1, "confirmed"),
        OrderFact("o3", "carol", 1, "confirmed"),
        OrderFact("o4", "dave", 1, "failed"),
        OrderFact("o5", "erin", 1, "failed"),
        OrderFact("o6", "frank", 1, "pending"),
        OrderFact("o7", "grace", 2, "needs_reconciliation"),
    ]
    charges = [
        ChargeFact("o1", "succeeded"),
        ChargeFact("o2", "succeeded"),
        ChargeFact("o3", "succeeded"),
        ChargeFact("o4", "refunded"),
        ChargeFact("o7", "succeeded"),
    ]
    return SaleFacts(
        sale_id="s",
        initial_stock=10,
        per_user_limit=2,
        remaining=3,
        orders=orders,
        acknowledged_order_ids=[o.order_id for o in orders],
        charges=charges,
    )


def check(facts: SaleFacts, number: int) -> Check:
    verdict = judge(facts)
    assert [c.number for c in verdict.checks] == [1, 2, 3, 4]
    return verdict.checks[number - 1]


def failing(facts: SaleFacts) -> set[int]:
    return {c.number for c in judge(facts).checks if not c.ok}


def test_a_healthy_sale_passes_every_check() -> None:
    verdict = judge(healthy())
    assert verdict.ok, verdict.checks
    assert [c.name for c in verdict.checks] == [
        "stock balances",
        "no oversell",
        "every 202 has exactly one order",
        "charges match orders",
    ]


def test_an_empty_sale_passes_every_check() -> None:
    facts = SaleFacts("s", 5, 1, 5, [], [], charges=[])
    assert judge(facts).ok


def test_verdict_is_ok_only_when_every_check_is() -> None:
    good = Check(1, "a", True, "")
    bad = Check(2, "b", False, "")
    assert Verdict([good, good]).ok
    assert not Verdict([good, bad]).ok
    assert Verdict().ok  # nothing checked, nothing failed


# --- 1. stock balances ----------------------------------------------------------------------------


def test_balance_detail_shows_the_sum() -> None:
    result = check(healthy(), 1)
    assert result.ok
    assert result.detail == (
        "remaining 3 + pending 1 + confirmed 4 + needs_reconciliation 2 = 10 (initial 10)"
    )


@pytest.mark.parametrize("remaining", [2, 4, 0, 100])
def test_stock_that_does_not_add_up_fails_the_balance(remaining: int) -> None:
    facts = replace(healthy(), remaining=remaining)
    assert failing(facts) == {1}


def test_failed_units_count_as_released_in_the_balance() -> None:
    # A failed order gave its unit back: balanced with it in remaining, one short without.
    facts = healthy()
    orders = [*facts.orders, OrderFact("o8", "heidi", 1, "failed")]
    facts = replace(
        facts, orders=orders, acknowledged_order_ids=[o.order_id for o in orders], remaining=3
    )
    assert check(facts, 1).ok  # failed units are not counted: still balanced
    assert not check(replace(facts, remaining=2), 1).ok


def test_entries_still_queued_are_not_quiescent() -> None:
    result = check(replace(healthy(), queued=3), 1)
    assert not result.ok
    assert "3 orders still queued" in result.detail


# --- 2. no oversell -------------------------------------------------------------------------------


def test_confirmed_beyond_initial_stock_is_an_oversell() -> None:
    facts = replace(healthy(), initial_stock=3)
    result = check(facts, 2)
    assert not result.ok
    assert "confirmed 4 <= initial 3" in result.detail


def test_confirmed_exactly_initial_stock_is_fine() -> None:
    orders = [OrderFact(f"o{i}", f"u{i}", 1, "confirmed") for i in range(4)]
    facts = SaleFacts("s", 4, 1, 0, orders, [o.order_id for o in orders], charges=[])
    assert check(facts, 2).ok


def test_a_user_over_the_limit_fails() -> None:
    facts = healthy()
    orders = [*facts.orders, OrderFact("o8", "alice", 1, "pending")]
    facts = replace(
        facts, orders=orders, acknowledged_order_ids=[o.order_id for o in orders], remaining=2
    )
    assert check(facts, 1).ok
    result = check(facts, 2)
    assert not result.ok
    assert "1 users over the limit, e.g. alice" in result.detail
    assert "max units per user 3 (limit 2)" in result.detail


def test_failed_orders_do_not_count_against_the_user_limit() -> None:
    orders = [
        OrderFact("o1", "alice", 1, "failed"),
        OrderFact("o2", "alice", 1, "failed"),
        OrderFact("o3", "alice", 1, "confirmed"),
    ]
    facts = SaleFacts("s", 5, 1, 4, orders, ["o1", "o2", "o3"], charges=[])
    assert check(facts, 2).ok


@pytest.mark.parametrize("status", ["pending", "needs_reconciliation", "confirmed"])
def test_every_holding_status_counts_against_the_user_limit(status: str) -> None:
    orders = [OrderFact("o1", "alice", 1, "confirmed"), OrderFact("o2", "alice", 1, status)]
    facts = SaleFacts("s", 5, 1, 3, orders, ["o1", "o2"], charges=[])
    assert not check(facts, 2).ok


# --- 3. every 202 has exactly one order -----------------------------------------------------------


def test_a_lost_order_fails() -> None:
    facts = replace(healthy(), acknowledged_order_ids=[*healthy().acknowledged_order_ids, "o9"])
    result = check(facts, 3)
    assert not result.ok
    assert "1 lost, e.g. o9" in result.detail


def test_a_duplicated_row_fails() -> None:
    facts = healthy()
    facts = replace(facts, orders=[*facts.orders, OrderFact("o2", "bob", 1, "confirmed")])
    result = check(facts, 3)
    assert not result.ok
    assert "1 duplicated" in result.detail


def test_a_row_without_a_202_fails() -> None:
    facts = replace(healthy(), acknowledged_order_ids=["o1", "o2", "o3", "o4", "o5", "o6"])
    result = check(facts, 3)
    assert not result.ok
    assert "1 rows without a 202" in result.detail


def test_the_same_202_recorded_twice_is_one_order() -> None:
    facts = replace(healthy(), acknowledged_order_ids=[*healthy().acknowledged_order_ids, "o1"])
    assert check(facts, 3).ok


def test_counts_are_reported() -> None:
    assert check(healthy(), 3).detail == "7 accepted (202), 7 order rows"


# --- 4. charges match orders ----------------------------------------------------------------------


def test_gateway_unavailable_fails_the_charge_check() -> None:
    result = check(replace(healthy(), charges=None), 4)
    assert not result.ok
    assert result.detail == "the payment gateway could not be asked"


def test_a_confirmed_order_without_a_charge_fails() -> None:
    facts = healthy()
    facts = replace(facts, charges=[c for c in facts.charges or [] if c.order_id != "o2"])
    result = check(facts, 4)
    assert not result.ok
    assert "1 confirmed orders without a succeeded charge" in result.detail


def test_a_confirmed_order_whose_charge_was_refunded_is_unpaid() -> None:
    facts = healthy()
    charges = [
        ChargeFact(c.order_id, "refunded") if c.order_id == "o3" else c for c in facts.charges or []
    ]
    assert not check(replace(facts, charges=charges), 4).ok


def test_a_succeeded_charge_of_a_failed_order_must_be_refunded() -> None:
    facts = healthy()
    charges = [*(facts.charges or []), ChargeFact("o5", "succeeded")]
    result = check(replace(facts, charges=charges), 4)
    assert not result.ok
    assert "1 succeeded charges of failed orders not refunded" in result.detail


def test_an_orphan_charge_fails() -> None:
    facts = healthy()
    charges = [*(facts.charges or []), ChargeFact("ghost", "succeeded")]
    result = check(replace(facts, charges=charges), 4)
    assert not result.ok
    assert "1 charges without an order" in result.detail


def test_a_refunded_orphan_charge_still_fails() -> None:
    facts = healthy()
    charges = [*(facts.charges or []), ChargeFact("ghost", "refunded")]
    assert not check(replace(facts, charges=charges), 4).ok


def test_a_double_charge_for_one_key_fails() -> None:
    facts = healthy()
    charges = [
        ChargeFact(c.order_id, c.status, charges=2) if c.order_id == "o1" else c
        for c in facts.charges or []
    ]
    result = check(replace(facts, charges=charges), 4)
    assert not result.ok
    assert "1 orders charged twice" in result.detail


def test_two_charge_records_for_one_order_are_a_double_charge() -> None:
    facts = healthy()
    charges = [*(facts.charges or []), ChargeFact("o1", "succeeded")]
    assert not check(replace(facts, charges=charges), 4).ok


@pytest.mark.parametrize("status", ["pending", "needs_reconciliation"])
def test_an_unsettled_order_may_hold_a_succeeded_charge(status: str) -> None:
    orders = [OrderFact("o1", "alice", 1, status)]
    facts = SaleFacts("s", 1, 1, 0, orders, ["o1"], charges=[ChargeFact("o1", "succeeded")])
    assert check(facts, 4).ok


def test_charge_summary_counts_confirmed_succeeded_and_refunded() -> None:
    assert check(healthy(), 4).detail == "3 confirmed, 4 succeeded charges, 1 refunded"


def test_several_problems_are_all_reported() -> None:
    facts = healthy()
    charges = [
        ChargeFact("o1", "succeeded", charges=2),
        ChargeFact("o5", "succeeded"),
        ChargeFact("ghost", "succeeded"),
    ]
    detail = check(replace(facts, charges=charges), 4).detail
    for problem in ("charged twice", "without an order", "without a succeeded charge", "refunded"):
        assert problem in detail


def test_one_broken_fact_fails_only_its_own_check() -> None:
    assert failing(replace(healthy(), remaining=0)) == {1}
    assert failing(replace(healthy(), charges=None)) == {4}
    assert failing(replace(healthy(), acknowledged_order_ids=["o1"])) == {3}
