"""Fixtures for the services' tests: settings pointed at the session's real stores, a clean slate
per test, and real servers (uvicorn on free ports in threads, workers in threads with own loops).

The only fake in the whole suite is the payment gateway, and it is the project's own mock gateway
service, run for real.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from flashsale.adapters import pg
from flashsale.adapters.tokens import mint
from flashsale.config import Settings
from flashsale.local.embedded import Stores, free_port

FAST_GATEWAY = {
    "latency_median_ms": 0,
    "latency_p95_ms": 0,
    "decline_rate": 0,
    "unavailable_rate": 0,
    "rate_limited_rate": 0,
    "hang_rate": 0,
    "seed": 7,
}


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


@pytest.fixture(scope="session")
def migrated(stores: Stores) -> Stores:
    asyncio.run(pg.migrate(stores.postgres_dsn))
    return stores


async def _wipe(stores: Stores) -> None:
    client = aioredis.Redis.from_url(stores.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    conn = await asyncpg.connect(stores.postgres_dsn)
    try:
        await conn.execute(
            "TRUNCATE payment_attempts, orders, sales, users RESTART IDENTITY CASCADE"
        )
    finally:
        await conn.close()


@pytest.fixture
async def clean(migrated: Stores) -> Stores:
    """Empty Redis and PostgreSQL before the test (and leave them for inspection after)."""
    await _wipe(migrated)
    return migrated


@pytest.fixture
def settings(clean: Stores) -> Settings:
    return make_settings(clean)


# --- servers in threads ---------------------------------------------------------------------------


class ServerThread:
    """A real uvicorn serving `app` on 127.0.0.1:port from a thread with its own event loop."""

    def __init__(self, app: Any, *, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.port = port
        self.thread = threading.Thread(target=self.server.run, daemon=True)

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
        self.thread.join(timeout=15)


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


@pytest.fixture
def gateway(settings: Settings) -> Iterator[ServerThread]:
    from flashsale.gateway.app import create_app

    with ServerThread(create_app(settings), port=settings.mock.port) as server:
        yield server


@pytest.fixture
def api(settings: Settings) -> Iterator[ServerThread]:
    from flashsale.api.app import create_app

    with ServerThread(create_app(settings), port=settings.api.port) as server:
        yield server


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


@pytest.fixture
def workers(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Workers]:
    request.getfixturevalue("gateway")  # the payment worker needs its gateway up first
    running = start_workers(settings)
    try:
        yield running
    finally:
        running.stop()


# --- clients -------------------------------------------------------------------------------------


def bearer(settings: Settings, user_id: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(settings.auth, user_id=user_id, admin=admin)}"}


@pytest.fixture
async def client(api: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=api.url, timeout=15.0, limits=limits) as http:
        yield http


@pytest.fixture
def admin_headers(settings: Settings) -> dict[str, str]:
    return bearer(settings, "admin-1", admin=True)
