"""Shared pytest setup for services/ and operator/: the e2e switch, the real stores every
integration test runs against (embedded Valkey and PostgreSQL, started once per session on free
ports; FLASHSALE_TEST_REDIS_URL / FLASHSALE_TEST_POSTGRES_DSN point them at existing servers), a
clean slate per test, and the real servers (API, mock gateway, workers) on free ports.

The only fake in the whole suite is the payment gateway, and it is the project's own mock gateway
service, run for real. Helpers live in flashsale.testing so both test trees can import them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from flashsale.adapters import pg
from flashsale.config import Settings
from flashsale.local.embedded import EmbeddedPostgres, EmbeddedValkey, Stores, free_port
from flashsale.testing import ServerThread, Workers, bearer, make_settings, start_workers


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--with-e2e", action="store_true", help="also run tests that need a cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    check_tasks = pytest.mark.usefixtures("no_pending_tasks")
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(check_tasks)
    if config.getoption("--with-e2e"):
        return
    skip = pytest.mark.skip(reason="needs a Kubernetes cluster: --with-e2e after `make up`")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


# Tasks may take a few loop turns to notice their cancellation; this is how long we wait for them.
PENDING_TASK_GRACE_S = 1.0


@pytest.fixture
async def no_pending_tasks() -> AsyncIterator[None]:
    """Fail an async test that leaves tasks running on the shared event loop: a leaked task is a
    leaked connection, timer or worker that later tests would trip over."""
    before = asyncio.all_tasks()
    yield
    deadline = asyncio.get_running_loop().time() + PENDING_TASK_GRACE_S
    while True:
        leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
        if not leaked or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        pytest.fail(f"the test left {len(leaked)} asyncio task(s) running: {leaked[:3]}")


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    redis_url = os.environ.get("FLASHSALE_TEST_REDIS_URL")
    dsn = os.environ.get("FLASHSALE_TEST_POSTGRES_DSN")
    root = Path(tempfile.mkdtemp(prefix="flashsale-test-"))
    valkey = postgres = None
    try:
        if not redis_url:
            valkey = EmbeddedValkey(root / "valkey", free_port()).start()
            redis_url = valkey.url
        if not dsn:
            # fsync off: test data is throwaway; the crash tests and the benchmark show durability.
            postgres = EmbeddedPostgres(root / "pg" / "data", free_port(), fsync=False).start()
            dsn = postgres.create_database(f"test_{secrets.token_hex(4)}")
        yield Stores(redis_url, dsn, valkey, postgres)
    finally:
        if postgres is not None:
            postgres.stop()
        if valkey is not None:
            valkey.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated(stores: Stores) -> Stores:
    asyncio.run(pg.migrate(stores.postgres_dsn))
    return stores


async def wipe(stores: Stores) -> None:
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
    await wipe(migrated)
    return migrated


@pytest.fixture
def settings(clean: Stores) -> Settings:
    return make_settings(clean)


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


@pytest.fixture
def workers(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Workers]:
    request.getfixturevalue("gateway")  # the payment worker needs its gateway up first
    running = start_workers(settings)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def client(api: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them: with both
    # at 5 s, a request could go out on a connection the server was closing (httpx.ReadError).
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=api.url, timeout=15.0, limits=limits) as http:
        yield http


@pytest.fixture
def admin_headers(settings: Settings) -> dict[str, str]:
    return bearer(settings, "admin-1", admin=True)
