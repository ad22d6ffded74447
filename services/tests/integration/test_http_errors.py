"""Every error code of the contract over real HTTP (uvicorn on a free port): each answers
`application/problem+json` with type/title/status/detail/code and never a 500, and a refused
purchase reserves nothing. Covers authentication (every way a token can be bad, and the 30 s
leeway), roles, Idempotency-Key syntax, invalid bodies, body size, unknown sales and orders, rate
limits per user and per address, load shedding, register/login, order pagination, and the
operational endpoints."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import orjson
import pytest

from flashsale.config import Settings
from flashsale.testing import ServerThread, bearer, create_sale, random_user_id

if TYPE_CHECKING:
    from tests.integration.conftest import Probe

StartApi = Callable[..., Awaitable[tuple[Settings, httpx.AsyncClient]]]
PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


async def _never_500(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, (
        f"{response.request.method} {response.request.url} answered {response.status_code}"
    )


@pytest.fixture
async def http(api: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """A client that fails the test on any 5xx but 503 (a 500 is never an acceptable answer)."""
    async with httpx.AsyncClient(
        base_url=api.url, timeout=15, event_hooks={"response": [_never_500]}
    ) as client:
        yield client


@pytest.fixture
async def sale_id(http: httpx.AsyncClient, admin_headers: dict[str, str]) -> str:
    return await create_sale(http, admin_headers, stock=5, per_user_limit=100)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert set(doc) >= PROBLEM_FIELDS, doc
    assert doc["status"] == status
    assert doc["code"] == code
    assert isinstance(doc["type"], str)
    assert doc["type"].endswith(code)
    assert isinstance(doc["title"], str)
    assert doc["title"]
    assert isinstance(doc["detail"], str)
    assert doc["detail"]
    return doc


def order_url(sale_id: str) -> str:
    return f"/v1/sales/{sale_id}/orders"


def headers(settings: Settings, user: str = "alice", key: str | None = "k") -> dict[str, str]:
    out = bearer(settings, user)
    if key is not None:
        out["Idempotency-Key"] = key
    return out


# --- 401 unauthenticated --------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], secret: str, *, sign: bool) -> str:
    """A JWT built by hand: any header, any claims, an HS256 signature or none at all."""
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    signature = (
        b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())
        if sign
        else ""
    )
    return f"{signing_input}.{signature}"


def other_hmac(claims: dict[str, Any], secret: str, algorithm: str) -> str:
    """A token signed with the right secret but another HMAC algorithm. PyJWT warns that the dev
    secret is short for SHA-384/512; that is beside the point here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=algorithm)


def bad_authorizations(settings: Settings) -> dict[str, str | None]:
    secret = settings.auth.jwt_secret
    now = int(time.time())
    good = {"sub": "alice", "exp": now + 300}
    return {
        "missing": None,
        "empty": "",
        "scheme only": "Bearer",
        "basic scheme": "Basic YWxpY2U6cHc=",
        "not a jwt": "Bearer not-a-token",
        "three garbage parts": "Bearer a.b.c",
        "wrong key": "Bearer " + jwt.encode(good, "another-secret-" + "x" * 32, algorithm="HS256"),
        "tampered claims": "Bearer "
        + raw_token({"alg": "HS256", "typ": "JWT"}, good, secret, sign=True)[:-4]
        + "AAAA",
        "expired beyond the leeway": "Bearer "
        + jwt.encode({"sub": "alice", "exp": now - 45}, secret, algorithm="HS256"),
        "alg none": "Bearer " + raw_token({"alg": "none", "typ": "JWT"}, good, secret, sign=False),
        "alg None signed": "Bearer "
        + raw_token({"alg": "None", "typ": "JWT"}, good, secret, sign=True),
        "HS512": "Bearer " + other_hmac(good, secret, "HS512"),
        "HS384": "Bearer " + other_hmac(good, secret, "HS384"),
        # Algorithm confusion: an RS256 header over an HMAC made with the shared secret.
        "RS256 header": "Bearer "
        + raw_token({"alg": "RS256", "typ": "JWT"}, good, secret, sign=True),
        "missing sub": "Bearer " + jwt.encode({"exp": now + 300}, secret, algorithm="HS256"),
        "missing exp": "Bearer " + jwt.encode({"sub": "alice"}, secret, algorithm="HS256"),
        "numeric sub": "Bearer "
        + raw_token(
            {"alg": "HS256", "typ": "JWT"}, {"sub": 42, "exp": now + 300}, secret, sign=True
        ),
        "sub with bad characters": "Bearer "
        + jwt.encode({"sub": "a b/c", "exp": now + 300}, secret, algorithm="HS256"),
        "exp not a number": "Bearer "
        + raw_token({"alg": "HS256"}, {"sub": "alice", "exp": "soon"}, secret, sign=True),
        "not yet valid": "Bearer "
        + jwt.encode({**good, "nbf": now + 600}, secret, algorithm="HS256"),
    }


