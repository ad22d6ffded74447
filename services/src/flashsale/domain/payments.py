"""Payment outcomes: how a gateway answer is classified, and how long to wait before the next
attempt.

Capped exponential backoff with full jitter, honouring Retry-After when the gateway gives one.
Standard library and flashsale.errors only."""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

# 2.0**1000 is still a finite float and far past any cap: the exponent stops there.
MAX_BACKOFF_EXPONENT = 1000


class ChargeOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"  # 2xx: the order is confirmed
    DECLINED = "declined"  # 402: the order fails and its unit goes back to stock
    RETRY = "retry"  # 429, 5xx, connection error: try again after a delay
    UNKNOWN = "unknown"  # timeout: the charge may or may not exist; retry with the same key
    INVALID = "invalid"  # any other 4xx: our request is wrong; retrying cannot help


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    """What one attempt saw: an HTTP status, or none (timeout/connection error)."""

    status: int | None
    retry_after_s: float | None = None
    timed_out: bool = False


def classify(answer: GatewayAnswer) -> ChargeOutcome:
    if answer.status is None:
        return ChargeOutcome.UNKNOWN if answer.timed_out else ChargeOutcome.RETRY
    if 200 <= answer.status < 300:
        return ChargeOutcome.SUCCEEDED
    if answer.status == 402:
        return ChargeOutcome.DECLINED
    if answer.status in (408, 409, 425, 429) or answer.status >= 500:
        return ChargeOutcome.RETRY
    return ChargeOutcome.INVALID


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    retry_after_cap_s: float = math.inf,
    rng: random.Random | None = None,
) -> float:
    """Delay before attempt `attempt + 1` (attempt counts from 1): full jitter over
    base·2^(attempt-1), capped; a Retry-After from the gateway is a floor (never wait less than it
    asked), itself capped at `retry_after_cap_s` so one answer cannot hold a payment slot for an
    hour."""
    # A long retry loop must not overflow: the exponent is bounded (see MAX_BACKOFF_EXPONENT).
    ceiling = min(cap_s, base_s * 2.0 ** min(max(0, attempt - 1), MAX_BACKOFF_EXPONENT))
    jittered = (rng or random).uniform(0, ceiling)
    if retry_after_s is not None:
        return max(jittered, min(retry_after_s, retry_after_cap_s))
    return jittered


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds form only; an HTTP date, a negative or a non-finite
    value is treated as absent: "inf" must not park a charge forever)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
