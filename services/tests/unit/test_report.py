"""The demo report on synthetic k6 output: the CSV time series, the sampled counters, the summary
and its verdict, the terminal tables and the HTML page. No matplotlib here (the plots are drawn in
the integration test), so this stays within the unit layer's time budget."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from flashsale.domain.invariants import Check, Verdict
from flashsale.local import report, reportpage
from flashsale.local.sampler import CounterSample, first_sold_out_ms, settled_ms
from flashsale.local.series import Series, bucketize, parse, percentile, read_csv, sellout_ms

HEADER = (
    "metric_name,timestamp,metric_value,error_code,expected_response,scenario,status,"
    "extra_tags,metadata\n"
)
OPENS = 1_800_000_000_000  # ms


def row(metric: str, t_ms: int, value: float, status: str = "", tags: str = "") -> str:
    return f"{metric},{t_ms},{value:.6f},,true,crowd,{status},{tags},\n"


def synthetic_csv() -> list[str]:
    lines = [HEADER, row("http_req_duration", OPENS - 900, 12.0, "404", "kind=setup")]
    # 0-1 s: three 202s and a 409; 1-2 s: two 409s, a 503 and a request with no answer.
    for t, latency, status in [
        (OPENS + 100, 4.0, "202"),
        (OPENS + 200, 6.0, "202"),
        (OPENS + 300, 8.0, "202"),
        (OPENS + 400, 2.0, "409"),
        (OPENS + 1100, 1.0, "409"),
        (OPENS + 1200, 3.0, "409"),
        (OPENS + 1300, 30.0, "503"),
        (OPENS + 1400, 10_000.0, ""),
    ]:
        lines.append(row("http_req_duration", t, latency, status, "kind=purchase"))
        lines.append(row("http_reqs", t, 1, status, "kind=purchase"))
    for t in (OPENS + 300, OPENS + 100, OPENS + 200):
        lines.append(row("purchase_reserved", t, 1))
    return lines


def test_parse_keeps_purchase_answers_and_reservations() -> None:
    samples, reserved = parse(synthetic_csv())
    assert len(samples) == 8  # the setup request is not a purchase
    assert [s.status for s in samples[-2:]] == ["503", "0"]  # no status: no answer
    assert reserved == [OPENS + 100, OPENS + 200, OPENS + 300]  # sorted


def test_parse_takes_second_timestamps_too() -> None:
    lines = [HEADER, row("purchase_reserved", 1_800_000_000, 1)]
    assert parse(lines)[1] == [1_800_000_000_000]


def test_parse_refuses_what_is_not_k6_csv() -> None:
    with pytest.raises(ValueError, match="not a k6 CSV"):
        parse(["time,value\n"])


def test_read_csv_reads_gzip(tmp_path: Path) -> None:
    path = tmp_path / "k6.csv.gz"
    with gzip.open(path, "wt") as out:
        out.writelines(synthetic_csv())
    samples, reserved = read_csv(path)
    assert len(samples) == 8
    assert len(reserved) == 3


def test_bucketize_rates_and_percentiles() -> None:
    samples, reserved = parse(synthetic_csv())
    series = bucketize(samples, reserved, origin_ms=OPENS, bucket_s=1.0)
    assert series.t_s == [0.0, 1.0]
    assert series.answers_per_s == {"0": [0, 1], "202": [3, 0], "409": [1, 2], "503": [0, 1]}
    assert series.p50_ms == [4.0, 3.0]
    assert series.p99_ms == [8.0, 10_000.0]
    assert series.ack_p99_ms == [8.0, None]
    assert series.requests == 8
    assert json.loads(json.dumps(series.to_doc()))["bucket_s"] == 1.0


def test_bucketize_places_early_answers_before_the_opening() -> None:
    samples, _ = parse([HEADER, row("http_req_duration", OPENS - 600, 5.0, "409", "kind=purchase")])
    series = bucketize(samples, [], origin_ms=OPENS, bucket_s=0.5)
    assert series.t_s == [-1.0]
    assert bucketize([], [], origin_ms=OPENS, bucket_s=1.0).t_s == []


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, None), ([1.0], 0.99, 1.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0), ([1.0, 2.0], 1.0, 2.0)],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_sellout_is_the_stock_th_reservation() -> None:
    assert sellout_ms([1, 2, 3], stock=2) == 2
    assert sellout_ms([1, 2], stock=3) is None


def counters(t_ms: int, remaining: int, pending: int, confirmed: int, nr: int = 0) -> CounterSample:
    return CounterSample(t_ms, remaining, pending, confirmed, 0, nr)


def test_settled_is_the_start_of_the_final_quiet_run() -> None:
    samples = [
        counters(OPENS, 3, 0, 0),
        counters(OPENS + 100, 0, 3, 0),
        counters(OPENS + 200, 0, 0, 2, nr=1),
        counters(OPENS + 300, 0, 0, 3),
        counters(OPENS + 400, 0, 0, 3),
    ]
    assert settled_ms(samples) == OPENS + 300
    assert first_sold_out_ms(samples) == OPENS + 100
    assert settled_ms(samples[:3]) is None  # still unsettled at the end
    assert settled_ms([]) is None


def sale_run(**changes: Any) -> report.SaleRun:
    samples, reserved = parse(synthetic_csv())
    k6 = {
        "buyers": 6,
        "requests": 8,
        "outcomes": {"reserved": 3, "sold_out": 3, "unexpected": 0, "network_error": 1},
        "contract_checks_passed": 1,
        "ack_ms": {"p50": 6.0, "p95": 8.0, "p99": 8.0},
        "purchase_ms": {"p50": 4.0},
        "first_sold_out_s": 1.4,
        "test_start_ms": OPENS - 1000,
    }
    base: dict[str, Any] = {
        "sale_id": "demo-x",
        "stock": 3,
        "users": 6,
        "opens_at_ms": OPENS,
        "k6": k6,
        "series": bucketize(samples, reserved, origin_ms=OPENS, bucket_s=1.0),
        "samples": [
            counters(OPENS, 3, 0, 0),
            counters(OPENS + 400, 0, 3, 0),
            counters(OPENS + 2300, 0, 0, 3),
        ],  # fmt: skip
        "verdict": Verdict([Check(1, "stock balances", True, "0 + 0 + 3 + 0 = 3")]),
        "quiescent": True,
        "gateway": "fast gateway",
    }
    return report.SaleRun(**{**base, **changes})


def test_summary_of_a_good_run() -> None:
    summary = report.build_summary(sale_run())
    assert summary["ok"] is True
    assert summary["failures"] == []
    times = summary["timeline_s"]
    assert times["first_reserved_s"] == 0.1
    assert times["stock_reserved_s"] == 0.3
    assert times["first_sold_out_sample_s"] == 0.4
    assert times["first_sold_out_answer_s"] == 0.4  # k6's 1.4 s after its start, 1 s early
    assert times["settled_s"] == 2.3
    assert times["settled_after_last_unit_s"] == 2.0
    assert summary["units"] == {
        "initial": 3, "remaining": 0, "pending": 0, "confirmed": 3, "failed_released": 0,
        "needs_reconciliation": 0,
    }  # fmt: skip
    assert [t["met"] for t in summary["targets"]] == [True, True]
    assert json.loads(json.dumps(summary)) == summary  # JSON as it is


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"quiescent": False}, "unsettled"),
        ({"verdict": Verdict([Check(2, "no oversell", False, "4 > 3")])}, "no oversell"),
        ({"k6": {"outcomes": {"unexpected": 2}}}, "2 answers outside the contract"),
        ({"k6": {"contract_checks_passed": 0.5}}, "contract checks failed"),
    ],
)
def test_summary_says_why_a_run_failed(changes: dict[str, Any], reason: str) -> None:
    summary = report.build_summary(sale_run(**changes))
    assert summary["ok"] is False
    assert any(reason in failure for failure in summary["failures"])


def test_targets_missed_are_reported_not_failed() -> None:
    slow = [
        counters(OPENS, 3, 0, 0),
        counters(OPENS + 500, 0, 3, 0),
        counters(OPENS + 9000, 0, 0, 3),
    ]
    summary = report.build_summary(sale_run(samples=slow, stock=5))
    assert summary["ok"] is True
    assert [t["met"] for t in summary["targets"]] == [False, False]  # never 5 reservations; 8.7 s


def test_terminal_tables_fit_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    report.print_summary(console, report.build_summary(sale_run()))
    text = out.getvalue()
    assert "all units reserved after" in text
    assert "stock balances" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_html_page_is_self_contained(tmp_path: Path) -> None:
    png = tmp_path / "latency.png"
    png.write_bytes(b"\x89PNG fake")
    html = reportpage.render(report.build_summary(sale_run(sale_id="<b>x</b>")), [png])
    assert html.startswith("<!doctype html>")
    assert "data:image/png;base64," in html
    assert "<b>x</b>" not in html  # escaped
    assert 'src="http' not in html  # nothing fetched from elsewhere


def test_environment_names_the_machine() -> None:
    env = report.environment()
    assert env["cpus"] >= 1
    assert len(env["load_average_1_5_15"]) == 3


def test_series_defaults_are_empty() -> None:
    assert Series(origin_ms=0, bucket_s=1.0).to_doc()["t_s"] == []
