"""The SSE server's HTTP layer: a raw ASGI app (no framework router or middleware per stream).

Routes: GET /v1/sales/{sale_id}/events, GET /v1/me/events, GET /v1/sales/{sale_id}/queue/events
(the waiting room, sse.queue_hub), /healthz, /readyz, /metrics, and an OPTIONS preflight for any
of them (CORS: GET from any origin). Each stream is one coroutine that
writes what its client (sse.clients) has due and sleeps on one future in between, plus one small
task that notices the peer leaving. Measured with sse/capacity.py: ~11 KB per idle client on
uvicorn + httptools + uvloop (173 MB RSS at 10,000 clients; the reference system's ~30 KB per
connection would be ~300 MB). Imports sse,
flashsale.web, adapters, domain, config and errors; never flashsale.api.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from flashsale import config, errors, web
from flashsale.adapters import beacon
from flashsale.adapters.passes import Passes
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.adapters.tokens import TokenVerifier
from flashsale.domain.sales import SALE_ID_RE
from flashsale.sse import frames, limits, metrics
from flashsale.sse.clients import Client
from flashsale.sse.feed import Feed
from flashsale.sse.subscription import Subscription

logger = logging.getLogger(__name__)

_SALE_EVENTS = re.compile(r"^/v1/sales/([^/]+)/events$")
_ME_EVENTS = "/v1/me/events"
_QUEUE_EVENTS = re.compile(r"^/v1/sales/([^/]+)/queue/events$")
# Refusals when a stream joins (no such sale; the waiting room's), as problem statuses.
REFUSALS: dict[type[errors.FlashSaleError], int] = {
    errors.SaleNotFound: 404,
    errors.NotInQueue: 404,
    errors.SaleClosed: 409,
    errors.WaitingRoomDisabled: 409,
}
CORS = {"access-control-allow-origin": "*"}
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    # no-transform: a proxy must neither compress nor hold back the stream.
    (b"cache-control", b"no-cache, no-transform"),
    # ingress-nginx buffers responses unless told otherwise; this works even without the
    # chart's annotation.
    (b"x-accel-buffering", b"no"),
    (b"access-control-allow-origin", b"*"),
]
PREFLIGHT_HEADERS = {
    **CORS,
    "access-control-allow-methods": "GET, OPTIONS",
    "access-control-allow-headers": "Authorization, Last-Event-ID, Cache-Control",
    "access-control-max-age": "86400",  # a day: the answer never changes
}
# 5 s: long enough for the load balancer to send the retry to a pod with room, short enough for a
# buyer's page to be live again before the sale moves on.
FULL_RETRY_AFTER_S = 5
STORE_RETRY_AFTER_S = 1


class SseApp:
    """The ASGI callable. Owns the feed, the Redis client and the connection limits."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.limits = limits.ConnectionLimits(
            max_clients=settings.sse.max_clients, max_per_addr=settings.sse.max_clients_per_addr
        )
        self.tokens = TokenVerifier(settings.auth)
        self.passes = Passes(settings.auth)
        self.stopping = False
        self._feed: Feed | None = None
        self._stock: RedisStock | None = None
        self._beacon: beacon.Beacon | None = None

    @property
    def feed(self) -> Feed:
        assert self._feed is not None, "the app has not started (lifespan)"
        return self._feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._route(scope, receive, send)

    # --- lifecycle ------------------------------------------------------------------------------

    async def startup(self) -> None:
        self._stock = RedisStock(connect(self.settings.redis), api=self.settings.api)
        self._feed = Feed(
            self.settings, stock=self._stock, subscription=Subscription(self.settings.redis)
        )
        self._feed.start()
        self._beacon = beacon.start(self.settings.redis, kind="sse")  # the dashboard's data

    def end_streams(self) -> None:
        """The server is stopping: refuse new streams, end the open ones now."""
        self.stopping = True
        if self._feed is not None:
            self._feed.end_streams()

    async def shutdown(self) -> None:
        self.stopping = True
        if self._feed is not None:
            await self._feed.stop()
        if self._beacon is not None:
            await self._beacon.stop()
        if self._stock is not None:
            await self._stock.client.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- routing --------------------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        match = _SALE_EVENTS.match(path)
        queue = _QUEUE_EVENTS.match(path)
        known = match is not None or queue is not None
        known = known or path in (_ME_EVENTS, "/healthz", "/readyz", "/metrics")
        if not known:
            response = _problem(404, "not_found", "Not found.", f"no route for {path}")
        elif scope["method"] == "OPTIONS":
            response = Response(status_code=204, headers=PREFLIGHT_HEADERS)
        elif scope["method"] != "GET":
            response = _problem(
                405, "method_not_allowed", "Method not allowed.", "only GET is served here",
                headers={"allow": "GET, OPTIONS"},
            )  # fmt: skip
        elif match is not None:
            await self._sale_events(scope, receive, send, match.group(1))
            return
        elif queue is not None:
            await self._queue_events(scope, receive, send, queue.group(1))
            return
        elif path == _ME_EVENTS:
            await self._me_events(scope, receive, send)
            return
        else:
            response = await self._plain(path)
        await response(scope, receive, send)

    async def _plain(self, path: str) -> Response:
        if path == "/healthz":
            return Response(b'{"status":"ok"}', media_type="application/json")
        if path == "/readyz":
            return await self._ready()
        return web.metrics_response()

    async def _ready(self) -> Response:
        redis_ok = self._stock is not None and await self._stock.ping()
        subscribed = self._feed is not None and self._feed.subscribed
        if redis_ok and subscribed:
            return Response(b'{"status":"ready"}', media_type="application/json")
        down = "redis unreachable" if not redis_ok else "redis subscription reconnecting"
        return _problem(
            503, "not_ready", "Not ready.", down, headers={"retry-after": str(STORE_RETRY_AFTER_S)}
        )

    # --- streams --------------------------------------------------------------------------------

    async def _sale_events(self, scope: Scope, receive: Receive, send: Send, sale_id: str) -> None:
        if not SALE_ID_RE.fullmatch(sale_id):
            await _not_found(scope, receive, send)
            return
        await self._stream(
            scope, receive, send, lambda addr: self.feed.join_sale(sale_id, addr=addr)
        )

    async def _me_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            principal = self.tokens.verify(_bearer(scope))
        except errors.Unauthenticated as e:
            await _unauthenticated(e)(scope, receive, send)
            return
        expires_at = principal.expires_at + self.settings.auth.leeway_s

        async def join(addr: str) -> Client:
            user_id = principal.user_id
            return self.feed.join_orders(user_id=user_id, addr=addr, expires_at=expires_at)

        await self._stream(scope, receive, send, join)

    async def _queue_events(self, scope: Scope, receive: Receive, send: Send, sale_id: str) -> None:
        """The waiting room of a sale, for a ticket holder (`?ticket=`, or a bearer token)."""
        if not SALE_ID_RE.fullmatch(sale_id):
            await _not_found(scope, receive, send)
            return
        try:
            user_id = self._queue_holder(scope, sale_id)
        except errors.Unauthenticated as e:
            await _unauthenticated(e)(scope, receive, send)
            return
        await self._stream(
            scope, receive, send,
            lambda addr: self.feed.join_queue(sale_id, user_id=user_id, addr=addr),
        )  # fmt: skip

    async def _stream(
        self, scope: Scope, receive: Receive, send: Send, join: Callable[[str], Awaitable[Client]]
    ) -> None:
        """One stream: a slot for its address, the client from `join`, then events until the end;
        a refused join is answered with its problem (REFUSALS) and frees the slot."""
        addr = _client_addr(scope)
        refusal = self._admit(addr)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            try:
                client = await join(addr)
            except errors.StoreUnavailable as e:
                await _store_unavailable(e)(scope, receive, send)
                return
            except errors.FlashSaleError as e:
                status = next(s for cls, s in REFUSALS.items() if isinstance(e, cls))
                title = (type(e).__doc__ or e.code).strip()
                await _problem(status, e.code, title, e.detail)(scope, receive, send)
                return
            try:
                await _pump(client, receive, send)
            finally:
                self.feed.leave(client)
        finally:
            self.limits.release(addr)

    def _queue_holder(self, scope: Scope, sale_id: str) -> str:
        """The user a queue stream is for: the ticket's holder (`?ticket=`, what POST /queue
        gave), else the bearer token's user (header or `?access_token=`)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tickets = query.get("ticket")
        if tickets and tickets[0]:
            return self.passes.verify_ticket(tickets[0], sale_id=sale_id).user_id
        return self.tokens.verify(_bearer(scope)).user_id

    def _admit(self, addr: str) -> Response | None:
        """None when the stream may start (a slot is then held), else the refusal to send."""
        if self.stopping:
            return _problem(
                503, "shutting_down", "Shutting down.", "this SSE server is stopping; reconnect",
                headers={"retry-after": str(STORE_RETRY_AFTER_S)},
            )  # fmt: skip
        reason = self.limits.acquire(addr)
        if reason is None:
            return None
        metrics.REFUSED.labels(reason).inc()
        retry = {"retry-after": str(FULL_RETRY_AFTER_S)}
        if reason == limits.PROCESS_FULL:
            detail = f"this SSE server holds its maximum of {self.limits.max_clients} streams"
            return _problem(503, "overloaded", "Too many streams.", detail, headers=retry)
        detail = f"this address holds its maximum of {self.limits.max_per_addr} streams"
        return _problem(429, "too_many_connections", "Too many streams.", detail, headers=retry)


async def _pump(client: Client, receive: Receive, send: Send) -> None:
    """Write what is due until the stream ends or the peer leaves."""
    await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
    loop = asyncio.get_running_loop()
    watcher = loop.create_task(_watch_disconnect(receive, client))
    try:
        prefix = frames.retry_field() + b"\n"
        while True:
            body = prefix + client.take(loop.time())
            prefix = b""
            if body:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if client.finished:
                break
            await client.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _watch_disconnect(receive: Receive, client: Client) -> None:
    """The server tells an ASGI app about a peer that left only through receive()."""
    while (await receive())["type"] != "http.disconnect":
        pass
    client.close()


def _client_addr(scope: Scope) -> str:
    """The peer's address (uvicorn has applied X-Forwarded-For from trusted proxies)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _bearer(scope: Scope) -> str:
    """The token from `Authorization: Bearer`, or from `?access_token=`: a browser's EventSource
    cannot set headers. Tokens in URLs may end in proxy logs; this server logs no URLs."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("access_token")
    if tokens and tokens[0]:
        return str(tokens[0])
    raise errors.Unauthenticated("a bearer token is required")


def _problem(
    status: int, code: str, title: str, detail: str, *, headers: dict[str, str] | None = None
) -> Response:
    all_headers = {**CORS, **(headers or {})}
    return web.problem(status, code, title=title, detail=detail, headers=all_headers)


def _unauthenticated(e: errors.Unauthenticated) -> Response:
    return _problem(
        401, "unauthenticated", "Unauthenticated.", e.detail,
        headers={"www-authenticate": "Bearer"},
    )  # fmt: skip


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await _problem(404, "sale_not_found", "No such sale.", "No such sale.")(scope, receive, send)


def _store_unavailable(e: errors.StoreUnavailable) -> Response:
    logger.warning("sale stream refused: %s", e)
    return _problem(
        503, "store_unavailable", "Store unavailable.", "Redis did not answer; try again",
        headers={"retry-after": str(STORE_RETRY_AFTER_S)},
    )  # fmt: skip


def create_app(settings: config.Settings) -> SseApp:
    return SseApp(settings)
