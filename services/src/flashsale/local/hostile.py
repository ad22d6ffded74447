"""The hostile-input scenarios of `flashsale chaos`, against the real processes of the run's stack:
forged and broken tokens, another buyer's order, admin routes without the role, oversized bodies
and request heads, the per-user and per-address rate limits, 5,000 SSE streams from one address,
(schemathesis fuzzing the API's OpenAPI is in local/fuzz.py). Every refusal must be the contract's
4xx problem JSON, never a 5xx, no refused request may reserve anything, and every process stays up.
Talks to the processes over HTTP and raw sockets; imports none of them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import resource
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt

from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_stock import connect
from flashsale.config import SseSettings
from flashsale.local.chaosrun import ChaosRun, Tally
from flashsale.local.crowd import CrowdLog

# The request heads sent to the API and SSE: one big header that still fits in the socket buffers
# (the 431 can be read), one far past anything (the server may reset the connection before the
# client has written it all), and many small headers.
BIG_HEADER = 64 * 1024
HUGE_HEADER = 8 * 1024 * 1024
MANY_HEADERS = 2000
CONNECT_CONCURRENCY = 500  # SSE flood: connections being opened at once
SPARE_FILES = 512  # beside the flood's sockets: the stack's pipes, logs, the test's own clients


@dataclass
class Checks:
    """Named expectations of one scenario: each holds or becomes a finding."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str, detail: Any = "") -> None:
        (self.passed if ok else self.failed).append(what if ok else f"{what}: {detail}")


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def bad_tokens(secret: str) -> dict[str, str | None]:
    """Authorization values the API must refuse with 401: forged, expired, incomplete."""
    now = int(time.time())
    claims = {"sub": "mallory", "exp": now + 600}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    return {
        "missing": None,
        "alg none": f"Bearer {unsigned}",
        "wrong key": "Bearer " + jwt.encode(claims, "not-the-secret-" * 3, algorithm="HS256"),
        "HS512 with the right key": "Bearer " + _hs512(claims, secret),
        "expired": "Bearer "
        + jwt.encode({"sub": "mallory", "exp": now - 3600}, secret, algorithm="HS256"),
        "missing sub": "Bearer " + jwt.encode({"exp": now + 600}, secret, algorithm="HS256"),
        "missing exp": "Bearer " + jwt.encode({"sub": "mallory"}, secret, algorithm="HS256"),
        "not a JWT": "Bearer not.a.jwt",
        "basic scheme": "Basic bWFsbG9yeTpwYXNz",
    }


def _hs512(claims: dict[str, Any], secret: str) -> str:
    """A token signed with the right secret under another algorithm (algorithm confusion)."""
    with warnings.catch_warnings():
        # pyjwt warns that a 42-byte dev secret is short for SHA-512: true, and beside the point.
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm="HS512")


def _problem(response: httpx.Response) -> str | None:
    """The problem `code` of a problem-JSON answer, else None."""
    if response.headers.get("content-type") != "application/problem+json":
        return None
    with contextlib.suppress(ValueError):
        code = response.json().get("code")
        return str(code) if code else None
    return None


async def reservations(run: ChaosRun, sale_id: str) -> tuple[int, int, int]:
    """Remaining units, holders and reservations of a sale: what a purchase would change (the
    order stream is not counted: the order worker trims it)."""
    redis = connect(run.settings.redis)
    try:
        remaining = int(await redis.hget(keys.sale(sale_id), "remaining") or 0)
        holders = int(await redis.hlen(keys.holds(sale_id)))
        accepted = int(await redis.hget(keys.sale(sale_id), "accepted") or 0)
    finally:
        await redis.aclose()
    return remaining, holders, accepted


# --- requests that must be refused ---------------------------------------------------------------


async def refuse_bad_tokens(
    run: ChaosRun, http: httpx.AsyncClient, sale_id: str, checks: Checks, log: CrowdLog
) -> None:
    routes = [
        ("POST", f"/v1/sales/{sale_id}/orders"),
        ("GET", "/v1/orders/01a2183a-6908-79c2-99c1-4894b0f8ab87"),
        ("GET", "/v1/me/orders"),
        ("GET", f"/v1/admin/sales/{sale_id}/stats"),
    ]
    for name, authorization in bad_tokens(run.settings.auth.jwt_secret).items():
        headers = {"Idempotency-Key": f"bad-token-{name}"}
        if authorization is not None:
            headers["Authorization"] = authorization
        for method, url in routes:
            response = await _send(http, log, method, url, headers=headers, json={"quantity": 1})
            checks.expect(
                response.status_code == 401 and _problem(response) == "unauthenticated",
                f"token '{name}' on {method} {url.split('/')[2]}: 401 unauthenticated",
                f"{response.status_code} {response.text[:120]}",
            )


