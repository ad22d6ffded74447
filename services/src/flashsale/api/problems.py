"""RFC 9457 problem details: the one place that maps flashsale errors to HTTP statuses and bodies.

Every error the API sends goes through here, so every one has `type`, `title`, `status`, `detail`
and a stable `code`, and none is an HTML page or a stack trace."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from flashsale import errors
from flashsale.domain.sales import rfc3339
from flashsale.web import problem

logger = logging.getLogger(__name__)

STATUS: dict[type[errors.FlashSaleError], int] = {
    errors.SaleNotFound: 404,
    errors.OrderNotFound: 404,
    errors.SoldOut: 409,
    errors.SaleNotOpen: 409,
    errors.SaleClosed: 409,
    errors.PurchaseLimitReached: 409,
    errors.SaleInProgress: 409,
    errors.RequestInProgress: 409,
    errors.EmailTaken: 409,
    errors.IdempotencyKeyReused: 422,
    errors.InvalidRequest: 422,
    errors.IdempotencyKeyRequired: 400,
    errors.InvalidIdempotencyKey: 400,
    errors.Unauthenticated: 401,
    errors.InvalidCredentials: 401,
    errors.Forbidden: 403,
    errors.NotAdmitted: 403,
    errors.WaitingRoomDisabled: 409,
    errors.NotInQueue: 404,
    errors.RateLimited: 429,
    errors.Overloaded: 503,
    errors.StoreUnavailable: 503,
}

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def from_error(exc: errors.FlashSaleError) -> Response:
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.Throttled | errors.RequestInProgress):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, errors.StoreUnavailable):
        headers["Retry-After"] = "1"
        _warn_store_unavailable(exc.detail)
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="flashsale"'
    if isinstance(exc, errors.SaleNotOpen):
        extra["opens_at"] = rfc3339(exc.opens_at)
    title = (exc.__class__.__doc__ or exc.code).strip().split("\n")[0]
    return problem(status, exc.code, title=title, detail=exc.detail, headers=headers, extra=extra)


_last_store_warning = 0.0
# One line per 5 s is enough to see an outage; a line per failed request would flood the logs.
STORE_WARNING_EVERY_S = 5.0


def _warn_store_unavailable(detail: str) -> None:
    global _last_store_warning
    now = time.monotonic()
    if now - _last_store_warning >= STORE_WARNING_EVERY_S:
        _last_store_warning = now
        logger.warning("store unavailable: %s", detail)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


def install(app: FastAPI) -> None:
    """Register the handlers: domain errors, validation errors, HTTP errors, and the last resort."""

    async def on_domain(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.FlashSaleError)
        return from_error(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem(
            422,
            "invalid_request",
            title="The request is not valid.",
            detail=_validation_detail(exc),
        )

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return problem(
            exc.status_code,
            code,
            title=str(exc.detail),
            detail=str(exc.detail),
            headers=dict(exc.headers or {}),
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(
            500,
            "internal_error",
            title="Internal error.",
            detail="The server failed to handle this request; it has been logged.",
        )

    app.add_exception_handler(errors.FlashSaleError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
