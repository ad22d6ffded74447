"""The stock store: sales, reservations, settlements and rate limits in Redis/Valkey, through the
Lua scripts in adapters/lua (each runs atomically on one sale's slot).

Owns the redis client factory and the script loader. Raises flashsale.errors (StoreUnavailable wraps
every redis-py error); the API and workers never see redis-py exceptions."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any, ParamSpec, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from flashsale import errors
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_pipe import PipelinedRedis
from flashsale.config import ApiSettings, RedisSettings
from flashsale.domain.orders import OrderStatus, PlacedOrder
from flashsale.domain.purchase import Reservation, ReserveCode, raise_for_refusal
from flashsale.domain.sales import SaleDefinition, SaleSnapshot, format_price, from_ms, to_ms
from flashsale.domain.waiting_room import Mode, WaitingRoom

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

Redis = aioredis.Redis

# 1 h: the order worker writes a row within milliseconds; this only bridges a backlog or a restart.
PLACED_ORDER_TTL_MS = 3_600_000


def connect(settings: RedisSettings) -> Redis:
    """A pooled asyncio client. Replies are decoded to str; hiredis parses them when installed.

    The pool blocks (up to the socket timeout) when all its connections are busy, instead of
    failing with "Too many connections": a burst waits a few microseconds for a connection rather
    than turning into 503s.

    A command that fails on a broken connection is sent once more on a fresh one: after a Redis
    restart every pooled connection is dead, and without the retry each of them answered one
    request with 503 whenever a burst first reached it, minutes later. Safe to repeat: the scripts
    are idempotent (settle, upsert, window, delete) or keyed (reserve replays its answer), and a
    rate-limit token spent twice errs on the strict side."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        decode_responses=True,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout_s,
        health_check_interval=30,
        # Not on a timeout: that is a slow Redis, and the wait would only double.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )
    client: Redis = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it too
    return client


@asynccontextmanager
async def unavailable_on_error(what: str) -> AsyncIterator[None]:
    """Wrap redis-py errors (and the timeouts they raise) into StoreUnavailable."""
    try:
        yield
    except RedisError as e:
        raise errors.StoreUnavailable(f"redis: {what}: {e}") from e
    except (OSError, TimeoutError) as e:
        raise errors.StoreUnavailable(f"redis: {what}: {e!r}") from e


