"""A raw ASGI lane for the routes that take the crowd: POST /v1/sales/{sale_id}/orders, and
POST /v1/sales/{sale_id}/queue (a sale with a waiting room: the whole crowd joins and looks again).

It wraps the FastAPI application from the outside (create_app returns it), so those routes never
enter FastAPI's middleware, exception, routing or dependency layers; every other request, and the
lifespan, passes straight through.

Overload is shed here, before any work: past `api.max_in_flight` requests of these routes at once
in this process, the answer is 503 `overloaded` with Retry-After and nothing is reserved. Without
the bound an open-model crowd beyond capacity queues inside the process until every answer is late
(measured: 4,000 offered/s fell to under 500 answered/s); with it, latency stays bounded and the
excess learns at once to come back.

It reads the few headers and the body from the ASGI scope itself and calls the same
routes.purchase.place_order as the FastAPI route does, so behaviour, errors (problem JSON through
problems.from_error) and metrics are identical; only the per-request overhead differs (measured in
the README, "Benchmarks"). The body limit is enforced here too, since this lane bypasses the
middleware.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from flashsale import errors
from flashsale.api import metrics, problems
from flashsale.api.deps import Services
from flashsale.api.routes import queue
from flashsale.api.routes.purchase import measured
from flashsale.web import problem

logger = logging.getLogger(__name__)

PREFIX = "/v1/sales/"
SUFFIX = "/orders"
QUEUE_SUFFIX = "/queue"
JSON = [(b"content-type", b"application/json")]


class PayloadTooLarge(Exception):
    pass


class PurchaseLane:
    def __init__(
        self, app: FastAPI, *, max_body_bytes: int, max_in_flight: int, retry_after_s: int
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def _sale_id(self, scope: Scope, suffix: str = SUFFIX) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and path.endswith(suffix)):
            return None
        sale_id = path[len(PREFIX) : -len(suffix)]
        return sale_id if sale_id and "/" not in sale_id else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sale_id = self._sale_id(scope)
        queued = None if sale_id is not None else self._sale_id(scope, QUEUE_SUFFIX)
        if sale_id is None and queued is None:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            metrics.count_shed()
            await problems.from_error(
                errors.Overloaded(
                    self.retry_after_s, "too many requests in flight; nothing was reserved"
                )
            )(scope, receive, send)
            return
        services: Services = self.app.state.services
        self.in_flight += 1
        try:
            if queued is not None:
                await self._join(scope, receive, send, sale_id=queued, services=services)
                return
            assert sale_id is not None
            await self._purchase(scope, receive, send, sale_id=sale_id, services=services)
        except errors.FlashSaleError as e:
            await problems.from_error(e)(scope, receive, send)
        except PayloadTooLarge:
            await problem(
                413,
                "payload_too_large",
                title="The request body is too large.",
                detail=f"bodies are limited to {self.max_body_bytes} bytes",
                headers={"Connection": "close"},
            )(scope, receive, send)
        except Exception:
            logger.exception("unhandled error on POST %s", scope["path"])
            await problem(
                500,
                "internal_error",
                title="Internal error.",
                detail="The server failed to handle this request; it has been logged.",
            )(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _purchase(
        self, scope: Scope, receive: Receive, send: Send, *, sale_id: str, services: Services
    ) -> None:
        authorization = idempotency_key = admission_pass = None
        declared = 0
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
            elif name == b"admission-pass":  # sales with a waiting room (docs/waiting-room.md)
                admission_pass = value.decode("latin-1")
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else 0
        if declared > self.max_body_bytes:
            raise PayloadTooLarge
        body = await self._read_body(receive)
        client = scope.get("client")
        accepted = await measured(
            services,
            sale_id=sale_id,
            authorization=authorization,
            idempotency_key=idempotency_key,
            raw_body=body,
            client_addr=client[0] if client else "unknown",
            admission_pass=admission_pass,
        )
        await _accepted(send, accepted.body, accepted.headers)

    async def _join(
        self, scope: Scope, receive: Receive, send: Send, *, sale_id: str, services: Services
    ) -> None:
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        await self._read_body(receive)  # none is expected; read it all, within the limit
        client = scope.get("client")
        joined = await queue.join_queue(
            services,
            sale_id=sale_id,
            authorization=authorization,
            client_addr=client[0] if client else "unknown",
        )
        await _accepted(send, joined.body, joined.headers)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise errors.InvalidRequest("the client went away before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _accepted(send: Send, body: bytes, extra: dict[str, str]) -> None:
    """A 202 with its length declared, so the response is not chunk-encoded."""
    headers = [
        *JSON,
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
    ]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": body})
