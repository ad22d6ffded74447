"""The mock payment gateway's HTTP layer: routes, problem JSON, metrics, hangs, coalescing.

`create_app(settings)` builds a Starlette app around one ledger and one sampler from
gateway/model.py, which decide everything; this module only reads requests, sleeps the sampled
latency and answers. May import flashsale.config, flashsale.web, flashsale.gateway.model and the
metrics beacon (adapters.beacon); never api, sse or workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import prometheus_client
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from flashsale import config, web
from flashsale.adapters import beacon
from flashsale.gateway import model

logger = logging.getLogger(__name__)

# 16 KiB, as the api: a charge body is ~100 bytes, so anything near this is not a charge.
MAX_BODY_BYTES = 16 * 1024
MAX_KEY_LENGTH = 255
MAX_ORDER_ID_LENGTH = 255
# A decimal string without sign or exponent; 18 integer digits is more money than exists.
_AMOUNT = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000  # verify pages through everything; 1,000 charges ≈ 250 KB per page
# Latency buckets in seconds: the default model spans ~50 ms (refusals) to ~10 s (its far tail).
LATENCY_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0)

_TITLES = {
    400: "Bad request",
    402: "Payment declined",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
    504: "Gateway timeout",
}


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """An RFC 9457 problem document with our stable `code`, shaped as every flashsale server's."""
    return web.problem(
        status,
        code,
        title=_TITLES.get(status, "Error"),
        detail=detail,
        headers=dict(headers) if headers else None,
        extra=dict(extra) if extra else None,
    )


class Problem(Exception):
    """Raised by request parsing; the app's handler turns it into a problem response."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def model_from_settings(mock: config.MockGatewaySettings) -> model.FailureModel:
    """The failure model the settings describe (`fast` overrides the rates and the latency).

    Raises model.InvalidModel (a ValueError) when the settings do not make a usable model."""
    fields: dict[str, Any] = {
        "latency_median_ms": mock.latency_median_ms,
        "latency_p95_ms": mock.latency_p95_ms,
        "decline_rate": mock.decline_rate,
        "unavailable_rate": mock.unavailable_rate,
        "rate_limited_rate": mock.rate_limited_rate,
        "hang_rate": mock.hang_rate,
        "hang_charge_share": mock.hang_charge_share,
        "unavailable_retry_after_share": mock.unavailable_retry_after_share,
        "retry_after_s": mock.retry_after_s,
        "refusal_latency_share": mock.refusal_latency_share,
    }
    if mock.fast:
        fields |= model.FAST
    return model.FailureModel(**fields)


# --- Request parsing ------------------------------------------------------------------------------


def parse_key(value: str | None) -> str:
    if value is None:
        raise Problem(400, "idempotency_key_required", "The Idempotency-Key header is required.")
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in value):
        raise Problem(
            400,
            "invalid_idempotency_key",
            "The Idempotency-Key must be 1-255 visible ASCII characters.",
        )
    return value


async def read_json(request: Request) -> Any:
    """The request body as JSON, refusing bodies over MAX_BODY_BYTES before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Problem(413, "payload_too_large", f"The body must not exceed {MAX_BODY_BYTES} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Problem(
                413, "payload_too_large", f"The body must not exceed {MAX_BODY_BYTES} bytes."
            )
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as e:
        raise Problem(422, "invalid_request", f"The body is not valid JSON: {e}") from e


def _invalid(detail: str) -> Problem:
    return Problem(422, "invalid_request", detail)


def parse_charge(doc: Any) -> model.ChargeRequest:
    if not isinstance(doc, dict):
        raise _invalid("The body must be a JSON object {order_id, amount, currency}.")
    order_id, amount, currency = doc.get("order_id"), doc.get("amount"), doc.get("currency")
    if not isinstance(order_id, str) or not 1 <= len(order_id) <= MAX_ORDER_ID_LENGTH:
        raise _invalid("order_id must be a string of 1-255 characters.")
    if not isinstance(amount, str) or not _AMOUNT.fullmatch(amount):
        raise _invalid('amount must be a decimal string such as "49.99".')
    value = Decimal(amount)  # cannot fail: the pattern admits only plain decimals
    if value <= 0:
        raise _invalid("amount must be greater than 0.")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise _invalid("currency must be a 3-letter ISO 4217 code.")
    return model.ChargeRequest(
        order_id=order_id, amount=value, amount_text=amount, currency=currency.upper()
    )