def guarded(what: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        async def inner(*args: P.args, **kwargs: P.kwargs) -> T:
            async with unavailable_on_error(what):
                return await fn(*args, **kwargs)

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        return inner

    return wrap


def _script_source(name: str) -> str:
    lua = resources.files("flashsale.adapters") / "lua"
    prelude = (lua / "prelude.lua").read_text()
    return prelude + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """The Lua scripts, registered on one client (EVALSHA, loaded again on NOSCRIPT)."""

    NAMES = (
        "reserve", "settle", "upsert_sale", "window", "delete_sale", "purge_sale", "ratelimit",
        "queue",
    )  # fmt: skip

    def __init__(self, client: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(_script_source(name)) for name in self.NAMES
        }

    def __getitem__(self, name: str) -> AsyncScript:
        return self._scripts[name]


@dataclass(frozen=True, slots=True)
class SaleCounters:
    """Units per order status, as counted by the reserve and settle scripts."""

    initial_stock: int
    remaining: int
    pending: int
    confirmed: int
    failed: int
    needs_reconciliation: int
    accepted_orders: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Rate limits in the form the scripts take: an emission interval (ms) and a burst."""

    user_interval_ms: float
    user_burst: int
    addr_interval_ms: float
    addr_burst: int

    @classmethod
    def from_settings(cls, api: ApiSettings) -> Limits:
        def interval(rate: float) -> float:
            return 1000.0 / rate if rate > 0 else 0.0

        return cls(
            interval(api.rate_limit_user_per_s),
            api.rate_limit_user_burst,
            interval(api.rate_limit_addr_per_s),
            api.rate_limit_addr_burst,
        )


def _snapshot(sale_id: str, raw: Mapping[str, str]) -> SaleSnapshot | None:
    if not raw or "initial" not in raw or raw.get("deleting") == "1":
        return None
    return SaleSnapshot(
        sale_id=sale_id,
        name=raw["name"],
        price=Decimal(raw["price"]),
        initial_stock=int(raw["initial"]),
        remaining=int(raw["remaining"]),
        opens_at=from_ms(int(raw["opens"])),
        closes_at=from_ms(int(raw["closes"])),
        per_user_limit=int(raw["limit"]),
        seq=int(raw.get("seq", 0)),
        waiting_room=_waiting_room(raw),
    )


def _waiting_room(raw: Mapping[str, str]) -> WaitingRoom | None:
    """The waiting-room settings of a sale hash (upsert_sale.lua writes them), None when off."""
    if raw.get("wr") != "1":
        return None
    return WaitingRoom(
        mode=Mode(raw["wr_mode"]),
        admit_per_second=int(raw["wr_rate"]),
        session_seconds=int(raw["wr_session"]),
    )


class RedisStock:
    """Sales and their stock in Redis. One instance per process, sharing the client's pool."""

    def __init__(
        self, client: Redis, *, api: ApiSettings | None = None, hot: PipelinedRedis | None = None
    ) -> None:
        self.client = client
        self.scripts = Scripts(client)
        # The purchase's own connection (redis_pipe): the API passes one; other users of the stock
        # store (workers, tools, tests) run the same script through redis-py.
        self.hot = hot
        self._reserve_sha = hot.register_script(_script_source("reserve")) if hot else ""
        api = api or ApiSettings()
        self.limits = Limits.from_settings(api)
        self.idempotency_ttl_ms = api.idempotency_ttl_s * 1000
        self.max_backlog = api.max_queue_backlog
        self.overloaded_retry_after_s = api.overloaded_retry_after_s

    # --- health ---------------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    # --- purchase -------------------------------------------------------------------------------

    @guarded("reserve")
    async def reserve(
        self,
        *,
        sale_id: str,
        user_id: str,
        qty: int,
        idempotency_key: str,
        fingerprint: str,
        order_id: str,
        body: bytes,
        client_addr: str,
        admitted: bool = False,
    ) -> Reservation:
        """Run reserve.lua. Returns the 202 body (fresh or replayed) or raises the refusal.
        `admitted`: the caller holds a valid admission pass (only a waiting room asks for one)."""
        limits = self.limits
        script_keys = [
            keys.sale(sale_id),
            keys.holds(sale_id),
            keys.idempotency(sale_id, user_id, idempotency_key),
            keys.user_rate(user_id),
            keys.addr_rate(client_addr),
            keys.ORDER_STREAM,
            keys.placed_order(order_id),
        ]
        script_args: list[Any] = [
            user_id,
            qty,
            fingerprint,
            order_id,
            body,
            self.idempotency_ttl_ms,
            limits.user_interval_ms,
            limits.user_burst,
            limits.addr_interval_ms,
            limits.addr_burst,
            self.max_backlog,
            self.overloaded_retry_after_s,
            sale_id,
            idempotency_key,
            keys.sale_events(sale_id),
            PLACED_ORDER_TTL_MS,
            "1" if admitted else "0",
        ]
        if self.hot is not None:
            reply = await self.hot.evalsha(self._reserve_sha, script_keys, script_args)
        else:
            reply = await self.scripts["reserve"](keys=script_keys, args=script_args)
        code = ReserveCode(int(reply[0]))
        if code in (ReserveCode.RESERVED, ReserveCode.REPLAYED):
            payload = reply[1]
            return Reservation(
                body=payload.encode() if isinstance(payload, str) else payload,
                replayed=code is ReserveCode.REPLAYED,
            )
        extra = int(reply[1]) if len(reply) > 1 else 1
        opens_at = from_ms(extra) if code is ReserveCode.NOT_OPEN else from_ms(0)
        raise_for_refusal(code, retry_after_s=extra, opens_at=opens_at)
        raise AssertionError(f"unhandled reserve code {code}")  # pragma: no cover

    @guarded("rate limit")
    async def check_rate(self, *, user_id: str | None, client_addr: str) -> None:
        """Apply the per-user (when there is a user) and per-address limits; raise RateLimited."""
        limits = self.limits
        user_interval = limits.user_interval_ms if user_id else 0.0
        retry_after = await self.scripts["ratelimit"](
            keys=[keys.user_rate(user_id or "-"), keys.addr_rate(client_addr)],
            args=[user_interval, limits.user_burst, limits.addr_interval_ms, limits.addr_burst],
        )
        if int(retry_after) > 0:
            raise errors.RateLimited(int(retry_after))

    # --- sales ----------------------------------------------------------------------------------

    @guarded("read sale")
    async def get_sale(self, sale_id: str) -> SaleSnapshot:
        raw = cast(dict[str, str], await self.client.hgetall(keys.sale(sale_id)))
        snapshot = _snapshot(sale_id, raw)
        if snapshot is None:
            raise errors.SaleNotFound()
        return snapshot

    @guarded("read counters")
    async def counters(self, sale_id: str) -> SaleCounters:
        raw = await self.client.hgetall(keys.sale(sale_id))
        if not raw or raw.get("deleting") == "1":
            raise errors.SaleNotFound()
        return SaleCounters(
            initial_stock=int(raw["initial"]),
            remaining=int(raw["remaining"]),
            pending=int(raw.get("pending", 0)),
            confirmed=int(raw.get("confirmed", 0)),
            failed=int(raw.get("failed", 0)),
            needs_reconciliation=int(raw.get("nr", 0)),
            accepted_orders=int(raw.get("accepted", 0)),
        )

    @guarded("upsert sale")
    async def upsert_sale(self, sale: SaleDefinition) -> bool:
        """Create or update; True when created. SaleInProgress on a stock change or a lower
        per-user limit after sales."""
        reply = await self.scripts["upsert_sale"](
            keys=[keys.sale(sale.sale_id), keys.SALES],
            args=[
                sale.sale_id,
                sale.name,
                format_price(sale.price),
                sale.stock,
                to_ms(sale.opens_at),
                to_ms(sale.closes_at),
                sale.per_user_limit,
                keys.sale_events(sale.sale_id),
                *_waiting_room_args(sale.waiting_room),
            ],
        )
        if int(reply[0]) == 1:
            raise errors.SaleInProgress()
        if int(reply[0]) == 3:
            raise errors.SaleInProgress(
                "per_user_limit cannot be lowered once units are sold: buyers would hold more than "
                "the new limit"
            )
        if int(reply[0]) == 4:
            raise errors.SaleInProgress(
                "the waiting room's mode cannot change once its pre-queue is drawn (the opening)"
            )
        if int(reply[0]) == 2:
            raise errors.SaleInProgress(
                "the sale was deleted and its orders keep this id; create the new sale under "
                "another id"
            )
        return bool(int(reply[1]))

    @guarded("open/close sale")
    async def move_window(self, sale_id: str, *, action: str) -> bool:
        """Open or close now (by Redis TIME). True if anything changed."""
        changed = await self.scripts["window"](
            keys=[keys.sale(sale_id)], args=[action, keys.sale_events(sale_id)]
        )
        if int(changed) < 0:
            raise errors.SaleNotFound()
        return bool(int(changed))

    @guarded("delete sale")
    async def delete_sale(self, sale_id: str) -> bool:
        """Mark deleted (404 from now on); True if the keys were freed at once."""
        reply = await self.scripts["delete_sale"](
            keys=_deletion_keys(sale_id),
            args=[sale_id, keys.sale_events(sale_id)],
        )
        if int(reply) < 0:
            raise errors.SaleNotFound()
        if int(reply) == 1:
            await self._drop_idempotency_keys(sale_id)
            return True
        return False

    @guarded("purge sale")
    async def purge_sale(self, sale_id: str) -> bool:
        """Free a deleted sale's keys if none of its orders is unsettled. True when purged."""
        reply = await self.scripts["purge_sale"](
            keys=_deletion_keys(sale_id),
            args=[sale_id],
        )
        if int(reply) == 1:
            await self._drop_idempotency_keys(sale_id)
            return True
        return False

    async def _drop_idempotency_keys(self, sale_id: str) -> None:
        batch: list[str] = []
        async for key in self.client.scan_iter(match=keys.idempotency_pattern(sale_id), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self.client.unlink(*batch)
                batch.clear()
        if batch:
            await self.client.unlink(*batch)

    @guarded("list sales")
    async def live_sale_ids(self) -> set[str]:
        return cast(set[str], await self.client.smembers(keys.SALES))

    @guarded("read deleting")
    async def is_deleting(self, sale_id: str) -> bool:
        return await self.client.hget(keys.sale(sale_id), "deleting") == "1"

    @guarded("scan answers")
    async def acknowledged_order_ids(self, sale_id: str) -> list[str]:
        """The order id of every 202 this sale answered (from the stored idempotency answers)."""
        order_ids: list[str] = []
        async for key in self.client.scan_iter(match=keys.idempotency_pattern(sale_id), count=1000):
            stored = cast(str | None, await self.client.get(key))
            if stored:
                body = stored.split("\n", 1)[1]
                order_ids.append(orjson.loads(body)["order_id"])
        return order_ids

    @guarded("read placed order")
    async def placed_order(self, order_id: str) -> PlacedOrder | None:
        """A reserved order the order worker has not written yet (GET /v1/orders/{id} fallback)."""
        raw = await self.client.get(keys.placed_order(order_id))
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return PlacedOrder(
            order_id=order_id,
            sale_id=doc["sale_id"],
            user_id=doc["user_id"],
            quantity=int(doc["quantity"]),
            unit_price=Decimal(doc["unit_price"]),
            idempotency_key="",
            created_at=from_ms(int(doc["created_at"])),
        )

    @guarded("forget placed orders")
    async def forget_placed_orders(self, order_ids: list[str]) -> None:
        """Drop the summaries GET /v1/orders used while these orders had no row yet."""
        if order_ids:
            await self.client.unlink(*(keys.placed_order(o) for o in order_ids))

    @guarded("redis time")
    async def now(self) -> datetime:
        seconds, micros = await self.client.time()
        return from_ms(int(seconds) * 1000 + int(micros) // 1000)

    # --- settlement (workers) ---------------------------------------------------------------------

    @guarded("scan order states")
    async def orders_in_state(self, sale_id: str, status: OrderStatus) -> list[str]:
        """The orders whose last status applied to Redis (settle.lua's order-states hash) is
        `status`. A full scan of the hash: for repairs, not for every pass."""
        found = []
        async for order_id, state in self.client.hscan_iter(keys.order_states(sale_id), count=1000):
            if state == status.value:
                found.append(str(order_id))
        return found

    @guarded("settle")
    async def settle(
        self,
        *,
        sale_id: str,
        order_id: str,
        user_id: str,
        qty: int,
        status: OrderStatus,
        failure_reason: str | None,
    ) -> int:
        """Apply a status PostgreSQL has committed to the Redis counters, once (settle.lua).
        Returns 1 applied, 0 already applied, -1 not allowed, -2 sale gone."""
        event = orjson.dumps(
            {
                "user_id": user_id,
                "order_id": order_id,
                "sale_id": sale_id,
                "status": status.value,
                "failure_reason": failure_reason,
            }
        )
        reply = await self.scripts["settle"](
            keys=[keys.sale(sale_id), keys.holds(sale_id), keys.order_states(sale_id)],
            args=[
                order_id,
                user_id,
                qty,
                status.value,
                keys.sale_events(sale_id),
                keys.ORDER_EVENTS,
                event,
            ],
        )
        return int(reply)


def _deletion_keys(sale_id: str) -> list[str]:
    """KEYS of delete_sale.lua and purge_sale.lua (purge_if_settled in prelude.lua)."""
    return [
        keys.sale(sale_id),
        keys.SALES,
        keys.holds(sale_id),
        keys.order_states(sale_id),
        keys.queue_tickets(sale_id),
    ]


def _waiting_room_args(room: WaitingRoom | None) -> list[str | int]:
    """upsert_sale.lua's ARGV 9-13: on/off, mode, rate, session, and a fresh seed (the script
    keeps a sale's first seed for good: the draw is audited against it)."""
    if room is None:
        return ["0", "", 0, 0, ""]
    seed = secrets.token_hex(16)  # 128 bits: nobody can guess the order before the seed is shown
    return ["1", room.mode.value, room.admit_per_second, room.session_seconds, seed]


def decode_event(data: str | bytes) -> dict[str, Any]:
    """A pub/sub message published by the scripts (JSON object)."""
    doc = orjson.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("event is not a JSON object")
    return doc
