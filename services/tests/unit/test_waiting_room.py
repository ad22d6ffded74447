"""The waiting room's pure rules (domain/waiting_room.py): the admission schedule and its inverse,
the keyed permutation (a bijection, keyed, stable), ranks, positions, waits and pass expiry. The
statistical tests of the permutation and its agreement with the Lua twin are integration tests
(test_waiting_room_order.py): they need many SHA-1 rounds and Redis."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsale.domain import waiting_room as wr
from flashsale.domain.sales import SaleDefinition, SaleSnapshot, validate_definition
from flashsale.errors import InvalidSale

OPENS = 1_000_000


def schedule(**changes: object) -> wr.Schedule:
    fields: dict[str, object] = {
        "opens_ms": OPENS, "base": 0, "since_ms": OPENS, "rate": 100, "paused": False,
    }  # fmt: skip
    fields.update(changes)
    return wr.Schedule(**fields)  # type: ignore[arg-type]


def test_nobody_is_admitted_before_the_opening_then_rate_per_second() -> None:
    s = schedule()
    assert s.admitted(OPENS - 1) == 0
    assert s.admitted(OPENS) == 0
    assert s.admitted(OPENS + 9) == 0
    assert s.admitted(OPENS + 10) == 1
    assert s.admitted(OPENS + 1000) == 100
    assert s.admitted(OPENS + 2500) == 250


def test_a_paused_schedule_holds_its_base_and_a_later_since_counts_from_there() -> None:
    assert schedule(base=40, paused=True).admitted(OPENS + 60_000) == 40
    resumed = schedule(base=40, since_ms=OPENS + 5000)
    assert resumed.admitted(OPENS + 5000) == 40
    assert resumed.admitted(OPENS + 6000) == 140
    assert resumed.admitted(OPENS - 1) == 0  # before the opening nobody, whatever the base


def test_a_since_before_the_opening_counts_from_the_opening() -> None:
    assert schedule(since_ms=OPENS - 60_000).admitted(OPENS + 100) == 10


@given(
    rank=st.integers(0, 10_000),
    base=st.integers(0, 500),
    rate=st.integers(1, 5000),
    since=st.integers(0, 100_000),
)
def test_admission_ms_is_the_first_moment_a_rank_is_admitted(
    rank: int, base: int, rate: int, since: int
) -> None:
    s = schedule(base=base, rate=rate, since_ms=OPENS + since)
    due = s.admission_ms(rank)
    assert due is not None
    assert s.admitted(due) > rank
    if rank >= base:
        assert s.admitted(due - 1) <= rank


def test_a_paused_schedule_admits_nobody_new() -> None:
    s = schedule(base=5, paused=True)
    assert s.admission_ms(4) is not None
    assert s.admission_ms(5) is None


@pytest.mark.parametrize("size", [1, 2, 3, 17, 255, 256, 257, 1000])
def test_permute_is_a_bijection_of_its_domain(size: int) -> None:
    image = [wr.permute(x, size=size, seed="audit-me") for x in range(size)]
    assert sorted(image) == list(range(size))


def test_permute_depends_on_the_seed_and_only_on_it() -> None:
    first = [wr.permute(x, size=100, seed="a") for x in range(100)]
    assert first == [wr.permute(x, size=100, seed="a") for x in range(100)]
    assert first != [wr.permute(x, size=100, seed="b") for x in range(100)]
    assert first != list(range(100))


def test_permute_refuses_values_outside_its_domain() -> None:
    with pytest.raises(ValueError, match="outside"):
        wr.permute(5, size=5, seed="s")
    assert wr.half_bits(256) == 4
    assert wr.half_bits(257) == 5
    with pytest.raises(ValueError, match="beyond"):
        wr.half_bits(4**17)


def test_ranks_fifo_random_before_and_after_the_draw() -> None:
    assert wr.rank(1, mode=wr.Mode.FIFO, drawn=None, seed="s") == 0
    assert wr.rank(7, mode=wr.Mode.FIFO, drawn=3, seed="s") == 6
    assert wr.rank(2, mode=wr.Mode.RANDOM, drawn=None, seed="s") is None
    drawn = [wr.rank(seq, mode=wr.Mode.RANDOM, drawn=5, seed="s") for seq in range(1, 6)]
    assert sorted(r for r in drawn if r is not None) == [0, 1, 2, 3, 4]
    assert wr.rank(6, mode=wr.Mode.RANDOM, drawn=5, seed="s") == 5  # after the draw: the back


def test_positions_and_waits() -> None:
    assert wr.position(9, 0) == 10
    assert wr.position(9, 9) == 1
    assert wr.position(9, 10) == 0
    assert wr.estimated_wait_s(position_=0, rate=10) == 0
    assert wr.estimated_wait_s(position_=1, rate=10) == 1
    assert wr.estimated_wait_s(position_=25, rate=10) == 3
    assert wr.estimated_wait_s(position_=25, rate=10, until_open_ms=4_000) == 7
    assert wr.pass_expiry_s(admitted_ms=1_000_999, session_s=60) == 1_060


def test_ticket_status_reads_as_the_api_answers_it() -> None:
    base = wr.TicketStatus(
        seq=12, joined_ms=OPENS - 5000, rank=11, admitted=2, admitted_ms=None,
        first_admission=False, new_ticket=True, joined=12, now_ms=OPENS - 1000, rate=5,
        session_s=60, opens_ms=OPENS, remaining=3,
    )  # fmt: skip
    assert (base.position, base.estimated_wait_s, base.pass_expiry_s()) == (10, 3, None)
    undrawn = dataclasses.replace(base, rank=None)
    assert (undrawn.position, undrawn.estimated_wait_s) == (None, None)
    admitted = dataclasses.replace(base, admitted_ms=OPENS + 2000)
    assert (admitted.position, admitted.estimated_wait_s) == (0, 0)
    assert admitted.pass_expiry_s() == (OPENS + 2000) // 1000 + 60


def test_room_counts_never_exceed_the_tickets_handed_out() -> None:
    room = wr.RoomState(
        now_ms=OPENS + 60_000, closes_ms=OPENS + 300_000, remaining=5, mode=wr.Mode.FIFO,
        session_s=60, schedule=schedule(), joined=40, drawn=30, seed="s", version=3,
    )  # fmt: skip
    assert (room.admitted, room.waiting) == (40, 0)


@pytest.mark.parametrize(
    "room",
    [
        wr.WaitingRoom(admit_per_second=0),
        wr.WaitingRoom(admit_per_second=wr.MAX_ADMIT_PER_SECOND + 1),
        wr.WaitingRoom(session_seconds=9),
        wr.WaitingRoom(session_seconds=wr.MAX_SESSION_S + 1),
    ],
)
def test_settings_out_of_range_are_refused(room: wr.WaitingRoom) -> None:
    with pytest.raises(InvalidSale):
        wr.validate_room(room)


def test_the_document_names_every_setting() -> None:
    room = wr.WaitingRoom(mode=wr.Mode.RANDOM, admit_per_second=50, session_seconds=90)
    assert wr.validate_room(room) is room
    assert room.document() == {
        "enabled": True, "mode": "random", "admit_per_second": 50, "session_seconds": 90,
    }  # fmt: skip


def test_a_sale_document_shows_its_waiting_room_only_when_it_has_one() -> None:
    opens = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    closes = opens + timedelta(minutes=5)
    snapshot = SaleSnapshot("s", "Shoe", Decimal("5.00"), 10, 10, opens, closes, 1)
    assert "waiting_room" not in snapshot.document(opens)
    room = wr.WaitingRoom()
    with_room = dataclasses.replace(snapshot, waiting_room=room)
    assert with_room.document(opens)["waiting_room"] == room.document()
    definition = SaleDefinition(
        "s", "Shoe", Decimal("5.00"), 10, opens, closes,
        waiting_room=wr.WaitingRoom(session_seconds=1),
    )  # fmt: skip
    with pytest.raises(InvalidSale, match="session_seconds"):
        validate_definition(definition)