async def test_every_bad_token_is_401_on_every_protected_route(
    http: httpx.AsyncClient, settings: Settings, sale_id: str, probe: Probe
) -> None:
    routes = [
        ("POST", order_url(sale_id)),
        ("GET", "/v1/orders/01a2183a-6908-79c2-99c1-4894b0f8ab87"),
        ("GET", "/v1/me/orders"),
        ("GET", f"/v1/admin/sales/{sale_id}/stats"),
        ("POST", f"/v1/admin/sales/{sale_id}/close"),
    ]
    async with probe.nothing_reserved(sale_id):
        for name, authorization in bad_authorizations(settings).items():
            sent = {"Idempotency-Key": f"k-{name}"}
            if authorization is not None:
                sent["Authorization"] = authorization
            for method, url in routes:
                response = await http.request(method, url, headers=sent, json={"quantity": 1})
                assert response.status_code == 401, (name, method, url, response.text)
                assert_problem(response, 401, "unauthenticated")
                assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await http.get(f"/v1/sales/{sale_id}")).json()["state"] == "open"


async def test_a_token_expired_within_the_leeway_is_still_accepted(
    http: httpx.AsyncClient, settings: Settings, sale_id: str
) -> None:
    token = jwt.encode(
        {"sub": "alice", "exp": int(time.time()) - 20}, settings.auth.jwt_secret, algorithm="HS256"
    )
    auth = {"Authorization": f"Bearer {token}"}
    bought = await http.post(order_url(sale_id), headers={**auth, "Idempotency-Key": "k"})
    assert bought.status_code == 202, bought.text
    assert (await http.get("/v1/me/orders", headers=auth)).status_code == 200


async def test_the_bearer_scheme_is_case_insensitive(
    http: httpx.AsyncClient, settings: Settings, sale_id: str
) -> None:
    token = bearer(settings, "alice")["Authorization"].split(" ", 1)[1]
    response = await http.post(
        order_url(sale_id), headers={"Authorization": f"bearer {token}", "Idempotency-Key": "k"}
    )
    assert response.status_code == 202


# --- 403 forbidden --------------------------------------------------------------------------------


async def test_admin_routes_refuse_a_token_without_the_admin_role(
    http: httpx.AsyncClient, settings: Settings, sale_id: str, probe: Probe
) -> None:
    user = bearer(settings, "alice")
    other_role = {
        "Authorization": "Bearer "
        + jwt.encode(
            {"sub": "alice", "exp": int(time.time()) + 60, "role": "superuser"},
            settings.auth.jwt_secret,
            algorithm="HS256",
        )
    }
    body = {"name": "x", "price": "1.00", "stock": 1}
    async with probe.nothing_reserved(sale_id):
        for auth in (user, other_role):
            for method, suffix in [
                ("PUT", ""),
                ("POST", "/open"),
                ("POST", "/close"),
                ("DELETE", ""),
                ("GET", "/stats"),
            ]:
                response = await http.request(
                    method, f"/v1/admin/sales/{sale_id}{suffix}", headers=auth, json=body
                )
                assert_problem(response, 403, "forbidden")
            new_sale = await http.put("/v1/admin/sales/brand-new", headers=auth, json=body)
            assert_problem(new_sale, 403, "forbidden")
    assert (await http.get(f"/v1/sales/{sale_id}")).json()["state"] == "open"
    assert (await http.get("/v1/sales/brand-new")).status_code == 404


