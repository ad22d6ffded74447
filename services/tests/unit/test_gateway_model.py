"""The mock gateway's failure model and ledger (gateway/model.py): rates and latency quantiles over
many seeded draws, repeatability, fast mode, and the idempotency rules. Pure: no I/O."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from flashsale import config
from flashsale.gateway import app, model

DRAWS = 40_000  # enough for ±5 sigma of a 1 % rate to be ±0.25 points, and still ~0.1 s
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _outcomes(sampler: model.Sampler, n: int = DRAWS) -> list[model.Draw]:
    return [sampler.draw() for _ in range(n)]


def _within(observed: float, expected: float, n: int) -> bool:
    """A share within 5 binomial standard deviations (the fixed seed makes it deterministic)."""
    return abs(observed - expected) <= 5 * math.sqrt(expected * (1 - expected) / n) + 1e-12


def _request(
    order_id: str = "o-1", amount: str = "49.99", currency: str = "EUR"
) -> model.ChargeRequest:
    return model.ChargeRequest(
        order_id=order_id, amount=Decimal(amount), amount_text=amount, currency=currency
    )


@pytest.fixture(scope="module")
def default_draws() -> list[model.Draw]:
    """One seeded run of the default model, shared by the statistical tests (draws cost ~2.5 µs)."""
    return _outcomes(model.Sampler(model.FailureModel(), seed=42))


# --- Sampling ------------------------------------------------------------------------------------


def test_outcome_rates_match_the_model(default_draws: list[model.Draw]) -> None:
    counts = Counter(d.outcome for d in default_draws)
    expected = {
        model.Outcome.DECLINED: 0.05,
        model.Outcome.UNAVAILABLE: 0.02,
        model.Outcome.RATE_LIMITED: 0.01,
        model.Outcome.HANG: 0.01,
        model.Outcome.SUCCEEDED: 0.91,
    }
    for outcome, share in expected.items():
        assert _within(counts[outcome] / DRAWS, share, DRAWS), (outcome, counts[outcome])


def test_latency_is_log_normal_with_the_configured_median_and_p95(
    default_draws: list[model.Draw],
) -> None:
    latencies = [d.latency_s for d in default_draws if d.outcome is model.Outcome.SUCCEEDED]
    cuts = statistics.quantiles(latencies, n=100)
    median, p95 = cuts[49], cuts[94]
    assert median == pytest.approx(0.665, rel=0.03)
    assert p95 == pytest.approx(2.3, rel=0.05)
    sigma = math.log(2300 / 665) / 1.6449
    assert model.FailureModel().sigma == pytest.approx(sigma, rel=1e-4)
    assert model.FailureModel().mu == pytest.approx(math.log(0.665))


def test_latency_quantile_function_is_exact() -> None:
    sampler = model.Sampler(model.FailureModel(), seed=1)
    assert sampler.latency_s(0.5) == pytest.approx(0.665)
    assert sampler.latency_s(0.95) == pytest.approx(2.3)
    assert math.isfinite(sampler.latency_s(0.0))
    assert math.isfinite(sampler.latency_s(1.0))


def test_refusals_answer_quickly(default_draws: list[model.Draw]) -> None:
    refusals = [
        d.latency_s
        for d in default_draws
        if d.outcome in (model.Outcome.UNAVAILABLE, model.Outcome.RATE_LIMITED)
    ]
    assert refusals
    assert statistics.median(refusals) == pytest.approx(0.665 * 0.05, rel=0.25)


def test_retry_after_always_on_429_and_sometimes_on_503(default_draws: list[model.Draw]) -> None:
    limited = [d for d in default_draws if d.outcome is model.Outcome.RATE_LIMITED]
    unavailable = [d for d in default_draws if d.outcome is model.Outcome.UNAVAILABLE]
    assert {d.retry_after_s for d in limited} == {1}
    with_header = sum(d.retry_after_s == 1 for d in unavailable)
    assert _within(with_header / len(unavailable), 0.5, len(unavailable))
    assert {d.retry_after_s for d in unavailable} == {1, None}
    other = model.Sampler(
        model.FailureModel(
            rate_limited_rate=1, decline_rate=0, unavailable_rate=0, hang_rate=0, retry_after_s=3
        )
    )
    assert other.draw().retry_after_s == 3


def test_hangs_charge_in_the_configured_share() -> None:
    hangs_only = model.FailureModel(
        decline_rate=0, unavailable_rate=0, rate_limited_rate=0, hang_rate=1
    )
    draws = _outcomes(model.Sampler(hangs_only, seed=11), 4000)
    assert {d.outcome for d in draws} == {model.Outcome.HANG}
    charged = sum(d.settlement is model.Settlement.CHARGED for d in draws)
    assert _within(charged / 4000, 0.5, 4000)
    never = model.Sampler(
        model.FailureModel.fast().updated({"hang_rate": 1, "hang_charge_share": 0})
    )
    assert all(never.draw().settlement is model.Settlement.DROPPED for _ in range(100))


def test_settlement_of_each_outcome() -> None:
    settle = {
        model.Draw(model.Outcome.SUCCEEDED, 0.1): model.Settlement.CHARGED,
        model.Draw(model.Outcome.DECLINED, 0.1): model.Settlement.DECLINED,
        model.Draw(model.Outcome.UNAVAILABLE, 0.1): model.Settlement.DROPPED,
        model.Draw(model.Outcome.RATE_LIMITED, 0.1, retry_after_s=1): model.Settlement.DROPPED,
        model.Draw(model.Outcome.HANG, 0.1, hang_charges=True): model.Settlement.CHARGED,
        model.Draw(model.Outcome.HANG, 0.1, hang_charges=False): model.Settlement.DROPPED,
    }
    for draw, settlement in settle.items():
        assert draw.settlement is settlement, draw


def test_same_seed_same_sequence_and_other_seed_differs() -> None:
    first = _outcomes(model.Sampler(model.FailureModel(), seed=2026), 2000)
    again = _outcomes(model.Sampler(model.FailureModel(), seed=2026), 2000)
    other = _outcomes(model.Sampler(model.FailureModel(), seed=2027), 2000)
    assert first == again
    assert first != other


def test_reseed_restarts_the_sequence_and_a_model_switch_does_not_shift_it() -> None:
    sampler = model.Sampler(model.FailureModel(), seed=9)
    head = _outcomes(sampler, 50)
    sampler.reseed(9)
    assert _outcomes(sampler, 50) == head
    # Every draw takes three uniforms whatever the model, so the latency after a switch is the
    # one a fresh sampler with the new model gives at the same position.
    switched = model.Sampler(model.FailureModel(), seed=9)
    _outcomes(switched, 10)
    switched.model = model.FailureModel(latency_p95_ms=665.0 * 2)
    fresh = model.Sampler(model.FailureModel(latency_p95_ms=665.0 * 2), seed=9)
    _outcomes(fresh, 10)
    assert _outcomes(switched, 20) == _outcomes(fresh, 20)


def test_fast_mode_succeeds_at_once() -> None:
    sampler = model.Sampler(model.FailureModel.fast(), seed=None)
    assert all(d == model.Draw(model.Outcome.SUCCEEDED, 0.0) for d in _outcomes(sampler, 1000))


def test_zero_median_alone_turns_latency_off() -> None:
    sampler = model.Sampler(model.FailureModel(latency_median_ms=0, latency_p95_ms=0), seed=1)
    assert {d.latency_s for d in _outcomes(sampler, 500)} == {0.0}


def test_settings_build_the_model() -> None:
    assert app.model_from_settings(config.MockGatewaySettings()) == model.FailureModel()
    fast = app.model_from_settings(config.MockGatewaySettings(fast=True, retry_after_s=4))
    assert fast == model.FailureModel.fast().updated({"retry_after_s": 4})
    hung = config.MockGatewaySettings(fast=True, hang_rate=1)  # fast wins over every rate
    assert app.model_from_settings(hung) == model.FailureModel.fast()
    with pytest.raises(model.InvalidModel):
        app.model_from_settings(config.MockGatewaySettings(hang_rate=0.95))
    tuned = app.model_from_settings(
        config.MockGatewaySettings(decline_rate=0.5, hang_charge_share=0.25)
    )
    assert (tuned.decline_rate, tuned.hang_charge_share) == (0.5, 0.25)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"decline_rate": 1.5}, "between 0 and 1"),
        ({"hang_rate": -0.1}, "between 0 and 1"),
        ({"decline_rate": 0.6, "unavailable_rate": 0.5}, "must not exceed 1"),
        ({"latency_p95_ms": 100.0}, "latency_p95_ms must be >="),
        ({"latency_median_ms": math.inf}, "finite"),
        ({"retry_after_s": -1}, "retry_after_s"),
        ({"retry_after_s": 1.5}, "whole number"),
        ({"decline_rate": True}, "must be a number"),
        ({"decline_rate": "0.1"}, "must be a number"),
        ({"colour": 1}, "unknown field"),
    ],
)
def test_invalid_models_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(model.InvalidModel, match=message):
        model.FailureModel().updated(changes)


def test_update_keeps_unnamed_fields() -> None:
    updated = model.FailureModel().updated({"decline_rate": 0.9, "retry_after_s": 2.0})
    assert updated.decline_rate == 0.9
    assert updated.retry_after_s == 2
    assert isinstance(updated.retry_after_s, int)
    assert updated.latency_median_ms == 665.0
    assert model.FailureModel().to_doc()["hang_rate"] == 0.01


# --- Ledger ---------------------------------------------------------------------------------------


def test_first_request_processes_and_the_charge_is_replayed() -> None:
    ledger = model.Ledger()
    assert ledger.admit("k", _request()) is model.Admission.PROCESS
    assert ledger.charge("k") is None  # not visible while processing
    charge = ledger.settle("k", model.Settlement.CHARGED, charge_id="ch_1", now=NOW)
    assert charge is not None
    assert charge.to_doc() == {
        "charge_id": "ch_1",
        "order_id": "o-1",
        "amount": "49.99",
        "currency": "EUR",
        "status": "succeeded",
        "created_at": "2026-01-01T00:00:00.000Z",
        "refunded_at": None,
    }
    assert ledger.admit("k", _request(amount="49.990")) is model.Admission.REPLAY_CHARGE
    record = ledger.record("k")
    assert record is not None
    assert (record.attempts, record.charges) == (2, 1)
    assert record.first_answer == charge.to_doc()


def test_a_different_body_under_a_used_key_is_refused() -> None:
    ledger = model.Ledger()
    ledger.admit("k", _request())
    assert ledger.admit("k", _request(amount="1.00")) is model.Admission.KEY_REUSED  # in flight
    ledger.settle("k", model.Settlement.CHARGED, charge_id="ch_1", now=NOW)
    assert ledger.admit("k", _request(currency="USD")) is model.Admission.KEY_REUSED
    assert ledger.admit("k", _request(order_id="o-2")) is model.Admission.KEY_REUSED


def test_a_request_in_flight_makes_the_same_request_wait() -> None:
    ledger = model.Ledger()
    assert ledger.admit("k", _request()) is model.Admission.PROCESS
    assert ledger.admit("k", _request()) is model.Admission.WAIT
    ledger.settle("k", model.Settlement.CHARGED, charge_id="ch_1", now=NOW)
    assert ledger.admit("k", _request(), new_request=False) is model.Admission.REPLAY_CHARGE
    record = ledger.record("k")
    assert record is not None
    assert (record.attempts, record.charges) == (2, 1)


def test_a_decline_is_stored_and_is_no_charge() -> None:
    ledger = model.Ledger()
    ledger.admit("k", _request())
    assert ledger.settle("k", model.Settlement.DECLINED, charge_id="ch_1", now=NOW) is None
    assert ledger.admit("k", _request()) is model.Admission.REPLAY_DECLINE
    assert ledger.admit("k", _request(amount="2")) is model.Admission.KEY_REUSED
    assert ledger.charge("k") is None
    assert ledger.refund("k", now=NOW) is None
    assert len(ledger) == 0


def test_a_dropped_attempt_frees_the_key() -> None:
    ledger = model.Ledger()
    ledger.admit("k", _request())
    assert ledger.settle("k", model.Settlement.DROPPED, charge_id="ch_1", now=NOW) is None
    # Nothing was stored: a retry rolls again, even with another body.
    assert ledger.admit("k", _request(amount="5")) is model.Admission.PROCESS
    charge = ledger.settle("k", model.Settlement.CHARGED, charge_id="ch_2", now=NOW)
    assert charge is not None
    assert charge.amount == "5"
    record = ledger.record("k")
    assert record is not None
    assert (record.attempts, record.charges) == (2, 1)


def test_settle_without_an_attempt_in_flight_is_a_bug() -> None:
    ledger = model.Ledger()
    ledger.admit("k", _request())
    ledger.settle("k", model.Settlement.CHARGED, charge_id="ch_1", now=NOW)
    with pytest.raises(RuntimeError, match="without an attempt in flight"):
        ledger.settle("k", model.Settlement.CHARGED, charge_id="ch_2", now=NOW)


def test_refund_is_idempotent() -> None:
    ledger = model.Ledger()
    ledger.admit("k", _request())
    ledger.settle("k", model.Settlement.CHARGED, charge_id="ch_1", now=NOW)
    later = NOW + timedelta(seconds=5)
    refunded = ledger.refund("k", now=later)
    assert refunded is not None
    assert (refunded.status, refunded.refunded_at) == ("refunded", later)
    again = ledger.refund("k", now=later + timedelta(seconds=5))
    assert again is not None
    assert again.refunded_at == later
    assert again.to_doc()["refunded_at"] == "2026-01-01T00:00:05.000Z"
    # A replay of the charge request sends the first answer, as a real processor does.
    record = ledger.record("k")
    assert record is not None
    assert record.first_answer is not None
    assert record.first_answer["status"] == "succeeded"
    assert ledger.refund("nope", now=NOW) is None


def test_pages_list_charges_in_creation_order() -> None:
    ledger = model.Ledger()
    for i in range(5):
        key = f"k{i}"
        ledger.admit(key, _request(order_id=key))
        ledger.settle(key, model.Settlement.CHARGED, charge_id=f"ch_{i}", now=NOW)
    ledger.admit("declined", _request(order_id="declined"))
    ledger.settle("declined", model.Settlement.DECLINED, charge_id="x", now=NOW)
    first, cursor = ledger.page(limit=2)
    assert [r.key for r in first] == ["k0", "k1"]
    assert cursor == 2
    second, cursor = ledger.page(limit=2, cursor=2)
    assert [r.key for r in second] == ["k2", "k3"]
    last, cursor = ledger.page(limit=2, cursor=cursor or 0)
    assert ([r.key for r in last], cursor) == (["k4"], None)
    assert ledger.page(limit=10, cursor=99) == ([], None)
    assert len(ledger) == 5
