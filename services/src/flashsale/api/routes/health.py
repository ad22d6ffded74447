"""Liveness, readiness and metrics: never rate limited."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from flashsale.api.deps import ServicesDep
from flashsale.web import metrics_response, problem

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis and PostgreSQL answer (503 otherwise)")
async def readyz(services: ServicesDep) -> Response:
    redis_ok = await services.stock.ping()
    pg_ok = await services.pg.ping()
    if redis_ok and pg_ok:
        return Response(b'{"status":"ready"}', media_type="application/json")
    down = [name for name, ok in (("redis", redis_ok), ("postgres", pg_ok)) if not ok]
    return problem(
        503,
        "not_ready",
        title="Not ready.",
        detail=f"unreachable: {', '.join(down)}",
        headers={"Retry-After": "1"},
    )


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus() -> Response:
    return metrics_response()
