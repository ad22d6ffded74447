"""Test support shared by the services' and the operator's test suites (and usable by anyone
embedding flashsale in their own tests): settings for given stores, real servers on free ports in
threads, workers on their own loops, tokens. Imports the entry points lazily; nothing imports this
module outside tests.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn

from flashsale.adapters.tokens import mint
from flashsale.config import Settings
from flashsale.gateway.model import FAST
from flashsale.local.embedded import Stores, free_port

FAST_GATEWAY: dict[str, Any] = {**FAST, "seed": 7}


def random_sale_id() -> str:
    return f"sale-{secrets.token_hex(4)}"


def random_user_id() -> str:
    return f"user-{secrets.token_hex(4)}"


def make_settings(stores: Stores, **overrides: Any) -> Settings:
    """Settings for a test: the session's stores, free ports, fast timings, no rate limits unless
    a test asks for them."""
    base: dict[str, Any] = {
        "env": "dev",
        "redis": {"url": stores.redis_url},
        "postgres": {"dsn": stores.postgres_dsn, "pool_min": 1, "pool_max": 10},
        "api": {
            "port": free_port(),
            "rate_limit_user_per_s": 0,
            "rate_limit_addr_per_s": 0,
        },
        "sse": {"port": free_port()},
        "worker": {
            "order_port": free_port(),
            "payment_port": free_port(),
            "block_ms": 100,
            "claim_idle_ms": 1000,
            "reconcile_interval_s": 0.1,
        },
        "gateway": {"timeout_s": 1.0, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        "mock": {"port": free_port(), **FAST_GATEWAY},
    }
    for group, values in overrides.items():
        if isinstance(values, dict) and isinstance(base.get(group), dict):
            base[group] = {**base[group], **values}
        else:
            base[group] = values
    base["api"]["url"] = f"http://127.0.0.1:{base['api']['port']}"
    base["gateway"]["url"] = f"http://127.0.0.1:{base['mock']['port']}"
    return Settings(**base)


# --- servers in threads ---------------------------------------------------------------------------


GRACEFUL_SHUTDOWN_S = 3


class ServerThread:
    """A real uvicorn serving `app` on 127.0.0.1:port from a thread with its own event loop; or
    a server already built (`server=`, e.g. the SSE server's own build), optionally on sockets
    bound beforehand. Leaving the block stops it and fails if it does not stop in time."""

    # A stop gives running requests a few seconds (GRACEFUL_SHUTDOWN_S here, 5 s in the SSE
    # server's own build), then closes the stores; 20 s means something hangs, even on a busy
    # machine (and stays under pytest-timeout's 30 s, so the failure says what hung).
    STOP_TIMEOUT_S = 20.0

    def __init__(
        self,
        app: Any = None,
        *,
        port: int,
        server: uvicorn.Server | None = None,
        sockets: list[socket.socket] | None = None,
    ) -> None:
        if server is None:
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
                lifespan="on",
                # Requests still running at the stop get this long: the mock gateway holds hung
                # charges open for minutes, and an open dashboard stream never ends by itself.
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            )
            server = uvicorn.Server(config)
        self.server = server
        self.port = port
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": sockets}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.STOP_TIMEOUT_S)
        if self.thread.is_alive():
            raise AssertionError(f"the server did not stop within {self.STOP_TIMEOUT_S} s")


class LoopThread:
    """Runs `make_coro(stop_event)` on its own event loop in a thread; stop() sets the event."""

    def __init__(self, make_coro: Callable[[asyncio.Event], Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._make = make_coro
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            self._ready.set()
            await self._make(self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as e:  # surfaced by stop()
            self.error = e
        finally:
            self._ready.set()
            self.loop.close()

    def start(self) -> LoopThread:
        self.thread.start()
        self._ready.wait(10)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        if self.stop_event is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error


@dataclass
class Workers:
    order: LoopThread
    payment: LoopThread

    def stop(self) -> None:
        self.order.stop()
        self.payment.stop()


def start_workers(settings: Settings) -> Workers:
    from flashsale.workers import order, payment

    return Workers(
        order=LoopThread(lambda stop: order.amain(settings, stop=stop)).start(),
        payment=LoopThread(lambda stop: payment.amain(settings, stop=stop)).start(),
    )


# --- clients -------------------------------------------------------------------------------------


def bearer(settings: Settings, user_id: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(settings.auth, user_id=user_id, admin=admin)}"}


# --- HTTP helpers ---------------------------------------------------------------------------------


async def create_sale(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    stock: int,
    sale_id: str | None = None,
    opens_in_s: float = -1.0,
    duration_s: float = 300.0,
    per_user_limit: int = 1,
    name: str = "Test sneaker",
    waiting_room: dict[str, Any] | None = None,
) -> str:
    sale_id = sale_id or random_sale_id()
    opens_at = datetime.now(UTC) + timedelta(seconds=opens_in_s)
    body: dict[str, Any] = {
        "name": name,
        "price": "49.99",
        "stock": stock,
        "opens_at": opens_at.isoformat(),
        "closes_at": (opens_at + timedelta(seconds=duration_s)).isoformat(),
        "per_user_limit": per_user_limit,
    }
    if waiting_room is not None:
        body["waiting_room"] = waiting_room
    response = await client.put(f"/v1/admin/sales/{sale_id}", headers=admin, json=body)
    assert response.status_code == 201, response.text
    return sale_id


async def buy(
    client: httpx.AsyncClient, settings: Settings, sale_id: str, user_id: str, key: str
) -> httpx.Response:
    return await client.post(
        f"/v1/sales/{sale_id}/orders",
        headers={**bearer(settings, user_id), "Idempotency-Key": key},
        json={"quantity": 1},
    )


async def wait_for_status(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    order_id: str,
    statuses: set[str],
    *,
    timeout_s: float = 20.0,
) -> dict[str, object]:
    """Poll GET /v1/orders/{id} until the order reaches one of `statuses` (AssertionError after
    `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/orders/{order_id}", headers=headers)
        doc: dict[str, object] = response.json()
        if response.status_code == 200 and doc["status"] in statuses:
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} did not reach {statuses}: {doc}")
        await asyncio.sleep(0.05)
