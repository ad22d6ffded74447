"""Time series of a k6 run, from its CSV output (`--out csv=FILE.gz`, millisecond timestamps):
answers per second by status, purchase latency percentiles per time bucket, and the moments every
reservation came back. Pure and streaming (a 100,000-buyer run writes millions of rows; only the
few metrics used here are parsed)."""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The k6 metrics read here; every other row is skipped before it is parsed.
DURATION = "http_req_duration"
RESERVED = "purchase_reserved"
WANTED = {DURATION, RESERVED}
PURCHASE_TAG = "kind=purchase"
# Status 0 is k6's "no answer" (connection error or timeout).
NO_ANSWER = "0"


@dataclass(frozen=True, slots=True)
class Sample:
    """One purchase answer: when it came back (ms since the epoch), its status, its latency."""

    t_ms: int
    status: str
    latency_ms: float


@dataclass
class Series:
    """Per time bucket (start times in seconds relative to `origin_ms`)."""

    origin_ms: int
    bucket_s: float
    t_s: list[float] = field(default_factory=list)
    answers_per_s: dict[str, list[float]] = field(default_factory=dict)  # status -> rate per bucket
    p50_ms: list[float | None] = field(default_factory=list)
    p95_ms: list[float | None] = field(default_factory=list)
    p99_ms: list[float | None] = field(default_factory=list)
    ack_p99_ms: list[float | None] = field(default_factory=list)  # 202 answers only
    reserved_ms: list[int] = field(default_factory=list)  # every fresh reservation, sorted
    requests: int = 0

    def to_doc(self) -> dict[str, object]:
        return {
            "origin_ms": self.origin_ms,
            "bucket_s": self.bucket_s,
            "t_s": self.t_s,
            "answers_per_s": self.answers_per_s,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "ack_p99_ms": self.ack_p99_ms,
            "requests": self.requests,
        }


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        yield from handle


def read_csv(path: Path) -> tuple[list[Sample], list[int]]:
    """Purchase answers and reservation times from a k6 CSV file (plain or .gz)."""
    return parse(_lines(path))


def parse(lines: Iterable[str]) -> tuple[list[Sample], list[int]]:
    iterator = iter(lines)
    header = next(csv.reader([next(iterator, "")]), [])
    if not header or header[0] != "metric_name":
        raise ValueError("not a k6 CSV file (no metric_name header)")
    column = {name: i for i, name in enumerate(header)}
    t_col, v_col = column["timestamp"], column["metric_value"]
    status_col, tags_col = column.get("status"), column.get("extra_tags")
    samples: list[Sample] = []
    reserved: list[int] = []
    for line in iterator:
        metric = line[: line.find(",")]
        if metric not in WANTED:
            continue
        row = next(csv.reader(io.StringIO(line)))
        t_ms = _millis(row[t_col])
        if metric == RESERVED:
            reserved.append(t_ms)
            continue
        if tags_col is None or PURCHASE_TAG not in row[tags_col].split("&"):
            continue
        status = row[status_col] if status_col is not None else ""
        samples.append(Sample(t_ms, status or NO_ANSWER, float(row[v_col])))
    reserved.sort()
    return samples, reserved


def _millis(value: str) -> int:
    """k6 writes unix_milli when K6_CSV_TIME_FORMAT says so; plain seconds are taken as well."""
    number = int(float(value))
    return number * 1000 if number < 10**11 else number


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def bucketize(
    samples: list[Sample], reserved: list[int], *, origin_ms: int, bucket_s: float
) -> Series:
    """Group answers into buckets of bucket_s seconds from origin_ms (earlier ones get negative
    bucket times: the crowd arriving before the opening)."""
    series = Series(origin_ms=origin_ms, bucket_s=bucket_s, reserved_ms=reserved)
    series.requests = len(samples)
    if not samples:
        return series
    width_ms = bucket_s * 1000
    latencies: dict[int, list[float]] = defaultdict(list)
    acks: dict[int, list[float]] = defaultdict(list)
    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for sample in samples:
        index = math.floor((sample.t_ms - origin_ms) / width_ms)
        latencies[index].append(sample.latency_ms)
        counts[sample.status][index] += 1
        if sample.status == "202":
            acks[index].append(sample.latency_ms)
    first, last = min(latencies), max(latencies)
    indices = range(first, last + 1)
    series.t_s = [round(i * bucket_s, 3) for i in indices]
    for status in sorted(counts):
        series.answers_per_s[status] = [counts[status].get(i, 0) / bucket_s for i in indices]
    for i in indices:
        ordered = sorted(latencies.get(i, []))
        series.p50_ms.append(percentile(ordered, 0.50))
        series.p95_ms.append(percentile(ordered, 0.95))
        series.p99_ms.append(percentile(ordered, 0.99))
        series.ack_p99_ms.append(percentile(sorted(acks.get(i, [])), 0.99))
    return series


def sellout_ms(reserved: list[int], *, stock: int) -> int | None:
    """When the stock-th reservation came back (the whole initial stock reserved), if it did."""
    return reserved[stock - 1] if len(reserved) >= stock > 0 else None