# --- 400 Idempotency-Key --------------------------------------------------------------------------


async def test_a_missing_key_is_required(
    http: httpx.AsyncClient, settings: Settings, sale_id: str, probe: Probe
) -> None:
    async with probe.nothing_reserved(sale_id):
        response = await http.post(order_url(sale_id), headers=headers(settings, key=None))
        assert_problem(response, 400, "idempotency_key_required")
        # The key is checked before the body.
        response = await http.post(
            order_url(sale_id), headers=headers(settings, key=None), content=b"{not json"
        )
        assert_problem(response, 400, "idempotency_key_required")


@pytest.mark.parametrize(
    "key",
    # (Leading or trailing blanks never reach the app: HTTP strips them from header values.)
    [b"", b"x" * 256, b"with space", b"caf\xc3\xa9", b"caf\xe9", b"tab\there", b"a\x80b"],
    ids=["empty", "256", "space", "utf8", "latin1", "tab", "high-byte"],
)
async def test_an_invalid_key_is_refused(
    http: httpx.AsyncClient, settings: Settings, sale_id: str, probe: Probe, key: bytes
) -> None:
    sent = [(b"authorization", bearer(settings, "alice")["Authorization"].encode())]
    sent.append((b"idempotency-key", key))
    async with probe.nothing_reserved(sale_id):
        response = await http.post(order_url(sale_id), headers=sent)
        assert_problem(response, 400, "invalid_idempotency_key")


async def test_a_key_of_255_visible_characters_is_accepted(
    http: httpx.AsyncClient, settings: Settings, sale_id: str
) -> None:
    key = "".join(chr(0x21 + i % 94) for i in range(255))
    response = await http.post(order_url(sale_id), headers=headers(settings, key=key))
    assert response.status_code == 202, response.text


# --- 422 invalid_request --------------------------------------------------------------------------

INVALID_PURCHASE_BODIES = [
    b"{",
    b'{"quantity": }',
    b"not json",
    b"\xff\xfe",
    b'{"quantity": "1"}',
    b'{"quantity": 1.0}',
    b'{"quantity": 1.5}',
    b'{"quantity": true}',
    b'{"quantity": false}',
    b'{"quantity": null}',
    b'{"quantity": 0}',
    b'{"quantity": -1}',
    b'{"quantity": 101}',
    b'{"quantity": 100000000000000000000000000000}',
    b'{"quantity": [1]}',
    b'{"quantity": {"n": 1}}',
    b'{"quantity": 1, "price": "0.01"}',
    b'{"qty": 1}',
    b"[1]",
    b"[]",
    b'"quantity"',
    b"1",
    b"null",
    b'{"quantity": 1} {"quantity": 1}',
]


async def test_invalid_purchase_bodies_are_422_and_reserve_nothing(
    http: httpx.AsyncClient, settings: Settings, sale_id: str, probe: Probe
) -> None:
    async with probe.nothing_reserved(sale_id):
        for i, body in enumerate(INVALID_PURCHASE_BODIES):
            response = await http.post(
                order_url(sale_id),
                headers={**headers(settings, key=f"k{i}"), "Content-Type": "application/json"},
                content=body,
            )
            assert response.status_code == 422, (body, response.text)
            assert_problem(response, 422, "invalid_request")


