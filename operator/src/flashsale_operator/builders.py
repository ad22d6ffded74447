"""Pure builders: a sale spec to the admin API's body, the API's answers to an `Observed`, and
decisions to the FlashSale's status patch (with Kubernetes-style conditions).

No I/O and no kopf here; handlers apply what these return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from flashsale_operator import lifecycle

# Conditions listed in this order, whatever order they were set in: `kubectl describe` reads better.
CONDITION_ORDER = (lifecycle.READY, lifecycle.SPEC_APPLIED)
COUNTS = {
    "initialStock": "initial_stock",
    "remaining": "remaining",
    "pending": "pending",
    "confirmed": "confirmed",
    "failed": "failed",
    "needsReconciliation": "needs_reconciliation",
}


def rfc3339(value: datetime) -> str:
    """UTC with millisecond precision and a Z, as the API writes times."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_sale_body(sale: lifecycle.SaleSpec, upsert: lifecycle.Upsert) -> dict[str, Any]:
    """The body of PUT /v1/admin/sales/{sale_id}."""
    return {
        "name": sale.product,
        "price": sale.price,
        "stock": upsert.stock,
        "opens_at": rfc3339(upsert.opens_at),
        "closes_at": rfc3339(upsert.closes_at),
        "per_user_limit": sale.per_user_limit,
        **build_waiting_room(upsert.waiting_room),
    }


def build_waiting_room(room: lifecycle.WaitingRoomSpec | None) -> dict[str, Any]:
    """The body's `waiting_room` (left out when off: the API's default, and the old body)."""
    if room is None:
        return {}
    return {
        "waiting_room": {
            "enabled": True,
            "mode": room.mode,
            "admit_per_second": room.admit_per_second,
            "session_seconds": room.session_seconds,
        }
    }


def build_observed(sale: Mapping[str, Any], stats: Mapping[str, Any]) -> lifecycle.Observed:
    """The API's sale document (GET /v1/sales/{id}) and stats (GET .../stats) as one Observed."""
    return lifecycle.Observed(
        state=str(sale["state"]),
        opens_at=lifecycle.parse_time(str(sale["opens_at"])),
        closes_at=lifecycle.parse_time(str(sale["closes_at"])),
        initial_stock=int(stats["initial_stock"]),
        remaining=int(stats["remaining"]),
        pending=int(stats["pending"]),
        confirmed=int(stats["confirmed"]),
        failed=int(stats["failed"]),
        needs_reconciliation=int(stats["needs_reconciliation"]),
        waiting_room_mode=(sale.get("waiting_room") or {}).get("mode"),
    )


def build_status(
    *,
    sale: lifecycle.SaleSpec,
    decision: lifecycle.Decision,
    observed: lifecycle.Observed | None,
    recorded: lifecycle.Recorded,
    current: Mapping[str, Any],
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """The whole status this reconciliation arrives at (see `status_patch` for what changed)."""
    status: dict[str, Any] = {"phase": str(decision.phase)}
    conditions = list(decision.conditions)
    if observed is not None:
        status["saleId"] = sale.sale_id
        status.update({key: getattr(observed, attr) for key, attr in COUNTS.items()})
        status["opensAt"] = rfc3339(observed.opens_at)
        status["closesAt"] = rfc3339(observed.closes_at)
        if not any(c.type == lifecycle.READY for c in conditions):
            live = f"sale {sale.sale_id} is mirrored from the API"
            conditions.append(lifecycle.Condition(lifecycle.READY, True, "SaleLive", live))
    else:
        status["opensAt"] = rfc3339(sale.opens_at)
        status["closesAt"] = rfc3339(sale.closes_at)
    if recorded.opened_at is not None:
        status["openedAt"] = rfc3339(recorded.opened_at)
    if recorded.closed_at is not None:
        status["closedAt"] = rfc3339(recorded.closed_at)
    if recorded.observed_generation is not None:
        status["observedGeneration"] = recorded.observed_generation
    status["conditions"] = merge_conditions(
        current.get("conditions") or [], conditions, generation=generation, now=now
    )
    return status


def build_error_status(
    current: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    phase: lifecycle.Phase | None = lifecycle.Phase.ERROR,
    types: Iterable[str] = (lifecycle.READY,),
) -> dict[str, Any]:
    """Status for a failure: one False condition under each of `types`, and `phase` if given."""
    updates = [lifecycle.Condition(kind, False, reason, message) for kind in types]
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = str(phase)
    status["conditions"] = merge_conditions(
        current.get("conditions") or [], updates, generation=generation, now=now
    )
    return status


def build_owner_entry(*, status: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, str]:
    """The sale-id index entry of one FlashSale: {saleId: "namespace/name"} once it manages one."""
    sale_id = status.get("saleId")
    if not sale_id:
        return {}
    return {str(sale_id): owner_key(meta)}


def owner_key(meta: Mapping[str, Any]) -> str:
    return f"{meta.get('namespace')}/{meta.get('name')}"


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields that change: an unchanged status costs no PATCH and no watch event."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


def merge_conditions(
    current: Iterable[Mapping[str, Any]],
    updates: Iterable[lifecycle.Condition],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Set conditions by type; lastTransitionTime moves only when a condition's status flips."""
    merged = {str(c.get("type")): dict(c) for c in current}
    stamp = now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    for update in updates:
        status = "True" if update.status else "False"
        old = merged.get(update.type, {})
        flipped = old.get("status") != status
        merged[update.type] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": stamp if flipped else old.get("lastTransitionTime", stamp),
            "observedGeneration": generation,
        }
    order = {kind: index for index, kind in enumerate(CONDITION_ORDER)}
    return sorted(merged.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))
