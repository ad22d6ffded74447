"""Stock and order status over time: a background task that reads one sale's unit counters (the
numbers GET /v1/admin/sales/{id}/stats answers) straight from Redis every few tens of milliseconds
while the load runs, so sampling adds no request to the API it measures and is never rate limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from flashsale import errors
from flashsale.adapters.redis_stock import RedisStock

# 50 ms: fine enough to time a sell-out that takes under a second; cheap for Redis (one HGETALL).
DEFAULT_EVERY_S = 0.05


@dataclass(frozen=True, slots=True)
class CounterSample:
    t_ms: int  # wall clock, ms since the epoch (the k6 time series uses the same clock)
    remaining: int
    pending: int
    confirmed: int
    failed: int
    needs_reconciliation: int

    @property
    def unsettled(self) -> int:
        return self.pending + self.needs_reconciliation


@dataclass
class Sampler:
    stock: RedisStock
    sale_id: str
    every_s: float = DEFAULT_EVERY_S
    samples: list[CounterSample] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def sample_once(self) -> CounterSample | None:
        try:
            c = await self.stock.counters(self.sale_id)
        except (errors.SaleNotFound, errors.StoreUnavailable):
            return None  # not created yet, or a blip: the next sample tries again
        sample = CounterSample(
            t_ms=int(time.time() * 1000),
            remaining=c.remaining,
            pending=c.pending,
            confirmed=c.confirmed,
            failed=c.failed,
            needs_reconciliation=c.needs_reconciliation,
        )
        self.samples.append(sample)
        return sample

    async def _loop(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"sampler {self.sale_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sample_once()  # the final state, after the drain


def settled_ms(samples: list[CounterSample]) -> int | None:
    """When the last unsettled unit (pending or in reconciliation) became final: the first sample
    of the final run of samples with none unsettled. None if the run ends unsettled."""
    if not samples or samples[-1].unsettled:
        return None
    at = samples[-1].t_ms
    for sample in reversed(samples):
        if sample.unsettled:
            return at
        at = sample.t_ms
    return at


def first_sold_out_ms(samples: list[CounterSample]) -> int | None:
    return next((s.t_ms for s in samples if s.remaining == 0), None)
