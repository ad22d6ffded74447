"""What the routes get injected: the process's adapters, the caller, and the rate limit.

The adapters are built once in app.py's lifespan and kept on app.state as one `Services` object.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flashsale import errors
from flashsale.adapters.passes import Passes
from flashsale.adapters.pg import PgStore
from flashsale.adapters.redis_queue import RedisQueue
from flashsale.adapters.redis_stock import RedisStock
from flashsale.adapters.tokens import Principal, TokenVerifier
from flashsale.config import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    stock: RedisStock
    pg: PgStore
    tokens: TokenVerifier

    # The waiting room's adapters, derived from the ones above (built on first use).
    @cached_property
    def queue(self) -> RedisQueue:
        return RedisQueue(self.stock)

    @cached_property
    def passes(self) -> Passes:
        return Passes(self.settings.auth)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


bearer = HTTPBearer(
    auto_error=False, description="HS256 JWT with `sub`; `role: admin` for admin routes"
)

ServicesDep = Annotated[Services, Depends(get_services)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def client_addr(request: Request) -> str:
    """The caller's address (uvicorn has already applied X-Forwarded-For from trusted proxies)."""
    return request.client.host if request.client else "unknown"


def require_principal(services: ServicesDep, credentials: Credentials) -> Principal:
    if credentials is None:
        raise errors.Unauthenticated("a bearer token is required")
    return services.tokens.verify(credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(require_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise errors.Forbidden("this route needs a token with role admin")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


async def rate_limited(request: Request, services: ServicesDep, credentials: Credentials) -> None:
    """Per-user (when a valid token is given) and per-address limits for every route but the
    purchase, which applies the same limits inside its reserve script. An invalid token counts as
    anonymous here; the routes that need a user refuse it themselves."""
    user_id = None
    if credentials is not None:
        try:
            user_id = services.tokens.verify(credentials.credentials).user_id
        except errors.Unauthenticated:
            user_id = None
    await services.stock.check_rate(user_id=user_id, client_addr=client_addr(request))


RateLimit = Depends(rate_limited)
