"""The SSE hub and its clients (sse/hub.py, sse/clients.py) on a fake clock: coalescing with a
leading and a trailing edge, state changes at once, timers at opens_at/closes_at, stale messages,
slow clients that skip to the latest value, deletion and recreation. No I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from flashsale import errors
from flashsale.domain.sales import SaleSnapshot
from flashsale.sse import clients, hub

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WINDOW = 0.25


@dataclass
class _Timer:
    at: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeClock:
    now: float = 100.0
    timers: list[_Timer] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.now - 100.0)

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on, firing due timers in order (timers may schedule more)."""
        end = self.now + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.at <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.at)
            self.timers.remove(timer)
            self.now = max(self.now, timer.at)
            timer.callback()
        self.now = end


def _snapshot(
    *, remaining: int = 10, seq: int = 1, opens: float = -60, closes: float = 300
) -> SaleSnapshot:
    return SaleSnapshot(
        sale_id="s1",
        name="Shoe",
        price=Decimal("9.99"),
        initial_stock=10,
        remaining=remaining,
        opens_at=T0 + timedelta(seconds=opens),
        closes_at=T0 + timedelta(seconds=closes),
        per_user_limit=1,
        seq=seq,
    )


class Reader:
    """Fetches snapshots from a list (or raises what is in it)."""

    def __init__(self, *answers: SaleSnapshot | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, sale_id: str) -> SaleSnapshot:
        assert sale_id == "s1"
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def _hub(
    clock: FakeClock, reader: Reader, gone: list[hub.SaleHub] | None = None
) -> hub.SaleHub:
    sale_hub = hub.SaleHub(
        "s1",
        clock=clock,
        coalesce_s=WINDOW,
        fetch=reader,
        on_gone=(gone if gone is not None else []).append,
    )
    sale_hub.start()
    await sale_hub.ready
    return sale_hub


def _join(sale_hub: hub.SaleHub) -> clients.SaleClient:
    client = clients.SaleClient("127.0.0.1", sale_hub)
    sale_hub.clients.add(client)
    return client


def _events(body: bytes) -> list[tuple[str, int | None, dict[str, object]]]:
    """Parse frames into (event, id, data)."""
    out = []
    for block in body.decode().split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        event_id = int(fields["id"]) if "id" in fields else None
        out.append((fields["event"], event_id, orjson.loads(fields["data"])))
    return out


async def test_first_take_is_the_sale_document_with_the_seq_as_id() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(remaining=7, seq=4)))
    client = _join(sale_hub)

    [(name, event_id, doc)] = _events(client.take(clock.now))

    assert (name, event_id) == ("sale", 4)
    assert doc["remaining"] == 7
    assert doc["state"] == "open"
    assert doc["price"] == "9.99"
    assert doc["opens_at"] == "2026-01-01T11:59:00.000Z"
    assert client.take(clock.now) == b""


async def test_stock_has_a_leading_edge_then_one_trailing_tick_per_window() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(remaining=100, seq=1)))
    client = _join(sale_hub)
    client.take(clock.now)

    sale_hub.on_stock(99, 2, received_at=clock.now)  # leading edge: at once
    assert _events(client.take(clock.now)) == [
        ("stock", 2, {"remaining": 99, "state": "open", "seq": 2})
    ]
    for i in range(3, 53):  # 50 more within the window: held back
        clock.advance(0.002)
        sale_hub.on_stock(101 - i, i, received_at=clock.now)
    assert client.take(clock.now) == b""

    clock.advance(WINDOW)  # the trailing tick carries the latest value
    assert _events(client.take(clock.now)) == [
        ("stock", 52, {"remaining": 49, "state": "open", "seq": 52})
    ]
    clock.advance(WINDOW * 4)
    assert client.take(clock.now) == b""


async def test_state_changes_go_out_at_once_and_carry_the_stock() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(remaining=2, seq=1)))
    client = _join(sale_hub)
    client.take(clock.now)
    sale_hub.on_stock(1, 2, received_at=clock.now)
    client.take(clock.now)

    sale_hub.on_stock(0, 3, received_at=clock.now + 0.01)  # inside the window: still at once
    assert _events(client.take(clock.now)) == [
        ("state", 3, {"state": "sold_out", "remaining": 0, "seq": 3})
    ]
    sale_hub.on_stock(1, 4, received_at=clock.now)  # a failed payment returned a unit
    assert _events(client.take(clock.now)) == [
        ("state", 4, {"state": "open", "remaining": 1, "seq": 4})
    ]
    clock.advance(WINDOW)
    assert client.take(clock.now) == b""  # nothing newer than what the state events carried


async def test_a_slow_client_gets_only_the_latest_values() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(remaining=3, seq=1)))
    client = _join(sale_hub)
    client.take(clock.now)

    # While the client is not writing: sold out, a unit back, many ticks.
    for remaining, seq in ((2, 2), (1, 3), (0, 4), (1, 5)):
        sale_hub.on_stock(remaining, seq, received_at=clock.now)
        clock.advance(WINDOW)

    events = _events(client.take(clock.now))
    # Its state is open again, as it last saw: one stock event with the latest value suffices.
    assert events == [("stock", 5, {"remaining": 1, "state": "open", "seq": 5})]


