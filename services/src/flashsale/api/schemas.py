"""Request and response bodies of the API, as pydantic models (they also make the OpenAPI at /docs).

The purchase body is parsed by hand on the hot path (routes/purchase.py) but described here for
OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flashsale.domain import waiting_room as wr
from flashsale.domain.orders import Order, OrderStatus
from flashsale.domain.purchase import MAX_QUANTITY
from flashsale.domain.sales import SaleSnapshot, SaleState, rfc3339


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PurchaseRequest(Strict):
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY, strict=True)


class PurchaseAccepted(BaseModel):
    order_id: str
    sale_id: str
    user_id: str
    quantity: int
    status: OrderStatus = OrderStatus.PENDING


class WaitingRoomIn(Strict):
    """A sale's virtual waiting room (docs/waiting-room.md). Off unless `enabled`."""

    enabled: bool = False
    mode: Literal["fifo", "random"] = "fifo"
    admit_per_second: int = Field(
        default=wr.DEFAULT_ADMIT_PER_SECOND,
        ge=wr.MIN_ADMIT_PER_SECOND,
        le=wr.MAX_ADMIT_PER_SECOND,
        strict=True,
        description="tickets admitted per second once the sale is open",
    )
    session_seconds: int = Field(
        default=wr.DEFAULT_SESSION_S,
        ge=wr.MIN_SESSION_S,
        le=wr.MAX_SESSION_S,
        strict=True,
        description="lifetime of an admission pass, from the first moment it was issued",
    )

    def room(self) -> wr.WaitingRoom | None:
        if not self.enabled:
            return None
        return wr.WaitingRoom(
            mode=wr.Mode(self.mode),
            admit_per_second=self.admit_per_second,
            session_seconds=self.session_seconds,
        )


class WaitingRoomOut(BaseModel):
    enabled: bool
    mode: Literal["fifo", "random"]
    admit_per_second: int
    session_seconds: int


class SaleUpsert(Strict):
    name: str = Field(min_length=1, max_length=200)
    price: str = Field(pattern=r"^\d{1,7}(\.\d{1,2})?$", examples=["49.99"])
    stock: int = Field(ge=1, le=10_000_000, strict=True)
    opens_at: datetime | None = Field(default=None, description="RFC 3339; default: now")
    closes_at: datetime | None = Field(
        default=None, description="RFC 3339; default: opens_at + 5 min"
    )
    per_user_limit: int = Field(default=1, ge=1, le=1000, strict=True)
    waiting_room: WaitingRoomIn | None = Field(default=None, description="default: off")

    @field_validator("price", mode="before")
    @classmethod
    def _price_is_a_string(cls, value: Any) -> Any:
        if isinstance(value, float | int) and not isinstance(value, bool):
            raise ValueError('price must be a decimal string such as "49.99"')
        return value


class SaleOut(BaseModel):
    sale_id: str
    name: str
    price: str
    initial_stock: int
    remaining: int
    state: SaleState
    opens_at: str
    closes_at: str
    per_user_limit: int
    waiting_room: WaitingRoomOut | None = Field(
        default=None, description="present only when the sale has a waiting room"
    )

    @classmethod
    def of(cls, sale: SaleSnapshot, *, now: datetime) -> SaleOut:
        return cls.model_validate(sale.document(now))


class QueueTicket(BaseModel):
    """POST /v1/sales/{id}/queue: a place in the waiting room (and a pass once admitted)."""

    ticket: str = Field(description="names the holder to GET /v1/sales/{id}/queue/events")
    position: int | None = Field(
        description="1 = next to be admitted, 0 = admitted; null until a random draw (opening)"
    )
    estimated_wait_s: int | None
    pass_: str | None = Field(
        default=None,
        alias="pass",
        description="once admitted: send it as the `Admission-Pass` header of the purchase",
    )
    expires_at: str | None = Field(default=None, description="the pass's expiry, RFC 3339")


class QueueAdmin(BaseModel):
    """GET /v1/admin/sales/{id}/queue: the waiting room for audit (docs/waiting-room.md)."""

    mode: Literal["fifo", "random"]
    seed: str
    joined: int
    admitted: int
    paused: bool
    rate: int
    drawn: int | None = Field(description="size of the random pre-queue, fixed at the opening")


class SaleStats(BaseModel):
    initial_stock: int
    remaining: int
    pending: int
    confirmed: int
    failed: int
    needs_reconciliation: int


class OrderOut(BaseModel):
    order_id: str
    sale_id: str
    user_id: str
    quantity: int
    status: OrderStatus
    failure_reason: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            order_id=order.order_id,
            sale_id=order.sale_id,
            user_id=order.user_id,
            quantity=order.quantity,
            status=order.status,
            failure_reason=order.failure_reason,
            created_at=rfc3339(order.created_at),
            updated_at=rfc3339(order.updated_at),
        )


class OrderPage(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None


class Register(Strict):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=200)


class Login(Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=256)


class UserOut(BaseModel):
    user_id: str
    email: str
    name: str


class Registered(BaseModel):
    user: UserOut
    token: str


class TokenOut(BaseModel):
    token: str


class Problem(BaseModel):
    """RFC 9457 problem details, with the stable machine-readable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem bodies for the given statuses."""
    return {s: {"model": Problem, "content": {"application/problem+json": {}}} for s in statuses}
