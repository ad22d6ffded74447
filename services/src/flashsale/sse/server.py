"""How the SSE app is served: uvicorn (uvloop, httptools, no access log) with a shutdown that ends
every open stream first, so a stop does not wait for thousands of clients to leave by themselves
(nor cancel their writers into error logs). Used by __main__ and by the tests. Imports sse.app,
config and uvicorn."""

from __future__ import annotations

import logging
import resource
import socket

import uvicorn

from flashsale import config
from flashsale.sse.app import SseApp, create_app
from flashsale.web import BoundedHttpToolsProtocol

logger = logging.getLogger(__name__)

# A pod restart makes every EventSource reconnect within a few seconds (frames.RETRY_MAX_MS): the
# accept queue must hold a burst of thousands (the kernel caps it at net.core.somaxconn).
BACKLOG = 4096
# Streams are ended at once on shutdown; this only bounds a writer stuck on a client that stopped
# reading (its socket buffer full).
GRACEFUL_SHUTDOWN_S = 5
# 5 s: /healthz, /readyz and /metrics are the only non-stream requests; probes open a new
# connection each time anyway.
KEEP_ALIVE_S = 5
# File descriptors kept for everything that is not a client socket (Redis, logs, the listener).
SPARE_FDS = 64
# Connections allowed above max_clients before uvicorn itself answers a bare 503: room for probes,
# scrapes and our own problem-JSON refusals; a hard cap on sockets that never send a request.
CONNECTION_HEADROOM = 256


class SseServer(uvicorn.Server):
    def __init__(self, app: SseApp, server_config: uvicorn.Config) -> None:
        super().__init__(server_config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.app.end_streams()
        await super().shutdown(sockets)


def build_server(settings: config.Settings, *, app: SseApp | None = None) -> SseServer:
    app = app or create_app(settings)
    server_config = uvicorn.Config(
        app,
        host=settings.sse.host,
        port=settings.sse.port,
        loop="uvloop",
        http=BoundedHttpToolsProtocol,  # httptools, request head bounded (431 past 32 KiB)
        lifespan="on",
        access_log=False,
        log_config=None,  # logs.setup() configured logging; uvicorn must not replace it
        # The per-address limit must count buyers, not the ingress: trust X-Forwarded-For from
        # the same proxies the API trusts.
        proxy_headers=True,
        forwarded_allow_ips=settings.sse.forwarded_allow_ips,
        backlog=BACKLOG,
        limit_concurrency=settings.sse.max_clients + CONNECTION_HEADROOM,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return SseServer(app, server_config)


def raise_fd_limit(wanted: int) -> int:
    """Every client is a socket: lift the soft RLIMIT_NOFILE to the hard limit (many systems
    start at 1,024). Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + SPARE_FDS)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < wanted + SPARE_FDS:
        logger.warning(
            "open files limit %d is below max_clients %d: streams past it will be refused",
            soft,
            wanted,
        )
    return soft