def parse_page(request: Request) -> tuple[int, int]:
    raw_limit = request.query_params.get("limit", str(LIST_DEFAULT_LIMIT))
    raw_cursor = request.query_params.get("cursor") or "0"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIST_MAX_LIMIT:
        raise _invalid(f"limit must be a whole number from 1 to {LIST_MAX_LIMIT}.")
    if not raw_cursor.isdigit():
        raise _invalid("cursor must be a value returned as next_cursor.")
    return int(raw_limit), int(raw_cursor)


# --- Runtime state and metrics --------------------------------------------------------------------


class Metrics:
    """Prometheus series of one app, in its own registry (several apps may share a test process)."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.requests = prometheus_client.Counter(
            "flashsale_gateway_charge_requests",
            "Charge requests by outcome (replayed answers and refused requests included).",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = prometheus_client.Histogram(
            "flashsale_gateway_charge_latency_seconds",
            "Time from a charge request to its answer, by outcome (hangs are never answered).",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = prometheus_client.Gauge(
            "flashsale_gateway_charges_in_flight",
            "Charge attempts being processed (waiting out their latency).",
            registry=self.registry,
        )
        self.hangs_open = prometheus_client.Gauge(
            "flashsale_gateway_hangs_open",
            "Requests held open without an answer.",
            registry=self.registry,
        )
        self.charges = prometheus_client.Gauge(
            "flashsale_gateway_charges",
            "Charges the gateway holds (succeeded or refunded).",
            registry=self.registry,
        )

    def answered(self, outcome: str, started: float) -> None:
        self.requests.labels(outcome).inc()
        self.latency.labels(outcome).observe(time.perf_counter() - started)


@dataclass
class State:
    """What one running gateway holds. `reset` swaps ledger and pending together, so attempts still
    in flight settle into the forgotten ledger and cannot leak into the new one."""

    sampler: model.Sampler
    hang_cap_s: float
    ledger: model.Ledger = field(default_factory=model.Ledger)
    # key → the task processing its attempt; coalesced requests wait on it.
    pending: dict[str, asyncio.Task[model.Charge | None]] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    metrics: Metrics = field(default_factory=Metrics)


def _now() -> datetime:
    return datetime.now(UTC)


def _charge_id() -> str:
    return "ch_" + secrets.token_hex(12)


def _retry_after(seconds: int | None) -> dict[str, str] | None:
    return {"Retry-After": str(seconds)} if seconds is not None else None


_REPLAYED = {"Idempotent-Replayed": "true"}


# --- Handlers -------------------------------------------------------------------------------------


class Gateway:
    """The route handlers, bound to one State."""

    def __init__(self, state: State) -> None:
        self.state = state

    async def create_charge(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await self._create_charge(request, started)
        except asyncio.CancelledError:
            # Only uvicorn cancels a request task: at shutdown, once its grace period is over.
            # Answer as a load balancer whose backend went away would (503, retryable) rather
            # than let uvicorn send a plain-text 500; the process exits right after either way.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
            self.state.metrics.answered("shutdown", started)
            return problem(503, "unavailable", "The processor is shutting down; try again.")

    async def _create_charge(self, request: Request, started: float) -> Response:
        key = parse_key(request.headers.get("idempotency-key"))
        charge_request = parse_charge(await read_json(request))
        state = self.state
        admission = state.ledger.admit(key, charge_request)
        while admission is model.Admission.WAIT:
            # The same request is being processed: wait for its result instead of charging twice.
            await asyncio.wait({state.pending[key]})
            admission = state.ledger.admit(key, charge_request, new_request=False)
        if admission is not model.Admission.PROCESS:
            return self._stored_answer(key, admission, started)
        draw = state.sampler.draw()
        if draw.latency_s > 0:
            task = self._start(key, draw)
            if draw.outcome is model.Outcome.HANG:
                return await self._hang(request, started)
            # Shielded: a client that gives up does not stop the processor finishing the charge.
            charge = await asyncio.shield(task)
        else:
            charge = state.ledger.settle(key, draw.settlement, charge_id=_charge_id(), now=_now())
            if draw.outcome is model.Outcome.HANG:
                return await self._hang(request, started)
        return self._fresh_answer(charge_request, draw, charge, started)

    def _start(self, key: str, draw: model.Draw) -> asyncio.Task[model.Charge | None]:
        state = self.state
        task = asyncio.create_task(self._process(state.ledger, state.pending, key, draw))
        state.pending[key] = task
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return task

    async def _process(
        self,
        ledger: model.Ledger,
        pending: dict[str, asyncio.Task[model.Charge | None]],
        key: str,
        draw: model.Draw,
    ) -> model.Charge | None:
        """Wait out the attempt's latency, then settle it: the charge becomes visible only now."""
        metrics = self.state.metrics
        settlement = model.Settlement.DROPPED  # if cancelled (shutdown), the attempt never happened
        metrics.in_flight.inc()
        try:
            await asyncio.sleep(draw.latency_s)
            settlement = draw.settlement
        finally:
            charge = ledger.settle(key, settlement, charge_id=_charge_id(), now=_now())
            pending.pop(key, None)
            metrics.in_flight.dec()
            metrics.charges.set(len(self.state.ledger))
        return charge

    async def _hang(self, request: Request, started: float) -> Response:
        """Never answer: hold the connection until the client goes away, or answer 504 at the cap
        as a load balancer in front of a stuck processor would."""
        metrics = self.state.metrics
        metrics.requests.labels(model.Outcome.HANG.value).inc()
        metrics.hangs_open.inc()
        try:
            async with asyncio.timeout(self.state.hang_cap_s):
                while (await request.receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            metrics.answered("gateway_timeout", started)
            return problem(504, "gateway_timeout", "The processor did not answer in time.")
        finally:
            metrics.hangs_open.dec()
        return Response(status_code=499)  # the client is gone; this is never sent

    def _fresh_answer(
        self,
        charge_request: model.ChargeRequest,
        draw: model.Draw,
        charge: model.Charge | None,
        started: float,
    ) -> Response:
        self.state.metrics.answered(draw.outcome.value, started)
        if charge is not None:
            self.state.metrics.charges.set(len(self.state.ledger))
            return JsonResponse(charge.to_doc(), status_code=201)
        if draw.outcome is model.Outcome.DECLINED:
            return _declined(charge_request.order_id)
        if draw.outcome is model.Outcome.RATE_LIMITED:
            return problem(
                429,
                "rate_limited",
                "Too many requests; slow down.",
                headers=_retry_after(draw.retry_after_s),
            )
        return problem(
            503,
            "unavailable",
            "The processor is temporarily unavailable; try again.",
            headers=_retry_after(draw.retry_after_s),
        )

    def _stored_answer(self, key: str, admission: model.Admission, started: float) -> Response:
        record = self.state.ledger.record(key)
        # admit() made the record, and it holds a request whenever it answers other than PROCESS.
        assert record is not None
        assert record.request is not None
        if admission is model.Admission.KEY_REUSED:
            self.state.metrics.answered("key_reused", started)
            return problem(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request body.",
            )
        self.state.metrics.answered("replayed", started)
        if admission is model.Admission.REPLAY_CHARGE:
            return JsonResponse(record.first_answer, status_code=201, headers=_REPLAYED)
        return _declined(record.request.order_id, headers=_REPLAYED)

    async def get_charge(self, request: Request) -> Response:
        key = parse_key(request.path_params["key"])
        charge = self.state.ledger.charge(key)
        if charge is None:
            return _not_found(key)
        return JsonResponse(charge.to_doc())

    async def refund(self, request: Request) -> Response:
        key = parse_key(request.path_params["key"])
        charge = self.state.ledger.refund(key, now=_now())
        if charge is None:
            return _not_found(key)
        return JsonResponse(charge.to_doc())

    async def list_charges(self, request: Request) -> Response:
        limit, cursor = parse_page(request)
        records, following = self.state.ledger.page(limit=limit, cursor=cursor)
        items = [
            {**record.charge.to_doc(), "attempts": record.attempts, "charges": record.charges}
            for record in records
            if record.charge is not None
        ]
        return JsonResponse(
            {"charges": items, "next_cursor": str(following) if following is not None else None}
        )

    async def get_model(self, _: Request) -> Response:
        return JsonResponse(self._model_doc())

    async def put_model(self, request: Request) -> Response:
        """Replace the failure model at run time: fields left out keep their value; `seed`
        reseeds."""
        doc = await read_json(request)
        if not isinstance(doc, dict):
            raise _invalid("The body must be a JSON object of failure-model fields.")
        sampler = self.state.sampler
        reseed = "seed" in doc
        seed = doc.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise _invalid("seed must be an integer or null.")
        try:
            new_model = sampler.model.updated(doc)
        except model.InvalidModel as e:
            raise _invalid(str(e)) from e
        sampler.model = new_model
        if reseed:
            sampler.reseed(seed)
        logger.info("failure model replaced: %s (seed %s)", new_model, sampler.seed)
        return JsonResponse(self._model_doc())

    def _model_doc(self) -> dict[str, Any]:
        return {**self.state.sampler.model.to_doc(), "seed": self.state.sampler.seed}

    async def reset(self, _: Request) -> Response:
        state = self.state
        forgotten = len(state.ledger)
        state.ledger = model.Ledger()
        state.pending = {}
        state.metrics.charges.set(0)
        logger.info("gateway reset: %d charges forgotten", forgotten)
        return JsonResponse({"forgotten": forgotten})

    async def healthz(self, _: Request) -> Response:
        return JsonResponse({"status": "ok"})

    async def readyz(self, _: Request) -> Response:
        # The mock keeps everything in memory: no store to reach, ready as soon as it serves.
        return JsonResponse({"status": "ready"})

    async def metrics(self, _: Request) -> Response:
        return Response(
            prometheus_client.generate_latest(self.state.metrics.registry),
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )


def _declined(order_id: str, *, headers: Mapping[str, str] | None = None) -> Response:
    return problem(
        402,
        "card_declined",
        "The card was declined.",
        headers=headers,
        extra={"order_id": order_id},
    )


def _not_found(key: str) -> Response:
    return problem(404, "charge_not_found", f"No charge was made for Idempotency-Key {key!r}.")


# --- Error handlers and the app -------------------------------------------------------------------


async def _on_problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem(exc.status, exc.code, exc.detail)


async def _on_http_exception(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem(404, "not_found", "No such route.")
    if exc.status_code == 405:
        return problem(405, "method_not_allowed", "This route does not take this method.")
    return problem(exc.status_code, "http_error", str(exc.detail))


async def _on_disconnect(_: Request, __: Exception) -> Response:
    return Response(status_code=499)  # the client left while we read its body; never sent


async def _on_error(_: Request, __: Exception) -> Response:
    # Starlette re-raises after this answer and uvicorn logs the traceback: no second log line.
    return problem(500, "internal_error", "An unexpected error occurred.")


def create_app(settings: config.Settings) -> Starlette:
    failure_model = model_from_settings(settings.mock)
    state = State(
        sampler=model.Sampler(failure_model, seed=settings.mock.seed),
        hang_cap_s=settings.mock.hang_cap_s,
    )
    gateway = Gateway(state)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        logger.info("mock payment gateway: model %s, seed %s", failure_model, settings.mock.seed)
        # The dashboard's data; its own registry. Without Redis it only logs once.
        metrics_beacon = beacon.start(
            settings.redis, kind="gateway", registry=state.metrics.registry
        )
        try:
            yield
        finally:
            await metrics_beacon.stop()
        # Attempts still waiting out their latency end with the process: cancel them tidily.
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)

    routes = [
        Route("/v1/charges", gateway.create_charge, methods=["POST"]),
        Route("/v1/charges", gateway.list_charges, methods=["GET"]),
        Route("/v1/charges/{key:path}/refund", gateway.refund, methods=["POST"]),
        Route("/v1/charges/{key:path}", gateway.get_charge, methods=["GET"]),
        Route("/v1/admin/model", gateway.get_model, methods=["GET"]),
        Route("/v1/admin/model", gateway.put_model, methods=["PUT"]),
        Route("/v1/admin/reset", gateway.reset, methods=["POST"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            Problem: _on_problem,
            HTTPException: _on_http_exception,
            ClientDisconnect: _on_disconnect,
            Exception: _on_error,
        },
    )
    app.state.gateway = state
    return app