async def refuse_without_role(
    run: ChaosRun, http: httpx.AsyncClient, sale_id: str, checks: Checks, log: CrowdLog
) -> None:
    user = {"Authorization": f"Bearer {run.token('mallory')}"}
    body = {"name": "taken over", "price": "0.01", "stock": 1}
    for method, suffix in [
        ("PUT", ""),
        ("POST", "/open"),
        ("POST", "/close"),
        ("DELETE", ""),
        ("GET", "/stats"),
    ]:
        url = f"/v1/admin/sales/{sale_id}{suffix}"
        response = await _send(http, log, method, url, headers=user, json=body)
        checks.expect(
            response.status_code == 403 and _problem(response) == "forbidden",
            f"{method} admin{suffix or ' sale'} without the role: 403 forbidden",
            response.status_code,
        )


async def refuse_others_order(
    run: ChaosRun, http: httpx.AsyncClient, sale_id: str, checks: Checks, log: CrowdLog
) -> None:
    alice = {"Authorization": f"Bearer {run.token('alice')}"}
    bought = await _send(
        http,
        log,
        "POST",
        f"/v1/sales/{sale_id}/orders",
        headers={**alice, "Idempotency-Key": "alice-1"},
        json={},
    )
    if bought.status_code != 202:
        checks.expect(False, "alice buys one unit", bought.status_code)
        return
    order_id = bought.json()["order_id"]
    log.accepted.setdefault("alice-1", set()).add(order_id)
    mallory = {"Authorization": f"Bearer {run.token('mallory')}"}
    theirs = await _send(http, log, "GET", f"/v1/orders/{order_id}", headers=mallory)
    mine = await _send(http, log, "GET", f"/v1/orders/{order_id}", headers=alice)
    checks.expect(
        theirs.status_code == 404 and _problem(theirs) == "order_not_found",
        "another buyer's order: 404 order_not_found",
        theirs.status_code,
    )
    checks.expect(mine.status_code == 200, "the buyer's own order: 200", mine.status_code)


async def refuse_big_bodies(
    run: ChaosRun, http: httpx.AsyncClient, sale_id: str, checks: Checks, log: CrowdLog
) -> None:
    """Bodies past the 16 KiB limit: 413 problem JSON. A 1 MiB body may instead see the
    connection closed under it (the server answered and closed while the client still wrote)."""
    headers = {"Authorization": f"Bearer {run.token('mallory')}", "Idempotency-Key": "big"}
    url = f"/v1/sales/{sale_id}/orders"
    for size in (20 * 1024, 1024 * 1024):
        body = b'{"quantity": 1, "pad": "' + b"x" * size + b'"}'

        async def chunks(body: bytes = body) -> AsyncIterator[bytes]:
            for start in range(0, len(body), 8 * 1024):
                yield body[start : start + 8 * 1024]

        for how, content in (("with Content-Length", body), ("chunked", chunks())):
            what = f"a {size // 1024} KiB body {how}"
            try:
                response = await _send(http, log, "POST", url, headers=headers, content=content)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as e:
                checks.expect(size > 20 * 1024, f"{what}: connection closed by the server", e)
                continue
            checks.expect(
                response.status_code == 413 and _problem(response) == "payload_too_large",
                f"{what}: 413 payload_too_large",
                response.status_code,
            )


