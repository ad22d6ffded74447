"""The SSE process's one Redis pub/sub connection: PSUBSCRIBE to every sale's events channel and
SUBSCRIBE to the order events channel, then hand out raw messages.

redis-py stays inside this module: its errors leave as errors.StoreUnavailable, and its own silent
reconnect-and-resubscribe is switched off (no retries), because a reconnect we do not see would
leave every client's view stale; the feed reconnects itself and re-reads every sale. Imports redis,
config, errors and adapters.redis_keys; never HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from flashsale import errors
from flashsale.adapters import redis_keys as keys
from flashsale.config import RedisSettings

SALE = "sale"
ORDER = "order"
PONG = "pong"


@dataclass(frozen=True, slots=True)
class Message:
    """One pub/sub message: `kind` SALE (channel is a sale's events channel), ORDER or PONG."""

    kind: str
    channel: str
    data: str


@contextlib.asynccontextmanager
async def _wrapped(what: str) -> AsyncIterator[None]:
    try:
        yield
    except RedisError as e:
        raise errors.StoreUnavailable(f"redis pub/sub: {what}: {e}") from e
    except (OSError, TimeoutError) as e:
        raise errors.StoreUnavailable(f"redis pub/sub: {what}: {e!r}") from e


class Subscription:
    """Open, read, ping, close; open() again after a failure (a fresh connection each time)."""

    def __init__(self, settings: RedisSettings) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            settings.url,
            decode_responses=True,
            socket_connect_timeout=settings.socket_timeout_s,
            socket_timeout=settings.socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,  # the feed pings a silent connection itself
        )
        self._timeout = settings.socket_timeout_s
        self._pubsub: PubSub | None = None
        self._early: list[Message] = []

    async def open(self) -> None:
        """Subscribe and wait until Redis confirmed both subscriptions: from then on nothing
        published is missed, so a snapshot read afterwards cannot fall into a gap."""
        await self.close()
        self._early.clear()
        self._pubsub = self._client.pubsub()
        async with _wrapped("subscribe"):
            await self._pubsub.psubscribe(keys.SALE_EVENTS_PATTERN)
            await self._pubsub.subscribe(keys.ORDER_EVENTS)
            confirmed: set[str] = set()
            while not {"psubscribe", "subscribe"} <= confirmed:
                reply = await self._pubsub.parse_response(block=False, timeout=self._timeout)
                if reply is None:
                    raise errors.StoreUnavailable("redis pub/sub: no subscribe confirmation")
                confirmed.add(str(reply[0]))
                message = _message(reply)
                if message is not None:  # published between the two confirmations: keep it
                    self._early.append(message)

    async def next(self, wait_s: float) -> Message | None:
        """The next message, or None after `wait_s` seconds of silence."""
        if self._early:
            return self._early.pop(0)
        if self._pubsub is None:
            raise errors.StoreUnavailable("redis pub/sub: not subscribed")
        async with _wrapped("read"):
            reply = await self._pubsub.parse_response(block=False, timeout=wait_s)
        return _message(reply)

    async def ping(self) -> None:
        if self._pubsub is None:
            raise errors.StoreUnavailable("redis pub/sub: not subscribed")
        async with _wrapped("ping"):
            await self._pubsub.ping()

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    async def aclose(self) -> None:
        await self.close()
        await self._client.aclose()


def _message(reply: Any) -> Message | None:
    """A raw RESP reply as a Message (subscribe confirmations and the like are None)."""
    if not reply:
        return None
    if isinstance(reply, str | bytes):
        # PING's answer: "PONG" as a plain string from Valkey 9 / redis-py 8 even while subscribed
        # (["pong", ""] elsewhere). Unrecognised, every 5 s of silence looked like a dead
        # connection: a reconnect, and a re-read of every watched sale and waiting room.
        text = reply.decode() if isinstance(reply, bytes) else reply
        return Message(PONG, "", "") if text.lower() == "pong" else None
    kind = str(reply[0])
    if kind == "pmessage":
        return Message(SALE, str(reply[2]), str(reply[3]))
    if kind == "message":
        return Message(ORDER, str(reply[1]), str(reply[2]))
    if kind == "pong":
        return Message(PONG, "", "")
    return None
