"""The waiting room's rules: its settings, the admission schedule (how many tickets are admitted at
a moment), the fair order of the pre-queue (a keyed pseudorandom permutation), positions and waits.

adapters/lua/prelude.lua runs the same schedule and permutation inside Redis; this module is the
reference anyone can audit an order with (seed -> permutation), and a test checks both agree.
Standard library and flashsale.errors only."""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass

from flashsale.errors import InvalidSale

MIN_ADMIT_PER_SECOND = 1
# 100k/s: far above what one sale's purchase path takes (~1-10k/s), a bound on typos, and small
# enough that the Lua schedule's float arithmetic stays exact (see Schedule.admitted).
MAX_ADMIT_PER_SECOND = 100_000
# 10 s: time to submit a purchase with a retry or two; shorter passes expire in a buyer's hands.
MIN_SESSION_S = 10
MAX_SESSION_S = 24 * 3600  # as long as the longest sale
# 100/s: a tenth of the measured purchase ceiling of one 2-vCPU box (~1,000 req/s, README
# "Benchmarks"), so admitted buyers, each making a few requests, stay far below it.
DEFAULT_ADMIT_PER_SECOND = 100
# 2 min: enough to pick a size and pay with retries; an unused slot is not given to anyone else.
DEFAULT_SESSION_S = 120

# The keyed permutation: a balanced Feistel network on 2k bits (domain 4^k) with cycle walking.
FEISTEL_ROUNDS = 4
# Halves of at least 4 bits (domain >= 256): on the tiny domains of 2-3 bit halves a 4-round
# Feistel family is measurably not uniform (chi-square/dof 12 for 5 joiners, 2.6 for 10, with
# 4,000 seeds); from 4-bit halves up it is (<= 1.3 at every size measured). Cycle walking costs
# at most 256/P steps for a pre-queue of P < 64, which only those P tickets ever pay.
MIN_HALF_BITS = 4
# The round function takes 32 bits of SHA-1 (8 hex digits): plenty for halves of <= 16 bits.
ROUND_HEX_DIGITS = 8
MAX_HALF_BITS = 16  # domain 4^16 > 4e9: more joiners than a sale can ever have


class Mode(enum.StrEnum):
    FIFO = "fifo"  # admitted in join order
    RANDOM = "random"  # the pre-queue drawn at the opening, later joiners in join order


@dataclass(frozen=True, slots=True)
class WaitingRoom:
    """A sale's waiting-room settings (off when a sale has none)."""

    mode: Mode = Mode.FIFO
    admit_per_second: int = DEFAULT_ADMIT_PER_SECOND
    session_seconds: int = DEFAULT_SESSION_S

    def document(self) -> dict[str, object]:
        """As the sale document shows it."""
        return {
            "enabled": True,
            "mode": self.mode.value,
            "admit_per_second": self.admit_per_second,
            "session_seconds": self.session_seconds,
        }


def validate_room(room: WaitingRoom) -> WaitingRoom:
    if not MIN_ADMIT_PER_SECOND <= room.admit_per_second <= MAX_ADMIT_PER_SECOND:
        raise InvalidSale(
            f"waiting_room.admit_per_second must be {MIN_ADMIT_PER_SECOND}-{MAX_ADMIT_PER_SECOND}"
        )
    if not MIN_SESSION_S <= room.session_seconds <= MAX_SESSION_S:
        raise InvalidSale(f"waiting_room.session_seconds must be {MIN_SESSION_S}-{MAX_SESSION_S}")
    return room


