"""The sale lifecycle as pure functions: a FlashSale's spec, what the API says about its sale,
what the operator recorded in status and the time in; the phase and the next actions out.
Standard library only: no kopf, no HTTP, no clock of its own.

The API's clock (Redis TIME) decides when a sale is open; the operator's clock says when to look.
At opensAt/closesAt the operator makes the explicit open/close call once the API agrees that the
moment has come, and forces it if the API still disagrees `tolerance` later.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

SALE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The API's limits (its sale domain and admin body), checked here too so that a resource the CRD
# schema did not catch (or an emulated cluster) fails as an invalid spec, not as an API error.
PRICE_RE = re.compile(r"^(0|[1-9][0-9]{0,6})(\.[0-9]{1,2})?$")
MAX_PRODUCT_LEN = 200
MAX_PRICE = Decimal(1_000_000)
MAX_STOCK = 10_000_000
MAX_PER_USER_LIMIT = 1000
MAX_DURATION = timedelta(hours=24)
DEFAULT_DURATION = "5m"
# spec.waitingRoom: the API's limits and defaults (its domain/waiting_room.py), checked here too.
WAITING_ROOM_MODES = ("fifo", "random")
MAX_ADMIT_PER_SECOND = 100_000
MIN_SESSION_S = 10
MAX_SESSION_S = 24 * 3600
DEFAULT_ADMIT_PER_SECOND = 100
DEFAULT_SESSION_S = 120
# 8 hex digits of hash keep shortened sale ids unique in practice (2^32 per shortened prefix).
SALE_ID_HASH_LEN = 8
# While the API lags behind our clock at a transition, look again this soon.
POLL_S = 0.1

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "µs": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}


class Phase(enum.StrEnum):
    SCHEDULED = "Scheduled"
    OPEN = "Open"
    SOLD_OUT = "SoldOut"
    CLOSED = "Closed"
    ERROR = "Error"


class Action(enum.StrEnum):
    UPSERT = "upsert"  # PUT the sale (create, or apply a spec edit)
    OPEN = "open"  # POST .../open
    CLOSE = "close"  # POST .../close


class InvalidSpec(ValueError):
    """The FlashSale's spec cannot describe a sale; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class WaitingRoomSpec:
    """spec.waitingRoom when enabled (docs/waiting-room.md)."""

    mode: str  # fifo | random
    admit_per_second: int
    session_seconds: int


@dataclass(frozen=True, slots=True)
class SaleSpec:
    """A validated FlashSale spec."""

    sale_id: str
    product: str
    price: str
    stock: int
    opens_at: datetime
    duration: timedelta
    per_user_limit: int
    waiting_room: WaitingRoomSpec | None = None  # None: no waiting room

    @property
    def closes_at(self) -> datetime:
        return self.opens_at + self.duration


