"""Pure ASGI middleware: the request body limit (413 problem JSON before a byte more is read)."""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashsale.web import problem


class BodyTooLarge(Exception):
    pass


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class _Metered:
    """One request's receive and send, counting body bytes. Past the limit, receive raises and
    whatever the app then tries to answer is dropped: FastAPI catches any error while reading a
    body and answers 400 "There was an error parsing the body", but the only true answer to an
    oversized body is our 413."""

    def __init__(self, receive: Receive, send: Send, *, max_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._seen = 0
        self.exceeded = False
        self.started = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._max_bytes:
                self.exceeded = True
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class BodyLimit:
    """Refuse bodies over `max_bytes`: by Content-Length at once, else while streaming them in."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        metered = _Metered(receive, send, max_bytes=self.max_bytes)
        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, metered.receive, metered.send)
        if metered.exceeded and not metered.started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "payload_too_large",
            title="The request body is too large.",
            detail=f"bodies are limited to {self.max_bytes} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
