"""A crowd of buyers for the fault-injection runs (`flashsale chaos`): asyncio clients over HTTP
that keep their own record of every answer, so the run can compare what the buyers were told with
what Redis, PostgreSQL and the gateway hold afterwards.

Each buyer has one Idempotency-Key and behaves as the contract asks a client to: it retries with
the same key after a network error, a timeout, a 503 or a 429 (honouring Retry-After), and after 409
request_in_progress; it stops at its first 202 or at a final refusal (sold out, limit, closed).
Talks to the API over HTTP only; imports nothing of the processes it loads."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from flashsale.adapters.tokens import mint
from flashsale.config import AuthSettings

# Retrying is what the contract asks of a client; these bound how patient one buyer is.
RETRY_AFTER_CAP_S = 3.0  # a buyer waits at most this long on one Retry-After
BACKOFF_BASE_S = 0.05  # first wait after a network error or a 5xx without Retry-After
# 2 s: a crowd retrying faster than this against a restarting API only slows its restart down.
BACKOFF_CAP_S = 2.0
MAX_ATTEMPTS = 200  # per buyer; the patience (time) is what normally ends a buyer's tries
# Answers after which a buyer keeps its key and asks again (the first answer may not be final).
RETRYABLE = {429, 503}
RETRYABLE_CODES = {"request_in_progress"}


@dataclass
class CrowdLog:
    """Everything the buyers saw. `accepted` maps each Idempotency-Key to the order ids of the 202
    answers it got: one id per key, or the API broke idempotency."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, set[str]] = field(default_factory=dict)
    replayed: int = 0
    gave_up: int = 0  # buyers who ran out of attempts or time without a final answer
    server_errors: list[str] = field(default_factory=list)  # 5xx other than 503, never allowed

    @property
    def accepted_order_ids(self) -> set[str]:
        return {order_id for ids in self.accepted.values() for order_id in ids}

    @property
    def answers_202(self) -> int:
        return self.statuses[202]

    def keys_with_two_orders(self) -> list[str]:
        return [key for key, ids in self.accepted.items() if len(ids) > 1]

    def merge(self, other: CrowdLog) -> None:
        self.requests += other.requests
        self.statuses.update(other.statuses)
        self.codes.update(other.codes)
        self.errors.update(other.errors)
        for key, ids in other.accepted.items():
            self.accepted.setdefault(key, set()).update(ids)
        self.replayed += other.replayed
        self.gave_up += other.gave_up
        self.server_errors.extend(other.server_errors)


@dataclass(frozen=True)
class CrowdPlan:
    """Buyers arrive at `rate` per second, at most `buyers` of them (or until the run's `stop`
    event); each gives up after `patience_s`."""

    buyers: int
    rate: float
    patience_s: float = 30.0
    timeout_s: float = 5.0  # per request; a killed API process shows as a network error sooner
    connections: int = 100
    seed: int = 7


class Crowd:
    """Buyers of one sale, all on one pooled HTTP client."""

    def __init__(
        self,
        *,
        api_url: str,
        sale_id: str,
        auth: AuthSettings,
        plan: CrowdPlan,
        user_prefix: str = "buyer",
    ) -> None:
        self.api_url = api_url
        self.sale_id = sale_id
        self.auth = auth
        self.plan = plan
        self.user_prefix = user_prefix
        self.log = CrowdLog()
        self.rng = random.Random(plan.seed)

    async def run(self, stop: asyncio.Event | None = None) -> CrowdLog:
        """Let the buyers arrive, then wait for every one of them to finish."""
        plan = self.plan
        limits = httpx.Limits(
            max_connections=plan.connections, max_keepalive_connections=plan.connections
        )
        # Waiting for a connection (pool) or for the handshake is patient: a connect timeout that
        # fires before anyio started its connect task leaves an unawaited coroutine behind, and a
        # crowd failing fast at the pool only burns the CPU the restarting API needs.
        timeout = httpx.Timeout(plan.timeout_s, connect=plan.patience_s, pool=plan.patience_s)
        async with httpx.AsyncClient(base_url=self.api_url, limits=limits, timeout=timeout) as http:
            started = time.monotonic()
            tasks = []
            for i in range(plan.buyers):
                if stop is not None and stop.is_set():
                    break
                # Even arrivals: buyer i starts at i / rate. Always yield, even when behind: a
                # loop that catches up without yielding starves the buyers it starts, and the stop
                # event can never be set.
                await asyncio.sleep(max(0.0, started + i / plan.rate - time.monotonic()))
                user_id = f"{self.user_prefix}-{i}"
                key = f"{user_id}-{self.rng.getrandbits(64):016x}"
                tasks.append(asyncio.create_task(self.buyer(http, user_id, key)))
            await asyncio.gather(*tasks)
        return self.log

    async def buyer(self, http: httpx.AsyncClient, user_id: str, key: str) -> None:
        """One buyer: ask until a final answer, the attempts or the patience run out."""
        headers = {
            "Authorization": f"Bearer {mint(self.auth, user_id=user_id)}",
            "Idempotency-Key": key,
        }
        deadline = time.monotonic() + self.plan.patience_s
        path = f"/v1/sales/{self.sale_id}/orders"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            wait = await self.ask(http, path, headers, key, attempt)
            if wait is None:
                return
            if time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        self.log.gave_up += 1

    async def ask(
        self, http: httpx.AsyncClient, path: str, headers: dict[str, str], key: str, attempt: int
    ) -> float | None:
        """One request; None when the answer is final, else how long to wait before the next."""
        log = self.log
        log.requests += 1
        try:
            response = await http.post(path, headers=headers, json={"quantity": 1})
        except httpx.TransportError as e:  # refused, reset, timed out: the same key again
            log.errors[type(e).__name__] += 1
            return self.backoff(attempt)
        status = response.status_code
        log.statuses[status] += 1
        if status == 202:
            doc = response.json()
            log.accepted.setdefault(key, set()).add(str(doc["order_id"]))
            if response.headers.get("idempotent-replayed") == "true":
                log.replayed += 1
            return None
        code = _problem_code(response)
        log.codes[code] += 1
        if status >= 500 and status != 503:
            log.server_errors.append(f"{status} {code}: {response.text[:200]}")
            return self.backoff(attempt)
        if status in RETRYABLE or code in RETRYABLE_CODES:
            return self.retry_after(response, attempt)
        return None

    def backoff(self, attempt: int) -> float:
        """Capped exponential backoff with full jitter (seeded)."""
        ceiling: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 10))
        return self.rng.uniform(0, ceiling)

    def retry_after(self, response: httpx.Response, attempt: int) -> float:
        raw = response.headers.get("retry-after", "")
        if raw.isdigit():
            # The floor the server asked for, capped, plus a little jitter so retries spread out.
            return min(RETRY_AFTER_CAP_S, float(raw)) + self.rng.uniform(0, 0.2)
        return self.backoff(attempt)


def _problem_code(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return f"http_{response.status_code}"
    code = doc.get("code") if isinstance(doc, dict) else None
    return str(code) if code else f"http_{response.status_code}"
