"""The waiting room over real HTTP against real Valkey and PostgreSQL: settings in the sale, joins
(idempotent, before the opening too), FIFO order under concurrent joins, the pass a purchase needs
(and every way of not holding one), the sold-out pause and the resume when a failed payment returns
a unit, a restart of every process that loses no ticket and admits nobody twice, the admission
rate, an idle queue that banks no slots, and a sale without a waiting room that behaves as before.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import jwt
import pytest

from flashsale import config
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.passes import Passes
from flashsale.adapters.redis_queue import RedisQueue
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.config import Settings
from flashsale.testing import bearer, buy, create_sale, random_sale_id, wait_for_status

from .conftest import GatewayControl, Probe

NO_LIMITS = config.ApiSettings(rate_limit_user_per_s=0, rate_limit_addr_per_s=0)


async def create_room_sale(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    *,
    stock: int = 10,
    opens_in_s: float = -1.0,
    duration_s: float = 300.0,
    mode: str = "fifo",
    rate: int = 100,
    session_s: int = 60,
) -> str:
    room = {"enabled": True, "mode": mode, "admit_per_second": rate, "session_seconds": session_s}
    return await create_sale(
        client, admin, stock=stock, opens_in_s=opens_in_s, duration_s=duration_s,
        name="Queued sneaker", waiting_room=room,
    )  # fmt: skip


async def join(
    client: httpx.AsyncClient, settings: Settings, sale_id: str, user: str
) -> httpx.Response:
    return await client.post(f"/v1/sales/{sale_id}/queue", headers=bearer(settings, user))


async def buy_with(
    client: httpx.AsyncClient,
    settings: Settings,
    sale_id: str,
    user: str,
    key: str,
    admission_pass: str | None,
) -> httpx.Response:
    headers = {**bearer(settings, user), "Idempotency-Key": key}
    if admission_pass is not None:
        headers["Admission-Pass"] = admission_pass
    return await client.post(f"/v1/sales/{sale_id}/orders", headers=headers, json={})


async def admitted_pass(
    client: httpx.AsyncClient, settings: Settings, sale_id: str, user: str, *, within_s: float = 10
) -> dict[str, Any]:
    """Poll POST /queue (as a buyer without EventSource would) until admitted; the 202 body."""
    deadline = time.monotonic() + within_s
    while True:
        response = await join(client, settings, sale_id, user)
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        if "pass" in body:
            return body
        assert time.monotonic() < deadline, f"{user} not admitted within {within_s} s: {body}"
        await asyncio.sleep(0.02)


async def admin_queue(
    client: httpx.AsyncClient, admin: dict[str, str], sale_id: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/admin/sales/{sale_id}/queue", headers=admin)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def tickets_of(probe: Probe, sale_id: str) -> dict[str, str]:
    """The tickets hash, read straight from Redis: user -> "seq:joined_ms:admitted_ms"."""
    return cast(dict[str, str], await probe.redis.hgetall(keys.queue_tickets(sale_id)))


# --- off by default -------------------------------------------------------------------------------


async def test_a_sale_without_a_waiting_room_behaves_as_before(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = random_sale_id()
    opens = datetime.now(UTC) - timedelta(seconds=1)
    put = await client.put(
        f"/v1/admin/sales/{sale_id}",
        headers=admin_headers,
        json={"name": "Plain", "price": "5.00", "stock": 3, "opens_at": opens.isoformat()},
    )
    assert put.status_code == 201
    assert "waiting_room" not in put.json()
    assert "waiting_room" not in (await client.get(f"/v1/sales/{sale_id}")).json()

    refused = await join(client, settings, sale_id, "u1")
    assert refused.status_code == 409
    assert refused.json()["code"] == "waiting_room_disabled"
    assert refused.headers["content-type"] == "application/problem+json"
    bought = await buy(client, settings, sale_id, "u1", "k1")  # no pass needed
    assert bought.status_code == 202, bought.text
    view = await client.get(f"/v1/admin/sales/{sale_id}/queue", headers=admin_headers)
    assert view.status_code == 409


async def test_the_settings_show_in_the_sale_and_bad_ones_are_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_room_sale(client, admin_headers, mode="random", rate=7, session_s=45)
    doc = (await client.get(f"/v1/sales/{sale_id}")).json()
    assert doc["waiting_room"] == {
        "enabled": True, "mode": "random", "admit_per_second": 7, "session_seconds": 45,
    }  # fmt: skip
    for room in (
        {"enabled": True, "admit_per_second": 0},
        {"enabled": True, "session_seconds": 9},
        {"enabled": True, "mode": "lottery"},
        {"enabled": True, "admit_per_second": 1.5},
        {"enabled": True, "surprise": 1},
    ):
        response = await client.put(
            f"/v1/admin/sales/{sale_id}",
            headers=admin_headers,
            json={"name": "x", "price": "1.00", "stock": 10, "waiting_room": room},
        )
        assert response.status_code == 422, (room, response.text)
        assert response.json()["code"] == "invalid_request"
    # `enabled: false` (or no waiting_room at all) switches it off
    off = await client.put(
        f"/v1/admin/sales/{sale_id}",
        headers=admin_headers,
        json={"name": "x", "price": "1.00", "stock": 10, "waiting_room": {"enabled": False}},
    )
    assert off.status_code == 200
    assert "waiting_room" not in off.json()


# --- joining --------------------------------------------------------------------------------------


async def test_joining_is_idempotent_and_allowed_before_the_opening(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_room_sale(client, admin_headers, opens_in_s=30, rate=10)
    first = await join(client, settings, sale_id, "alice")
    assert first.status_code == 202, first.text
    body = first.json()
    assert set(body) == {"ticket", "position", "estimated_wait_s"}
    assert body["position"] == 1
    assert 29 <= body["estimated_wait_s"] <= 31  # the opening, then a tenth of a second
    assert 14 <= int(first.headers["retry-after"]) <= 16  # half the wait (the opening, 30 s)
    claims = jwt.decode(body["ticket"], options={"verify_signature": False})
    assert claims["typ"] == "ticket"
    assert (claims["sub"], claims["sale"], claims["seq"]) == ("alice", sale_id, 1)

    again = await join(client, settings, sale_id, "alice")
    assert again.json()["ticket"] == body["ticket"]
    assert again.json()["position"] == 1
    assert (await join(client, settings, sale_id, "bob")).json()["position"] == 2

    assert (await client.post(f"/v1/sales/{sale_id}/queue")).status_code == 401
    unknown = await join(client, settings, "no-such-sale", "alice")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "sale_not_found")
    closed = await create_room_sale(client, admin_headers)
    await client.post(f"/v1/admin/sales/{closed}/close", headers=admin_headers)
    refused = await join(client, settings, closed, "alice")
    assert (refused.status_code, refused.json()["code"]) == (409, "sale_closed")


async def test_fifo_order_holds_exactly_under_concurrent_joins(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    users, rate = 90, 20
    sale_id = await create_room_sale(client, admin_headers, opens_in_s=3, rate=rate)
    # Three waves, each of 30 concurrent joins; a wave starts when the one before is answered.
    seq_of: dict[str, int] = {}
    for wave in range(3):
        batch = [f"w{wave}-u{i}" for i in range(users // 3)]
        answers = await asyncio.gather(*(join(client, settings, sale_id, u) for u in batch))
        for user, answer in zip(batch, answers, strict=True):
            assert answer.status_code == 202, answer.text
            seq_of[user] = answer.json()["position"]  # before the opening: position == seq
        assert min(seq_of[u] for u in batch) == wave * len(batch) + 1
    assert sorted(seq_of.values()) == list(range(1, users + 1))  # no gap, no duplicate
    tickets = await tickets_of(probe, sale_id)
    assert {u: int(t.split(":")[0]) for u, t in tickets.items()} == seq_of

    # While admission runs, each round of looks sees exactly a prefix of the join order: everyone
    # up to the count admitted before the round is admitted, nobody past the count after it.
    by_seq = sorted(seq_of, key=seq_of.__getitem__)
    rounds = 0
    while True:
        before = (await admin_queue(client, admin_headers, sale_id))["admitted"]
        answers = await asyncio.gather(*(join(client, settings, sale_id, u) for u in by_seq))
        after = (await admin_queue(client, admin_headers, sale_id))["admitted"]
        admitted = [seq_of[u] for u, a in zip(by_seq, answers, strict=True) if "pass" in a.json()]
        assert set(range(1, before + 1)) <= set(admitted), (before, after)
        assert max(admitted, default=0) <= after
        rounds += 1
        if len(admitted) == users:
            break
        assert rounds < 100
        await asyncio.sleep(0.1)
    assert rounds >= 3  # admission was spread over several rounds


# --- the pass -------------------------------------------------------------------------------------


async def test_no_purchase_without_a_valid_pass(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_room_sale(client, admin_headers, rate=1000)
    other_sale = await create_room_sale(client, admin_headers, rate=1000)
    alice = (await admitted_pass(client, settings, sale_id, "alice"))["pass"]
    bob = (await admitted_pass(client, settings, sale_id, "bob"))["pass"]
    elsewhere = (await admitted_pass(client, settings, other_sale, "alice"))["pass"]
    passes = Passes(settings.auth)
    expired = passes.mint_pass(user_id="alice", sale_id=sale_id, expires_at_s=int(time.time()) - 5)
    forged = jwt.encode(
        {"typ": "pass", "sub": "alice", "sale": sale_id, "exp": int(time.time()) + 60},
        "not-the-secret-" * 3,
        algorithm="HS256",
    )
    no_typ = jwt.encode(
        {"sub": "alice", "sale": sale_id, "exp": int(time.time()) + 60},
        settings.auth.jwt_secret,
        algorithm="HS256",
    )
    bearer_token = bearer(settings, "alice")["Authorization"].split()[1]
    for what, token in [
        ("missing", None), ("expired", expired), ("another user's", bob),
        ("another sale's", elsewhere), ("forged", forged), ("without typ", no_typ),
        ("a bearer token", bearer_token), ("garbage", "not.a.jwt"),
    ]:  # fmt: skip
        key = f"k-{what.replace(' ', '-').replace(chr(39), '')}"
        refused = await buy_with(client, settings, sale_id, "alice", key, token)
        assert refused.status_code == 403, (what, refused.text)
        assert refused.json()["code"] == "not_admitted", what

    won = await buy_with(client, settings, sale_id, "alice", "k-real", alice)
    assert won.status_code == 202, won.text
    # The script's order: a replay of a won 202 replays, pass or not.
    replay = await buy_with(client, settings, sale_id, "alice", "k-real", None)
    assert replay.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == won.json()
    # A pass is not a login, nor a ticket.
    as_bearer = await client.get("/v1/me/orders", headers={"Authorization": f"Bearer {alice}"})
    assert as_bearer.status_code == 401


async def test_the_pass_expiry_is_fixed_when_first_issued(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_room_sale(client, admin_headers, rate=1000, session_s=10)
    first = await admitted_pass(client, settings, sale_id, "alice")
    seen_at = time.time()
    await asyncio.sleep(1.1)
    again = (await join(client, settings, sale_id, "alice")).json()
    assert (again["pass"], again["expires_at"]) == (first["pass"], first["expires_at"])
    claims = jwt.decode(first["pass"], options={"verify_signature": False})
    assert claims["typ"] == "pass"
    assert (claims["sub"], claims["sale"]) == ("alice", sale_id)
    # exp = the first admission's second + the session (1 s of rounding, 2 s of a loaded box)
    assert seen_at - 3 <= claims["exp"] - 10 <= seen_at


async def test_an_expired_pass_rejoins_at_the_back(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str], probe: Probe
) -> None:
    sale_id = await create_room_sale(client, admin_headers, rate=1000, session_s=10)
    first = await admitted_pass(client, settings, sale_id, "alice")
    await join(client, settings, sale_id, "bob")
    # Age alice's admission past her session, as 10 s of waiting would.
    seq, joined_ms, admitted_ms = (await tickets_of(probe, sale_id))["alice"].split(":")
    await probe.redis.hset(
        keys.queue_tickets(sale_id), "alice", f"{seq}:{joined_ms}:{int(admitted_ms) - 11_000}"
    )
    rejoined = (await join(client, settings, sale_id, "alice")).json()
    claims = jwt.decode(rejoined["ticket"], options={"verify_signature": False})
    assert claims["seq"] == 3  # behind bob
    assert rejoined["ticket"] != first["ticket"]


# --- sold out, resume, restart --------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
async def test_sold_out_pauses_admission_and_a_returned_unit_resumes_it(
    client: httpx.AsyncClient,
    settings: Settings,
    admin_headers: dict[str, str],
    gw: GatewayControl,
) -> None:
    # The one purchase fails, a second later: its unit comes back then.
    await gw.set_model(decline_rate=1.0, latency_median_ms=1000, latency_p95_ms=1100)
    sale_id = await create_room_sale(client, admin_headers, stock=1, rate=20, opens_in_s=1)
    for user in ("alice", "bob", "carol"):
        await join(client, settings, sale_id, user)
    alice = await admitted_pass(client, settings, sale_id, "alice")
    bought = await buy_with(client, settings, sale_id, "alice", "k1", alice["pass"])
    assert bought.status_code == 202
    room = await admin_queue(client, admin_headers, sale_id)
    assert room["paused"] is True
    frozen = room["admitted"]
    # Sold out: bob and carol are told, nobody new joins, and admission stands still.
    refused = await join(client, settings, sale_id, "bob")
    assert (refused.status_code, refused.json()["code"]) == (409, "sold_out")
    assert (await join(client, settings, sale_id, "dave")).json()["code"] == "sold_out"
    await asyncio.sleep(0.3)  # 6 slots at 20/s, had it gone on
    assert (await admin_queue(client, admin_headers, sale_id))["admitted"] == frozen

    order_id = bought.json()["order_id"]
    await wait_for_status(client, bearer(settings, "alice"), order_id, {"failed"})
    await _until_resumed(client, admin_headers, sale_id)
    carol = await admitted_pass(client, settings, sale_id, "carol")
    bob = await admitted_pass(client, settings, sale_id, "bob")
    won = await buy_with(client, settings, sale_id, "bob", "k2", bob["pass"])
    assert won.status_code == 202, won.text
    late = await buy_with(client, settings, sale_id, "carol", "k3", carol["pass"])
    assert (late.status_code, late.json()["code"]) == (409, "sold_out")


async def _until_resumed(client: httpx.AsyncClient, admin: dict[str, str], sale_id: str) -> None:
    deadline = time.monotonic() + 10
    while (await admin_queue(client, admin, sale_id))["paused"]:
        assert time.monotonic() < deadline, "admission did not resume"
        await asyncio.sleep(0.05)


async def test_a_restart_loses_no_ticket_and_admits_nobody_twice(
    settings: Settings, admin_headers: dict[str, str], api_with: Any, probe: Probe
) -> None:
    """Every process is dropped and made anew (the API server, its clients and pools); Redis keeps
    its state, which is all the waiting room has."""
    users, rate = 40, 10
    _, first = await api_with()
    sale_id = await create_room_sale(first, admin_headers, rate=rate, opens_in_s=0.5)
    before = {u: (await join(first, settings, sale_id, u)).json() for u in map(str, range(users))}
    await asyncio.sleep(1.0)  # about half are admitted by now
    seen = {u: (await join(first, settings, sale_id, u)).json() for u in before}
    admitted_before = {u for u, b in seen.items() if "pass" in b}
    assert 0 < len(admitted_before) < users
    room_before = await admin_queue(first, admin_headers, sale_id)

    _, second = await api_with()  # a new process: nothing in memory, same Redis
    room_after = await admin_queue(second, admin_headers, sale_id)
    assert room_after["joined"] == users
    assert room_after["admitted"] >= room_before["admitted"]  # the count went on, not back
    after = {u: (await join(second, settings, sale_id, u)).json() for u in before}
    for user, body in after.items():
        assert body["ticket"] == before[user]["ticket"], user  # nobody lost their place
        if user in admitted_before:  # the same pass, not a new one with a later expiry
            assert (body["pass"], body["expires_at"]) == (
                seen[user]["pass"], seen[user]["expires_at"],
            )  # fmt: skip
    # Nobody admitted twice: each admitted ticket was stamped once, in join order.
    tickets = await tickets_of(probe, sale_id)
    stamps = sorted((int(t.split(":")[0]), int(t.split(":")[2])) for t in tickets.values())
    assert len(stamps) == users
    admitted_seqs = [seq for seq, stamp in stamps if stamp]
    assert admitted_seqs == list(range(1, len(admitted_seqs) + 1))
    assert len(admitted_seqs) <= (await admin_queue(second, admin_headers, sale_id))["admitted"]


# --- the schedule ---------------------------------------------------------------------------------


@pytest.fixture
async def queue_store(settings: Settings) -> Any:
    stock = RedisStock(connect(settings.redis), api=NO_LIMITS)
    yield stock, RedisQueue(stock)
    await stock.client.aclose()


async def test_the_admission_rate_is_within_5_percent_of_the_setting(
    client: httpx.AsyncClient, admin_headers: dict[str, str], queue_store: Any
) -> None:
    rate, users = 1000, 5000
    _, queue = queue_store
    sale_id = await create_room_sale(client, admin_headers, rate=rate, opens_in_s=4)
    for start in range(0, users, 1000):  # joined before the opening: the queue never runs dry
        await asyncio.gather(
            *(
                queue.join(sale_id=sale_id, user_id=f"u{i}", client_addr="t")
                for i in range(start, start + 1000)
            )
        )
    room = await queue.state(sale_id)
    await asyncio.sleep(max(0.0, (room.schedule.opens_ms - room.now_ms) / 1000) + 0.2)
    samples = [await queue.state(sale_id)]
    for _ in range(4):
        await asyncio.sleep(0.5)
        samples.append(await queue.state(sale_id))
    for a, b in zip(samples, samples[1:], strict=False):
        measured = (b.admitted - a.admitted) / ((b.now_ms - a.now_ms) / 1000)
        assert abs(measured - rate) <= 0.05 * rate, (measured, rate)
    assert samples[-1].admitted < users


async def test_an_idle_queue_banks_no_slots(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_room_sale(client, admin_headers, rate=10, opens_in_s=-5)
    # Open for 5 s at 10/s with nobody queued: 50 unused slots, which must not go to this crowd.
    started = time.monotonic()
    answers = await asyncio.gather(*(join(client, settings, sale_id, f"c{i}") for i in range(30)))
    room = await admin_queue(client, admin_headers, sale_id)
    elapsed = time.monotonic() - started
    assert room["joined"] == 30
    # The first joiner at once, then 10/s, from the first join on.
    assert room["admitted"] <= 1 + 10 * elapsed + 1, (room, elapsed)
    assert sum("pass" in a.json() for a in answers) <= room["admitted"]
    assert all(a.json()["position"] >= 0 for a in answers)


async def test_switching_the_room_off_lets_buyers_in_and_the_mode_is_locked_by_the_draw(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_room_sale(client, admin_headers, mode="random", rate=1)
    await join(client, settings, sale_id, "alice")  # the first operation after opening: the draw
    locked = await client.put(
        f"/v1/admin/sales/{sale_id}",
        headers=admin_headers,
        json={"name": "x", "price": "1.00", "stock": 10, "waiting_room": {"enabled": True}},
    )
    assert (locked.status_code, locked.json()["code"]) == (409, "sale_in_progress")
    refused = await buy_with(client, settings, sale_id, "zed", "k1", None)
    assert refused.status_code == 403
    off = await client.put(
        f"/v1/admin/sales/{sale_id}",
        headers=admin_headers,
        json={"name": "x", "price": "1.00", "stock": 10},
    )
    assert off.status_code == 200
    bought = await buy_with(client, settings, sale_id, "zed", "k1", None)
    assert bought.status_code == 202, bought.text