@dataclass(frozen=True, slots=True)
class Schedule:
    """The admission schedule of one sale, all in Redis milliseconds: `base` tickets were admitted
    at `since_ms`, and `rate` more are admitted per second from then on unless `paused`."""

    opens_ms: int
    base: int
    since_ms: int
    rate: int
    paused: bool

    def admitted(self, now_ms: int) -> int:
        """How many ranks are admitted at `now_ms`: ranks 0 .. admitted-1. Integer arithmetic; the
        Lua twin divides doubles, which is exact here (products stay below 2^53)."""
        if now_ms < self.opens_ms:
            return 0
        if self.paused:
            return self.base
        start = max(self.since_ms, self.opens_ms)
        return self.base + max(0, (now_ms - start) * self.rate // 1000)

    def admission_ms(self, rank: int) -> int | None:
        """The first moment `rank` is admitted under this schedule (None while paused)."""
        start = max(self.since_ms, self.opens_ms)
        if rank < self.base:
            return start
        if self.paused:
            return None
        # The smallest t with (t - start) * rate // 1000 >= rank - base + 1.
        return start + -(-(rank - self.base + 1) * 1000 // self.rate)


def half_bits(size: int) -> int:
    """k for the smallest domain 4^k >= size (k >= MIN_HALF_BITS)."""
    k = MIN_HALF_BITS
    while 4**k < size:
        k += 1
    if k > MAX_HALF_BITS:
        raise ValueError(f"a pre-queue of {size} is beyond the permutation's domain")
    return k


def _round(seed: str, number: int, value: int) -> int:
    # SHA-1 because Redis scripts have it (redis.sha1hex); it only has to look random here.
    digest = hashlib.sha1(f"{seed}:{number}:{value}".encode()).hexdigest()
    return int(digest[:ROUND_HEX_DIGITS], 16)


def feistel(x: int, *, k: int, seed: str) -> int:
    """One pass of the keyed Feistel permutation of [0, 4^k)."""
    half = 1 << k
    left, right = divmod(x, half)
    for number in range(FEISTEL_ROUNDS):
        left, right = right, left ^ (_round(seed, number, right) % half)
    return left * half + right


def permute(x: int, *, size: int, seed: str) -> int:
    """The keyed permutation of [0, size): Feistel over the next power of four, cycle-walking
    until the value falls inside [0, size), which keeps it a bijection."""
    if not 0 <= x < max(size, 1):
        raise ValueError(f"{x} is outside [0, {size})")
    if size <= 1:
        return x
    k = half_bits(size)
    y = feistel(x, k=k, seed=seed)
    while y >= size:
        y = feistel(y, k=k, seed=seed)
    return y


def rank(seq: int, *, mode: Mode, drawn: int | None, seed: str) -> int | None:
    """The admission rank of join number `seq` (1-based); None before a random draw. FIFO: join
    order. Random: the first `drawn` joiners (the pre-queue) permuted, later ones behind them."""
    if mode is Mode.RANDOM:
        if drawn is None:
            return None
        if seq <= drawn:
            return permute(seq - 1, size=drawn, seed=seed)
    return seq - 1


def position(rank_: int, admitted: int) -> int:
    """1 for the next to be admitted; 0 once admitted."""
    return max(0, rank_ - admitted + 1)


def estimated_wait_s(*, position_: int, rate: int, until_open_ms: int = 0) -> int:
    """Whole seconds until admission at the current rate (plus the time until the opening)."""
    if position_ <= 0:
        return 0
    return math.ceil((max(0, until_open_ms) + position_ * 1000 / rate) / 1000)


def pass_expiry_s(*, admitted_ms: int, session_s: int) -> int:
    """A pass's `exp` (Unix seconds): the first moment its holder was seen admitted, plus the
    session. Stored admission times make it fixed: fetching the pass again never extends it."""
    return admitted_ms // 1000 + session_s


@dataclass(frozen=True, slots=True)
class TicketStatus:
    """One user's ticket as queue.lua answers a join or a status look, at Redis time `now_ms`."""

    seq: int  # join number, 1-based
    joined_ms: int
    rank: int | None  # None: a random pre-queue not drawn yet
    admitted: int  # ranks admitted now (the schedule's count)
    admitted_ms: int | None  # when this ticket was first seen admitted (fixes its pass's expiry)
    first_admission: bool  # this very call saw it admitted first
    new_ticket: bool  # this very call made the ticket (a join, not a look again)
    joined: int  # tickets handed out so far
    now_ms: int
    rate: int
    session_s: int
    opens_ms: int
    remaining: int

    @property
    def is_admitted(self) -> bool:
        return self.admitted_ms is not None

    @property
    def position(self) -> int | None:
        """1 for the next to be admitted, 0 once admitted; None before a random draw."""
        if self.is_admitted:
            return 0
        return None if self.rank is None else position(self.rank, self.admitted)

    @property
    def estimated_wait_s(self) -> int | None:
        pos = self.position
        if pos is None:
            return None
        return estimated_wait_s(
            position_=pos, rate=self.rate, until_open_ms=self.opens_ms - self.now_ms
        )

    def pass_expiry_s(self) -> int | None:
        if self.admitted_ms is None:
            return None
        return pass_expiry_s(admitted_ms=self.admitted_ms, session_s=self.session_s)


@dataclass(frozen=True, slots=True)
class RoomState:
    """A sale's waiting room as a whole (queue.lua `schedule`), at Redis time `now_ms`."""

    now_ms: int
    closes_ms: int
    remaining: int
    mode: Mode
    session_s: int
    schedule: Schedule
    joined: int
    drawn: int | None  # the pre-queue's size once drawn (the first operation after the opening)
    seed: str
    version: int  # bumped by every schedule change; pub/sub messages carry it

    @property
    def admitted(self) -> int:
        """Tickets admitted so far (the schedule runs ahead of an empty queue; nobody holds the
        ranks past `joined`)."""
        return min(self.schedule.admitted(self.now_ms), self.joined)

    @property
    def waiting(self) -> int:
        return self.joined - self.admitted
