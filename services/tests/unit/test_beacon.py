"""The metrics beacon's format and the dashboard's aggregation, without Redis: snapshots of private
Prometheus registries, fed to the Aggregator as successive reads would be."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from flashsale.adapters import beacon
from flashsale.config import Settings
from flashsale.workers.runner import worker_kind

BUCKETS = (0.001, 0.005, 0.01, 0.05)


class Process:
    """A fake process: its own registry with the families the dashboard reads."""

    def __init__(self, pid: str, *, kind: str = "api", started: float = 100.0) -> None:
        self.pid, self.kind, self.started = pid, kind, started
        self.registry = CollectorRegistry()
        self.purchases = Counter(
            "flashsale_purchase_attempts_total", "p", ["outcome"], registry=self.registry
        )
        self.seconds = Histogram(
            "flashsale_purchase_seconds", "s", buckets=BUCKETS, registry=self.registry
        )
        self.lag = Gauge("flashsale_queue_lag", "l", ["stream", "group"], registry=self.registry)
        self.clients = Gauge("flashsale_sse_clients", "c", ["stream"], registry=self.registry)
        Counter("other_total", "not ours", registry=self.registry).inc()

    def doc(self, t: float) -> beacon.Snapshot:
        return beacon.snapshot(
            self.registry, kind=self.kind, pid=self.pid, started=self.started, now=t
        )


def test_a_snapshot_holds_only_flashsale_families_in_the_compact_format() -> None:
    p = Process("host-1")
    p.purchases.labels("reserved").inc(3)
    p.seconds.observe(0.004)
    p.lag.labels("fs:orders", "order-workers").set(7)

    doc = p.doc(200.0)

    assert (doc["v"], doc["kind"], doc["id"], doc["t"], doc["started"]) == (
        1, "api", "host-1", 200.0, 100.0,
    )  # fmt: skip
    families = doc["m"]
    assert "other" not in families
    assert families["flashsale_purchase_attempts"] == {
        "type": "counter",
        "labels": ["outcome"],
        "values": {"reserved": 3.0},
    }
    histogram = families["flashsale_purchase_seconds"]
    assert histogram["le"] == list(BUCKETS)
    assert histogram["values"][""] == {"b": [0.0, 1.0, 1.0, 1.0, 1.0], "n": 1.0, "s": 0.004}
    assert families["flashsale_queue_lag"]["labels"] == ["group", "stream"]
    assert families["flashsale_queue_lag"]["values"] == {f"order-workers{beacon.SEP}fs:orders": 7.0}


def test_rates_come_from_each_process_own_beats_and_are_summed() -> None:
    a, b = Process("host-a"), Process("host-b")
    agg = beacon.Aggregator()
    agg.update([a.doc(10.0), b.doc(10.5)])
    assert agg.rates("flashsale_purchase_attempts") == {}  # a first read is only a baseline

    a.purchases.labels("reserved").inc(20)
    b.purchases.labels("reserved").inc(5)
    b.purchases.labels("sold_out").inc(10)
    agg.update([a.doc(12.0), b.doc(11.5)])

    assert agg.rates("flashsale_purchase_attempts", by="outcome") == {
        "reserved": 20 / 2 + 5 / 1,
        "sold_out": 10.0,
    }
    assert agg.processes() == {"api": 2}


def test_a_read_between_two_beats_keeps_the_last_rates() -> None:
    a = Process("host-a")
    agg = beacon.Aggregator()
    agg.update([a.doc(10.0)])
    a.purchases.labels("reserved").inc(4)
    agg.update([a.doc(11.0)])
    agg.update([a.doc(11.0)])  # the same beat read again
    assert agg.rates("flashsale_purchase_attempts", by="outcome") == {"reserved": 4.0}


def test_a_restarted_process_is_rebased_not_counted_negative() -> None:
    agg = beacon.Aggregator()
    before = Process("pod-1", started=100.0)
    before.purchases.labels("reserved").inc(50)
    agg.update([before.doc(10.0)])
    after = Process("pod-1", started=200.0)  # same pod name and pid 1, counters from zero
    after.purchases.labels("reserved").inc(2)
    agg.update([after.doc(11.0)])
    assert agg.rates("flashsale_purchase_attempts") == {}
    after.purchases.labels("reserved").inc(3)
    agg.update([after.doc(12.0)])
    assert agg.rates("flashsale_purchase_attempts", by="outcome") == {"reserved": 3.0}


def test_a_counter_that_went_down_counts_as_a_restart() -> None:
    agg = beacon.Aggregator()
    doc = Process("pod-1").doc(10.0)
    doc["m"]["flashsale_purchase_attempts"]["values"] = {"reserved": 9.0}
    agg.update([doc])
    later = Process("pod-1").doc(11.0)
    later["m"]["flashsale_purchase_attempts"]["values"] = {"reserved": 1.0}
    agg.update([later])
    assert agg.rates("flashsale_purchase_attempts") == {}


def test_a_process_whose_beacon_expired_drops_out() -> None:
    a, b = Process("host-a"), Process("host-b", kind="sse")
    b.clients.labels("sale").set(40)
    agg = beacon.Aggregator()
    agg.update([a.doc(1.0), b.doc(1.0)])
    assert agg.processes() == {"api": 1, "sse": 1}
    agg.update([a.doc(2.0)])
    assert agg.processes() == {"api": 1}
    assert agg.gauges("flashsale_sse_clients") == {}


def test_gauges_are_summed_or_maxed_by_label() -> None:
    a, b = Process("a", kind="order"), Process("b", kind="order")
    a.lag.labels("fs:orders", "order-workers").set(30)
    b.lag.labels("fs:orders", "order-workers").set(32)
    a.clients.labels("sale").set(5)
    b.clients.labels("sale").set(6)
    b.clients.labels("me").set(1)
    agg = beacon.Aggregator()
    agg.update([a.doc(1.0), b.doc(1.0)])
    assert agg.gauges("flashsale_queue_lag", by="group", how="max") == {"order-workers": 32.0}
    assert agg.gauges("flashsale_sse_clients", by="stream") == {"sale": 11.0, "me": 1.0}
    assert agg.gauges("flashsale_sse_clients", by="no-such-label") == {"": 12.0}


def test_beacons_of_one_process_share_its_registry_and_count_once() -> None:
    """The test suite runs api, SSE and workers in one process: one registry, several beacons."""
    shared = Process("host-1", kind="api")
    agg = beacon.Aggregator()
    agg.update([shared.doc(1.0), {**shared.doc(1.0), "kind": "sse"}])
    shared.purchases.labels("reserved").inc(10)
    agg.update([shared.doc(2.0), {**shared.doc(2.0), "kind": "sse"}])
    assert agg.processes() == {"api": 1, "sse": 1}
    assert agg.rates("flashsale_purchase_attempts", by="outcome") == {"reserved": 10.0}


def test_beacons_of_one_process_that_beat_in_turn_are_not_taken_for_a_restart() -> None:
    api = Process("host-1", kind="api", started=100.0)
    sse = Process("host-1", kind="sse", started=101.0)
    agg = beacon.Aggregator()
    agg.update([api.doc(10.0), sse.doc(10.5)])
    api.purchases.labels("reserved").inc(10)
    agg.update([api.doc(12.0), sse.doc(11.5)])  # now the sse beacon beat first
    assert agg.rates("flashsale_purchase_attempts", by="outcome") == {"reserved": 10 / 1.5}


def test_percentiles_merge_every_process_over_the_window() -> None:
    a, b = Process("a"), Process("b")
    agg = beacon.Aggregator(window_s=5.0)
    agg.update([a.doc(0.0), b.doc(0.0)])
    assert agg.quantiles("flashsale_purchase_seconds", [0.5]) == {0.5: None}
    for _ in range(90):
        a.seconds.observe(0.0005)  # first bucket
    for _ in range(10):
        b.seconds.observe(0.03)  # fourth bucket
    agg.update([a.doc(1.0), b.doc(1.0)])
    q = agg.quantiles("flashsale_purchase_seconds", [0.5, 0.95, 0.99])
    assert q[0.5] == pytest.approx(0.001 * 50 / 90)
    assert q[0.95] == pytest.approx(0.01 + 0.04 * 5 / 10)
    assert q[0.99] == pytest.approx(0.01 + 0.04 * 9 / 10)
    # Quiet for longer than the window: nothing observed, no percentile.
    for t in (3.0, 5.0, 7.0):
        agg.update([a.doc(t), b.doc(t)])
    assert agg.quantiles("flashsale_purchase_seconds", [0.5]) == {0.5: None}


def test_quantile_edges() -> None:
    assert beacon.quantile(0.5, [1.0, 2.0], [0.0, 0.0, 0.0]) is None
    assert beacon.quantile(0.5, [1.0, 2.0], []) is None
    assert beacon.quantile(0.99, [1.0, 2.0], [0.0, 0.0, 4.0]) == 2.0  # all in +Inf
    assert beacon.quantile(0.5, [1.0, 2.0], [4.0, 4.0, 4.0]) == 0.5
    assert beacon.quantile(1.0, [1.0, 2.0], [2.0, 2.0, 2.0]) == 1.0
    assert beacon.quantile(0.5, [], [3.0]) is None


def test_a_worker_is_named_by_its_health_port() -> None:
    settings = Settings(worker={"order_port": 9101, "payment_port": 9102})
    assert worker_kind(settings, 9101) == "order"
    assert worker_kind(settings, 9102) == "payment"
    assert worker_kind(settings, 9200) == "worker"
