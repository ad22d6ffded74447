"""Sale definitions and the sale lifecycle: which state a sale is in at a given moment.

State (CONTRACT.md): closed once closed or now >= closes_at; else scheduled while now < opens_at;
else sold_out while remaining == 0; else open. Standard library only."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from flashsale.domain.waiting_room import WaitingRoom, validate_room
from flashsale.errors import InvalidSale

SALE_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_STOCK = 10_000_000
MAX_PRICE = Decimal("1000000")
# 24 h: a flash sale is minutes long; a day-long window is a typo we would rather refuse.
MAX_DURATION = timedelta(hours=24)
DEFAULT_DURATION = timedelta(minutes=5)


class SaleState(enum.StrEnum):
    SCHEDULED = "scheduled"
    OPEN = "open"
    SOLD_OUT = "sold_out"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SaleDefinition:
    """What an admin declares about a sale (PUT /v1/admin/sales/{id})."""

    sale_id: str
    name: str
    price: Decimal
    stock: int
    opens_at: datetime
    closes_at: datetime
    per_user_limit: int = 1
    waiting_room: WaitingRoom | None = None  # None: no waiting room (the default)


@dataclass(frozen=True, slots=True)
class SaleSnapshot:
    """A sale as read back from the stock store, at one moment."""

    sale_id: str
    name: str
    price: Decimal
    initial_stock: int
    remaining: int
    opens_at: datetime
    closes_at: datetime
    per_user_limit: int
    closed: bool = False
    seq: int = 0
    waiting_room: WaitingRoom | None = None

    def state(self, now: datetime) -> SaleState:
        return derive_state(
            now=now,
            opens_at=self.opens_at,
            closes_at=self.closes_at,
            remaining=self.remaining,
            closed=self.closed,
        )

    def document(self, now: datetime) -> dict[str, object]:
        """The public sale document (GET /v1/sales/{id}, and the SSE `sale` event)."""
        doc: dict[str, object] = {
            "sale_id": self.sale_id,
            "name": self.name,
            "price": format_price(self.price),
            "initial_stock": self.initial_stock,
            "remaining": self.remaining,
            "state": self.state(now).value,
            "opens_at": rfc3339(self.opens_at),
            "closes_at": rfc3339(self.closes_at),
            "per_user_limit": self.per_user_limit,
        }
        if self.waiting_room is not None:  # a sale without one keeps the contract's document
            doc["waiting_room"] = self.waiting_room.document()
        return doc


def derive_state(
    *, now: datetime, opens_at: datetime, closes_at: datetime, remaining: int, closed: bool
) -> SaleState:
    if closed or now >= closes_at:
        return SaleState.CLOSED
    if now < opens_at:
        return SaleState.SCHEDULED
    if remaining <= 0:
        return SaleState.SOLD_OUT
    return SaleState.OPEN


def parse_price(value: str | int | float | Decimal) -> Decimal:
    """A price as a positive decimal with at most 2 places ("49.99")."""
    if isinstance(value, float):
        raise InvalidSale('price must be a decimal string such as "49.99", not a float')
    try:
        price = Decimal(str(value))
    except (InvalidOperation, ValueError) as e:
        raise InvalidSale(f"price {value!r} is not a decimal number") from e
    if not price.is_finite() or price <= 0 or price > MAX_PRICE:
        raise InvalidSale(f"price must be > 0 and <= {MAX_PRICE}")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise InvalidSale("price has more than 2 decimal places")
    return price.quantize(Decimal("0.01"))


def format_price(price: Decimal) -> str:
    return f"{price.quantize(Decimal('0.01'))}"


def _validate_name(name: str) -> None:
    if not name.strip() or len(name) > 200:
        raise InvalidSale("name must be 1-200 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        # A NUL was written to Redis, then refused by PostgreSQL: a sale in one store only.
        raise InvalidSale("name must not contain control characters")


def validate_definition(sale: SaleDefinition) -> SaleDefinition:
    """Return the definition if it describes a sale we can run, else raise InvalidSale with the
    reason."""
    if not SALE_ID_RE.fullmatch(sale.sale_id):
        raise InvalidSale(
            "sale_id must be 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    _validate_name(sale.name)
    if not 1 <= sale.stock <= MAX_STOCK:
        raise InvalidSale(f"stock must be between 1 and {MAX_STOCK}")
    if sale.per_user_limit < 1:
        raise InvalidSale("per_user_limit must be >= 1")
    for field, value in (("opens_at", sale.opens_at), ("closes_at", sale.closes_at)):
        if value.tzinfo is None:
            raise InvalidSale(f"{field} must carry a time zone (RFC 3339)")
    if sale.closes_at <= sale.opens_at:
        raise InvalidSale("closes_at must be after opens_at")
    if sale.closes_at - sale.opens_at > MAX_DURATION:
        raise InvalidSale("a sale may last at most 24 hours")
    parse_price(sale.price)
    if sale.waiting_room is not None:
        validate_room(sale.waiting_room)
    return sale


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def to_ms(value: datetime) -> int:
    """Unix milliseconds, exact (floored): float arithmetic would turn 1.001 s into 1000 ms. A naive
    datetime is taken as local time, as datetime.timestamp() does."""
    aware = value if value.tzinfo is not None else value.astimezone()
    return (aware - EPOCH) // _ONE_MS


def from_ms(value: int) -> datetime:
    return EPOCH + timedelta(milliseconds=value)


def rfc3339(value: datetime) -> str:
    """UTC, millisecond precision, 'Z' suffix: 2026-11-26T12:00:00.000Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
