"""The mock gateway's failure model and charge ledger: what happens to each charge request, and
what the processor remembers per Idempotency-Key.

Pure: no I/O, no clock, no asyncio. Randomness comes from one seeded `random.Random`, so the same
seed gives the same sequence of decisions for the same sequence of requests; the time is passed in.
gateway/app.py draws, sleeps and answers. Imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from statistics import NormalDist
from typing import Any

# z of the 95th percentile of a standard normal (1.6449): a log-normal with p95/median = r has
# sigma = ln(r) / z.
Z_95 = NormalDist().inv_cdf(0.95)
_STANDARD_NORMAL = NormalDist()
# The inverse CDF is infinite at 0 and 1 (random() may return exactly 0.0): clamp into (0, 1).
_TINY = math.ulp(0.0)
_BELOW_ONE = math.nextafter(1.0, 0.0)
# Outcome rates are added up; allow float rounding (0.05 + 0.02 + ...) to overshoot 1 by this much.
_RATE_SUM_SLACK = 1e-9


class InvalidModel(ValueError):
    """A failure model (from settings or the admin API) that cannot be used."""


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"  # 201 after a normal latency
    DECLINED = "declined"  # 402 card_declined after a normal latency
    UNAVAILABLE = "unavailable"  # 503, fast
    RATE_LIMITED = "rate_limited"  # 429 with Retry-After, fast
    HANG = "hang"  # never answered; the charge is made or not (hang_charge_share)


class Settlement(enum.Enum):
    """How one processing attempt ends in the ledger."""

    CHARGED = "charged"  # a charge exists and is replayed from now on
    DECLINED = "declined"  # the decline is stored and replayed (402 again)
    DROPPED = "dropped"  # nothing stored: the key is free and the next request processes afresh


# Fast mode: the fields that make every request succeed at once (the rest of a model stays).
FAST: dict[str, Any] = {
    "latency_median_ms": 0.0,
    "latency_p95_ms": 0.0,
    "decline_rate": 0.0,
    "unavailable_rate": 0.0,
    "rate_limited_rate": 0.0,
    "hang_rate": 0.0,
}


@dataclass(frozen=True, slots=True)
class FailureModel:
    """Rates are shares of processed (not replayed) requests; the four outcome rates add up to at
    most 1 and the rest succeed. Defaults are the reference system's measurements."""

    latency_median_ms: float = 665.0
    latency_p95_ms: float = 2300.0
    decline_rate: float = 0.05
    unavailable_rate: float = 0.02
    rate_limited_rate: float = 0.01
    hang_rate: float = 0.01
    hang_charge_share: float = 0.5  # hangs in which the charge is nevertheless made
    unavailable_retry_after_share: float = 0.5  # 503 answers that carry Retry-After
    retry_after_s: int = 1  # the Retry-After value on 429 (always) and 503 (sometimes)
    # 429/503 take this share of a sampled latency: a processor's rate limiter and load balancer
    # refuse at its edge, before the card-network round trip that makes up a charge's latency.
    refusal_latency_share: float = 0.05

    def __post_init__(self) -> None:
        for name in ("latency_median_ms", "latency_p95_ms"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidModel(f"{name} must be a finite number >= 0, not {value!r}")
        if self.latency_median_ms > 0 and self.latency_p95_ms < self.latency_median_ms:
            raise InvalidModel("latency_p95_ms must be >= latency_median_ms")
        for name in _SHARES:
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InvalidModel(f"{name} must be between 0 and 1, not {value!r}")
        if self.rate_sum > 1 + _RATE_SUM_SLACK:
            raise InvalidModel(
                "decline_rate + unavailable_rate + rate_limited_rate + hang_rate must not exceed 1 "
                f"(it is {self.rate_sum:g})"
            )
        if self.retry_after_s < 0:
            raise InvalidModel("retry_after_s must be >= 0")

    @classmethod
    def fast(cls) -> FailureModel:
        """Every request succeeds at once: for load tests of everything but the gateway."""
        return cls(**FAST)

    @property
    def rate_sum(self) -> float:
        return self.decline_rate + self.unavailable_rate + self.rate_limited_rate + self.hang_rate

    @property
    def mu(self) -> float:
        """ln(median in seconds): the log-normal's location."""
        return math.log(self.latency_median_ms / 1000) if self.latency_median_ms > 0 else -math.inf

    @property
    def sigma(self) -> float:
        """ln(p95 / median) / z95: the log-normal's scale (0 when latency is constant or off)."""
        if self.latency_median_ms <= 0:
            return 0.0
        return math.log(self.latency_p95_ms / self.latency_median_ms) / Z_95

    def to_doc(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def updated(self, doc: Mapping[str, Any]) -> FailureModel:
        """This model with the fields in `doc` replaced (the rest kept), type-checked, validated."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidModel(f"unknown field(s): {', '.join(unknown)}")
        changes: dict[str, Any] = {}
        for name, value in doc.items():
            # bool is an int to Python, but `true` is no rate.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidModel(f"{name} must be a number")
            if name in _INTEGERS:
                if not float(value).is_integer():
                    raise InvalidModel(f"{name} must be a whole number")
                changes[name] = int(value)
            else:
                changes[name] = float(value)
        return dataclasses.replace(self, **changes)


_SHARES = (
    "decline_rate",
    "unavailable_rate",
    "rate_limited_rate",
    "hang_rate",
    "hang_charge_share",
    "unavailable_retry_after_share",
    "refusal_latency_share",
)
_INTEGERS = frozenset({"retry_after_s"})


@dataclass(frozen=True, slots=True)
class Draw:
    """The fate of one processed request."""

    outcome: Outcome
    latency_s: float  # processing time before the answer (for a hang: before the charge) is made
    hang_charges: bool = False  # HANG only: the charge is made although no answer is sent
    retry_after_s: int | None = None  # 429 always, 503 sometimes

    @property
    def settlement(self) -> Settlement:
        if self.outcome is Outcome.SUCCEEDED:
            return Settlement.CHARGED
        if self.outcome is Outcome.HANG and self.hang_charges:
            return Settlement.CHARGED
        if self.outcome is Outcome.DECLINED:
            return Settlement.DECLINED
        return Settlement.DROPPED


class Sampler:
    """Draws each request's fate from the current model with one seeded generator.

    Every draw consumes exactly three uniforms (outcome, latency, detail), whatever the model, so
    a seeded run repeats exactly for the same sequence of requests, and a model switch mid-run does
    not shift the stream."""

    def __init__(self, model: FailureModel, *, seed: int | None = None) -> None:
        self.model = model
        self.seed = seed
        self._rng = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def latency_s(self, u: float) -> float:
        """The log-normal quantile at `u`: exp(mu + sigma·Φ⁻¹(u)), in seconds."""
        model = self.model
        if model.latency_median_ms <= 0:
            return 0.0
        z = _STANDARD_NORMAL.inv_cdf(min(max(u, _TINY), _BELOW_ONE))
        return math.exp(model.mu + model.sigma * z)

    def draw(self) -> Draw:
        model = self.model
        u_outcome, u_latency, u_detail = self._rng.random(), self._rng.random(), self._rng.random()
        latency = self.latency_s(u_latency)
        threshold = model.decline_rate
        if u_outcome < threshold:
            return Draw(Outcome.DECLINED, latency)
        threshold += model.unavailable_rate
        if u_outcome < threshold:
            retry_after = (
                model.retry_after_s if u_detail < model.unavailable_retry_after_share else None
            )
            refusal = latency * model.refusal_latency_share
            return Draw(Outcome.UNAVAILABLE, refusal, False, retry_after)
        threshold += model.rate_limited_rate
        if u_outcome < threshold:
            return Draw(
                Outcome.RATE_LIMITED,
                latency * model.refusal_latency_share,
                False,
                model.retry_after_s,
            )
        threshold += model.hang_rate
        if u_outcome < threshold:
            return Draw(Outcome.HANG, latency, u_detail < model.hang_charge_share)
        return Draw(Outcome.SUCCEEDED, latency)


# --- The ledger: what the processor remembers per Idempotency-Key ---------------------------------


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A validated charge request body. Two requests are the same when order, amount (as a number:
    "10.0" equals "10.00") and currency are."""

    order_id: str
    amount: Decimal
    amount_text: str  # as the first request spelled it; echoed back
    currency: str

    def same_as(self, other: ChargeRequest) -> bool:
        return (
            self.order_id == other.order_id
            and self.amount == other.amount
            and self.currency == other.currency
        )


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Charge:
    charge_id: str
    order_id: str
    amount: str
    currency: str
    created_at: datetime
    status: str = "succeeded"  # succeeded | refunded
    refunded_at: datetime | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "charge_id": self.charge_id,
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "created_at": rfc3339(self.created_at),
            "refunded_at": rfc3339(self.refunded_at) if self.refunded_at else None,
        }


@dataclass(slots=True)
class KeyRecord:
    key: str
    attempts: int = 0  # charge requests seen for this key, replays and refusals included
    charges: int = 0  # distinct charges made for this key: more than 1 would be a double charge
    request: ChargeRequest | None = None  # the request that holds the key (in flight or stored)
    in_flight: bool = False
    declined: bool = False
    charge: Charge | None = None
    first_answer: dict[str, Any] | None = None  # the 201 body as first sent; replays send it again


class Admission(enum.Enum):
    PROCESS = "process"  # this request now holds the key: draw its fate and settle it
    WAIT = "wait"  # the same request is in flight: wait for it to settle, then ask again
    REPLAY_CHARGE = "replay_charge"  # answer the stored 201 again
    REPLAY_DECLINE = "replay_decline"  # answer 402 again
    KEY_REUSED = "key_reused"  # the key holds a different request: 422


class Ledger:
    """Idempotency bookkeeping. Only a settled charge or decline claims a key for good; a dropped
    attempt (429, 503, a hang without a charge) leaves it free, so a retry, even with another body,
    rolls again. A charge becomes visible (get, list, refund) only when it is settled, at the end
    of its latency."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._charged: list[str] = []  # keys in the order their charges were made: the list's order

    def admit(self, key: str, request: ChargeRequest, *, new_request: bool = True) -> Admission:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = KeyRecord(key)
        if new_request:
            record.attempts += 1
        held = record.request
        if held is not None and (record.in_flight or record.charge is not None or record.declined):
            if not held.same_as(request):
                return Admission.KEY_REUSED
            if record.charge is not None:
                return Admission.REPLAY_CHARGE
            if record.declined:
                return Admission.REPLAY_DECLINE
            return Admission.WAIT
        record.request = request
        record.in_flight = True
        return Admission.PROCESS

    def settle(
        self, key: str, settlement: Settlement, *, charge_id: str, now: datetime
    ) -> Charge | None:
        """End the attempt admitted with PROCESS; returns the charge if one was made."""
        record = self._records[key]
        request = record.request
        if not record.in_flight or request is None:
            raise RuntimeError(f"settle({key!r}) without an attempt in flight")
        record.in_flight = False
        if settlement is Settlement.DROPPED:
            record.request = None
            return None
        if settlement is Settlement.DECLINED:
            record.declined = True
            return None
        # Counted, not asserted: `charges` is the evidence `flashsale verify` reads, so a bug that
        # charged twice must show up there rather than be hidden.
        record.charges += 1
        if record.charge is None:
            record.charge = Charge(
                charge_id=charge_id,
                order_id=request.order_id,
                amount=request.amount_text,
                currency=request.currency,
                created_at=now,
            )
            record.first_answer = record.charge.to_doc()
            self._charged.append(key)
        return record.charge

    def record(self, key: str) -> KeyRecord | None:
        return self._records.get(key)

    def charge(self, key: str) -> Charge | None:
        record = self._records.get(key)
        return record.charge if record else None

    def refund(self, key: str, *, now: datetime) -> Charge | None:
        """Mark the key's charge refunded (once; later calls change nothing); None if none."""
        charge = self.charge(key)
        if charge is not None and charge.status != "refunded":
            charge.status = "refunded"
            charge.refunded_at = now
        return charge

    def page(self, *, limit: int, cursor: int = 0) -> tuple[list[KeyRecord], int | None]:
        """Charged keys in the order their charges were made, from position `cursor`; and the next
        cursor, None on the last page."""
        keys = self._charged[cursor : cursor + limit]
        following = cursor + len(keys)
        return (
            [self._records[key] for key in keys],
            following if following < len(self._charged) else None,
        )

    def __len__(self) -> int:
        """How many charges exist."""
        return len(self._charged)