async def test_the_largest_quantity_is_accepted(
    http: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_sale(http, admin_headers, stock=100, per_user_limit=100)
    response = await http.post(
        order_url(sale_id), headers=headers(settings), json={"quantity": 100}
    )
    assert response.status_code == 202, response.text
    assert (await http.get(f"/v1/sales/{sale_id}")).json()["state"] == "sold_out"


def sale_body(**changes: Any) -> dict[str, Any]:
    body = {
        "name": "Sneaker",
        "price": "49.99",
        "stock": 10,
        "opens_at": "2030-01-01T12:00:00Z",
        "closes_at": "2030-01-01T12:05:00Z",
        "per_user_limit": 1,
    }
    return {k: v for k, v in (body | changes).items() if v is not ...}


INVALID_SALES: list[Any] = [
    sale_body(price=49.99),
    sale_body(price=49),
    sale_body(price="49.999"),
    sale_body(price="-1.00"),
    sale_body(price="0"),
    sale_body(price="abc"),
    sale_body(price=None),
    sale_body(price=...),
    sale_body(stock="10"),
    sale_body(stock=10.0),
    sale_body(stock=True),
    sale_body(stock=0),
    sale_body(stock=-5),
    sale_body(stock=10_000_001),
    sale_body(name=""),
    sale_body(name="x" * 201),
    sale_body(name=...),
    sale_body(per_user_limit=0),
    sale_body(per_user_limit="1"),
    sale_body(opens_at="tomorrow"),
    sale_body(opens_at="2030-01-01T12:00:00"),  # no time zone
    sale_body(closes_at="2030-01-01T12:05:00"),
    sale_body(closes_at="2030-01-01T11:00:00Z"),  # before opens_at
    sale_body(closes_at="2030-01-01T12:00:00Z"),  # equal to opens_at
    sale_body(closes_at="2030-01-02T12:00:01Z"),  # longer than 24 h
    sale_body(extra="field"),
    [sale_body()],
    "a string",
    None,
]


async def test_invalid_sale_definitions_are_422(
    http: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for i, body in enumerate(INVALID_SALES):
        response = await http.put(f"/v1/admin/sales/bad-{i}", headers=admin_headers, json=body)
        assert response.status_code == 422, (body, response.text)
        assert_problem(response, 422, "invalid_request")
        assert (await http.get(f"/v1/sales/bad-{i}")).status_code == 404  # nothing was created
    malformed = await http.put(
        "/v1/admin/sales/bad-json",
        headers={**admin_headers, "Content-Type": "application/json"},
        content=b'{"name": ',
    )
    assert_problem(malformed, 422, "invalid_request")


@pytest.mark.parametrize("sale_id", ["Upper", "under_score", "-dash", "x" * 64, "café"])
async def test_creating_a_sale_with_a_malformed_id_is_422(
    http: httpx.AsyncClient, admin_headers: dict[str, str], sale_id: str
) -> None:
    response = await http.put(f"/v1/admin/sales/{sale_id}", headers=admin_headers, json=sale_body())
    assert "sale_id" in assert_problem(response, 422, "invalid_request")["detail"]


# --- 413 payload_too_large ------------------------------------------------------------------------

BIG = b'{"quantity": 1, "pad": "' + b"x" * (16 * 1024) + b'"}'


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


async def test_a_body_over_16_kib_is_413_by_content_length_and_when_chunked(
    http: httpx.AsyncClient,
    settings: Settings,
    sale_id: str,
    admin_headers: dict[str, str],
    probe: Probe,
) -> None:
    async with probe.nothing_reserved(sale_id):
        contents: list[bytes | AsyncIterator[bytes]] = [BIG, chunked(BIG)]
        for i, content in enumerate(contents):
            response = await http.post(
                order_url(sale_id), headers=headers(settings, key=f"big-{i}"), content=content
            )
            assert_problem(response, 413, "payload_too_large")
            assert "transfer-encoding" not in response.request.headers or i == 1
    for content in (BIG, chunked(BIG)):
        response = await http.put(
            f"/v1/admin/sales/{sale_id}", headers=admin_headers, content=content
        )
        assert_problem(response, 413, "payload_too_large")
    response = await http.post("/v1/auth/register", content=chunked(BIG))
    assert_problem(response, 413, "payload_too_large")


async def test_a_body_of_exactly_16_kib_is_read(
    http: httpx.AsyncClient, settings: Settings, sale_id: str
) -> None:
    body = b'{"quantity": 1}'.ljust(16 * 1024, b" ")
    response = await http.post(order_url(sale_id), headers=headers(settings), content=body)
    assert response.status_code == 202, response.text


# --- 404 sale_not_found / order_not_found ---------------------------------------------------------

MALFORMED_SALE_IDS = ["UPPER", "under_score", "-lead", "trail-", "x" * 64, "café", "a.b", "a%20b"]


async def test_unknown_and_malformed_sales_are_404_everywhere(
    http: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    for sale_id in ["no-such-sale", *MALFORMED_SALE_IDS]:
        assert_problem(await http.get(f"/v1/sales/{sale_id}"), 404, "sale_not_found")
        purchase = await http.post(order_url(sale_id), headers=headers(settings))
        assert_problem(purchase, 404, "sale_not_found")
        admin = f"/v1/admin/sales/{sale_id}"
        for method, suffix in [
            ("POST", "/open"),
            ("POST", "/close"),
            ("GET", "/stats"),
            ("DELETE", ""),
        ]:
            response = await http.request(method, admin + suffix, headers=admin_headers)
            assert_problem(response, 404, "sale_not_found")
    assert await probe.queued() == 0


async def test_unknown_malformed_and_other_peoples_orders_are_404(
    http: httpx.AsyncClient,
    settings: Settings,
    sale_id: str,
    admin_headers: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    mine = (await http.post(order_url(sale_id), headers=headers(settings, "alice"))).json()
    url = f"/v1/orders/{mine['order_id']}"
    alice, bob = bearer(settings, "alice"), bearer(settings, "bob")

    async def check_visibility() -> None:
        assert (await http.get(url, headers=alice)).json()["order_id"] == mine["order_id"]
        assert_problem(await http.get(url, headers=bob), 404, "order_not_found")
        as_admin = await http.get(url, headers=admin_headers)
        assert (as_admin.status_code, as_admin.json()["user_id"]) == (200, "alice")

    await check_visibility()  # still queued: answered from the reservation's summary
    request.getfixturevalue("workers")
    from flashsale.testing import wait_for_status

    await wait_for_status(http, alice, mine["order_id"], {"confirmed"})
    await check_visibility()  # now from PostgreSQL
    for order_id in [
        "01a2183a-6908-79c2-99c1-4894b0f8ab87",
        "not-a-uuid",
        "x" * 300,
        "00000000-0000-0000-0000-00000000000g",
        "%00",
        "*",
    ]:
        response = await http.get(f"/v1/orders/{order_id}", headers=alice)
        assert_problem(response, 404, "order_not_found")
        response = await http.get(f"/v1/orders/{order_id}", headers=admin_headers)
        assert_problem(response, 404, "order_not_found")


# --- 429 rate_limited -----------------------------------------------------------------------------


async def test_the_per_user_limit_applies_to_purchases_and_reads(
    api_with: StartApi, probe: Probe
) -> None:
    settings, client = await api_with(
        api={"rate_limit_user_per_s": 0.2, "rate_limit_user_burst": 2}
    )
    sale_id = await create_sale(
        client, bearer(settings, "admin-1", admin=True), stock=50, per_user_limit=50
    )
    user = random_user_id()
    for i in range(2):
        response = await client.post(order_url(sale_id), headers=headers(settings, user, f"k{i}"))
        assert response.status_code == 202
    async with probe.nothing_reserved(sale_id):
        limited = await client.post(order_url(sale_id), headers=headers(settings, user, "k9"))
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        for url in (f"/v1/sales/{sale_id}", "/v1/me/orders"):
            read = await client.get(url, headers=bearer(settings, user))
            assert_problem(read, 429, "rate_limited")
            assert int(read.headers["retry-after"]) >= 1
        # Another user is not affected.
        other = await client.get(f"/v1/sales/{sale_id}", headers=bearer(settings, "someone-else"))
        assert other.status_code == 200
        # Neither are the operational endpoints.
        for url in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(url)).status_code == 200


async def test_purchases_for_unknown_sales_count_against_the_limit(
    api_with: StartApi, probe: Probe
) -> None:
    settings, client = await api_with(
        api={"rate_limit_user_per_s": 0.2, "rate_limit_user_burst": 1}
    )
    user = random_user_id()
    first = await client.post(order_url("no-such-sale"), headers=headers(settings, user, "a"))
    assert_problem(first, 404, "sale_not_found")
    second = await client.post(order_url("no-such-sale"), headers=headers(settings, user, "b"))
    assert_problem(second, 429, "rate_limited")
    assert await probe.queued() == 0


async def test_the_per_address_limit_applies_across_users(api_with: StartApi, probe: Probe) -> None:
    settings, client = await api_with(
        api={"rate_limit_addr_per_s": 0.2, "rate_limit_addr_burst": 3}
    )
    sale_id = await create_sale(client, bearer(settings, "admin-1", admin=True), stock=50)
    # The PUT above was the address's first request; two more purchases use up its burst.
    for user in ("u1", "u2"):
        response = await client.post(order_url(sale_id), headers=headers(settings, user))
        assert response.status_code == 202, response.text
    async with probe.nothing_reserved(sale_id):
        limited = await client.post(order_url(sale_id), headers=headers(settings, "u3"))
        assert_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        assert_problem(await client.get(f"/v1/sales/{sale_id}"), 429, "rate_limited")
        anonymous = await client.post("/v1/auth/login", json={"email": "a@b.c", "password": "x"})
        assert_problem(anonymous, 429, "rate_limited")
        assert (await client.get("/healthz")).status_code == 200


# --- 503 overloaded -------------------------------------------------------------------------------


async def test_a_full_order_queue_sheds_load_and_reserves_nothing(
    api_with: StartApi, probe: Probe
) -> None:
    settings, client = await api_with(api={"max_queue_backlog": 3, "overloaded_retry_after_s": 4})
    sale_id = await create_sale(client, bearer(settings, "admin-1", admin=True), stock=10)
    for user in ("u1", "u2", "u3"):
        assert (
            await client.post(order_url(sale_id), headers=headers(settings, user))
        ).status_code == 202
    assert await probe.queued() == 3  # no worker runs: the backlog stays
    async with probe.nothing_reserved(sale_id):
        shed = await client.post(order_url(sale_id), headers=headers(settings, "u4"))
        assert_problem(shed, 503, "overloaded")
        assert shed.headers["retry-after"] == "4"
        # A replay is not new work: it still gets its answer.
        replay = await client.post(order_url(sale_id), headers=headers(settings, "u1"))
        assert replay.status_code == 202
        assert replay.headers["idempotent-replayed"] == "true"
    assert (await client.get(f"/v1/sales/{sale_id}")).json()["remaining"] == 7
    # The refused key is free: once the queue drains, the same request goes through.
    await probe.redis.xtrim("fs:orders", maxlen=0)
    again = await client.post(order_url(sale_id), headers=headers(settings, "u4"))
    assert again.status_code == 202, again.text


# --- 409 purchase_limit_reached / sold_out --------------------------------------------------------


async def test_purchase_limit_and_sold_out_are_409(
    http: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(http, admin_headers, stock=3, per_user_limit=3)

    async def buy(user: str, key: str, qty: int) -> httpx.Response:
        return await http.post(
            order_url(sale_id), headers=headers(settings, user, key), json={"quantity": qty}
        )

    assert (await buy("a", "1", 1)).status_code == 202
    async with probe.nothing_reserved(sale_id):
        assert_problem(await buy("a", "2", 3), 409, "purchase_limit_reached")  # 1 + 3 > 3
        assert_problem(await buy("b", "1", 3), 409, "sold_out")  # 3 asked, 2 left
    assert (await buy("b", "2", 2)).status_code == 202
    async with probe.nothing_reserved(sale_id):
        assert_problem(await buy("c", "1", 1), 409, "sold_out")


# --- register / login -----------------------------------------------------------------------------


async def test_register_then_login(http: httpx.AsyncClient) -> None:
    body = {"email": "Ada@Example.com", "password": "correct horse", "name": "Ada"}
    registered = await http.post("/v1/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    doc = registered.json()
    assert doc["user"]["email"] == "Ada@Example.com"
    assert doc["user"]["name"] == "Ada"
    assert "password" not in registered.text
    token_headers = {"Authorization": f"Bearer {doc['token']}"}
    assert (await http.get("/v1/me/orders", headers=token_headers)).status_code == 200

    taken = await http.post("/v1/auth/register", json=body | {"email": "ada@example.COM"})
    assert_problem(taken, 409, "email_taken")

    login = await http.post(
        "/v1/auth/login", json={"email": "ada@example.com", "password": "correct horse"}
    )
    assert login.status_code == 200
    claims = jwt.decode(login.json()["token"], options={"verify_signature": False})
    assert claims["sub"] == doc["user"]["user_id"]

    for wrong in (
        {"email": "ada@example.com", "password": "wrong horse"},
        {"email": "nobody@example.com", "password": "correct horse"},
    ):
        assert_problem(await http.post("/v1/auth/login", json=wrong), 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "long enough", "name": "A"},
        {"email": "a@b.c", "password": "short", "name": "A"},
        {"email": "a@b.c", "password": "long enough", "name": ""},
        {"email": "a@b.c", "password": "long enough"},
        {"email": "a@b.c", "password": "long enough", "name": "A", "role": "admin"},
        {"email": 5, "password": "long enough", "name": "A"},
        [],
    ],
)
async def test_invalid_registrations_are_422(http: httpx.AsyncClient, body: Any) -> None:
    assert_problem(await http.post("/v1/auth/register", json=body), 422, "invalid_request")


async def test_invalid_logins_are_422(http: httpx.AsyncClient) -> None:
    for body in ({"email": "a@b.c"}, {"password": "x"}, {"email": "", "password": "x"}, "x"):
        assert_problem(await http.post("/v1/auth/login", json=body), 422, "invalid_request")


# --- GET /v1/me/orders ----------------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
async def test_my_orders_are_paginated_newest_first(
    http: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_sale(http, admin_headers, stock=20, per_user_limit=10)
    placed = []
    for i in range(7):
        response = await http.post(order_url(sale_id), headers=headers(settings, "alice", f"k{i}"))
        placed.append(response.json()["order_id"])
    await http.post(order_url(sale_id), headers=headers(settings, "bob", "k"))
    await probe.wait_settled(sale_id, 8)

    alice = bearer(settings, "alice")
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = []
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/me/orders", headers=alice, params=params)).json()
        pages.append(len(page["orders"]))
        seen += page["orders"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [3, 3, 1]
    assert sorted(o["order_id"] for o in seen) == sorted(placed)
    assert {o["user_id"] for o in seen} == {"alice"}
    keys = [(o["created_at"], o["order_id"]) for o in seen]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by id, no duplicates
    first = seen[0]
    assert set(first) == {
        "order_id", "sale_id", "user_id", "quantity", "status", "failure_reason",
        "created_at", "updated_at",
    }  # fmt: skip
    everything = (await http.get("/v1/me/orders", headers=alice)).json()
    assert (len(everything["orders"]), everything["next_cursor"]) == (7, None)  # default limit 20


def cursor_of(doc: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).decode().rstrip("=")


BAD_CURSORS = [
    "garbage",
    "!!!",
    "x" * 201,
    cursor_of({"a": 1, "b": 2}),
    cursor_of(5),
    cursor_of(["2026-01-01T00:00:00+00:00"]),
    cursor_of(["2026-01-01T00:00:00+00:00", 123]),
    cursor_of(["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
    cursor_of([20260101, "01a2183a-6908-79c2-99c1-4894b0f8ab87"]),
    cursor_of(["yesterday", "01a2183a-6908-79c2-99c1-4894b0f8ab87"]),
    cursor_of(["0001-01-01T00:00:00+05:00", "01a2183a-6908-79c2-99c1-4894b0f8ab87"]),
    cursor_of(["2026-01-01T00:00:00+00:00", "01a2183a-6908-79c2-99c1-4894b0f8ab87", "x"]),
]


async def test_bad_cursors_and_limits_are_422(http: httpx.AsyncClient, settings: Settings) -> None:
    alice = bearer(settings, "alice")
    for cursor in BAD_CURSORS:
        response = await http.get("/v1/me/orders", headers=alice, params={"cursor": cursor})
        assert response.status_code == 422, (cursor, response.text)
        assert_problem(response, 422, "invalid_request")
    for limit in ("0", "101", "-1", "ten", "1.5"):
        response = await http.get("/v1/me/orders", headers=alice, params={"limit": limit})
        assert_problem(response, 422, "invalid_request")


# --- operational endpoints ------------------------------------------------------------------------


async def test_health_readiness_metrics_and_docs(
    http: httpx.AsyncClient, settings: Settings, sale_id: str
) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    await http.post(order_url(sale_id), headers=headers(settings))
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "flashsale_purchase_attempts_total" in metrics.text
    assert 'outcome="reserved"' in metrics.text
    docs = await http.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    spec = (await http.get("/openapi.json")).json()
    purchase = spec["paths"]["/v1/sales/{sale_id}/orders"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in purchase["parameters"])
    for path in ("/v1/sales/{sale_id}", "/v1/orders/{order_id}", "/v1/me/orders",
                 "/v1/admin/sales/{sale_id}", "/v1/auth/register", "/v1/auth/login"):  # fmt: skip
        assert path in spec["paths"]


async def test_unknown_routes_and_methods_are_problems(
    http: httpx.AsyncClient, sale_id: str
) -> None:
    assert_problem(await http.get("/no/such/route"), 404, "not_found")
    assert_problem(await http.delete(f"/v1/sales/{sale_id}"), 405, "method_not_allowed")
    assert_problem(await http.get(order_url(sale_id)), 405, "method_not_allowed")


async def test_a_redis_outage_answers_503_problems_never_500(api_with: StartApi) -> None:
    settings, client = await api_with(redis={"url": "redis://127.0.0.1:9/0", "socket_timeout_s": 1})
    ready = await client.get("/readyz")
    assert "redis" in assert_problem(ready, 503, "not_ready")["detail"]
    assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
    purchase = await client.post(order_url("some-sale"), headers=headers(settings))
    assert_problem(purchase, 503, "store_unavailable")
    assert purchase.headers["retry-after"] == "1"
    assert_problem(await client.get("/v1/sales/some-sale"), 503, "store_unavailable")
    # Reading one's orders needs only PostgreSQL, but every route passes the rate limiter, which
    # lives in Redis: a 503 as well, never a 500.
    mine = await client.get("/v1/me/orders", headers=bearer(settings, "alice"))
    assert_problem(mine, 503, "store_unavailable")
