"""The pages people look at: GET / (the buyer page), GET /dashboard (the live operations dashboard,
whose data needs an admin token), their files (GET /static/{name}) and GET /v1/pages/config (where
the browser finds the SSE server, and which sale to show by default).

Plain HTML, CSS and JS modules from api/static/: no build step, nothing from another origin, no
inline code, so the pages carry a strict Content-Security-Policy. Rate limited like every route."""

from __future__ import annotations

import asyncio
import functools
import re
from datetime import UTC, datetime
from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter
from starlette.exceptions import HTTPException
from starlette.responses import Response

from flashsale.api.deps import RateLimit, Services, ServicesDep
from flashsale.config import Settings
from flashsale.domain.sales import SaleSnapshot, SaleState

router = APIRouter(tags=["pages"], dependencies=[RateLimit])

_NAME = re.compile(r"^[a-z0-9-]+\.(js|css|svg|html)$")
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
# Looking for the default sale reads each live sale once; past this many, the page asks for an id.
MAX_CANDIDATES = 200
# Which sale the buyer page shows when none is named: one on sale now, else the next to open.
_PREFERENCE = {
    SaleState.OPEN: 0,
    SaleState.SCHEDULED: 1,
    SaleState.SOLD_OUT: 2,
    SaleState.CLOSED: 3,
}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@functools.cache
def static_file(name: str) -> bytes | None:
    """A file of api/static by bare name, read once per process; None for anything else."""
    if not _NAME.fullmatch(name):
        return None
    path = resources.files("flashsale.api") / "static" / name
    return path.read_bytes() if path.is_file() else None


def browser_sse_url(settings: Settings) -> str:
    """The SSE base URL for a browser. The local stack's (a loopback address, another port: the
    SSE server allows any origin) is used as it is; anything else is an in-cluster Service name a
    browser cannot reach, and there the ingress serves the event paths on the page's own host, so
    the page uses its own origin ("")."""
    host = urlsplit(settings.sse.url).hostname or ""
    return settings.sse.url.rstrip("/") if host in LOOPBACK else ""


def security_headers(settings: Settings) -> dict[str, str]:
    sse = browser_sse_url(settings)
    connect_src = "'self'" + (f" {_origin(sse)}" if sse else "")
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect_src}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _page(services: Services, name: str) -> Response:
    body = static_file(name)
    assert body is not None, f"api/static/{name} is missing from the package"
    return Response(
        body, media_type=MEDIA_TYPES["html"], headers=security_headers(services.settings)
    )


@router.get("/", include_in_schema=False)
async def buyer_page(services: ServicesDep) -> Response:
    return _page(services, "buyer.html")


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page(services: ServicesDep) -> Response:
    return _page(services, "dashboard.html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    body = static_file(name)
    if body is None:
        # Not a domain case: the problem handler turns it into a 404 `not_found` problem.
        raise HTTPException(404, f"no file {name!r} here")
    kind = name.rsplit(".", 1)[1]
    return Response(
        body,
        media_type=MEDIA_TYPES[kind],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/v1/pages/config", summary="Where the pages find the SSE server; the default sale")
async def pages_config(services: ServicesDep) -> dict[str, str | None]:
    return {
        "sse_url": browser_sse_url(services.settings),
        "sale_id": await default_sale(services),
    }


async def default_sale(services: Services) -> str | None:
    """The sale to show when the page names none: open before scheduled before sold out before
    closed, then the latest opening."""
    ids = sorted(await services.stock.live_sale_ids())[:MAX_CANDIDATES]
    found = await asyncio.gather(*(services.stock.get_sale(i) for i in ids), return_exceptions=True)
    sales = [s for s in found if isinstance(s, SaleSnapshot)]
    if not sales:
        return None
    now = datetime.now(UTC)
    best = min(sales, key=lambda s: (_PREFERENCE[s.state(now)], -s.opens_at.timestamp()))
    return best.sale_id
