"""The work queues: Redis Streams read through consumer groups (never BRPOP), so an entry a consumer
took stays pending until it is acknowledged and another consumer can claim it if the first one dies.

Owns entry encoding (the field names reserve.lua writes), reading, claiming, acking, trimming below
the oldest unacknowledged entry, and the lag figure autoscaling uses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from redis.exceptions import ResponseError

from flashsale.adapters.redis_pipe import PipelinedRedis
from flashsale.adapters.redis_stock import Redis, guarded
from flashsale.domain.orders import PlacedOrder
from flashsale.domain.sales import from_ms, to_ms

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its id, and the order it carries (None when the entry is malformed)."""

    entry_id: str
    order: PlacedOrder | None
    fields: dict[str, str]


def encode(order: PlacedOrder) -> dict[str, str | int]:
    """The stream fields of an order, the same names reserve.lua uses."""
    return {
        "o": order.order_id,
        "s": order.sale_id,
        "u": order.user_id,
        "q": order.quantity,
        "p": f"{order.unit_price}",
        "k": order.idempotency_key,
        "t": to_ms(order.created_at),
    }


def decode(fields: dict[str, str]) -> PlacedOrder | None:
    try:
        return PlacedOrder(
            order_id=fields["o"],
            sale_id=fields["s"],
            user_id=fields["u"],
            quantity=int(fields["q"]),
            unit_price=Decimal(fields["p"]),
            idempotency_key=fields["k"],
            created_at=from_ms(int(fields["t"])),
        )
    except (KeyError, ValueError, ArithmeticError):
        return None


def _flat(fields: dict[str, str | int]) -> list[str | int]:
    return [item for pair in fields.items() for item in pair]


def _entries(raw: Sequence[tuple[str, dict[str, str] | None]]) -> list[Entry]:
    out = []
    for entry_id, fields in raw:
        # A deleted-while-pending entry comes back with no fields: it carries nothing to do.
        data = fields or {}
        out.append(Entry(entry_id, decode(data), data))
    return out


@dataclass(frozen=True, slots=True)
class GroupInfo:
    lag: int
    pending: int
    length: int


class Stream:
    """One stream and its consumer group, seen by one named consumer."""

    def __init__(
        self,
        client: Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        hot: PipelinedRedis | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        # Batches of XADD go through the pipelined connection when there is one: redis-py's
        # pipeline spends ~25 µs of Python per command packing it (half the order worker's CPU).
        self.hot = hot

    @guarded("create group")
    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    @guarded("read stream")
    async def read(self, *, count: int, block_ms: int) -> list[Entry]:
        reply = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        if not reply:
            return []
        streams = cast(list[tuple[str, list[tuple[str, dict[str, str] | None]]]], reply)
        return _entries(streams[0][1])

    @guarded("claim stream")
    async def claim_idle(self, *, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries another consumer read but never acknowledged (it died or hung)."""
        reply = await self.client.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, count=count
        )
        claimed = reply[1]
        return _entries(claimed)

    @guarded("ack stream")
    async def ack(self, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            await self.client.xack(self.stream, self.group, *entry_ids)

    @guarded("add to stream")
    async def add_many(self, orders: Sequence[PlacedOrder]) -> None:
        if not orders:
            return
        if self.hot is not None:
            await self.hot.call_many(
                [("XADD", self.stream, "*", *_flat(encode(order))) for order in orders]
            )
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for order in orders:
                pipe.xadd(self.stream, encode(order))  # type: ignore[arg-type]
            await pipe.execute()

    @guarded("trim stream")
    async def trim(self) -> int:
        """Drop entries every consumer of the group is done with: below the oldest pending entry, or
        up to the last delivered one when nothing is pending. Never an entry not yet acknowledged.
        """
        groups = await self.client.xinfo_groups(self.stream)
        mine = next((g for g in groups if g["name"] == self.group), None)
        if mine is None:
            return 0
        summary = await self.client.xpending(self.stream, self.group)
        floor = summary["min"] if summary and summary.get("pending") else mine["last-delivered-id"]
        if not floor or floor == "0-0":
            return 0
        return int(await self.client.xtrim(self.stream, minid=floor, approximate=False))

    @guarded("group info")
    async def info(self) -> GroupInfo:
        try:
            groups = await self.client.xinfo_groups(self.stream)
        except ResponseError:
            return GroupInfo(lag=0, pending=0, length=0)
        mine = next((g for g in groups if g["name"] == self.group), None)
        length = int(await self.client.xlen(self.stream))
        if mine is None:
            return GroupInfo(lag=length, pending=0, length=length)
        lag = mine.get("lag")
        return GroupInfo(
            lag=int(lag) if lag is not None else length,
            pending=int(mine["pending"]),
            length=length,
        )