@dataclass(frozen=True, slots=True)
class Observed:
    """The sale as the API reports it (GET /v1/sales/{id} plus the admin stats)."""

    state: str  # scheduled | open | sold_out | closed
    opens_at: datetime
    closes_at: datetime
    initial_stock: int
    remaining: int
    pending: int = 0
    confirmed: int = 0
    failed: int = 0
    needs_reconciliation: int = 0
    waiting_room_mode: str | None = None  # fifo | random while the sale has a waiting room

    @property
    def has_orders(self) -> bool:
        """Whether any order was ever accepted: from then on the API refuses a stock change."""
        return self.pending + self.confirmed + self.failed + self.needs_reconciliation > 0


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the operator itself has done, as remembered in status."""

    sale_created: bool = False  # status.saleId: the sale was upserted at least once
    observed_generation: int | None = None
    opened_at: datetime | None = None
    closed_at: datetime | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Recorded:
        generation = status.get("observedGeneration")
        return cls(
            sale_created=bool(status.get("saleId")),
            observed_generation=generation if isinstance(generation, int) else None,
            opened_at=_maybe_time(status.get("openedAt")),
            closed_at=_maybe_time(status.get("closedAt")),
        )


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Upsert:
    """The window and stock to PUT (they differ from the spec where a change is refused)."""

    stock: int
    opens_at: datetime
    closes_at: datetime
    waiting_room: WaitingRoomSpec | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    phase: Phase
    actions: tuple[Action, ...] = ()
    upsert: Upsert | None = None
    conditions: tuple[Condition, ...] = ()
    wake_in: float | None = None  # seconds until the decision may change; None: nothing scheduled


READY = "Ready"
SPEC_APPLIED = "SpecApplied"
_APPLIED = Condition(SPEC_APPLIED, True, "Applied", "the spec is applied to the sale")


def parse_spec(
    spec: Mapping[str, Any], *, namespace: str, name: str, created: datetime
) -> SaleSpec:
    """Validate a FlashSale spec; `created` (the resource's creation) is the default opensAt."""
    problems: list[str] = []
    product = spec.get("product")
    if not isinstance(product, str) or not product.strip() or len(product) > MAX_PRODUCT_LEN:
        problems.append(f"spec.product must be 1-{MAX_PRODUCT_LEN} characters")
    price = spec.get("price")
    if not isinstance(price, str) or not PRICE_RE.fullmatch(price):
        problems.append('spec.price must be a decimal string with at most 2 decimals ("49.99")')
    elif not 0 < Decimal(price) <= MAX_PRICE:
        problems.append(f"spec.price must be above 0 and at most {MAX_PRICE}")
    stock = _int_in(spec, "stock", 1, MAX_STOCK, None, problems)
    limit = _int_in(spec, "perUserLimit", 1, MAX_PER_USER_LIMIT, 1, problems)
    if stock is not None and limit is not None and limit > stock:
        problems.append("spec.perUserLimit cannot exceed spec.stock")
    opens_at = _spec_time(spec.get("opensAt"), created, problems)
    duration = _spec_duration(spec.get("duration", DEFAULT_DURATION), problems)
    sale_id = _spec_sale_id(spec.get("saleId"), namespace=namespace, name=name, problems=problems)
    waiting_room = _spec_waiting_room(spec.get("waitingRoom"), problems)
    if problems or stock is None or limit is None or opens_at is None or duration is None:
        raise InvalidSpec("; ".join(problems))
    return SaleSpec(
        sale_id=sale_id,
        product=str(product),
        price=str(price),
        stock=stock,
        opens_at=opens_at,
        duration=duration,
        per_user_limit=limit,
        waiting_room=waiting_room,
    )


def default_sale_id(*, namespace: str, name: str) -> str:
    """`<namespace>-<name>` ('.' becomes '-'); past 63 chars: its first 54, '-' and a hash."""
    base = f"{namespace}-{name}".replace(".", "-").lower()
    if SALE_ID_RE.fullmatch(base):
        return base
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:SALE_ID_HASH_LEN]
    return f"{base[: 63 - SALE_ID_HASH_LEN - 1].rstrip('-')}-{digest}"


def parse_duration(text: str) -> timedelta:
    """A Go duration ("5m", "1h30m", "1.5s", "300ms"); ValueError otherwise."""
    if not text or _DURATION_PART.sub("", text):
        raise ValueError(f"{text!r} is not a duration like 5m or 1h30m")
    total = timedelta()
    for number, unit in _DURATION_PART.findall(text):
        total += _DURATION_UNITS[unit] * float(number)
    return total


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with a zone; ValueError otherwise."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value


def has_sale(status: Mapping[str, Any], **_: Any) -> bool:
    """kopf `when=` filter: the resource's sale exists in the API, so there is a window to drive."""
    return bool(status.get("saleId"))


def decide(
    sale: SaleSpec,
    *,
    observed: Observed | None,
    recorded: Recorded,
    generation: int,
    now: datetime,
    tolerance: timedelta,
) -> Decision:
    """The phase and what to do next. Call again after acting: each call plans one step."""
    if recorded.closed_at is None and observed is None:
        return _without_sale(sale, recorded, now)
    if recorded.closed_at is not None or (observed is not None and observed.state == "closed"):
        return _closed(observed, recorded, generation)
    assert observed is not None
    if recorded.observed_generation != generation:
        return _apply_spec(sale, observed)
    return _drive_window(observed, recorded, now, tolerance)


