"""How reconcile turns API answers into kopf's contract (TemporaryError / PermanentError and the
status written before raising), and the timer's and the finalizer's edge cases. The API is an
in-memory httpx transport answering scripted responses; the happy paths run against the real
API in the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import kopf
import pytest

from flashsale_operator import __main__ as main_module
from flashsale_operator import api_client, config, logs, reconcile

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SPEC = {"product": "Sneakers", "price": "49.99", "stock": 10, "opensAt": "2026-11-27T12:00:00Z"}
META = {
    "namespace": "shop",
    "name": "summer",
    "generation": 1,
    "creationTimestamp": "2026-11-27T11:00:00Z",
}

Route = Callable[[httpx.Request], httpx.Response]


def problem(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "detail": code})


def context(route: Route, seen: list[str] | None = None) -> reconcile.Context:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(f"{request.method} {request.url.path}")
        return route(request)

    settings = config.Settings(api={"url": "http://api.test"})
    api = api_client.AdminApi(settings, transport=httpx.MockTransport(handler))
    return reconcile.Context(settings=settings, api=api, clock=lambda: T0)


def resource(spec: dict[str, Any] | None = None, **status: Any) -> reconcile.Resource:
    return reconcile.Resource.of(meta=META, spec=spec or SPEC, status=status)


def conditions(patch: kopf.Patch) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in patch["status"]["conditions"]}


async def test_an_api_refusal_is_permanent_and_shown_as_an_error() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return problem(404, "sale_not_found")
        return problem(422, "invalid_request")

    ctx, patch = context(route), kopf.Patch()
    with pytest.raises(kopf.PermanentError, match="refused the sale"):
        await reconcile.run(ctx=ctx, resource=resource(), patch=patch)
    await ctx.api.aclose()
    assert patch["status"]["phase"] == "Error"
    assert conditions(patch)["SpecApplied"] == ("False", "ApiRefused")


async def test_a_refused_token_is_retried_after_the_secret_may_be_fixed() -> None:
    ctx, patch = context(lambda _: problem(403, "forbidden")), kopf.Patch()
    with pytest.raises(kopf.TemporaryError) as e:
        await reconcile.run(ctx=ctx, resource=resource(saleId="shop-summer"), patch=patch)
    await ctx.api.aclose()
    assert e.value.delay == 30
    assert "phase" not in patch["status"]  # the sale exists and keeps its phase


async def test_an_outage_is_temporary_with_the_apis_retry_after() -> None:
    response = httpx.Response(503, json={"code": "overloaded"}, headers={"Retry-After": "3"})
    ctx, patch = context(lambda _: response), kopf.Patch()
    with pytest.raises(kopf.TemporaryError) as e:
        await reconcile.run(ctx=ctx, resource=resource(), patch=patch)
    await ctx.api.aclose()
    assert e.value.delay == 3
    assert conditions(patch)["Ready"] == ("False", "ApiUnavailable")


async def test_a_sale_still_being_deleted_is_waited_for() -> None:
    def route(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return problem(404, "sale_not_found")  # deleted: reads answer 404 at once
        return problem(409, "sale_in_progress")  # ...but its keys wait for pending orders

    ctx = context(route)
    with pytest.raises(kopf.TemporaryError, match="still being deleted"):
        await reconcile.run(ctx=ctx, resource=resource(), patch=kopf.Patch())
    await ctx.api.aclose()


async def test_handlers_wait_for_the_startup_handler() -> None:
    with pytest.raises(kopf.TemporaryError, match="still starting"):
        reconcile.context(kopf.Memo())


async def test_the_timer_skips_an_invalid_spec_and_does_not_call_the_api() -> None:
    seen: list[str] = []
    ctx = context(lambda _: httpx.Response(500), seen)
    bad = resource({**SPEC, "price": "free"}, saleId="shop-summer")
    await reconcile.tick(ctx=ctx, resource=bad, patch=kopf.Patch(), memo=kopf.Memo(), stopped=None)
    await ctx.api.aclose()
    assert seen == []


async def test_the_timer_waits_until_its_next_look_is_due() -> None:
    seen: list[str] = []
    ctx = context(lambda _: httpx.Response(500), seen)
    later = kopf.Memo(next_look=asyncio.get_running_loop().time() + 60)
    await reconcile.tick(ctx=ctx, resource=resource(), patch=kopf.Patch(), memo=later, stopped=None)
    await ctx.api.aclose()
    assert seen == []


async def test_the_timer_stops_when_its_resource_goes() -> None:
    class Stopped:
        def __bool__(self) -> bool:
            return True

    seen: list[str] = []
    ctx = context(lambda _: httpx.Response(500), seen)
    soon = kopf.Memo(next_look=asyncio.get_running_loop().time() + 0.2)
    stopped: Any = Stopped()
    await reconcile.tick(
        ctx=ctx, resource=resource(), patch=kopf.Patch(), memo=soon, stopped=stopped
    )
    await ctx.api.aclose()
    assert seen == []


async def test_the_timer_does_nothing_once_the_operator_closed_its_client() -> None:
    seen: list[str] = []
    ctx = context(lambda _: httpx.Response(500), seen)
    await ctx.api.aclose()
    assert ctx.api.closed
    await reconcile.tick(
        ctx=ctx, resource=resource(), patch=kopf.Patch(), memo=kopf.Memo(), stopped=None
    )
    assert seen == []


async def test_delete_of_a_never_created_error_resource_calls_nothing() -> None:
    seen: list[str] = []
    ctx = context(lambda _: httpx.Response(500), seen)
    await reconcile.remove(ctx=ctx, resource=resource(phase="Error"))
    await reconcile.remove(ctx=ctx, resource=resource({"price": "free"}))
    await ctx.api.aclose()
    assert seen == []


async def test_delete_without_a_recorded_id_uses_the_mapped_one_and_tolerates_404() -> None:
    seen: list[str] = []
    ctx = context(lambda _: problem(404, "sale_not_found"), seen)
    await reconcile.remove(ctx=ctx, resource=resource())
    await ctx.api.aclose()
    assert seen == ["POST /v1/admin/sales/shop-summer/close"]


async def test_delete_waits_for_the_api() -> None:
    ctx = context(lambda _: httpx.Response(502))
    with pytest.raises(kopf.TemporaryError, match="cannot delete sale shop-summer"):
        await reconcile.remove(ctx=ctx, resource=resource(saleId="shop-summer"))
    await ctx.api.aclose()


def test_main_runs_kopf_with_health_peering_and_the_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(logs, "setup", lambda *_: None)
    monkeypatch.setenv("FLASHSALE_OPERATOR__NAMESPACE", "shop")
    main_module.main()
    monkeypatch.setenv("FLASHSALE_OPERATOR__NAMESPACE", "")
    monkeypatch.setenv("FLASHSALE_OPERATOR__STANDALONE", "true")
    monkeypatch.setenv("FLASHSALE_OPERATOR__PRIORITY", "7")
    main_module.main()
    namespaced, standalone = calls
    assert (namespaced["clusterwide"], namespaced["namespaces"]) == (False, ["shop"])
    assert (namespaced["standalone"], namespaced["peering_name"]) == (False, "flashsale")
    assert 1 <= namespaced["priority"] <= main_module.MAX_PRIORITY
    assert namespaced["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    assert isinstance(namespaced["memo"]["config"], config.Settings)
    assert (standalone["clusterwide"], standalone["standalone"]) == (True, True)
    assert (standalone["peering_name"], standalone["priority"]) == (None, 7)


def test_logging_goes_through_kopf_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: calls.append(kwargs))
    logs.setup(config.Settings(log_level="debug"))
    assert calls == [{"debug": True, "log_format": kopf.LogFormat.JSON}]