async def refuse_unstorable_text(
    run: ChaosRun, http: httpx.AsyncClient, checks: Checks, log: CrowdLog
) -> None:
    """A NUL character cannot be stored in PostgreSQL text: every route that would write or look
    one up answers 422, never 500, and creates nothing (schemathesis found the login 500)."""
    sale_id = f"nul-{run.sale_id('x')[-9:]}"
    admin = {"Authorization": f"Bearer {run.token('chaos-admin', admin=True)}"}
    sale = {
        "name": "shoes\u0000",
        "price": "1.00",
        "stock": 1,
        "opens_at": "2030-01-01T00:00:00Z",
        "closes_at": "2030-01-01T01:00:00Z",
        "per_user_limit": 1,
    }
    attempts = [
        ("POST", "/v1/auth/login", {}, {"email": "a\u0000@b.c", "password": "secret-123"}),
        ("POST", "/v1/auth/register", {}, {"email": "n@b.c", "password": "secret-123",
                                          "name": "a\u0000b"}),
        ("PUT", f"/v1/admin/sales/{sale_id}", admin, sale),
    ]  # fmt: skip
    for method, url, headers, body in attempts:
        response = await _send(http, log, method, url, headers=headers, json=body)
        checks.expect(
            response.status_code == 422 and _problem(response) == "invalid_request",
            f"{method} {url.split('/')[-1]} with a NUL character: 422 invalid_request",
            f"{response.status_code} {response.text[:120]}",
        )
    created = await _send(http, log, "GET", f"/v1/sales/{sale_id}")
    checks.expect(created.status_code == 404, "the sale with a NUL in its name does not exist")


async def _send(
    http: httpx.AsyncClient, log: CrowdLog, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    log.requests += 1
    response = await http.request(method, url, **kwargs)
    log.statuses[response.status_code] += 1
    if response.status_code >= 500:
        log.server_errors.append(f"{method} {url}: {response.status_code}")
    return response


# --- oversized request heads over raw sockets ----------------------------------------------------


async def raw_exchange(url: str, request: bytes, *, timeout_s: float = 10.0) -> str:
    """Send raw bytes, return the status line, or what ended the exchange ("reset", "closed")."""
    parsed = urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    try:
        try:
            writer.write(request)
            await writer.drain()
        except ConnectionError:
            pass  # refused mid-write: the answer, if any, is still readable below
        try:
            line = await asyncio.wait_for(reader.readline(), timeout_s)
        except ConnectionError:
            return "reset"
        return line.decode(errors="replace").strip() or "closed"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def oversized_heads(path: str) -> dict[str, bytes]:
    start = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 64) for i in range(MANY_HEADERS))
    return {
        "a 64 KiB header": start + b"X-Big: " + b"x" * BIG_HEADER + b"\r\n\r\n",
        "an 8 MiB header": start + b"X-Big: " + b"x" * HUGE_HEADER + b"\r\n\r\n",
        f"{MANY_HEADERS} headers": start + many + b"\r\n",
        "a 64 KiB URL": f"GET {path}?{'q' * BIG_HEADER} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
    }


async def refuse_big_heads(
    url: str, path: str, what: str, checks: Checks, alive: Callable[[], Awaitable[bool]]
) -> None:
    for name, request in oversized_heads(path).items():
        status = await raw_exchange(url, request)
        # 431 (or 4xx) when the answer could be read; a reset when the server closed while the
        # client was still writing megabytes. Never a 2xx (it was read in full) or a 5xx.
        refused = status in ("reset", "closed") or status.split(" ")[1:2] in (["431"], ["400"])
        checks.expect(refused, f"{what}: {name} refused (431 or closed)", status)
    checks.expect(await alive(), f"{what} still up and serving after oversized heads")


# --- rate limits ---------------------------------------------------------------------------------

# Slow refills, so the bursts are used up even on a machine that takes seconds for 20 requests.
LIMITED_API_ENV = {
    "FLASHSALE_API__RATE_LIMIT_USER_PER_S": "0.5",
    "FLASHSALE_API__RATE_LIMIT_USER_BURST": "2",
    "FLASHSALE_API__RATE_LIMIT_ADDR_PER_S": "1",
    "FLASHSALE_API__RATE_LIMIT_ADDR_BURST": "12",
}


