"""The SSE side of the waiting room without I/O: a queue client's events (first position at once,
later ones only when changed and at most once a second, the pass once, sold out, the final event),
and the subscription's PING answer, which keeps the process from re-reading every waiting room
(and every sale) after each 5 s of pub/sub silence."""

from __future__ import annotations

from flashsale.sse import queue_client
from flashsale.sse.queue_client import ADMITTED, CLOSED, POSITION, SOLD_OUT, QueueClient
from flashsale.sse.subscription import PONG, _message


class View:
    def __init__(self) -> None:
        self.position: int | None = 5

    def position_of(self, rank: int | None) -> tuple[int | None, int | None]:
        return (None, None) if rank is None else (self.position, self.position)


def names(frames: bytes) -> list[str]:
    return [line[7:] for line in frames.decode().splitlines() if line.startswith("event: ")]


def test_positions_come_at_once_then_only_when_changed_and_at_most_once_a_second() -> None:
    view = View()
    client = QueueClient("a", view, user_id="u", seq=5, rank=4)
    assert names(client.take(100.0)) == ["position"]
    view.position = 4
    client.mark(POSITION)
    assert client.take(100.5) == b""  # within the second: nothing, the next tick sends it
    assert client.position_due(100.5) is False
    assert client.position_due(101.0) is True
    client.mark(POSITION)
    assert b'"position":4' in client.take(101.0)
    client.mark(POSITION)
    assert client.take(102.5) == b""  # unchanged: nothing


def test_the_pass_once_then_sold_out_then_the_end() -> None:
    client = QueueClient("a", View(), user_id="u", seq=1, rank=None)
    assert b'"position":null' in client.take(1.0)
    client.admit("the-pass", expires_at="2026-11-27T12:00:00.000Z")
    client.admit("another", expires_at="2026-11-27T12:00:00.000Z")
    frames = client.take(2.0)
    assert names(frames) == ["admitted"]
    assert b'"pass":"the-pass"' in frames
    assert client.position_due(10.0) is False  # admitted: no more positions
    client.mark(SOLD_OUT | ADMITTED)
    assert names(client.take(3.0)) == ["sold_out"]
    client.mark(CLOSED)
    assert client.take(4.0) == queue_client.CLOSED_FRAME
    assert client.finished


def test_the_pong_of_a_subscribed_connection_is_recognised() -> None:
    for reply in ("PONG", b"PONG", ["pong", ""]):
        message = _message(reply)
        assert message is not None
        assert message.kind == PONG
    assert _message("OK") is None