def _closed(observed: Observed | None, recorded: Recorded, generation: int) -> Decision:
    """A closed sale is final: a PUT with a later closes_at would reopen it, so edits are ignored.

    The explicit close is made once (it records closedAt); units that failed payments return later
    are not sold any more, and a sale that sold every unit stays SoldOut.
    """
    phase = Phase.SOLD_OUT if observed is not None and observed.remaining == 0 else Phase.CLOSED
    actions = (Action.CLOSE,) if recorded.closed_at is None and observed is not None else ()
    if recorded.observed_generation == generation:
        return Decision(phase, actions=actions)
    ignored = Condition(
        SPEC_APPLIED, False, "SaleClosed", "the sale is closed; spec edits are not applied any more"
    )
    return Decision(phase, actions=actions, conditions=(ignored,))


def _without_sale(sale: SaleSpec, recorded: Recorded, now: datetime) -> Decision:
    if recorded.sale_created:
        gone = Condition(
            READY,
            False,
            "SaleNotFound",
            f"sale {sale.sale_id} was deleted outside the operator; "
            "delete and re-apply the FlashSale to run it again",
        )
        return Decision(Phase.ERROR, conditions=(gone,))
    if now >= sale.closes_at:
        expired = Condition(
            READY,
            False,
            "WindowExpired",
            f"the window ended at {sale.closes_at.isoformat()}, before the sale was created; "
            "nothing was sold",
        )
        return Decision(Phase.CLOSED, conditions=(expired,))
    upsert = Upsert(
        stock=sale.stock,
        opens_at=sale.opens_at,
        closes_at=sale.closes_at,
        waiting_room=sale.waiting_room,
    )
    phase = Phase.SCHEDULED if now < sale.opens_at else Phase.OPEN
    return Decision(phase, actions=(Action.UPSERT,), upsert=upsert, conditions=(_APPLIED,))


def _apply_spec(sale: SaleSpec, observed: Observed) -> Decision:
    """A new spec generation: PUT it, keeping what can no longer change (the stock once orders
    exist, opensAt once open)."""
    refused: list[str] = []
    reasons: list[str] = []
    stock = sale.stock
    if stock != observed.initial_stock and observed.has_orders:
        stock = observed.initial_stock
        reasons.append("StockChangeRefused")
        refused.append(
            f"spec.stock {sale.stock} not applied: orders were already accepted, "
            f"the sale keeps its stock of {observed.initial_stock}"
        )
    opens_at = sale.opens_at
    if observed.state != "scheduled":
        opens_at = observed.opens_at
        if abs(sale.opens_at - observed.opens_at) >= timedelta(milliseconds=1):
            reasons.append("OpensAtLocked")
            refused.append(
                f"spec.opensAt not applied: the sale opened at {observed.opens_at.isoformat()}"
            )
    room = sale.waiting_room
    if room is not None and _mode_locked(room, observed):
        room = dataclasses.replace(room, mode=str(observed.waiting_room_mode))
        reasons.append("WaitingRoomModeLocked")
        refused.append(
            f"spec.waitingRoom.mode not applied: the sale opened with mode {room.mode} and its "
            "order is promised from then on"
        )
    upsert = Upsert(
        stock=stock, opens_at=opens_at, closes_at=opens_at + sale.duration, waiting_room=room
    )
    applied = (
        Condition(SPEC_APPLIED, False, reasons[0], "; ".join(refused)) if refused else _APPLIED
    )
    return Decision(
        _mirror(observed), actions=(Action.UPSERT,), upsert=upsert, conditions=(applied,)
    )


def _mode_locked(room: WaitingRoomSpec, observed: Observed) -> bool:
    """The API refuses a new mode once its pre-queue is drawn, at the opening; keep the old one."""
    return (
        observed.state != "scheduled"
        and observed.waiting_room_mode is not None
        and observed.waiting_room_mode != room.mode
    )


