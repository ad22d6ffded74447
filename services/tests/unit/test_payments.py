"""Payment outcomes (domain/payments.py): the classification of every status family, capped
exponential backoff with full jitter, Retry-After as a floor, and parse_retry_after. Pure: no I/O;
randomness from seeded generators."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashsale.domain.payments import (
    ChargeOutcome,
    GatewayAnswer,
    backoff_delay,
    classify,
    parse_retry_after,
)

# --- classify -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    assert classify(GatewayAnswer(status)) is ChargeOutcome.SUCCEEDED


def test_402_is_a_decline() -> None:
    assert classify(GatewayAnswer(402)) is ChargeOutcome.DECLINED


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 599])
def test_throttling_conflicts_and_5xx_are_retried(status: int) -> None:
    assert classify(GatewayAnswer(status, retry_after_s=1.0)) is ChargeOutcome.RETRY


@pytest.mark.parametrize("status", [100, 301, 304, 400, 401, 403, 404, 405, 410, 413, 422, 451])
def test_other_answers_mean_our_request_is_wrong(status: int) -> None:
    assert classify(GatewayAnswer(status)) is ChargeOutcome.INVALID


def test_a_timeout_is_unknown_the_charge_may_exist() -> None:
    assert classify(GatewayAnswer(None, timed_out=True)) is ChargeOutcome.UNKNOWN


def test_no_answer_without_a_timeout_is_retried() -> None:
    assert classify(GatewayAnswer(None)) is ChargeOutcome.RETRY


@given(st.integers(min_value=100, max_value=599))
def test_every_status_has_exactly_one_outcome(status: int) -> None:
    outcome = classify(GatewayAnswer(status))
    if 200 <= status < 300:
        assert outcome is ChargeOutcome.SUCCEEDED
    elif status == 402:
        assert outcome is ChargeOutcome.DECLINED
    elif status in (408, 409, 425, 429) or status >= 500:
        assert outcome is ChargeOutcome.RETRY
    else:
        assert outcome is ChargeOutcome.INVALID


# --- backoff_delay --------------------------------------------------------------------------------


def test_first_delay_is_jittered_over_the_base() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(1, base_s=0.1, cap_s=2.0, rng=rng) for _ in range(2000)]
    assert all(0 <= d <= 0.1 for d in delays)
    # Full jitter: the whole range is used, not a band around the ceiling.
    assert min(delays) < 0.01
    assert max(delays) > 0.09


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6)])
def test_ceiling_doubles_per_attempt(attempt: int, ceiling: float) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, base_s=0.1, cap_s=100.0, rng=rng) for _ in range(2000)]
    assert max(delays) <= ceiling
    assert max(delays) > ceiling * 0.95


@pytest.mark.parametrize("attempt", [6, 7, 20, 64, 1000, 10**6])
def test_ceiling_is_capped_and_never_overflows(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [backoff_delay(attempt, base_s=0.1, cap_s=2.0, rng=rng) for _ in range(500)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert max(delays) > 1.9


def test_attempt_zero_or_below_uses_the_base() -> None:
    rng = random.Random(3)
    assert all(0 <= backoff_delay(0, base_s=0.5, cap_s=9, rng=rng) <= 0.5 for _ in range(200))
    assert all(0 <= backoff_delay(-4, base_s=0.5, cap_s=9, rng=rng) <= 0.5 for _ in range(200))


def test_zero_base_or_zero_cap_means_no_wait() -> None:
    assert backoff_delay(5, base_s=0.0, cap_s=2.0, rng=random.Random(1)) == 0
    assert backoff_delay(5, base_s=1.0, cap_s=0.0, rng=random.Random(1)) == 0


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(5)
    delays = [
        backoff_delay(1, base_s=0.1, cap_s=2.0, retry_after_s=1.0, rng=rng) for _ in range(200)
    ]
    assert delays == [1.0] * 200  # the jitter (<= 0.1) never beats the floor


def test_retry_after_above_the_cap_is_still_honoured() -> None:
    # The gateway asked for 30 s: waiting less would be hammering it.
    assert backoff_delay(3, base_s=0.1, cap_s=2.0, retry_after_s=30.0) == 30.0


def test_a_jitter_above_retry_after_wins() -> None:
    rng = random.Random(9)
    delays = [
        backoff_delay(6, base_s=1.0, cap_s=10.0, retry_after_s=0.5, rng=rng) for _ in range(500)
    ]
    assert all(0.5 <= d <= 10.0 for d in delays)
    assert max(delays) > 9.0


def test_same_seed_same_delays() -> None:
    first = [backoff_delay(a, base_s=0.1, cap_s=2.0, rng=random.Random(42)) for a in range(1, 8)]
    again = [backoff_delay(a, base_s=0.1, cap_s=2.0, rng=random.Random(42)) for a in range(1, 8)]
    assert first == again


def test_without_a_generator_the_module_random_is_used() -> None:
    assert 0 <= backoff_delay(2, base_s=0.1, cap_s=2.0) <= 0.2


@given(
    attempt=st.integers(min_value=-3, max_value=10_000),
    base=st.floats(min_value=0, max_value=10, allow_nan=False),
    cap=st.floats(min_value=0, max_value=60, allow_nan=False),
    retry_after=st.none() | st.floats(min_value=0, max_value=120, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_is_always_within_its_bounds(
    attempt: int, base: float, cap: float, retry_after: float | None, seed: int
) -> None:
    delay = backoff_delay(
        attempt, base_s=base, cap_s=cap, retry_after_s=retry_after, rng=random.Random(seed)
    )
    ceiling = min(cap, base * 2.0 ** max(0, min(attempt - 1, 1000)))
    assert math.isfinite(delay)
    assert delay >= 0
    if retry_after is None:
        assert delay <= ceiling
    else:
        assert delay >= retry_after
        assert delay <= max(ceiling, retry_after)


# --- parse_retry_after ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("1", 1.0), ("0", 0.0), ("120", 120.0), (" 3 ", 3.0), ("2.5", 2.5), ("007", 7.0)],
)
def test_delta_seconds_are_parsed(header: str, expected: float) -> None:
    assert parse_retry_after(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "soon",
        "-1",
        "1,5",
        "Wed, 21 Oct 2026 07:28:00 GMT",  # the HTTP-date form is treated as absent
        "nan",
        "inf",
        "Infinity",
        "1e400",
    ],
)
def test_absent_negative_dates_and_non_finite_values_are_ignored(header: str | None) -> None:
    assert parse_retry_after(header) is None
