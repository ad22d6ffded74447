"""A raw ASGI lane for the routes that take the crowd: POST /v1/sales/{sale_id}/orders, and
POST /v1/sales/{sale_id}/queue (a sale with a waiting room: the whole crowd joins and looks again).

Installed as the outermost user middleware, it answers those routes before FastAPI's exception,
routing and dependency layers; every other request passes straight through.

It reads the few headers and the body from the ASGI scope itself and calls the same
routes.purchase.place_order as the FastAPI route does, so behaviour, errors (problem JSON through
problems.from_error) and metrics are identical; only the per-request overhead differs (measured in
the README, "Benchmarks"). The body limit is enforced here too, since this lane bypasses the
middleware.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from flashsale import errors
from flashsale.api import problems
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
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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
        services: Services = scope["app"].state.services
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
        headers = [*JSON, *((k.lower().encode(), v.encode()) for k, v in accepted.headers.items())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": accepted.body})

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
        headers = [*JSON, *((k.lower().encode(), v.encode()) for k, v in joined.headers.items())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": joined.body})

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