async def rate_limits(run: ChaosRun, sale_id: str, checks: Checks, log: CrowdLog) -> None:
    """Per user, then per address, on an API process with low limits: 429 rate_limited with
    Retry-After, nothing reserved by a refusal, and the same key goes through after waiting."""
    async with run.extra_api("api-limited", LIMITED_API_ENV) as url:
        before = await reservations(run, sale_id)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            path = f"/v1/sales/{sale_id}/orders"

            async def buy(user: str, key: str) -> httpx.Response:
                headers = {"Authorization": f"Bearer {run.token(user)}", "Idempotency-Key": key}
                response = await _send(http, log, "POST", path, headers=headers)
                if response.status_code == 202:
                    log.accepted.setdefault(f"{user}/{key}", set()).add(response.json()["order_id"])
                return response

            per_user = await asyncio.gather(*(buy("eager", f"e{i}") for i in range(4)))
            limited = [r for r in per_user if r.status_code == 429]
            checks.expect(
                bool(limited) and all(_limited(r) for r in limited),
                "one user past 0.5/s (burst 2): 429 rate_limited with Retry-After",
                [r.status_code for r in per_user],
            )
            crowd = await asyncio.gather(*(buy(f"n{i}", "k") for i in range(20)))
            by_address = [r for r in crowd if r.status_code == 429]
            checks.expect(
                bool(by_address) and all(_limited(r) for r in by_address),
                "20 users from one address past 1/s (burst 12): 429 with Retry-After",
                Counter(r.status_code for r in crowd),
            )
            reads = [await _send(http, log, "GET", f"/v1/sales/{sale_id}") for _ in range(5)]
            checks.expect(
                any(r.status_code == 429 for r in reads),
                "reads count against the address too",
                [r.status_code for r in reads],
            )
            health = await http.get("/healthz")
            checks.expect(health.status_code == 200, "health is never limited", health.status_code)
            accepted = sum(1 for r in [*per_user, *crowd] if r.status_code == 202)
            after = await reservations(run, sale_id)
            checks.expect(
                after[2] - before[2] == accepted,
                "rate-limited purchases reserved nothing",
                f"{accepted} answers 202, {after[2] - before[2]} reservations",
            )
            # A refused buyer waits as told and asks again with the same key: it gets in (the
            # reads above may have spent the token that came back meanwhile: wait again, a few
            # times at most).
            refused = next((i for i, r in enumerate(crowd) if r.status_code == 429), None)
            if refused is not None:
                again = crowd[refused]
                for _ in range(5):
                    await asyncio.sleep(float(again.headers["retry-after"]))
                    again = await buy(f"n{refused}", "k")
                    if again.status_code != 429:
                        break
                checks.expect(again.status_code == 202, "after Retry-After: 202", again.status_code)


def _limited(response: httpx.Response) -> bool:
    retry_after = response.headers.get("retry-after", "")
    return _problem(response) == "rate_limited" and retry_after.isdigit() and int(retry_after) >= 1


# --- SSE: thousands of streams from one address --------------------------------------------------


@dataclass
class Flood:
    opened: list[asyncio.StreamWriter] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    retry_after: Counter[str] = field(default_factory=Counter)


async def _one_stream(url: str, path: str, flood: Flood, gate: asyncio.Semaphore) -> None:
    parsed = urlparse(url)
    async with gate:
        try:
            reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            flood.statuses[type(e).__name__] += 1
            return
    lines = head.decode(errors="replace").split("\r\n")
    status = lines[0].split(" ")[1] if " " in lines[0] else lines[0]
    flood.statuses[status] += 1
    if status == "200":
        flood.opened.append(writer)  # held open until the flood is over
        return
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    flood.retry_after[headers.get("retry-after", "none")] += 1
    length = int(headers.get("content-length", "0"))
    with contextlib.suppress(Exception):
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        flood.codes[str(json.loads(body).get("code"))] += 1
    writer.close()


