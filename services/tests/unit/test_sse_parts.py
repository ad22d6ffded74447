"""The small parts of the SSE server: frame encoding (sse/frames.py), order clients and their bound
(sse/clients.py), connection limits (sse/limits.py), the reconnect backoff (sse/feed.py) and the
token lookup of /v1/me/events (sse/app.py). No I/O."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from flashsale import errors
from flashsale.sse import app, clients, feed, frames, limits


def test_event_frames_are_one_json_line_with_an_id() -> None:
    frame = frames.event("stock", {"remaining": 3, "note": "a\nb"}, event_id=7)

    assert frame == b'event: stock\nid: 7\ndata: {"remaining":3,"note":"a\\nb"}\n\n'
    assert frames.event("order", {"x": 1}) == b'event: order\ndata: {"x":1}\n\n'


def test_retry_field_is_spread_over_the_range() -> None:
    rng = random.Random(1)
    values = {int(frames.retry_field(rng).split()[1]) for _ in range(200)}

    assert min(values) >= frames.RETRY_MIN_MS
    assert max(values) <= frames.RETRY_MAX_MS
    assert len(values) > 100


def test_order_frame_keeps_only_the_public_fields() -> None:
    doc = {"user_id": "u1", "order_id": "o1", "sale_id": "s1", "status": "failed",
           "failure_reason": "card_declined"}  # fmt: skip

    data = orjson.loads(frames.order_frame(doc).split(b"data: ")[1])

    assert data == {"order_id": "o1", "sale_id": "s1", "status": "failed",
                    "failure_reason": "card_declined"}  # fmt: skip


async def test_order_client_delivers_in_order_and_resyncs_past_its_bound() -> None:
    client = clients.OrderClient("a", user_id="u1", expires_at=0)
    client.push(b"one", ready_at=0.0)
    client.push(b"two", ready_at=0.0)
    await client.wait()  # something is due: returns at once

    assert client.take(1.0) == b"onetwo"

    for _ in range(clients.ORDER_QUEUE_MAX + 1):
        client.push(b"x", ready_at=0.0)
    body = client.take(1.0)
    assert body.startswith(b"event: resync\n")
    assert body.count(b"x") <= 1  # the backlog was dropped for the resync event


async def test_a_waiting_writer_is_woken_by_a_mark_and_by_close() -> None:
    client = clients.OrderClient("a", user_id="u1", expires_at=0)
    waiter = asyncio.ensure_future(client.wait())
    await asyncio.sleep(0)
    assert not waiter.done()

    client.mark(clients.HEARTBEAT)
    await asyncio.wait_for(waiter, 1)
    assert client.take(0.0) == frames.HEARTBEAT

    waiter = asyncio.ensure_future(client.wait())
    await asyncio.sleep(0)
    client.close()
    await asyncio.wait_for(waiter, 1)
    assert client.finished


def test_limits_count_per_process_and_per_address() -> None:
    bound = limits.ConnectionLimits(max_clients=3, max_per_addr=2)

    assert bound.acquire("a") is None
    assert bound.acquire("a") is None
    assert bound.acquire("a") == limits.ADDRESS_FULL
    assert bound.acquire("b") is None
    assert bound.acquire("c") == limits.PROCESS_FULL
    bound.release("a")
    assert bound.acquire("a") is None
    for addr in ("a", "a", "b"):
        bound.release(addr)
    assert bound.total == 0
    assert bound.held("a") == 0


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    rng = random.Random(3)
    delays = [feed.backoff_delay(n, rng) for n in range(12)]

    assert delays[0] <= feed.BACKOFF_BASE_S
    assert max(delays) <= feed.BACKOFF_CAP_S
    assert delays[-1] >= feed.BACKOFF_CAP_S / 2


@pytest.mark.parametrize(
    ("headers", "query", "token"),
    [
        ([(b"authorization", b"Bearer abc")], b"", "abc"),
        ([(b"authorization", b"bearer  abc ")], b"", "abc"),
        ([], b"access_token=xyz", "xyz"),
    ],
)
def test_bearer_token_from_header_or_query(
    headers: list[tuple[bytes, bytes]], query: bytes, token: str
) -> None:
    assert app._bearer({"headers": headers, "query_string": query}) == token


@pytest.mark.parametrize(
    ("headers", "query"),
    [([], b""), ([(b"authorization", b"Basic abc")], b""), ([], b"access_token=")],
)
def test_missing_bearer_token_is_unauthenticated(
    headers: list[tuple[bytes, bytes]], query: bytes
) -> None:
    with pytest.raises(errors.Unauthenticated):
        app._bearer({"headers": headers, "query_string": query})
