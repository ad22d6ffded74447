"""A thin client of the flashsale admin API (httpx): upsert, open, close, delete, read a sale.

Authenticates with a short-lived HS256 admin token minted from the shared secret, or with a ready
token given in FLASHSALE_OPERATOR__ADMIN_TOKEN. Turns transport failures, 5xx and 429 into
ApiUnavailable (retry later) and problem+json answers into ApiError with the API's `code`.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

from flashsale_operator import config

ADMIN_SUBJECT = "flashsale-operator"
# 5 min: short enough that a leaked token soon expires, long enough to mint rarely.
TOKEN_TTL_S = 300
# Re-mint a minute early: the API allows 30 s of clock skew, so a token is never near expiry in use.
TOKEN_RENEW_BEFORE_S = 60


class ApiUnavailable(Exception):
    """The API cannot answer now (down, overloaded, timing out); try again after `delay`."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay

    def __repr__(self) -> str:
        return f"<ApiUnavailable {self.args[0]!r} delay={self.delay}>"


class ApiError(Exception):
    """The API refused the request (a 4xx problem answer)."""

    def __init__(self, *, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class SaleNotFound(ApiError):
    """404 sale_not_found."""


class SaleInProgress(ApiError):
    """409 sale_in_progress: a stock change after orders, or the sale is still being deleted."""


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    "sale_not_found": SaleNotFound,
    "sale_in_progress": SaleInProgress,
}


class AdminApi:
    """One pooled httpx client for the operator's lifetime; close it with `aclose()`."""

    def __init__(
        self, settings: config.Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._secret = settings.auth.jwt_secret
        self._fixed_token = settings.operator.admin_token
        self._token = ""
        self._token_expires = 0.0
        self._client = httpx.AsyncClient(
            base_url=settings.api.url,
            timeout=settings.operator.request_timeout_s,
            transport=transport,
            headers={"User-Agent": "flashsale-operator"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def closed(self) -> bool:
        """True once the operator's cleanup has closed the client (a timer may still tick)."""
        return self._client.is_closed

    async def get_sale(self, sale_id: str) -> dict[str, Any] | None:
        """The public sale document, or None if the API has no such sale."""
        try:
            return await self._json("GET", f"/v1/sales/{sale_id}")
        except SaleNotFound:
            return None

    async def stats(self, sale_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/admin/sales/{sale_id}/stats")

    async def upsert(self, sale_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", f"/v1/admin/sales/{sale_id}", json=body)

    async def open(self, sale_id: str) -> dict[str, Any]:
        return await self._json("POST", f"/v1/admin/sales/{sale_id}/open")

    async def close(self, sale_id: str) -> dict[str, Any]:
        return await self._json("POST", f"/v1/admin/sales/{sale_id}/close")

    async def delete(self, sale_id: str) -> bool:
        """Delete the sale (its keys are freed, its orders stay); False if it was already gone."""
        try:
            await self._request("DELETE", f"/v1/admin/sales/{sale_id}")
        except SaleNotFound:
            return False
        return True

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError as e:
            raise ApiUnavailable(f"{method} {path}: the API answered no JSON") from e
        if not isinstance(data, dict):
            raise ApiUnavailable(f"{method} {path}: the API answered {type(data).__name__}")
        return data

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._client.is_closed:
            raise ApiUnavailable(f"{method} {path}: the operator is stopping")
        headers = {"Authorization": f"Bearer {self._bearer()}"}
        try:
            response = await self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as e:
            raise ApiUnavailable(f"{method} {path}: {type(e).__name__}: {e}") from e
        if response.status_code == 429 or response.status_code >= 500:
            raise ApiUnavailable(
                f"{method} {path}: HTTP {response.status_code}", delay=_retry_after(response)
            )
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def _bearer(self) -> str:
        if self._fixed_token:
            return self._fixed_token
        now = time.time()
        if now > self._token_expires - TOKEN_RENEW_BEFORE_S:
            self._token_expires = now + TOKEN_TTL_S
            claims = {
                "sub": ADMIN_SUBJECT,
                "role": "admin",
                "iat": int(now),
                "exp": int(self._token_expires),
            }
            self._token = jwt.encode(claims, self._secret, algorithm="HS256")
        return self._token


def _api_error(response: httpx.Response) -> ApiError:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    code = str(problem.get("code") or f"http_{response.status_code}")
    detail = str(problem.get("detail") or response.reason_phrase)
    cls = ERRORS_BY_CODE.get(code, ApiError)
    return cls(status=response.status_code, code=code, detail=detail)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None
