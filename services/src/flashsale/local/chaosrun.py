"""The fault-injection runs' shared parts (`flashsale chaos`, local/chaos.py): the profiles (SHORT
for `make test`, LONG for `make chaos`), the run context every scenario gets (the stack, its
settings and supervisor, sales, crowds, extra API processes), and the tally: what the buyers were
told against what Redis, PostgreSQL and the gateway hold afterwards, with the four counts that must
be 0 (oversold, lost, duplicated, double-charged) and `flashsale verify`'s verdict.
Starts the product's processes; imports none of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from flashsale.adapters import pg
from flashsale.adapters.redis_stock import RedisStock, connect
from flashsale.adapters.tokens import mint
from flashsale.config import MockGatewaySettings, WorkerSettings
from flashsale.domain.invariants import SaleFacts, judge
from flashsale.gateway.model import FAST
from flashsale.local import faults
from flashsale.local.crowd import Crowd, CrowdLog, CrowdPlan
from flashsale.local.embedded import free_port
from flashsale.local.stack import Child, Stack, StackOptions
from flashsale.verify import gather, wait_quiescent

API_WORKER = "api-worker"  # a kill target: one of the API's uvicorn workers, not the supervisor


@dataclass(frozen=True)
class Profile:
    """How big each scenario is. SHORT runs inside `make test` (seconds each); LONG is `make
    chaos`."""

    name: str
    kill_stock: int
    kill_rate: float  # buyers arriving per second, until the last process is back
    kill_rounds: int
    kill_gap_s: float
    store_stock: int
    store_buyers: int
    store_rate: float
    store_down_s: float
    gateway_orders: int
    storm_keys: int
    storm_size: int
    timeout_retries: int
    backlog: int
    sse_connections: int
    fuzz_examples: int
    fuzz_as_admin: bool  # a second schemathesis pass with an admin token
    settle_timeout_s: float
    # How long one buyer keeps asking: longer than the slowest restart of a killed process.
    patience_s: float
    # The `slow` gateway mode's latency p95 (its median a fifth of it): beyond the worker's
    # charge timeout, so charges time out and the reconciler settles them.
    slow_p95_ms: float
    # The stack's worker settings (FLASHSALE_*): the short profile makes every wait short.
    env: dict[str, str] = field(default_factory=dict)
    # The mock gateway's everyday failure model for the kill and store scenarios.
    everyday_model: dict[str, Any] = field(default_factory=dict)

    @property
    def reconcile_interval_s(self) -> float:
        default = WorkerSettings().reconcile_interval_s
        return float(self.env.get("FLASHSALE_WORKER__RECONCILE_INTERVAL_S", default))


# The reference system's measured model (CONTRACT.md "Payment gateway"): the mock gateway's own
# defaults for the fields the fast model zeroes.
DEFAULT_MODEL: dict[str, Any] = {name: getattr(MockGatewaySettings(), name) for name in FAST}

SHORT = Profile(
    name="short",
    kill_stock=300,
    kill_rate=40,
    kill_rounds=1,
    kill_gap_s=0.5,
    store_stock=100,
    store_buyers=180,
    store_rate=60,
    store_down_s=1.0,
    gateway_orders=12,
    storm_keys=2,
    storm_size=50,
    timeout_retries=5,
    backlog=20,
    sse_connections=5000,
    fuzz_examples=5,
    fuzz_as_admin=False,  # ~10 s a pass; the admin routes' refusals have tests of their own
    settle_timeout_s=60.0,
    patience_s=60.0,
    slow_p95_ms=2500.0,  # 2.5x the 1 s charge timeout below
    env={
        # 1 s, the least the settings allow: a killed worker's entries are claimed at once.
        "FLASHSALE_WORKER__CLAIM_IDLE_MS": "1000",
        "FLASHSALE_WORKER__BLOCK_MS": "200",
        "FLASHSALE_WORKER__RECONCILE_INTERVAL_S": "0.2",
        "FLASHSALE_GATEWAY__TIMEOUT_S": "1.0",
        "FLASHSALE_GATEWAY__MAX_ATTEMPTS": "2",
        "FLASHSALE_GATEWAY__BACKOFF_BASE_S": "0.05",
        "FLASHSALE_GATEWAY__BACKOFF_CAP_S": "0.5",
        "FLASHSALE_GATEWAY__MAX_RETRY_AFTER_S": "2",
    },
    # The default rates, latency scaled down ~10x so a short run settles in seconds.
    everyday_model={**DEFAULT_MODEL, "latency_median_ms": 60, "latency_p95_ms": 250},
)

LONG = Profile(
    name="long",
    kill_stock=5000,
    kill_rate=100,
    kill_rounds=4,
    kill_gap_s=3.0,
    store_stock=1500,
    store_buyers=6000,
    store_rate=200,
    store_down_s=5.0,
    gateway_orders=200,
    storm_keys=20,
    storm_size=50,
    timeout_retries=50,
    backlog=300,
    sse_connections=5000,
    fuzz_examples=60,
    fuzz_as_admin=True,
    settle_timeout_s=300.0,
    patience_s=120.0,
    slow_p95_ms=10_000.0,  # the "slow (p95 10 s)": 4x the default 2.5 s charge timeout
    env={
        # 5 s instead of 30 s: each kill round's orphans are claimed within seconds, not half a
        # minute (it must still exceed a first charge attempt, 2.5 s, or live work is claimed).
        "FLASHSALE_WORKER__CLAIM_IDLE_MS": "5000",
    },
    everyday_model=DEFAULT_MODEL,
)

PROFILES = {"short": SHORT, "long": LONG}


@dataclass
class Tally:
    """One scenario's row of the report. `ok` needs verify's verdict, the four zeros and no
    finding."""

    scenario: str
    title: str
    sale_id: str
    requests: int = 0
    answers_202: int = 0
    accepted: int = 0  # distinct order ids the buyers got in 202 answers
    orders: int = 0  # rows in PostgreSQL
    charges: int = 0  # charges the gateway made for the sale's orders
    oversold: int = 0
    lost: int = 0
    duplicated: int = 0
    double_charged: int = 0
    verified: bool = False
    checks: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        zeros = not (self.oversold or self.lost or self.duplicated or self.double_charged)
        return self.verified and zeros and not self.findings

    def to_doc(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "sale_id": self.sale_id,
            "requests": self.requests,
            "answers_202": self.answers_202,
            "accepted_orders": self.accepted,
            "orders": self.orders,
            "charges": self.charges,
            "oversold": self.oversold,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "double_charged": self.double_charged,
            "verified": self.verified,
            "ok": self.ok,
            "checks": self.checks,
            "faults": self.faults,
            "findings": self.findings,
            "details": self.details,
            "seconds": round(self.seconds, 1),
        }


def count_facts(facts: SaleFacts, log: CrowdLog, *, sold: int | None) -> dict[str, Any]:
    """The report's numbers from verify's facts and the buyers' own record; pure."""
    order_ids = Counter(o.order_id for o in facts.orders)
    in_pg = set(order_ids)
    acked = set(facts.acknowledged_order_ids)
    told = log.accepted_order_ids
    held: Counter[str] = Counter()
    for order in facts.orders:
        if order.status != "failed":
            held[order.user_id] += order.quantity
    held_units = sum(held.values())
    over_limit = sum(max(0, units - facts.per_user_limit) for units in held.values())
    charges = [c for c in facts.charges or [] if c.order_id in in_pg]
    orphans = [c.order_id for c in facts.charges or [] if c.order_id not in in_pg]
    findings = []
    if orphans:
        findings.append(f"{len(orphans)} charges without an order, e.g. {orphans[0]}")
    if sold is not None and sold != held_units:
        findings.append(f"PostgreSQL's sold counter is {sold}, its rows hold {held_units} units")
    if facts.remaining < 0:
        findings.append(f"Redis remaining stock is {facts.remaining}")
    return {
        "orders": len(in_pg),
        "charges": sum(c.charges for c in charges),
        "oversold": max(0, held_units - facts.initial_stock) + over_limit,
        "lost": len((told | acked) - in_pg),
        "duplicated": (
            sum(n - 1 for n in order_ids.values())
            + len(log.keys_with_two_orders())
            + len(in_pg - acked)
        ),
        "double_charged": sum(1 for c in charges if c.charges > 1),
        "findings": findings,
        "statuses": dict(Counter(o.status for o in facts.orders)),
    }


