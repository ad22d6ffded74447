"""Order states and the transitions allowed between them.

A replayed message must never move an order backwards: PostgreSQL updates are conditional on the
states listed here, and the Redis side applies each transition once. Standard library only."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    NEEDS_RECONCILIATION = "needs_reconciliation"


FINAL = frozenset({OrderStatus.CONFIRMED, OrderStatus.FAILED})

# new status -> the statuses an order may move to it from
ALLOWED_FROM: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.CONFIRMED: frozenset({OrderStatus.PENDING, OrderStatus.NEEDS_RECONCILIATION}),
    OrderStatus.FAILED: frozenset({OrderStatus.PENDING, OrderStatus.NEEDS_RECONCILIATION}),
    OrderStatus.NEEDS_RECONCILIATION: frozenset({OrderStatus.PENDING}),
    OrderStatus.PENDING: frozenset(),
}


def can_transition(old: OrderStatus, new: OrderStatus) -> bool:
    return old in ALLOWED_FROM[new]


def holds_stock(status: OrderStatus) -> bool:
    """Whether an order in this status keeps its units out of stock (everything but failed)."""
    return status is not OrderStatus.FAILED


class FailureReason(enum.StrEnum):
    CARD_DECLINED = "card_declined"
    PAYMENT_UNRESOLVED = (
        "payment_unresolved"  # the gateway never confirmed a charge before the deadline
    )
    INVALID_ORDER = "invalid_order"


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """An order as reserve.lua queued it (one entry of the order stream)."""

    order_id: str
    sale_id: str
    user_id: str
    quantity: int
    unit_price: Decimal
    idempotency_key: str
    created_at: datetime

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Order:
    """An order as PostgreSQL holds it."""

    order_id: str
    sale_id: str
    user_id: str
    quantity: int
    unit_price: Decimal
    status: OrderStatus
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    charge_id: str | None = None

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity
