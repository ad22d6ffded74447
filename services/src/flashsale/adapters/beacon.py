"""Metrics beacons: every process publishes its own Prometheus numbers to Redis once a second, and
the admin dashboard (api/routes/dashboard.py) reads them all back and aggregates them.

Writer: `start(redis_settings, kind=...)` in a process's lifecycle runs one task that, every
INTERVAL_S, collects the `flashsale_*` families of the process's own registry (in-process, no HTTP
scrape), encodes them compactly and writes them under `fs:beacon:<kind>:<host>-<pid>` with a TTL of
TTL_S, indexed in the sorted set `fs:beacons`. It costs one registry walk and one Redis round trip
per second, on its own connection, never on a request. `stop()` deletes the key, so a stopped
process leaves the dashboard at once; a killed one leaves it when its key expires.

Reader: `read_live()` fetches every live snapshot; `Aggregator` keeps the previous one per process
and turns them into rates (counters), sums or maxima (gauges) and percentiles over a short window
(histogram buckets merged across processes, interpolated like PromQL's histogram_quantile).
Works the same for a local stack and for every replica in a cluster. Imports adapters, config and
prometheus_client; never an entrypoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from redis.exceptions import RedisError

from flashsale.adapters import redis_keys as keys
from flashsale.adapters.redis_stock import Redis, connect, unavailable_on_error
from flashsale.config import RedisSettings

logger = logging.getLogger(__name__)

VERSION = 1
INTERVAL_S = 1.0
# 5 s = five missed beats: a process that stops beating (killed, partitioned) leaves the dashboard
# within 5 s, while one slow beat under load does not make it blink out.
TTL_S = 5
# Index entries older than this are pruned; the key TTL above is what decides liveness, so the
# index may be generous about clock skew between hosts.
INDEX_HORIZON_S = 60.0
PRUNE_EVERY = 30  # beats between two prunes of the index
PREFIX = "flashsale_"
# Label values of one series joined into one JSON key (a unit separator never occurs in ours).
SEP = "\x1f"
# A beacon's Redis calls must never hold up the loop for long: 1 s is a missed beat, not an outage.
REDIS_TIMEOUT_S = 1.0

Snapshot = dict[str, Any]


def process_id() -> str:
    """Unique per live process across hosts and pods: hostname (the pod name) and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _label_key(labels: Mapping[str, str], names: Sequence[str]) -> str:
    return SEP.join(labels.get(n, "") for n in names)


def _histogram(samples: Iterable[Any], names: list[str]) -> dict[str, Any]:
    bounds: list[float] = []
    series: dict[str, dict[str, Any]] = {}
    for s in samples:
        if s.name.endswith("_created"):
            continue
        key = _label_key(s.labels, names)
        entry = series.setdefault(key, {"b": [], "n": 0.0, "s": 0.0})
        if s.name.endswith("_bucket"):
            entry["b"].append(s.value)
            le = float(s.labels["le"])
            if not math.isinf(le) and le not in bounds:
                bounds.append(le)
        elif s.name.endswith("_count"):
            entry["n"] = s.value
        elif s.name.endswith("_sum"):
            entry["s"] = s.value
    return {"type": "histogram", "labels": names, "le": bounds, "values": series}


def snapshot(
    registry: CollectorRegistry, *, kind: str, pid: str, started: float, now: float
) -> Snapshot:
    """The process's `flashsale_*` counters, gauges and histograms in the beacon format:
    {v, kind, id, t, started, m: {family: {type, labels, values, [le]}}}. Counter families are
    named without `_total`; a histogram's `b` holds cumulative bucket counts, the last one +Inf."""
    families: dict[str, Any] = {}
    for family in registry.collect():
        if not family.name.startswith(PREFIX) or family.type not in (
            "counter",
            "gauge",
            "histogram",
        ):
            continue
        names = sorted({n for s in family.samples for n in s.labels if n != "le"})
        if family.type == "histogram":
            families[family.name] = _histogram(family.samples, names)
            continue
        wanted = family.name + "_total" if family.type == "counter" else family.name
        values = {_label_key(s.labels, names): s.value for s in family.samples if s.name == wanted}
        families[family.name] = {"type": family.type, "labels": names, "values": values}
    return {"v": VERSION, "kind": kind, "id": pid, "t": now, "started": started, "m": families}


class Beacon:
    """One process's beacon. `start()` on the running loop; `await stop()` before the loop ends."""

    def __init__(
        self,
        redis: RedisSettings,
        *,
        kind: str,
        registry: CollectorRegistry = REGISTRY,
        interval_s: float = INTERVAL_S,
        ttl_s: int = TTL_S,
    ) -> None:
        # Its own small connection: a burst that exhausts the process's pool must not starve the
        # beacon, and the beacon must never take a connection a request is waiting for.
        self.settings = redis.model_copy(
            update={
                "max_connections": 2,
                "socket_timeout_s": min(redis.socket_timeout_s, REDIS_TIMEOUT_S),
            }
        )
        self.kind = kind
        self.registry = registry
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.pid = process_id()
        self.key = keys.beacon(kind, self.pid)
        self.started = time.time()
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._beats = 0
        self._failing = False

    def start(self) -> Beacon:
        self._client = connect(self.settings)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"beacon-{self.kind}")
        return self

    async def beat(self) -> None:
        """Write one snapshot now. Raises RedisError/OSError when Redis does not answer."""
        assert self._client is not None, "start() the beacon first"
        now = time.time()
        doc = snapshot(self.registry, kind=self.kind, pid=self.pid, started=self.started, now=now)
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self.key, orjson.dumps(doc).decode(), ex=self.ttl_s)
        pipe.zadd(keys.BEACONS, {self.key: now})
        if self._beats % PRUNE_EVERY == 0:
            pipe.zremrangebyscore(keys.BEACONS, "-inf", now - INDEX_HORIZON_S)
        await pipe.execute()
        self._beats += 1

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
                if self._failing:
                    logger.info("metrics beacon %s is writing again", self.key)
                self._failing = False
            except (RedisError, OSError, TimeoutError) as e:
                # Once per outage: the process itself reports Redis trouble where it matters.
                if not self._failing:
                    logger.warning("metrics beacon %s cannot write: %r", self.key, e)
                self._failing = True
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        """End the task and delete this process's key (best effort: Redis may be gone)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                pipe = self._client.pipeline(transaction=False)
                pipe.delete(self.key)
                pipe.zrem(keys.BEACONS, self.key)
                await pipe.execute()
            await self._client.aclose()
            self._client = None


def start(redis: RedisSettings, *, kind: str, registry: CollectorRegistry = REGISTRY) -> Beacon:
    """The one-line hook for a process's startup: a running beacon (stop it at shutdown)."""
    return Beacon(redis, kind=kind, registry=registry).start()


async def read_live(client: Redis) -> list[Snapshot]:
    """Every beacon whose key has not expired. Raises StoreUnavailable when Redis is down."""
    horizon = time.time() - INDEX_HORIZON_S
    async with unavailable_on_error("read beacons"):
        names = cast(list[str], await client.zrangebyscore(keys.BEACONS, horizon, "+inf"))
        if not names:
            return []
        raw = cast(list[str | None], await client.mget(names))
    docs: list[Snapshot] = []
    for item in raw:
        if item is None:
            continue  # expired: the process stopped beating
        try:
            doc = orjson.loads(item)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("v") == VERSION:
            docs.append(doc)
    return docs


# --- aggregation ----------------------------------------------------------------------------------

Series = tuple[str, str]  # (family, label key)


@dataclass
class _Process:
    """What the aggregator remembers of one process between two reads."""

    kinds: set[str]
    started: float
    t: float
    counters: dict[Series, float]
    buckets: dict[Series, list[float]]
    gauges: dict[Series, float] = field(default_factory=dict)
    rates: dict[Series, float] = field(default_factory=dict)
    # (time, bucket increases) per beat, for percentiles over the last few seconds.
    window: deque[tuple[float, dict[Series, list[float]]]] = field(default_factory=deque)


def _flatten(
    doc: Snapshot,
) -> tuple[dict[Series, float], dict[Series, list[float]], dict[Series, float]]:
    counters: dict[Series, float] = {}
    buckets: dict[Series, list[float]] = {}
    gauges: dict[Series, float] = {}
    for name, family in doc.get("m", {}).items():
        kind = family.get("type")
        for key, value in family.get("values", {}).items():
            if kind == "counter":
                counters[(name, key)] = float(value)
            elif kind == "gauge":
                gauges[(name, key)] = float(value)
            elif kind == "histogram":
                buckets[(name, key)] = [float(b) for b in value.get("b", [])]
    return counters, buckets, gauges


def merge_same_process(docs: Iterable[Snapshot]) -> dict[str, Snapshot]:
    """One snapshot per process id. Several beacons of one process (the test suite runs every
    server in one process) report one shared registry: merged, each family counted once."""
    merged: dict[str, Snapshot] = {}
    for doc in sorted(docs, key=lambda d: float(d.get("t", 0))):
        pid = str(doc.get("id"))
        into = merged.get(pid)
        if into is None:
            merged[pid] = {**doc, "kinds": {doc.get("kind")}, "m": dict(doc.get("m", {}))}
        else:
            into["kinds"].add(doc.get("kind"))
            into["m"].update(doc.get("m", {}))
            into["t"] = max(float(into["t"]), float(doc.get("t", 0)))
            # The earliest start, whichever beacon beat first this time: a start that changed
            # between two reads would look like a restart.
            into["started"] = min(float(into.get("started", 0)), float(doc.get("started", 0)))
    return merged


class Aggregator:
    """Turns successive reads of the live beacons into whole-system numbers.

    Rates are computed per process from its own consecutive beats (so a read that falls between
    two beats does not show a dip) and summed; a process that restarted (counters went down, or a
    new start time) is re-based instead of showing a negative rate; a process whose key expired
    drops out. Percentiles use the bucket increases of the last `window_s` seconds."""

    def __init__(self, *, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._procs: dict[str, _Process] = {}
        self._bounds: dict[str, list[float]] = {}
        self._labels: dict[str, list[str]] = {}

    def update(self, docs: Iterable[Snapshot]) -> None:
        merged = merge_same_process(docs)
        for pid, doc in merged.items():
            for name, family in doc["m"].items():
                self._labels[name] = [str(n) for n in family.get("labels", [])]
                if family.get("type") == "histogram":
                    self._bounds[name] = [float(b) for b in family.get("le", [])]
            self._update_one(pid, doc)
        for gone in set(self._procs) - set(merged):
            del self._procs[gone]

    def _update_one(self, pid: str, doc: Snapshot) -> None:
        t = float(doc["t"])
        started = float(doc.get("started", 0))
        counters, buckets, gauges = _flatten(doc)
        kinds = {str(k) for k in doc["kinds"] if k}
        prev = self._procs.get(pid)
        restarted = prev is not None and (
            prev.started != started
            or any(v < prev.counters.get(k, 0.0) for k, v in counters.items())
        )
        if prev is None or restarted:
            self._procs[pid] = _Process(kinds, started, t, counters, buckets, gauges)
            return
        prev.kinds, prev.gauges = kinds, gauges
        dt = t - prev.t
        if dt <= 0:
            return  # no new beat since the last read: keep the last rates
        prev.rates = {k: (v - prev.counters.get(k, 0.0)) / dt for k, v in counters.items()}
        increases = {
            k: [c - p for c, p in zip(b, prev.buckets.get(k, [0.0] * len(b)), strict=False)]
            for k, b in buckets.items()
        }
        prev.window.append((t, increases))
        while prev.window and prev.window[0][0] <= t - self.window_s:
            prev.window.popleft()
        prev.t, prev.counters, prev.buckets = t, counters, buckets

    # --- outputs --------------------------------------------------------------------------------

    def processes(self) -> dict[str, int]:
        """Live processes per kind."""
        out: dict[str, int] = {}
        for proc in self._procs.values():
            for kind in proc.kinds:
                out[kind] = out.get(kind, 0) + 1
        return out

    def _key(self, family: str, key: str, by: str | None) -> str:
        if by is None:
            return key
        names = self._labels.get(family, [])
        values = key.split(SEP)
        return values[names.index(by)] if by in names and len(values) == len(names) else ""

    def rates(self, family: str, *, by: str | None = None) -> dict[str, float]:
        """Per-second increase of a counter family, summed over processes; keyed by the value of
        label `by` (summed over the other labels), or by the whole label key."""
        out: dict[str, float] = {}
        for proc in self._procs.values():
            for (name, key), rate in proc.rates.items():
                if name == family:
                    k = self._key(family, key, by)
                    out[k] = out.get(k, 0.0) + rate
        return out

    def gauges(self, family: str, *, by: str | None = None, how: str = "sum") -> dict[str, float]:
        """A gauge family across processes, keyed as in rates(): summed (clients connected) or the
        maximum (a number every process reports about one shared thing, like a stream's lag)."""
        out: dict[str, float] = {}
        for proc in self._procs.values():
            for (name, key), value in proc.gauges.items():
                if name != family:
                    continue
                k = self._key(family, key, by)
                if how == "max":
                    out[k] = max(out.get(k, value), value)
                else:
                    out[k] = out.get(k, 0.0) + value
        return out

    def quantiles(self, family: str, qs: Sequence[float]) -> dict[float, float | None]:
        """Quantiles of a histogram family over the window, every label set and process merged;
        None where nothing was observed in the window."""
        bounds = self._bounds.get(family, [])
        merged = [0.0] * (len(bounds) + 1)
        for proc in self._procs.values():
            for _, increases in proc.window:
                for (name, _key), inc in increases.items():
                    if name == family:
                        for i, v in enumerate(inc[: len(merged)]):
                            merged[i] += v
        return {q: quantile(q, bounds, merged) for q in qs}


def quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """histogram_quantile: `cumulative` holds the counts of each bucket `le` bounds[i] and a last
    +Inf one. Linear inside a bucket; a rank in the +Inf bucket answers the largest finite bound."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    for i, count in enumerate(cumulative):
        if count >= rank:
            if i >= len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else 0.0
            below = cumulative[i - 1] if i > 0 else 0.0
            inside = count - below
            if inside <= 0:
                return bounds[i]
            return lower + (bounds[i] - lower) * (rank - below) / inside
    return bounds[-1] if bounds else None