def _drive_window(
    observed: Observed, recorded: Recorded, now: datetime, tolerance: timedelta
) -> Decision:
    phase = _mirror(observed)
    if now >= observed.closes_at:  # our clock says over, the API's not yet
        if now >= observed.closes_at + tolerance:
            return Decision(phase, actions=(Action.CLOSE,))
        return Decision(phase, wake_in=POLL_S)
    until_close = (observed.closes_at - now).total_seconds()
    if observed.state in ("open", "sold_out"):
        actions = (Action.OPEN,) if recorded.opened_at is None else ()
        return Decision(phase, actions=actions, wake_in=until_close)
    if now >= observed.opens_at + tolerance:  # scheduled, and the API's clock is far behind ours
        return Decision(phase, actions=(Action.OPEN,))
    if now >= observed.opens_at:
        return Decision(phase, wake_in=POLL_S)
    return Decision(phase, wake_in=(observed.opens_at - now).total_seconds())


def _mirror(observed: Observed) -> Phase:
    """The phase for the API's state (which already reflects the API's own clock)."""
    match observed.state:
        case "scheduled":
            return Phase.SCHEDULED
        case "open":
            return Phase.OPEN
        case "sold_out":
            return Phase.SOLD_OUT
        case _:
            return Phase.SOLD_OUT if observed.remaining == 0 else Phase.CLOSED


def remember(
    recorded: Recorded, *, action: Action, generation: int, at: datetime | None = None
) -> Recorded:
    """What the operator records after an action succeeded (`at`: the new opens_at/closes_at)."""
    if action is Action.UPSERT:
        return dataclasses.replace(recorded, sale_created=True, observed_generation=generation)
    if action is Action.OPEN:
        return dataclasses.replace(recorded, opened_at=at)
    return dataclasses.replace(recorded, closed_at=at)


def _int_in(
    spec: Mapping[str, Any],
    key: str,
    low: int,
    high: int,
    default: int | None,
    problems: list[str],
) -> int | None:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"spec.{key} must be an integer from {low} to {high}")
        return None
    return value


def _spec_time(value: Any, created: datetime, problems: list[str]) -> datetime | None:
    if value is None:
        return created
    try:
        return parse_time(str(value))
    except ValueError:
        problems.append("spec.opensAt must be an RFC 3339 time with a zone (2026-11-27T12:00:00Z)")
        return None


def _spec_duration(value: Any, problems: list[str]) -> timedelta | None:
    try:
        duration = parse_duration(str(value))
    except ValueError:
        problems.append('spec.duration must be a duration like "5m" or "1h30m"')
        return None
    if not timedelta() < duration <= MAX_DURATION:
        problems.append("spec.duration must be more than 0s and at most 24h")
        return None
    return duration


def _spec_sale_id(value: Any, *, namespace: str, name: str, problems: list[str]) -> str:
    if value is None:
        return default_sale_id(namespace=namespace, name=name)
    if not isinstance(value, str) or not SALE_ID_RE.fullmatch(value):
        problems.append(
            "spec.saleId must be 1-63 lowercase letters, digits or '-', alphanumeric at both ends"
        )
        return ""
    return value


def _spec_waiting_room(value: Any, problems: list[str]) -> WaitingRoomSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append("spec.waitingRoom must be an object")
        return None
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        problems.append("spec.waitingRoom.enabled must be true or false")
    mode = value.get("mode", "fifo")
    if mode not in WAITING_ROOM_MODES:
        problems.append("spec.waitingRoom.mode must be fifo or random")
    found: list[str] = []
    top, default = MAX_ADMIT_PER_SECOND, DEFAULT_ADMIT_PER_SECOND
    rate = _int_in(value, "admitPerSecond", 1, top, default, found)
    low, top, default = MIN_SESSION_S, MAX_SESSION_S, DEFAULT_SESSION_S
    session = _int_in(value, "sessionSeconds", low, top, default, found)
    problems.extend(p.replace("spec.", "spec.waitingRoom.", 1) for p in found)
    if enabled is not True or rate is None or session is None or mode not in WAITING_ROOM_MODES:
        return None
    return WaitingRoomSpec(mode=str(mode), admit_per_second=rate, session_seconds=session)


def _maybe_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None
