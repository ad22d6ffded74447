"""The random mode's order: the Lua permutation and schedule (adapters/lua/prelude.lua) agree with
the Python reference (domain/waiting_room.py) that anyone can audit a draw with, and the
permutation is uniform: chi-square tests over many seeds of the Python one (every ordering of a
small pre-queue equally likely; every joiner's rank uniform and independent of join order in a
larger one) and a smaller run of the Lua one. Seeds are fixed: the verdict never flickers."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
import redis.asyncio as aioredis

from flashsale import config
from flashsale.adapters.redis_queue import RedisQueue
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.domain import waiting_room as wr
from flashsale.domain.sales import SaleDefinition
from flashsale.local.embedded import Stores

NO_LIMITS = config.ApiSettings(rate_limit_user_per_s=0, rate_limit_addr_per_s=0)
Z_999 = 3.090  # the standard normal's 99.9th percentile: a fair permutation fails 1 in 1000 seeds


def chi2_critical(dof: int, z: float = Z_999) -> float:
    """Wilson-Hilferty: the chi-square quantile for `dof` at the normal quantile `z`."""
    k = 2 / (9 * dof)
    return dof * (1 - k + z * math.sqrt(k)) ** 3


def chi2(observed: Sequence[int], expected: float) -> float:
    return sum((o - expected) ** 2 / expected for o in observed)


# Lua helpers over the prelude every script is loaded with.
_PERMUTE = """
local size, seed, out = tonumber(ARGV[1]), ARGV[2], {}
for i = 3, #ARGV do out[#out + 1] = wr_permute(tonumber(ARGV[i]), size, seed) end
return out
"""
_PERMUTATIONS = """
local size, out = tonumber(ARGV[1]), {}
for i = 2, #ARGV do
  for x = 0, size - 1 do out[#out + 1] = wr_permute(x, size, ARGV[i]) end
end
return out
"""
_ADMITTED = """
return wr_admitted(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                   tonumber(ARGV[5]), ARGV[6] == '1')
"""


def _with_prelude(body: str) -> str:
    prelude = (resources.files("flashsale.adapters") / "lua" / "prelude.lua").read_text()
    return prelude + "\n" + body


@pytest.fixture
async def redis(stores: Stores) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stores.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def lua(redis: aioredis.Redis, body: str, *args: Any) -> Any:
    return await redis.eval(_with_prelude(body), 0, *args)


# --- Lua == Python ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 5, 17, 255, 256, 257, 1000, 5000])
async def test_the_lua_permutation_is_the_python_one(redis: aioredis.Redis, size: int) -> None:
    for seed in ("0" * 32, "9f86d081884c7d659a2feaa0c55ad015", "seed:with:colons"):
        xs = sorted({0, size - 1, *range(0, size, max(1, size // 200))})
        got = await lua(redis, _PERMUTE, size, seed, *xs)
        assert got == [wr.permute(x, size=size, seed=seed) for x in xs], (size, seed)


async def test_the_lua_schedule_is_the_python_one(redis: aioredis.Redis) -> None:
    opens = 1_795_000_000_000
    cases = itertools.product((0, 37), (opens - 5000, opens, opens + 1234), (1, 7, 1000, 99_999))
    for base, since, rate in cases:
        for paused in (False, True):
            schedule = wr.Schedule(
                opens_ms=opens, base=base, since_ms=since, rate=rate, paused=paused
            )
            for now in (opens - 1, opens, opens + 1, opens + 999, opens + 86_400_000):
                args = (now, opens, base, since, rate, "1" if paused else "0")
                assert await lua(redis, _ADMITTED, *args) == schedule.admitted(now), args


async def test_a_drawn_queue_ranks_every_ticket_as_the_seed_says(stores: Stores) -> None:
    """Through queue.lua itself: 300 joiners before the opening, the draw, every rank."""
    stock = RedisStock(connect(config.RedisSettings(url=stores.redis_url)), api=NO_LIMITS)
    queue = RedisQueue(stock)
    try:
        now = datetime.now(UTC)
        sale_id = f"order-{int(now.timestamp() * 1000)}"
        room = wr.WaitingRoom(mode=wr.Mode.RANDOM, admit_per_second=1)
        await stock.upsert_sale(
            SaleDefinition(sale_id, "Draw", Decimal("1.00"), 10, now + timedelta(seconds=30),
                           now + timedelta(seconds=90), waiting_room=room)
        )  # fmt: skip
        for i in range(300):
            await queue.join(sale_id=sale_id, user_id=f"u{i}", client_addr="t")
        await stock.move_window(sale_id, action="open")
        late = await queue.join(sale_id=sale_id, user_id="late", client_addr="t")
        state = await queue.state(sale_id)
        assert state.drawn == 300
        ranks: dict[int, int] = {}
        for i in range(300):
            status = await queue.status(sale_id=sale_id, user_id=f"u{i}")
            expected = wr.rank(status.seq, mode=wr.Mode.RANDOM, drawn=300, seed=state.seed)
            assert status.rank is not None
            assert status.rank == expected
            ranks[i] = status.rank
        assert sorted(ranks.values()) == list(range(300))
        assert ranks != {i: i for i in range(300)}
        assert late.rank == 300  # after the draw: the back of the line
    finally:
        await stock.client.aclose()


# --- uniformity ---------------------------------------------------------------------------------


def test_every_ordering_of_a_small_pre_queue_is_equally_likely() -> None:
    size, per_ordering = 4, 80
    orderings = list(itertools.permutations(range(size)))
    runs = per_ordering * len(orderings)
    seen = Counter(
        tuple(wr.permute(x, size=size, seed=f"full-{i}") for x in range(size)) for i in range(runs)
    )
    observed = [seen[o] for o in orderings]
    assert chi2(observed, per_ordering) < chi2_critical(len(orderings) - 1), observed


def test_every_rank_is_uniform_and_independent_of_join_order() -> None:
    size, runs = 20, 1200
    cells = Counter[tuple[int, int]]()
    earlier_ahead = Counter[int]()
    for i in range(runs):
        image = [wr.permute(x, size=size, seed=f"marginal-{i}") for x in range(size)]
        cells.update(enumerate(image))
        earlier_ahead.update(x for x in range(size - 1) if image[x] < image[x + 1])
    # Each joiner lands on each rank equally often...
    observed = [cells[(x, y)] for x in range(size) for y in range(size)]
    assert chi2(observed, runs / size) < chi2_critical((size - 1) ** 2)
    # ...and joining earlier than your neighbour gives no edge over it.
    pairs = [earlier_ahead[x] for x in range(size - 1)] + [
        runs - earlier_ahead[x] for x in range(size - 1)
    ]
    assert chi2(pairs, runs / 2) < chi2_critical(size - 1)


async def test_the_lua_permutation_is_uniform_too(redis: aioredis.Redis) -> None:
    size, per_ordering = 3, 60
    orderings = list(itertools.permutations(range(size)))
    runs = per_ordering * len(orderings)
    seen: Counter[tuple[int, ...]] = Counter()
    for chunk in range(0, runs, 60):  # a few hundred milliseconds of Lua per call at most
        seeds = [f"lua-{i}" for i in range(chunk, min(runs, chunk + 60))]
        flat = await lua(redis, _PERMUTATIONS, size, *seeds)
        seen.update(tuple(flat[j : j + size]) for j in range(0, len(flat), size))
    observed = [seen[o] for o in orderings]
    assert sum(observed) == runs
    assert chi2(observed, per_ordering) < chi2_critical(len(orderings) - 1), observed
