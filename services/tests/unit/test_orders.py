"""Order states (domain/orders.py): every pair of the transition table, which statuses hold stock,
and order amounts. Pure: no I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from flashsale.domain.orders import (
    ALLOWED_FROM,
    FINAL,
    FailureReason,
    Order,
    OrderStatus,
    PlacedOrder,
    can_transition,
    holds_stock,
)

P, C, F, NR = (
    OrderStatus.PENDING,
    OrderStatus.CONFIRMED,
    OrderStatus.FAILED,
    OrderStatus.NEEDS_RECONCILIATION,
)

# The whole table, written out: (old, new) -> allowed. Forward only; a final status never moves.
EXPECTED = {
    (P, P): False,
    (P, C): True,
    (P, F): True,
    (P, NR): True,
    (C, P): False,
    (C, C): False,
    (C, F): False,
    (C, NR): False,
    (F, P): False,
    (F, C): False,
    (F, F): False,
    (F, NR): False,
    (NR, P): False,
    (NR, C): True,
    (NR, F): True,
    (NR, NR): False,
}


def test_the_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(OrderStatus, OrderStatus))


@pytest.mark.parametrize(("old", "new"), list(EXPECTED))
def test_transition(old: OrderStatus, new: OrderStatus) -> None:
    assert can_transition(old, new) is EXPECTED[(old, new)]


def test_nothing_moves_back_to_pending() -> None:
    assert ALLOWED_FROM[P] == frozenset()


def test_final_statuses_never_move() -> None:
    assert {C, F} == FINAL
    for old, new in itertools.product(FINAL, OrderStatus):
        assert not can_transition(old, new)


def test_a_status_never_transitions_to_itself() -> None:
    # "Already applied" is not a transition: a replayed message must change nothing.
    assert not any(can_transition(s, s) for s in OrderStatus)


def test_only_failed_orders_give_their_units_back() -> None:
    assert [s for s in OrderStatus if not holds_stock(s)] == [F]
    assert all(holds_stock(s) for s in (P, C, NR))


def test_status_values_are_the_contract_strings() -> None:
    assert {s.value for s in OrderStatus} == {
        "pending",
        "confirmed",
        "failed",
        "needs_reconciliation",
    }
    assert FailureReason.CARD_DECLINED.value == "card_declined"
    assert FailureReason.PAYMENT_UNRESOLVED.value == "payment_unresolved"


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_amounts_are_unit_price_times_quantity_exactly() -> None:
    placed = PlacedOrder("o", "s", "u", 3, Decimal("19.99"), "k", NOW)
    assert placed.amount == Decimal("59.97")
    order = Order("o", "s", "u", 3, Decimal("0.10"), C, None, NOW, NOW)
    assert order.amount == Decimal("0.30")  # decimal, not float: 0.1 * 3 != 0.3 in binary
    assert order.charge_id is None
