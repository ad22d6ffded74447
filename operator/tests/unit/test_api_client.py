"""The admin API client against an in-memory transport: tokens, paths, and how answers map to
errors (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import jwt
import pytest

from flashsale_operator import api_client, config

SECRET = config.DEV_JWT_SECRET


def client(
    handler: Callable[[httpx.Request], httpx.Response], **operator: object
) -> api_client.AdminApi:
    settings = config.Settings(api={"url": "http://api.test"}, operator=operator)
    return api_client.AdminApi(settings, transport=httpx.MockTransport(handler))


def problem(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": code, "status": status, "detail": code, "code": code}
    return httpx.Response(status, json=body, headers=headers)


async def test_requests_carry_a_short_lived_admin_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"state": "open"})

    api = client(handler)
    await api.get_sale("s1")
    await api.get_sale("s1")
    await api.aclose()
    token = seen[0].headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["role"]) == ("flashsale-operator", "admin")
    assert claims["exp"] - claims["iat"] == api_client.TOKEN_TTL_S
    assert seen[1].headers["Authorization"] == seen[0].headers["Authorization"]  # cached


async def test_a_given_admin_token_is_used_as_is() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={})

    api = client(handler, admin_token="ready-made")
    await api.stats("s1")
    await api.aclose()
    assert seen == ["Bearer ready-made"]


async def test_calls_use_the_admin_paths() -> None:
    seen: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        return httpx.Response(204) if request.method == "DELETE" else httpx.Response(200, json={})

    api = client(handler)
    await api.upsert("s1", {"stock": 1})
    await api.open("s1")
    await api.close("s1")
    await api.stats("s1")
    assert await api.delete("s1") is True
    await api.aclose()
    assert seen == [
        ("PUT", "/v1/admin/sales/s1", {"stock": 1}),
        ("POST", "/v1/admin/sales/s1/open", None),
        ("POST", "/v1/admin/sales/s1/close", None),
        ("GET", "/v1/admin/sales/s1/stats", None),
        ("DELETE", "/v1/admin/sales/s1", None),
    ]


async def test_a_missing_sale_reads_as_none_and_deletes_as_false() -> None:
    api = client(lambda _: problem(404, "sale_not_found"))
    assert await api.get_sale("gone") is None
    assert await api.delete("gone") is False
    with pytest.raises(api_client.SaleNotFound):
        await api.open("gone")
    await api.aclose()


async def test_a_refused_stock_change_is_sale_in_progress() -> None:
    api = client(lambda _: problem(409, "sale_in_progress"))
    with pytest.raises(api_client.SaleInProgress) as e:
        await api.upsert("s1", {})
    await api.aclose()
    assert (e.value.status, e.value.code) == (409, "sale_in_progress")


async def test_other_refusals_keep_the_api_code() -> None:
    api = client(lambda _: problem(422, "invalid_request"))
    with pytest.raises(api_client.ApiError, match="422 invalid_request"):
        await api.upsert("s1", {})
    api = client(lambda _: httpx.Response(403, text="<html>"))
    with pytest.raises(api_client.ApiError, match="403 http_403"):
        await api.upsert("s1", {})
    await api.aclose()


@pytest.mark.parametrize(
    ("response", "delay"),
    [
        (problem(503, "overloaded", **{"Retry-After": "2"}), 2.0),
        (problem(429, "rate_limited", **{"Retry-After": "soon"}), None),
        (httpx.Response(500, text="boom"), None),
        (httpx.Response(200, text="not json"), None),
        (httpx.Response(200, json=[1, 2]), None),
    ],
)
async def test_outages_are_api_unavailable(response: httpx.Response, delay: float | None) -> None:
    api = client(lambda _: response)
    with pytest.raises(api_client.ApiUnavailable) as e:
        await api.stats("s1")
    await api.aclose()
    assert e.value.delay == delay
    assert "ApiUnavailable" in repr(e.value)


async def test_connection_failures_are_api_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api = client(handler)
    with pytest.raises(api_client.ApiUnavailable, match="ConnectError"):
        await api.get_sale("s1")
    await api.aclose()


async def test_a_closed_client_is_unavailable_not_a_runtime_error() -> None:
    seen: list[httpx.Request] = []
    api = client(lambda r: seen.append(r) or httpx.Response(200, json={}))
    await api.aclose()
    with pytest.raises(api_client.ApiUnavailable, match="the operator is stopping"):
        await api.get_sale("s1")
    assert seen == []