async def sse_flood(run: ChaosRun, sale_id: str, checks: Checks) -> dict[str, Any]:
    """Open the profile's number of streams from 127.0.0.1 at once and hold them: the SSE server
    keeps at most its per-address cap, refuses the rest with 429 problem JSON, stays up, and still
    serves a buyer from another address."""
    url = run.stack.sse_url
    path = f"/v1/sales/{sale_id}/events"
    sse = run.stack.child("sse")
    pid = sse.pid
    flood = Flood()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    open_files_for(run.profile.sse_connections + SPARE_FILES)
    started = time.monotonic()
    try:
        await asyncio.gather(
            *(_one_stream(url, path, flood, gate) for _ in range(run.profile.sse_connections))
        )
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            health = await http.get("/healthz")
        other = await _stream_from(url, path, local_address="127.0.0.2")
    finally:
        for writer in flood.opened:
            writer.close()
    held = len(flood.opened)
    refused = flood.statuses.get("429", 0)
    cap = int(
        run.stack.base_env().get("FLASHSALE_SSE__MAX_CLIENTS_PER_ADDR")
        or SseSettings().max_clients_per_addr
    )
    wanted = min(cap, run.profile.sse_connections)
    checks.expect(held == wanted, f"SSE holds exactly its per-address cap ({cap}) of streams", held)
    checks.expect(
        refused + held == run.profile.sse_connections,
        "every stream past the cap refused with 429",
        dict(flood.statuses),
    )
    checks.expect(
        set(flood.codes) == {"too_many_connections"} and "none" not in flood.retry_after,
        "refusals are problem JSON too_many_connections with Retry-After",
        dict(flood.codes),
    )
    checks.expect(health.status_code == 200, "SSE health during the flood", health.status_code)
    checks.expect(other, "a buyer from another address gets the sale event during the flood")
    checks.expect(sse.pid == pid and sse.alive(), "the SSE process stayed up (same pid)")
    return {
        "connections": run.profile.sse_connections,
        "held": held,
        "answers": dict(flood.statuses),
        "codes": dict(flood.codes),
        "seconds": round(time.monotonic() - started, 1),
    }


def open_files_for(wanted: int) -> None:
    """This process holds every flood connection open at once: lift its soft RLIMIT_NOFILE toward
    the hard limit (many systems start at 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _stream_from(url: str, path: str, *, local_address: str) -> bool:
    """Whether a stream opened from `local_address` starts with its `sale` event."""
    transport = httpx.AsyncHTTPTransport(local_address=local_address)
    async with (
        httpx.AsyncClient(base_url=url, transport=transport, timeout=10) as http,
        http.stream("GET", path) as response,
    ):
        if response.status_code != 200:
            return False
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                return line.split(":", 1)[1].strip() == "sale"
    return False


# --- the scenario --------------------------------------------------------------------------------


async def scenario_hostile(run: ChaosRun) -> Tally:
    started = time.monotonic()
    marks = run.log_marks()
    sale_id = await run.new_sale("hostile", stock=1000, per_user_limit=100)
    tally = Tally("hostile", "hostile input: tokens, roles, sizes, limits, SSE flood", sale_id)
    checks = Checks()
    log = CrowdLog()
    api = run.stack.api_url

    async def api_alive() -> bool:
        async with httpx.AsyncClient(base_url=api, timeout=5) as http:
            return (await http.get("/healthz")).status_code == 200

    async def sse_alive() -> bool:
        async with httpx.AsyncClient(base_url=run.stack.sse_url, timeout=5) as http:
            return (await http.get("/healthz")).status_code == 200

    api_pid = run.stack.child("api").pid
    async with httpx.AsyncClient(base_url=api, timeout=15) as http:
        before = await reservations(run, sale_id)
        await refuse_bad_tokens(run, http, sale_id, checks, log)
        await refuse_without_role(run, http, sale_id, checks, log)
        await refuse_big_bodies(run, http, sale_id, checks, log)
        await refuse_unstorable_text(run, http, checks, log)
        after = await reservations(run, sale_id)
        checks.expect(before == after, "refused requests reserved nothing", f"{before}->{after}")
        await refuse_others_order(run, http, sale_id, checks, log)
    await refuse_big_heads(api, f"/v1/sales/{sale_id}", "API", checks, api_alive)
    await refuse_big_heads(run.stack.sse_url, "/healthz", "SSE", checks, sse_alive)
    checks.expect(run.stack.child("api").pid == api_pid, "the API process stayed up (same pid)")
    await rate_limits(run, sale_id, checks, log)
    tally.details["sse_flood"] = await sse_flood(run, sale_id, checks)
    tally.faults = [
        f"{len(bad_tokens(run.settings.auth.jwt_secret))} kinds of bad token on 4 routes; "
        "5 admin routes without the role",
        "another buyer's order; 1 MiB bodies; 64 KiB and 8 MiB headers, 2,000 headers, 64 KiB URL",
        "NUL characters in a login, a registration and a sale name",
        "rate limits per user and per address (API with low limits)",
        f"{run.profile.sse_connections} SSE streams from one address",
    ]
    tally.details["checks_passed"] = len(checks.passed)
    tally.findings += checks.failed
    return await run.tally(tally, log, started=started, marks=marks)
