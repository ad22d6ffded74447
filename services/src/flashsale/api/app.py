"""The API application: builds the adapters once per process (lifespan), wires the routes, the
problem handlers and the body limit. `create_app(settings)` is the only constructor; `__main__` runs
it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp

from flashsale import __version__
from flashsale.adapters import beacon, pg
from flashsale.adapters.redis_pipe import PipelinedRedis
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.adapters.tokens import TokenVerifier
from flashsale.api import problems
from flashsale.api.deps import Services
from flashsale.api.fastlane import PurchaseLane
from flashsale.api.middleware import BodyLimit
from flashsale.api.routes import admin, auth, dashboard, health, orders, pages, purchase, sales
from flashsale.api.routes import queue as waiting_room
from flashsale.config import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> ASGIApp:
    """The API as uvicorn serves it: the crowd's lane (fastlane.py) around the FastAPI app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(settings.redis)
        hot = PipelinedRedis(settings.redis.url, timeout_s=settings.redis.socket_timeout_s)
        pool = await pg.create_pool(settings.postgres)
        app.state.services = Services(
            settings=settings,
            stock=RedisStock(redis, api=settings.api, hot=hot),
            pg=pg.PgStore(pool),
            tokens=TokenVerifier(settings.auth),
        )
        metrics_beacon = beacon.start(settings.redis, kind="api")  # the dashboard's data
        try:
            yield
        finally:
            await metrics_beacon.stop()
            await pool.close()
            await hot.aclose()
            await redis.aclose()

    app = FastAPI(
        title="flashsale API",
        version=__version__,
        summary="Purchase, orders, sales and admin of the flash-sale platform.",
        lifespan=lifespan,
    )
    problems.install(app)
    for module in (purchase, sales, orders, admin, auth, health, pages, dashboard):
        app.include_router(module.router)
    app.include_router(waiting_room.router)
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    return PurchaseLane(
        app,
        max_body_bytes=settings.api.max_body_bytes,
        max_in_flight=settings.api.max_in_flight,
        retry_after_s=settings.api.overloaded_retry_after_s,
    )


def create_app_from_env() -> ASGIApp:
    """Factory for uvicorn's worker processes: each builds its own settings and adapters."""
    from flashsale.logs import setup

    settings = Settings()
    setup(settings, process_name="api")
    return create_app(settings)
