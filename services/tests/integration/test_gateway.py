"""The mock payment gateway over real HTTP (uvicorn with uvloop and httptools on a free port, in a
background thread), and the payment worker's client adapter against it in every failure mode.

Each test starts from an empty ledger and the fast model, then switches the model through the admin
API; client timeouts are short so hangs cost tenths of a second."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)

from flashsale import config
from flashsale.adapters import gateway_http
from flashsale.domain import payments
from flashsale.gateway import app, model
from flashsale.testing import ServerThread

FAST: dict[str, Any] = {
    **model.FAST,
    "hang_charge_share": 0.5,
    "unavailable_retry_after_share": 0.5,
    "retry_after_s": 1,
}
HANG_TIMEOUT_S = 0.3  # the client timeout in hang tests: long enough for a loaded CI box to connect


@dataclass(frozen=True)
class Running:
    url: str
    state: app.State


@contextlib.contextmanager
def running_gateway(mock: config.MockGatewaySettings) -> Iterator[Running]:
    """create_app() on a real uvicorn, as `python -m flashsale.gateway` runs it, in a thread."""
    application = app.create_app(config.Settings(mock=mock))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            loop="uvloop",
            http="httptools",
            ws="none",
            lifespan="on",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=1,
        )
    )
    port = sock.getsockname()[1]
    try:
        with ServerThread(port=port, server=server, sockets=[sock]):
            yield Running(url, application.state.gateway)
    finally:
        sock.close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Running]:
    with running_gateway(config.MockGatewaySettings(fast=True, seed=1234)) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_gateway(gateway: Running) -> None:
    httpx.post(f"{gateway.url}/v1/admin/reset").raise_for_status()
    httpx.put(f"{gateway.url}/v1/admin/model", json=FAST).raise_for_status()


@pytest.fixture
async def client(gateway: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        yield http


@pytest.fixture
async def adapter(gateway: Running) -> AsyncIterator[gateway_http.GatewayClient]:
    settings = config.GatewaySettings(url=gateway.url, timeout_s=HANG_TIMEOUT_S, concurrency=50)
    async with gateway_http.GatewayClient(settings) as gw:
        yield gw


async def set_model(http: httpx.AsyncClient, **changes: Any) -> None:
    response = await http.put("/v1/admin/model", json=changes)
    assert response.status_code == 200, response.text


def body(order_id: str, amount: str = "49.99", currency: str = "EUR") -> dict[str, str]:
    return {"order_id": order_id, "amount": amount, "currency": currency}


async def charge(http: httpx.AsyncClient, key: str, **kwargs: Any) -> httpx.Response:
    return await http.post(
        "/v1/charges", json=body(key, **kwargs), headers={"Idempotency-Key": key}
    )


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status
    assert doc["code"] == code
    assert doc["type"].endswith(code)
    assert doc["title"]
    assert doc["detail"]
    return doc


async def listed(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await http.get("/v1/charges", params={"limit": 1000})
    assert response.status_code == 200
    return {doc["order_id"]: doc for doc in response.json()["charges"]}


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
    assert found, name
    return float(found.group(1))


def eventually() -> AsyncRetrying:
    """Retry an assertion for up to 5 s (readiness is polled, never slept for)."""
    return AsyncRetrying(
        stop=stop_after_delay(5),
        wait=wait_fixed(0.02),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    )


async def until_in_flight(http: httpx.AsyncClient) -> None:
    async for attempt in eventually():
        with attempt:
            assert await metric(http, "flashsale_gateway_charges_in_flight") == 1


# --- Health, metrics, errors ---------------------------------------------------------------------


async def test_health_ready_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    await charge(client, "o-metrics")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'flashsale_gateway_charge_requests_total{outcome="succeeded"}' in response.text
    assert "flashsale_gateway_charge_latency_seconds_bucket" in response.text
    assert await metric(client, "flashsale_gateway_charges_in_flight") == 0
    assert await metric(client, "flashsale_gateway_hangs_open") == 0
    assert await metric(client, "flashsale_gateway_charges") == 1


async def test_unknown_routes_and_methods_answer_problem_json(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404, "not_found")
    assert_problem(await client.delete("/v1/charges"), 405, "method_not_allowed")


# --- POST /v1/charges ----------------------------------------------------------------------------


async def test_charge_succeeds_and_is_readable(client: httpx.AsyncClient) -> None:
    response = await charge(client, "o-1", amount="49.99", currency="eur")
    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers
    doc = response.json()
    assert doc["charge_id"].startswith("ch_")
    assert {k: doc[k] for k in ("order_id", "amount", "currency", "status")} == {
        "order_id": "o-1",
        "amount": "49.99",
        "currency": "EUR",
        "status": "succeeded",
    }
    assert doc["created_at"].endswith("Z")
    got = await client.get("/v1/charges/o-1")
    assert got.status_code == 200
    assert got.json() == doc
    assert_problem(await client.get("/v1/charges/o-unknown"), 404, "charge_not_found")


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "idempotency_key_required"),
        ("", "invalid_idempotency_key"),
        ("a b", "invalid_idempotency_key"),
        ("k" * 256, "invalid_idempotency_key"),
    ],
)
async def test_idempotency_key_is_validated(
    client: httpx.AsyncClient, key: str | None, code: str
) -> None:
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post("/v1/charges", json=body("o-1"), headers=headers)
    assert_problem(response, 400, code)


async def test_longest_key_is_accepted(client: httpx.AsyncClient) -> None:
    key = "~" * 255
    response = await client.post("/v1/charges", json=body("o-1"), headers={"Idempotency-Key": key})
    assert response.status_code == 201


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b"[]",
        b'{"amount": "1", "currency": "EUR"}',
        b'{"order_id": "", "amount": "1", "currency": "EUR"}',
        b'{"order_id": "o", "amount": 1, "currency": "EUR"}',
        b'{"order_id": "o", "amount": "0", "currency": "EUR"}',
        b'{"order_id": "o", "amount": "-1", "currency": "EUR"}',
        b'{"order_id": "o", "amount": "1e3", "currency": "EUR"}',
        b'{"order_id": "o", "amount": "1", "currency": "EURO"}',
        b'{"order_id": "o", "amount": "1", "currency": "E1R"}',
        b'{"order_id": "o", "amount": "1"}',
    ],
)
async def test_invalid_bodies_are_422(client: httpx.AsyncClient, payload: bytes) -> None:
    response = await client.post("/v1/charges", content=payload, headers={"Idempotency-Key": "k"})
    assert_problem(response, 422, "invalid_request")


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/charges", content=b"x" * (17 * 1024), headers={"Idempotency-Key": "k"}
    )
    assert_problem(response, 413, "payload_too_large")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(17):
            yield b"x" * 1024

    response = await client.post("/v1/charges", content=chunked(), headers={"Idempotency-Key": "k"})
    assert_problem(response, 413, "payload_too_large")


async def test_same_key_replays_and_another_body_is_refused(client: httpx.AsyncClient) -> None:
    first = await charge(client, "o-1", amount="10.0")
    again = await charge(client, "o-1", amount="10.00")  # the same amount, spelled differently
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert_problem(await charge(client, "o-1", amount="11.00"), 422, "idempotency_key_reused")
    entry = (await listed(client))["o-1"]
    assert (entry["attempts"], entry["charges"]) == (3, 1)


async def test_concurrent_requests_with_one_key_make_one_charge(client: httpx.AsyncClient) -> None:
    await set_model(client, latency_median_ms=300, latency_p95_ms=300)
    responses = await asyncio.gather(*(charge(client, "o-c") for _ in range(20)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["charge_id"] for r in responses}) == 1
    replayed = Counter(r.headers.get("idempotent-replayed") for r in responses)
    assert replayed == {None: 1, "true": 19}
    entry = (await listed(client))["o-c"]
    assert (entry["attempts"], entry["charges"]) == (20, 1)


async def test_waiters_on_a_refused_attempt_roll_again(client: httpx.AsyncClient) -> None:
    # The first attempt is refused (503 after 50 ms); its waiters then process afresh, one at a
    # time, and the first of them to succeed makes the only charge.
    await set_model(client, latency_median_ms=1000, latency_p95_ms=1000, unavailable_rate=1)
    await set_model(client, refusal_latency_share=0.05)
    first = asyncio.create_task(charge(client, "o-w"))
    await until_in_flight(client)  # the first request holds the key
    await set_model(client, unavailable_rate=0, latency_median_ms=50, latency_p95_ms=50)
    rest = await asyncio.gather(*(charge(client, "o-w") for _ in range(5)))
    assert_problem(await first, 503, "unavailable")
    assert {r.status_code for r in rest} == {201}
    assert len({r.json()["charge_id"] for r in rest}) == 1
    entry = (await listed(client))["o-w"]
    assert (entry["attempts"], entry["charges"]) == (6, 1)


async def test_a_charge_is_visible_only_when_processing_completes(
    client: httpx.AsyncClient,
) -> None:
    await set_model(client, latency_median_ms=400, latency_p95_ms=400)
    started = time.perf_counter()
    pending = asyncio.create_task(charge(client, "o-slow"))
    await until_in_flight(client)
    assert_problem(await client.get("/v1/charges/o-slow"), 404, "charge_not_found")
    assert_problem(await client.post("/v1/charges/o-slow/refund"), 404, "charge_not_found")
    response = await pending
    assert response.status_code == 201
    assert time.perf_counter() - started >= 0.4
    assert (await client.get("/v1/charges/o-slow")).status_code == 200


# --- Failure modes -------------------------------------------------------------------------------


async def test_all_declines(client: httpx.AsyncClient) -> None:
    await set_model(client, decline_rate=1)
    doc = assert_problem(await charge(client, "o-d"), 402, "card_declined")
    assert doc["order_id"] == "o-d"
    again = await charge(client, "o-d")
    assert_problem(again, 402, "card_declined")
    assert again.headers["idempotent-replayed"] == "true"
    # A decline is stored, not a charge: even on a healthy model the key answers 402 again.
    await set_model(client, decline_rate=0)
    assert (await charge(client, "o-d")).status_code == 402
    assert_problem(await client.get("/v1/charges/o-d"), 404, "charge_not_found")
    assert "o-d" not in await listed(client)


async def test_all_unavailable_with_retry_after_is_not_stored(client: httpx.AsyncClient) -> None:
    await set_model(client, unavailable_rate=1, unavailable_retry_after_share=1, retry_after_s=2)
    response = await charge(client, "o-u")
    assert_problem(response, 503, "unavailable")
    assert response.headers["retry-after"] == "2"
    await set_model(client, unavailable_retry_after_share=0)
    assert "retry-after" not in (await charge(client, "o-u")).headers
    await set_model(client, unavailable_rate=0)
    retry = await charge(client, "o-u")
    assert retry.status_code == 201
    assert "idempotent-replayed" not in retry.headers
    entry = (await listed(client))["o-u"]
    assert (entry["attempts"], entry["charges"]) == (3, 1)


async def test_all_rate_limited_with_retry_after(client: httpx.AsyncClient) -> None:
    await set_model(client, rate_limited_rate=1, retry_after_s=3)
    response = await charge(client, "o-r")
    assert_problem(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "3"
    # Not stored: a retry with another body is a fresh request, not a key reuse.
    await set_model(client, rate_limited_rate=0)
    assert (await charge(client, "o-r", amount="5")).status_code == 201


async def test_refusals_answer_fast(client: httpx.AsyncClient) -> None:
    await set_model(client, latency_median_ms=2000, latency_p95_ms=2000, rate_limited_rate=1)
    started = time.perf_counter()
    assert (await charge(client, "o-f")).status_code == 429
    assert time.perf_counter() - started < 1.0  # 5 % of 2 s, plus slack for a busy machine


async def _hang(client: httpx.AsyncClient, key: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            "/v1/charges",
            json=body(key),
            headers={"Idempotency-Key": key},
            timeout=HANG_TIMEOUT_S,
        )


async def test_hang_that_charges_then_retry_replays(client: httpx.AsyncClient) -> None:
    await set_model(
        client, hang_rate=1, hang_charge_share=1, latency_median_ms=50, latency_p95_ms=50
    )
    await _hang(client, "o-h1")
    # The charge was made although nobody was told, and the held connection is let go.
    assert (await client.get("/v1/charges/o-h1")).status_code == 200
    async for attempt in eventually():
        with attempt:
            assert await metric(client, "flashsale_gateway_hangs_open") == 0
    await set_model(client, hang_rate=0)
    retry = await charge(client, "o-h1")
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    entry = (await listed(client))["o-h1"]
    assert (entry["attempts"], entry["charges"]) == (2, 1)


async def test_hang_without_charge_then_retry_charges_afresh(client: httpx.AsyncClient) -> None:
    await set_model(client, hang_rate=1, hang_charge_share=0)
    await _hang(client, "o-h0")
    assert_problem(await client.get("/v1/charges/o-h0"), 404, "charge_not_found")
    await set_model(client, hang_rate=0)
    retry = await charge(client, "o-h0")
    assert retry.status_code == 201
    assert "idempotent-replayed" not in retry.headers
    entry = (await listed(client))["o-h0"]
    assert (entry["attempts"], entry["charges"]) == (2, 1)


async def test_retry_during_a_hang_waits_for_its_charge(client: httpx.AsyncClient) -> None:
    await set_model(
        client, hang_rate=1, hang_charge_share=1, latency_median_ms=800, latency_p95_ms=800
    )
    started = time.perf_counter()
    await _hang(client, "o-hw")
    await set_model(client, hang_rate=0)
    retry = await charge(client, "o-hw")  # in flight: waits for the hung attempt's charge
    assert time.perf_counter() - started >= 0.8
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert (await listed(client))["o-hw"]["charges"] == 1


async def test_a_hang_is_cut_at_the_cap() -> None:
    mock = config.MockGatewaySettings(fast=True, hang_cap_s=0.2)
    with running_gateway(mock) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=5) as http:
            await set_model(http, hang_rate=1, hang_charge_share=1)
            assert_problem(await charge(http, "o-cap"), 504, "gateway_timeout")
            assert (await http.get("/v1/charges/o-cap")).status_code == 200


async def test_shutdown_answers_open_requests_with_503() -> None:
    with contextlib.ExitStack() as stack:
        running = stack.enter_context(running_gateway(config.MockGatewaySettings(fast=True)))
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            await set_model(http, hang_rate=1)
            pending = asyncio.create_task(charge(http, "o-down"))
            async for attempt in eventually():
                with attempt:
                    assert await metric(http, "flashsale_gateway_hangs_open") == 1
            await asyncio.to_thread(stack.close)  # stop the server; the hang is still open
            assert_problem(await pending, 503, "unavailable")


# --- Refunds and the list ------------------------------------------------------------------------


async def test_refund_is_idempotent(client: httpx.AsyncClient) -> None:
    created = (await charge(client, "o-rf")).json()
    first = await client.post("/v1/charges/o-rf/refund")
    assert first.status_code == 200
    assert first.json()["status"] == "refunded"
    assert first.json()["charge_id"] == created["charge_id"]
    second = await client.post("/v1/charges/o-rf/refund")
    assert second.json() == first.json()
    assert (await client.get("/v1/charges/o-rf")).json()["status"] == "refunded"
    assert (await listed(client))["o-rf"]["status"] == "refunded"
    assert_problem(await client.post("/v1/charges/o-none/refund"), 404, "charge_not_found")


async def test_list_pages_through_every_charge(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await charge(client, f"o-{i}")
    await set_model(client, decline_rate=1)
    await charge(client, "o-declined")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/charges", params=params)).json()
        assert len(page["charges"]) <= 2
        seen += [doc["order_id"] for doc in page["charges"]]
        assert all(doc["attempts"] == 1 and doc["charges"] == 1 for doc in page["charges"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"o-{i}" for i in range(5)]
    for params in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"cursor": "abc"}):
        assert_problem(await client.get("/v1/charges", params=params), 422, "invalid_request")


# --- Admin ---------------------------------------------------------------------------------------


async def test_admin_model_read_and_replace(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/v1/admin/model")).json()
    assert doc["seed"] == 1234
    assert doc["latency_median_ms"] == 0
    response = await client.put("/v1/admin/model", json={"decline_rate": 0.25})
    assert response.json() == doc | {"decline_rate": 0.25}
    bad: object
    for bad in (
        {"decline_rate": 0.9, "unavailable_rate": 0.2},
        {"latency_median_ms": 100, "latency_p95_ms": 50},
        {"hang_rate": "all"},
        {"colour": "blue"},
        {"seed": "x"},
        [],
    ):
        assert_problem(await client.put("/v1/admin/model", json=bad), 422, "invalid_request")
    assert (await client.get("/v1/admin/model")).json()["decline_rate"] == 0.25


async def test_a_seed_repeats_the_run(client: httpx.AsyncClient) -> None:
    mixed = {"seed": 99, "decline_rate": 0.3, "unavailable_rate": 0.2, "rate_limited_rate": 0.2}

    async def run() -> list[int]:
        await client.post("/v1/admin/reset")
        await set_model(client, **mixed)
        return [(await charge(client, f"o-{i}")).status_code for i in range(40)]

    first = await run()
    assert set(first) == {201, 402, 429, 503}
    assert await run() == first


async def test_reset_forgets_every_charge(client: httpx.AsyncClient) -> None:
    await charge(client, "o-1")
    response = await client.post("/v1/admin/reset")
    assert response.json() == {"forgotten": 1}
    assert (await client.get("/v1/charges/o-1")).status_code == 404
    assert (await charge(client, "o-1")).headers.get("idempotent-replayed") is None


# --- The client adapter --------------------------------------------------------------------------


async def test_adapter_charge_succeeds(adapter: gateway_http.GatewayClient) -> None:
    attempt = await adapter.charge(order_id="ord/1", amount=Decimal("49.99"), currency="EUR")
    assert attempt.answer == payments.GatewayAnswer(status=201)
    assert attempt.outcome is payments.ChargeOutcome.SUCCEEDED
    assert attempt.charge is not None
    assert (attempt.charge.order_id, attempt.charge.amount) == ("ord/1", Decimal("49.99"))
    assert not attempt.replayed
    again = await adapter.charge(order_id="ord/1", amount=Decimal("49.99"), currency="EUR")
    assert again.replayed
    assert again.charge == attempt.charge
    # An order id with a slash still addresses its charge (the key is escaped in the path).
    assert await adapter.get_charge("ord/1") == attempt.charge
    assert await adapter.get_charge("ord/2") is None


async def test_adapter_decline(
    client: httpx.AsyncClient, adapter: gateway_http.GatewayClient
) -> None:
    await set_model(client, decline_rate=1)
    attempt = await adapter.charge(order_id="o-d", amount=Decimal("1"), currency="EUR")
    assert attempt.answer.status == 402
    assert attempt.outcome is payments.ChargeOutcome.DECLINED
    assert (attempt.code, attempt.charge) == ("card_declined", None)


async def test_adapter_unavailable_and_rate_limited(
    client: httpx.AsyncClient, adapter: gateway_http.GatewayClient
) -> None:
    await set_model(client, unavailable_rate=1, unavailable_retry_after_share=1, retry_after_s=2)
    attempt = await adapter.charge(order_id="o-u", amount=Decimal("1"), currency="EUR")
    assert attempt.answer == payments.GatewayAnswer(status=503, retry_after_s=2.0)
    assert (attempt.outcome, attempt.code) == (payments.ChargeOutcome.RETRY, "unavailable")
    await set_model(client, unavailable_rate=0, rate_limited_rate=1, retry_after_s=1)
    attempt = await adapter.charge(order_id="o-u", amount=Decimal("1"), currency="EUR")
    assert attempt.answer == payments.GatewayAnswer(status=429, retry_after_s=1.0)
    assert (attempt.outcome, attempt.code) == (payments.ChargeOutcome.RETRY, "rate_limited")


async def test_adapter_hang_times_out_and_the_retry_replays(
    client: httpx.AsyncClient, adapter: gateway_http.GatewayClient
) -> None:
    await set_model(client, hang_rate=1, hang_charge_share=1)
    attempt = await adapter.charge(order_id="o-h", amount=Decimal("1"), currency="EUR")
    assert attempt.answer == payments.GatewayAnswer(status=None, timed_out=True)
    assert attempt.outcome is payments.ChargeOutcome.UNKNOWN
    charge_made = await adapter.get_charge("o-h")  # what the reconciler asks
    assert charge_made is not None
    await set_model(client, hang_rate=0)
    retry = await adapter.charge(order_id="o-h", amount=Decimal("1"), currency="EUR")
    assert retry.replayed
    assert retry.charge == charge_made


async def test_adapter_key_reuse_is_invalid(adapter: gateway_http.GatewayClient) -> None:
    await adapter.charge(order_id="o-k", amount=Decimal("1"), currency="EUR")
    attempt = await adapter.charge(order_id="o-k", amount=Decimal("2"), currency="EUR")
    assert attempt.answer.status == 422
    assert (attempt.outcome, attempt.code) == (
        payments.ChargeOutcome.INVALID,
        "idempotency_key_reused",
    )


async def test_adapter_refund_and_list(adapter: gateway_http.GatewayClient) -> None:
    orders = [f"o-{i}" for i in range(5)]
    attempts = await asyncio.gather(
        *(
            adapter.charge(order_id=order, amount=Decimal("9.99"), currency="EUR")
            for order in orders + orders
        )
    )
    assert all(a.outcome is payments.ChargeOutcome.SUCCEEDED for a in attempts)
    refunded = await adapter.refund("o-0")
    assert refunded is not None
    assert refunded.status == "refunded"
    assert refunded.refunded_at is not None
    assert await adapter.refund("o-0") == refunded
    assert await adapter.refund("o-missing") is None
    everything = await adapter.list_charges(page_size=2)
    by_order = {entry.charge.order_id: entry for entry in everything}
    assert len(everything) == len(by_order)
    assert sorted(by_order) == orders
    assert all((entry.attempts, entry.charges) == (2, 1) for entry in everything)
    assert by_order["o-0"].charge.status == "refunded"


async def test_adapter_coalesces_concurrent_charges(
    client: httpx.AsyncClient, adapter: gateway_http.GatewayClient
) -> None:
    await set_model(client, latency_median_ms=100, latency_p95_ms=100)
    attempts = await asyncio.gather(
        *(adapter.charge(order_id="o-x", amount=Decimal("5"), currency="EUR") for _ in range(10))
    )
    assert len({a.charge.charge_id for a in attempts if a.charge}) == 1
    assert sum(not a.replayed for a in attempts) == 1
    (entry,) = await adapter.list_charges()
    assert (entry.attempts, entry.charges) == (10, 1)


async def test_adapter_tells_a_read_timeout_from_a_request_never_sent(
    client: httpx.AsyncClient, gateway: Running
) -> None:
    await set_model(client, latency_median_ms=1000, latency_p95_ms=1000)
    settings = config.GatewaySettings(url=gateway.url, timeout_s=HANG_TIMEOUT_S, concurrency=1)
    async with gateway_http.GatewayClient(settings) as gw:
        sent, queued = await asyncio.gather(
            gw.charge(order_id="o-1", amount=Decimal("1"), currency="EUR"),
            gw.charge(order_id="o-2", amount=Decimal("1"), currency="EUR"),
        )
    # The first waited for an answer (the charge may exist); the second never got a connection.
    assert sent.outcome is payments.ChargeOutcome.UNKNOWN
    assert queued.answer == payments.GatewayAnswer(status=None)
    assert queued.outcome is payments.ChargeOutcome.RETRY


async def test_adapter_against_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        settings = config.GatewaySettings(url=f"http://127.0.0.1:{port}", timeout_s=1)
        async with gateway_http.GatewayClient(settings) as gw:
            attempt = await gw.charge(order_id="o", amount=Decimal("1"), currency="EUR")
            assert attempt.answer == payments.GatewayAnswer(status=None)
            assert attempt.outcome is payments.ChargeOutcome.RETRY
            with pytest.raises(gateway_http.GatewayUnavailable):
                await gw.get_charge("o")
            with pytest.raises(gateway_http.GatewayUnavailable):
                await gw.refund("o")
            with pytest.raises(gateway_http.GatewayUnavailable):
                await gw.list_charges()


def test_python_m_flashsale_gateway_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = os.environ | {"FLASHSALE_MOCK__PORT": str(port), "FLASHSALE_MOCK__FAST": "true"}
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "flashsale.gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        for attempt in Retrying(
            stop=stop_after_delay(15),
            wait=wait_fixed(0.05),
            retry=retry_if_exception_type(httpx.TransportError),
            reraise=True,
        ):
            with attempt:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert health.json() == {"status": "ok"}
        created = httpx.post(
            f"http://127.0.0.1:{port}/v1/charges",
            json=body("o-1"),
            headers={"Idempotency-Key": "o-1"},
        )
        assert created.status_code == 201
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught, so the process ends
        # "terminated by SIGTERM" as its supervisor expects.
        assert process.wait(timeout=10) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    lines = (tmp_path / "gateway.log").read_text().splitlines()
    assert all(line.startswith("{") for line in lines), lines  # JSON logs only
    assert not any("POST /v1/charges" in line for line in lines)  # no access log
    assert any("Application shutdown complete" in line for line in lines)
