"""The four invariants of CONTRACT.md, evaluated over counts already read from Redis, PostgreSQL and
the gateway. Pure: `flashsale verify` gathers the facts, this module judges them. Standard library
only."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ChargeFact:
    order_id: str
    status: str  # succeeded | refunded | declined ...
    charges: int = 1  # distinct charges the gateway made for this idempotency key


@dataclass(frozen=True, slots=True)
class OrderFact:
    order_id: str
    user_id: str
    quantity: int
    status: str


@dataclass(frozen=True, slots=True)
class SaleFacts:
    sale_id: str
    initial_stock: int
    per_user_limit: int
    remaining: int  # Redis
    orders: list[OrderFact]  # PostgreSQL
    acknowledged_order_ids: list[str]  # every 202 answer recorded with its Idempotency-Key (Redis)
    charges: list[ChargeFact] | None = None  # gateway; None when it cannot be asked
    queued: int = 0  # entries still in the order stream (not quiescent when > 0)


@dataclass(frozen=True, slots=True)
class Check:
    number: int
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def _units(orders: list[OrderFact], status: str) -> int:
    return sum(o.quantity for o in orders if o.status == status)


def check_stock_balance(facts: SaleFacts) -> Check:
    pending = _units(facts.orders, "pending")
    confirmed = _units(facts.orders, "confirmed")
    nr = _units(facts.orders, "needs_reconciliation")
    total = facts.remaining + pending + confirmed + nr
    detail = (
        f"remaining {facts.remaining} + pending {pending} + confirmed {confirmed} "
        f"+ needs_reconciliation {nr} = {total} (initial {facts.initial_stock})"
    )
    if facts.queued:
        detail += f"; {facts.queued} orders still queued"
    return Check(1, "stock balances", total == facts.initial_stock and not facts.queued, detail)


def check_no_oversell(facts: SaleFacts) -> Check:
    confirmed = _units(facts.orders, "confirmed")
    held: Counter[str] = Counter()
    for order in facts.orders:
        if order.status != "failed":
            held[order.user_id] += order.quantity
    worst = max(held.values(), default=0)
    over = [user for user, units in held.items() if units > facts.per_user_limit]
    ok = confirmed <= facts.initial_stock and not over
    detail = (
        f"confirmed {confirmed} <= initial {facts.initial_stock}; "
        f"max units per user {worst} (limit {facts.per_user_limit})"
    )
    if over:
        detail += f"; {len(over)} users over the limit, e.g. {over[0]}"
    return Check(2, "no oversell", ok, detail)


def check_every_ack_has_one_order(facts: SaleFacts) -> Check:
    rows = Counter(o.order_id for o in facts.orders)
    acked = set(facts.acknowledged_order_ids)
    missing = acked - set(rows)
    duplicated = [oid for oid, n in rows.items() if n > 1]
    unacked = set(rows) - acked
    ok = not missing and not duplicated and not unacked
    detail = f"{len(acked)} accepted (202), {len(rows)} order rows"
    if missing:
        detail += f"; {len(missing)} lost, e.g. {sorted(missing)[0]}"
    if duplicated:
        detail += f"; {len(duplicated)} duplicated"
    if unacked:
        detail += f"; {len(unacked)} rows without a 202"
    return Check(3, "every 202 has exactly one order", ok, detail)


def check_charges(facts: SaleFacts) -> Check:
    if facts.charges is None:
        return Check(4, "charges match orders", False, "the payment gateway could not be asked")
    by_order: dict[str, list[ChargeFact]] = {}
    for charge in facts.charges:
        by_order.setdefault(charge.order_id, []).append(charge)
    orders = {o.order_id: o for o in facts.orders}
    problems: list[str] = []
    double = [oid for oid, cs in by_order.items() if sum(c.charges for c in cs) > 1]
    if double:
        problems.append(f"{len(double)} orders charged twice")
    orphans = [oid for oid in by_order if oid not in orders]
    if orphans:
        problems.append(f"{len(orphans)} charges without an order")
    succeeded = {oid for oid, cs in by_order.items() if any(c.status == "succeeded" for c in cs)}
    confirmed = {oid for oid, o in orders.items() if o.status == "confirmed"}
    unpaid = confirmed - succeeded
    if unpaid:
        problems.append(f"{len(unpaid)} confirmed orders without a succeeded charge")
    unrefunded = {oid for oid in succeeded if oid in orders and orders[oid].status != "confirmed"}
    # An order still pending or in reconciliation may legitimately hold a charge we have not settled
    # yet; only charges of failed orders must have been refunded.
    unrefunded = {oid for oid in unrefunded if orders[oid].status == "failed"}
    if unrefunded:
        problems.append(f"{len(unrefunded)} succeeded charges of failed orders not refunded")
    refunded = sum(1 for cs in by_order.values() for c in cs if c.status == "refunded")
    detail = (
        f"{len(confirmed)} confirmed, {len(succeeded)} succeeded charges, {refunded} refunded"
        + ("; " + "; ".join(problems) if problems else "")
    )
    return Check(4, "charges match orders", not problems, detail)


def judge(facts: SaleFacts) -> Verdict:
    return Verdict(
        [
            check_stock_balance(facts),
            check_no_oversell(facts),
            check_every_ack_has_one_order(facts),
            check_charges(facts),
        ]
    )
