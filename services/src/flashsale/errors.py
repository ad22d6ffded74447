"""The exception hierarchy of flashsale: domain outcomes, adapter failures and worker retry signals.

Each domain error carries the stable machine-readable `code` of the contract; the API maps classes
to HTTP statuses in one handler (api/problems.py). Imports nothing from flashsale."""

from __future__ import annotations

from datetime import datetime


class FlashSaleError(Exception):
    """Root of every error flashsale raises on purpose."""

    code: str = "internal_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = detail or (self.__class__.__doc__ or self.code).strip()


# --- Sales and purchases --------------------------------------------------------------------------


class SaleNotFound(FlashSaleError):
    """No such sale."""

    code = "sale_not_found"


class SoldOut(FlashSaleError):
    """The sale has no stock left."""

    code = "sold_out"


class SaleNotOpen(FlashSaleError):
    """The sale has not opened yet."""

    code = "sale_not_open"

    def __init__(self, opens_at: datetime) -> None:
        super().__init__(f"The sale opens at {opens_at.isoformat()}.")
        self.opens_at = opens_at


class SaleClosed(FlashSaleError):
    """The sale is closed."""

    code = "sale_closed"


class PurchaseLimitReached(FlashSaleError):
    """This user already holds as many units as the sale allows per user."""

    code = "purchase_limit_reached"


class SaleInProgress(FlashSaleError):
    """The stock of a sale that has already sold units cannot change."""

    code = "sale_in_progress"


class NotAdmitted(FlashSaleError):
    """The waiting room is on for this sale and this user holds no valid admission pass."""

    code = "not_admitted"


class WaitingRoomDisabled(FlashSaleError):
    """This sale has no waiting room: buy directly."""

    code = "waiting_room_disabled"


class NotInQueue(FlashSaleError):
    """This user holds no live ticket of this sale's waiting room; join it first."""

    code = "not_in_queue"


class OrderNotFound(FlashSaleError):
    """No such order."""

    code = "order_not_found"


class InvalidRequest(FlashSaleError):
    """The request is not valid."""

    code = "invalid_request"


class InvalidSale(InvalidRequest):
    """The sale definition is invalid."""


# --- Idempotency ----------------------------------------------------------------------------------


class DuplicateRequest(FlashSaleError):
    """Base of the Idempotency-Key conflicts."""

    code = "idempotency_conflict"


class IdempotencyKeyReused(DuplicateRequest):
    """This Idempotency-Key was already used with a different request body."""

    code = "idempotency_key_reused"


class RequestInProgress(DuplicateRequest):
    """A request with this Idempotency-Key is still being processed."""

    code = "request_in_progress"

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__()
        self.retry_after_s = retry_after_s


class InvalidIdempotencyKey(FlashSaleError):
    """The Idempotency-Key must be 1-255 visible ASCII characters."""

    code = "invalid_idempotency_key"


class IdempotencyKeyRequired(FlashSaleError):
    """The Idempotency-Key header is required."""

    code = "idempotency_key_required"


# --- Load and limits ------------------------------------------------------------------------------


class Throttled(FlashSaleError):
    """Base of the answers that carry Retry-After."""

    def __init__(self, retry_after_s: int, detail: str = "") -> None:
        super().__init__(detail)
        self.retry_after_s = max(1, retry_after_s)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} retry_after={self.retry_after_s}s>"


class RateLimited(Throttled):
    """Too many requests; slow down."""

    code = "rate_limited"


class Overloaded(Throttled):
    """The order queue is past its bound; nothing was reserved. Try again shortly."""

    code = "overloaded"


# --- Auth -----------------------------------------------------------------------------------------


class Unauthenticated(FlashSaleError):
    """A valid bearer token is required."""

    code = "unauthenticated"


class Forbidden(FlashSaleError):
    """This token does not carry the role this route needs."""

    code = "forbidden"


class EmailTaken(FlashSaleError):
    """An account with this email already exists."""

    code = "email_taken"


class InvalidCredentials(FlashSaleError):
    """Email or password is wrong."""

    code = "invalid_credentials"


# --- Infrastructure -------------------------------------------------------------------------------


class StoreUnavailable(FlashSaleError):
    """A store (Redis or PostgreSQL) did not answer; the request may be retried."""

    code = "store_unavailable"


# --- Worker retry signals (STYLE 13) --------------------------------------------------------------


class TransientError(FlashSaleError):
    """A step failed in a way that may pass: try again after `delay` seconds."""

    code = "transient"

    def __init__(self, detail: str = "", *, delay: float) -> None:
        super().__init__(detail)
        self.delay = delay

    def __repr__(self) -> str:
        return f"<TransientError delay={self.delay:.2f}s {self.detail!r}>"


class PermanentError(FlashSaleError):
    """A step failed for good (a declined card, a malformed message); retrying cannot help."""

    code = "permanent"

    def __repr__(self) -> str:
        return f"<PermanentError {self.detail!r}>"
