"""HTTP helpers shared by every flashsale server (api, sse, gateway, the workers' health ports):
RFC 9457 problem responses, the Prometheus endpoint, and uvicorn's httptools protocol with a bound
on the request head. Imports starlette and uvicorn, never an entrypoint."""

from __future__ import annotations

import os
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROBLEM_TYPE_BASE = "https://flashsale.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    code: str,
    *,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """A problem-details response with the stable machine-readable `code`."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def metrics_response() -> Response:
    """Prometheus text format. With several processes behind one port (PROMETHEUS_MULTIPROC_DIR
    set), the sum over all of them."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# 32 KiB for the request line and all headers together, nginx's default (4 x 8 KiB buffers): a
# purchase sends ~1 KiB (two JWTs and a key), and nothing legitimate comes near it.
MAX_HEAD_BYTES = 32 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over MAX_HEAD_BYTES with 431 problem
    JSON and a closed connection. httptools itself buffers a head of any size (a 16 MiB header or
    100,000 headers were read in full and answered 200): one client could make a process hold
    memory without bound. Pass it as uvicorn's `http=`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the connection is closing; nothing more of it is parsed
        if self._reading_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True  # whatever comes next on this connection is a new head
        super().on_message_complete()

    def _refuse_head(self) -> None:
        body = orjson.dumps(
            {
                "type": PROBLEM_TYPE_BASE + "headers_too_large",
                "title": "Request header fields too large.",
                "status": 431,
                "detail": f"the request line and headers are limited to {MAX_HEAD_BYTES} bytes",
                "code": "headers_too_large",
            }
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
        self._refused = True