async def test_messages_older_than_the_snapshot_are_ignored() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(remaining=5, seq=10)))
    client = _join(sale_hub)
    client.take(clock.now)

    sale_hub.on_stock(6, 9, received_at=clock.now)
    sale_hub.on_stock(5, 10, received_at=clock.now)
    clock.advance(1)

    assert client.take(clock.now) == b""
    assert sale_hub.remaining == 5


async def test_timers_open_and_close_the_sale_and_reuse_the_latest_seq() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(seq=3, opens=5, closes=10)))
    client = _join(sale_hub)
    assert _events(client.take(clock.now))[0][2]["state"] == "scheduled"

    clock.advance(5.01)
    assert _events(client.take(clock.now)) == [
        ("state", 3, {"state": "open", "remaining": 10, "seq": 3})
    ]
    clock.advance(5)
    assert _events(client.take(clock.now)) == [
        ("state", 3, {"state": "closed", "remaining": 10, "seq": 3})
    ]
    assert not [t for t in clock.timers if not t.cancelled]  # nothing left to wait for


async def test_a_definition_change_sends_a_new_document_and_the_state() -> None:
    clock = FakeClock()
    reader = Reader(_snapshot(seq=3), _snapshot(seq=4, closes=0))  # an admin closed it
    sale_hub = await _hub(clock, reader)
    client = _join(sale_hub)
    client.take(clock.now)

    sale_hub.on_sale_changed(4)
    await asyncio.sleep(0)  # the re-read runs as a task

    events = _events(client.take(clock.now))
    assert [(name, event_id) for name, event_id, _ in events] == [("state", 4), ("sale", 4)]
    assert events[0][2]["state"] == "closed"
    assert reader.calls == 2


async def test_messages_during_the_first_read_are_not_lost() -> None:
    clock = FakeClock()
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_read(sale_id: str) -> SaleSnapshot:
        assert sale_id == "s1"
        started.set()
        await release.wait()
        return _snapshot(remaining=10, seq=1)  # read before the reservation below

    sale_hub = hub.SaleHub("s1", clock=clock, coalesce_s=WINDOW, fetch=slow_read, on_gone=print)
    sale_hub.start()
    await started.wait()
    sale_hub.on_stock(9, 2, received_at=clock.now)  # arrives before the read's answer
    release.set()
    await sale_hub.ready

    client = _join(sale_hub)
    assert _events(client.take(clock.now))[0][2]["remaining"] == 9


async def test_deletion_ends_every_stream_with_closed_then_deleted() -> None:
    clock = FakeClock()
    gone: list[hub.SaleHub] = []
    sale_hub = await _hub(clock, Reader(_snapshot(seq=2)), gone)
    client = _join(sale_hub)
    client.take(clock.now)

    sale_hub.end()

    events = _events(client.take(clock.now))
    assert [name for name, _, _ in events] == ["state", "deleted"]
    assert events[0][2]["state"] == "closed"
    assert client.finished
    assert gone == [sale_hub]


async def test_deleting_a_closed_sale_sends_only_deleted() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(seq=2, closes=1)))
    client = _join(sale_hub)
    client.take(clock.now)
    clock.advance(2)
    assert _events(client.take(clock.now))[0][2]["state"] == "closed"

    sale_hub.end()

    assert [name for name, _, _ in _events(client.take(clock.now))] == ["deleted"]


async def test_a_sale_created_anew_under_the_same_id_ends_the_old_streams() -> None:
    clock = FakeClock()
    sale_hub = await _hub(clock, Reader(_snapshot(seq=9), _snapshot(seq=1)))
    client = _join(sale_hub)
    client.take(clock.now)
    sale_hub.on_stock(8, 10, received_at=clock.now)

    with pytest.raises(errors.SaleNotFound):
        await sale_hub.refresh()

    assert [name for name, _, _ in _events(client.take(clock.now))][-1] == "deleted"


async def test_an_unknown_sale_fails_the_joiners_and_forgets_the_hub() -> None:
    gone: list[hub.SaleHub] = []
    sale_hub = hub.SaleHub(
        "s1", clock=FakeClock(), coalesce_s=WINDOW, fetch=Reader(errors.SaleNotFound()),
        on_gone=gone.append,
    )  # fmt: skip
    sale_hub.start()

    with pytest.raises(errors.SaleNotFound):
        await sale_hub.ready
    assert gone == [sale_hub]


async def test_zero_coalescing_sends_every_update() -> None:
    clock = FakeClock()
    sale_hub = hub.SaleHub(
        "s1", clock=clock, coalesce_s=0, fetch=Reader(_snapshot(remaining=9)), on_gone=print
    )
    sale_hub.start()
    await sale_hub.ready
    client = _join(sale_hub)
    client.take(clock.now)

    seen = []
    for seq, remaining in ((2, 8), (3, 7), (4, 6)):
        sale_hub.on_stock(remaining, seq, received_at=clock.now)
        seen += [doc["remaining"] for _, _, doc in _events(client.take(clock.now))]
    assert seen == [8, 7, 6]