class ChaosRun:
    """The scenarios' shared context: the stack, its settings, its supervisor and the profile."""

    def __init__(
        self, stack: Stack, profile: Profile, *, supervisor: faults.Supervisor, seed: int = 7
    ) -> None:
        self.stack = stack
        self.profile = profile
        self.supervisor = supervisor
        self.seed = seed
        self.settings = stack.settings()
        self.admin = {"Authorization": f"Bearer {self.token('chaos-admin', admin=True)}"}
        self.progress: Callable[[str], None] = lambda _: None

    def token(self, user_id: str, *, admin: bool = False) -> str:
        return mint(self.settings.auth, user_id=user_id, admin=admin)

    def sale_id(self, scenario: str) -> str:
        # Sale ids are 1-63 of a-z0-9-; time-based so reruns on one stack never collide.
        return f"{scenario}-{int(time.time() * 1000) % 10**9:09d}"[:63]

    async def new_sale(
        self, scenario: str, *, stock: int, per_user_limit: int = 1, api_url: str | None = None
    ) -> str:
        sale_id = self.sale_id(scenario)
        now = datetime.now(UTC)
        async with httpx.AsyncClient(base_url=api_url or self.stack.api_url, timeout=10) as http:
            response = await http.put(
                f"/v1/admin/sales/{sale_id}",
                headers=self.admin,
                json={
                    "name": f"chaos {scenario}",
                    "price": "49.99",
                    "stock": stock,
                    "opens_at": (now - timedelta(seconds=1)).isoformat(),
                    "closes_at": (now + timedelta(hours=2)).isoformat(),
                    "per_user_limit": per_user_limit,
                },
            )
        if response.status_code != 201:
            raise faults.FaultError(f"creating {sale_id}: {response.status_code} {response.text}")
        return sale_id

    def crowd(
        self, sale_id: str, *, buyers: int, rate: float, prefix: str, api_url: str = ""
    ) -> Crowd:
        return Crowd(
            api_url=api_url or self.stack.api_url,
            sale_id=sale_id,
            auth=self.settings.auth,
            plan=CrowdPlan(
                buyers=buyers,
                rate=rate,
                patience_s=self.profile.patience_s,
                seed=self.seed,
            ),
            user_prefix=f"{prefix}-{sale_id[-6:]}",
        )

    async def gateway_model(self, **model: Any) -> None:
        await faults.set_gateway_model(self.stack.gateway_url, seed=self.seed, **model)

    # --- waiting and judging ------------------------------------------------------------------

    async def counters(self, sale_id: str) -> dict[str, int]:
        redis = connect(self.settings.redis)
        try:
            c = await RedisStock(redis, api=self.settings.api).counters(sale_id)
        finally:
            await redis.aclose()
        return {
            "remaining": c.remaining,
            "pending": c.pending,
            "confirmed": c.confirmed,
            "failed": c.failed,
            "needs_reconciliation": c.needs_reconciliation,
        }

    async def wait_until(
        self, check: Callable[[], Awaitable[bool]], *, what: str, timeout_s: float | None = None
    ) -> None:
        deadline = time.monotonic() + (timeout_s or self.profile.settle_timeout_s)
        while not await check():
            if time.monotonic() > deadline:
                raise faults.FaultError(f"{what}: not reached in time")
            await asyncio.sleep(0.1)

    async def wait_unpending(self, sale_id: str) -> dict[str, int]:
        """Until no order of the sale is pending (each confirmed, failed or in reconciliation)."""

        async def done() -> bool:
            return (await self.counters(sale_id))["pending"] == 0

        await self.wait_until(done, what=f"the orders of {sale_id} leaving pending")
        return await self.counters(sale_id)

    def log_marks(self) -> dict[Path, int]:
        """Where each process log of the stack ends now (see errors_logged)."""
        folder = self.stack.options.data_dir / "logs"
        return {path: path.stat().st_size for path in folder.glob("*.log")}

    def errors_logged(self, marks: dict[Path, int]) -> list[str]:
        """Error lines the stack's processes logged since `marks`: an unhandled exception in a
        task, a crashed worker loop, a 500 the API logged. Faults are expected to cause warnings
        (a store unavailable, a claim), never errors."""
        found = []
        for path in sorted((self.stack.options.data_dir / "logs").glob("*.log")):
            with path.open("rb") as f:
                f.seek(marks.get(path, 0))
                for line in f.read().decode(errors="replace").splitlines():
                    if '"level":"error"' in line or '"level":"critical"' in line:
                        found.append(f"{path.stem}: {_log_message(line)}")
        return found

    async def tally(
        self,
        tally: Tally,
        log: CrowdLog,
        *,
        started: float,
        marks: dict[Path, int] | None = None,
    ) -> Tally:
        """Wait until the sale is quiescent, then count: verify's facts and the buyers' record;
        with `marks` (taken when the scenario began), error lines the processes logged too."""
        settings = self.settings
        redis = connect(settings.redis)
        try:
            stock = RedisStock(redis, api=settings.api)
            quiet = await wait_quiescent(
                stock, tally.sale_id, timeout_s=self.profile.settle_timeout_s
            )
        finally:
            await redis.aclose()
        facts, _ = await gather(settings, tally.sale_id)
        verdict = judge(facts)
        pool = await pg.create_pool(
            settings.postgres.model_copy(update={"pool_min": 0, "pool_max": 1})
        )
        try:
            sold = await pg.PgStore(pool).sale_sold(tally.sale_id)
        finally:
            await pool.close()
        counted = count_facts(facts, log, sold=sold)
        tally.requests += log.requests
        tally.answers_202 += log.answers_202
        tally.accepted = len(log.accepted_order_ids)
        tally.orders = counted["orders"]
        tally.charges = counted["charges"]
        tally.oversold = counted["oversold"]
        tally.lost = counted["lost"]
        tally.duplicated = counted["duplicated"]
        tally.double_charged = counted["double_charged"]
        tally.verified = verdict.ok
        tally.checks = [
            f"{c.number}. {c.name}: {'ok' if c.ok else 'FAILED'} ({c.detail})"
            for c in verdict.checks
        ]
        tally.findings += counted["findings"]
        if not quiet.quiescent:
            tally.findings.append(f"not quiescent after {self.profile.settle_timeout_s:.0f} s")
        if log.server_errors:
            tally.findings.append(
                f"{len(log.server_errors)} unexpected 5xx answers, e.g. {log.server_errors[0]}"
            )
        # Buyers who ran out of patience while a process was down are not a defect (the fault
        # was the point); a 202 they got before is still counted above.
        tally.details["gave_up"] = log.gave_up
        if marks is not None:
            logged = self.errors_logged(marks)
            if logged:
                tally.findings.append(f"{len(logged)} error lines logged, e.g. {logged[0]}")
                tally.details["errors_logged"] = logged[:20]
        tally.details.setdefault("statuses", counted["statuses"])
        tally.details["answers"] = {str(k): v for k, v in sorted(log.statuses.items())}
        tally.details["codes"] = dict(log.codes)
        tally.details["network_errors"] = dict(log.errors)
        tally.details["replayed"] = log.replayed
        tally.seconds = time.monotonic() - started
        self.progress(f"{tally.scenario}: {'ok' if tally.ok else 'FAILED'}")
        return tally

    async def ready(self, *, timeout_s: float = faults.READY_TIMEOUT_S) -> None:
        """Until every process of the stack answers its health URL (after restarts)."""
        await asyncio.to_thread(faults.wait_all_ready, self.stack, timeout_s=timeout_s)

    @contextlib.asynccontextmanager
    async def extra_api(self, name: str, env: dict[str, str]) -> AsyncIterator[str]:
        """Another API process on the same stores with settings of its own (a low queue bound,
        low rate limits); yields its URL and stops it afterwards."""
        port = free_port()
        child = Child(
            name=name,
            args=[sys.executable, "-m", "flashsale.api"],
            env={
                **self.stack.base_env(),
                "FLASHSALE_API__PORT": str(port),
                "FLASHSALE_API__WORKERS": "1",
                **env,
            },
            health_url=f"http://127.0.0.1:{port}/readyz",
            log_path=self.stack.options.data_dir / "logs" / f"{name}.log",
        )
        child.start()
        try:
            await asyncio.to_thread(_wait_healthy, child)
            yield f"http://127.0.0.1:{port}"
        finally:
            await asyncio.to_thread(child.stop)


