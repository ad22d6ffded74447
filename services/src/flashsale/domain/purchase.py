"""The purchase rules that do not need a store: Idempotency-Key syntax, request fingerprints, and
what each outcome of the reserve script means. The atomic check-and-reserve itself is
adapters/lua/reserve.lua.

Standard library and flashsale.errors only."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from flashsale import errors

MAX_IDEMPOTENCY_KEY_LEN = 255
MAX_QUANTITY = 100


def validate_idempotency_key(value: str | None) -> str:
    """The header value if it is 1-255 visible ASCII characters (0x21-0x7E), else an error."""
    if value is None:
        raise errors.IdempotencyKeyRequired()
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_LEN:
        raise errors.InvalidIdempotencyKey()
    if not all(0x21 <= ord(ch) <= 0x7E for ch in value):
        raise errors.InvalidIdempotencyKey()
    return value


def fingerprint(*, sale_id: str, quantity: int) -> str:
    """What makes two purchase requests "the same" after defaults: `{}`, an empty body and
    `{"quantity": 1}` all normalise to quantity 1, so they share a fingerprint."""
    canonical = f"purchase\x1f{sale_id}\x1f{quantity}".encode()
    return hashlib.sha256(canonical).hexdigest()[:32]


class ReserveCode(enum.IntEnum):
    """Numeric outcomes returned by reserve.lua (first element of its reply)."""

    RESERVED = 0
    REPLAYED = 1
    NOT_FOUND = 2
    RATE_LIMITED = 3
    KEY_REUSED = 4
    IN_PROGRESS = 5  # reserved: the single atomic script never leaves a key half-claimed
    CLOSED = 6
    NOT_OPEN = 7
    OVERLOADED = 8
    LIMIT_REACHED = 9
    SOLD_OUT = 10
    NOT_ADMITTED = 11


@dataclass(frozen=True, slots=True)
class Reservation:
    """A successful reserve: the 202 body (stored for replays) and whether this was a replay."""

    body: bytes
    replayed: bool


def raise_for_refusal(code: ReserveCode, *, retry_after_s: int, opens_at: datetime) -> None:
    """Turn a refusal from the reserve script into the domain error the API answers with."""
    refusals: dict[ReserveCode, errors.FlashSaleError] = {
        ReserveCode.NOT_FOUND: errors.SaleNotFound(),
        ReserveCode.RATE_LIMITED: errors.RateLimited(retry_after_s),
        ReserveCode.KEY_REUSED: errors.IdempotencyKeyReused(),
        ReserveCode.IN_PROGRESS: errors.RequestInProgress(retry_after_s),
        ReserveCode.CLOSED: errors.SaleClosed(),
        ReserveCode.NOT_OPEN: errors.SaleNotOpen(opens_at),
        ReserveCode.OVERLOADED: errors.Overloaded(retry_after_s),
        ReserveCode.LIMIT_REACHED: errors.PurchaseLimitReached(),
        ReserveCode.SOLD_OUT: errors.SoldOut(),
        ReserveCode.NOT_ADMITTED: errors.NotAdmitted(),
    }
    if code in refusals:
        raise refusals[code]