def _log_message(line: str) -> str:
    """The message of one JSON log line (and the last line of its traceback), shortened."""
    try:
        doc = json.loads(line)
    except ValueError:
        return line[:300]
    message = str(doc.get("msg", ""))[:200]
    exc = str(doc.get("exc", "")).strip().splitlines()
    return f"{message} [{exc[-1][:200]}]" if exc else message


def _wait_healthy(child: Child, timeout_s: float = faults.READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if not child.alive():
                raise faults.FaultError(f"{child.name} exited; see {child.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(child.health_url).status_code == 200:
                    return
            time.sleep(0.1)
    raise faults.FaultError(f"{child.name} did not become ready")


def stack_options(profile: Profile, data_dir: Path, *, api_workers: int = 2) -> StackOptions:
    """The chaos stack: its own Valkey and PostgreSQL (they get restarted), free ports, two API
    workers (one is killed), the profile's worker timings, no per-address limit (the crowd is one
    address), warnings-only logs."""
    options = StackOptions(data_dir=data_dir, api_workers=api_workers)
    for name in ("api", "sse", "gateway", "order", "payment", "redis", "postgres"):
        setattr(options, f"{name}_port", free_port())
    options.env.update(
        {
            "FLASHSALE_LOG_LEVEL": "WARNING",
            # The crowd is one address and the storms one user: the limits have their own scenario
            # (hostile input, on an API process of its own with low limits).
            "FLASHSALE_API__RATE_LIMIT_ADDR_PER_S": "0",
            "FLASHSALE_API__RATE_LIMIT_USER_PER_S": "0",
            "FLASHSALE_MOCK__SEED": "7",
            **profile.env,
        }
    )
    return options
