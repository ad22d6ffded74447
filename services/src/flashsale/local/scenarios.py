"""The fault-injection scenarios of `flashsale chaos`: kill -9 of the workers and the API, Valkey
and PostgreSQL restarted mid-sale, a payment gateway failing one way for every charge, duplicate
storms, and a full order queue. Each runs on its own sale of the run's stack, drives its buyers
while it injects its fault, and returns its Tally (hostile input lives in local/hostile.py).
Starts and kills the product's processes; imports none of them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

import httpx

from flashsale.adapters import pg
from flashsale.adapters import redis_keys as keys
from flashsale.adapters.gateway_http import GatewayClient
from flashsale.adapters.redis_stock import connect
from flashsale.domain.orders import FailureReason, OrderStatus
from flashsale.local import faults
from flashsale.local.chaosrun import API_WORKER, ChaosRun, Profile, Tally
from flashsale.local.crowd import CrowdLog

# --- scenario: kill -9 of the workers and the API ------------------------------------------------


def consumer_of(pid: int) -> str:
    """The consumer name a worker process uses in its group (workers/runner.consumer_name)."""
    return f"{socket.gethostname()}-{pid}"


async def pending_of(run: ChaosRun, stream: str, group: str) -> dict[str, int]:
    """Entries each consumer of a group holds unacknowledged."""
    redis = connect(run.settings.redis)
    try:
        consumers = await redis.xinfo_consumers(stream, group)
    finally:
        await redis.aclose()
    return {str(c["name"]): int(c["pending"]) for c in consumers}


STREAMS = {
    "worker-order-1": (keys.ORDER_STREAM, keys.ORDER_GROUP),
    "worker-payment-1": (keys.PAYMENT_STREAM, keys.PAYMENT_GROUP),
}


async def kill_one(run: ChaosRun, target: str) -> dict[str, Any]:
    """SIGKILL `target` and wait until it runs again; what happened, for the report."""
    stack = run.stack
    started = time.monotonic()
    if target == API_WORKER:
        count = len(faults.api_workers(stack))
        victim = faults.kill_api_worker(stack)
        new = await asyncio.to_thread(
            faults.wait_api_workers, stack, count=count, gone=victim, timeout_s=30
        )
        return {
            "target": "one uvicorn worker of the API",
            "pid": victim,
            "replaced_by": sorted(set(new)),
            "back_after_s": round(time.monotonic() - started, 2),
        }
    victim = stack.child(target).pid or 0
    held = None
    if target in STREAMS:
        held = (await pending_of(run, *STREAMS[target])).get(consumer_of(victim), 0)
    faults.kill_child(stack, target)
    new_pid = await asyncio.to_thread(
        faults.wait_child_ready, stack, target, old_pid=victim, timeout_s=faults.READY_TIMEOUT_S
    )
    return {
        "target": target,
        "pid": victim,
        "replaced_by": [new_pid],
        "pending_at_kill": held,
        "back_after_s": round(time.monotonic() - started, 2),
    }


async def scenario_kills(run: ChaosRun) -> Tally:
    """kill -9 of the order worker, the payment worker, one API worker, and in the last round the
    API's supervisor itself, repeatedly while a crowd buys out the sale."""
    p = run.profile
    started = time.monotonic()
    marks = run.log_marks()
    await run.gateway_model(**p.everyday_model)
    sale_id = await run.new_sale("kills", stock=p.kill_stock)
    tally = Tally("kills", "kill -9: order worker, payment worker, API worker", sale_id)
    # Buyers keep arriving until the last killed process is back: the kills land under load.
    arrivals_done = asyncio.Event()
    # At most ten minutes of arrivals, whatever happens to the stop event.
    buyers = run.crowd(sale_id, buyers=int(p.kill_rate * 600), rate=p.kill_rate, prefix="k")
    crowd = asyncio.create_task(buyers.run(stop=arrivals_done))
    kills: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(p.kill_gap_s)
        for round_no in range(p.kill_rounds):
            targets = ["worker-order-1", "worker-payment-1", API_WORKER]
            if round_no == p.kill_rounds - 1:
                targets.append("api")
            for target in targets:
                kills.append({"round": round_no + 1, **await kill_one(run, target)})
                run.progress(f"kills: killed {target}")
                await asyncio.sleep(p.kill_gap_s)
    finally:
        arrivals_done.set()
        log = await crowd
    run.progress("kills: every buyer has a final answer")
    await run.ready()
    tally.faults = [
        f"round {k['round']}: kill -9 {k['target']} (pid {k['pid']}), back in {k['back_after_s']} s"
        for k in kills
    ]
    tally.details["kills"] = kills
    await run.tally(tally, log, started=started, marks=marks)
    # The dead consumers' entries went to their successors: none is left holding any.
    for name, (stream, group) in STREAMS.items():
        held = await pending_of(run, stream, group)
        for kill in kills:
            if kill["target"] == name and held.get(consumer_of(kill["pid"]), 0):
                tally.findings.append(f"{name} pid {kill['pid']} still holds entries of {stream}")
    return tally


# --- scenarios: the stores restart mid-sale ------------------------------------------------------


async def scenario_store(run: ChaosRun, store: str) -> Tally:
    """Valkey or PostgreSQL stopped cleanly mid-sale, then killed with SIGKILL, each time down a
    while and started again on its data; the crowd keeps buying throughout."""
    p = run.profile
    started = time.monotonic()
    marks = run.log_marks()
    await run.gateway_model(**p.everyday_model)
    sale_id = await run.new_sale(store, stock=p.store_stock)
    tally = Tally(store, f"{store}: clean restart, then kill -9, mid-sale", sale_id)
    crowd = asyncio.create_task(
        run.crowd(sale_id, buyers=p.store_buyers, rate=p.store_rate, prefix="s").run()
    )
    arrival_s = p.store_buyers / p.store_rate
    try:
        for kill in (False, True):
            await asyncio.sleep(arrival_s / 4)
            # Open many pooled connections in the API processes, which the restart then breaks.
            await reads_burst(run, store, sale_id)
            before = await run.counters(sale_id)
            if store == "valkey":
                assert run.stack.valkey is not None
                await asyncio.to_thread(
                    faults.restart_valkey, run.stack.valkey, kill=kill, down_s=p.store_down_s
                )
            else:
                assert run.stack.postgres is not None
                await asyncio.to_thread(
                    faults.restart_postgres, run.stack.postgres, kill=kill, down_s=p.store_down_s
                )
            how = "kill -9" if kill else "clean restart"
            run.progress(f"{store}: back after a {how}")
            tally.faults.append(
                f"{how} of {store} with {before['pending']} units pending and "
                f"{before['remaining']} left; down {p.store_down_s:g} s"
            )
    finally:
        log = await crowd
    await run.ready()
    # Every process reconnects: a burst reaching each pooled connection the restart broke gets
    # its answers, not one 503 per dead connection.
    answers = await reads_burst(run, store, sale_id)
    tally.details["reads_after_restart"] = dict(answers)
    if set(answers) != {200}:
        tally.findings.append(f"a burst of reads after the restart got {dict(answers)}")
    return await run.tally(tally, log, started=started, marks=marks)


async def reads_burst(run: ChaosRun, store: str, sale_id: str, *, size: int = 100) -> Counter[int]:
    """`size` concurrent reads that need `store` (the sale from Redis, or a buyer's orders from
    PostgreSQL; each also runs the rate-limit script in Redis): the statuses."""
    path = f"/v1/sales/{sale_id}" if store == "valkey" else "/v1/me/orders"
    headers = {"Authorization": f"Bearer {run.token('s-reader')}"}
    limits = httpx.Limits(max_connections=size)
    async with httpx.AsyncClient(base_url=run.stack.api_url, timeout=15, limits=limits) as http:
        answers = await asyncio.gather(
            *(http.get(path, headers=headers) for _ in range(size)), return_exceptions=True
        )
    return Counter(a.status_code if isinstance(a, httpx.Response) else 0 for a in answers)


# --- scenarios: the payment gateway misbehaves ---------------------------------------------------


GATEWAY_MODES = ("hangs", "unavailable", "rate-limited", "declines", "slow")


def gateway_modes(profile: Profile) -> dict[str, dict[str, Any]]:
    """Each failure mode as a model; `slow` as the profile sets it (Profile.slow_p95_ms)."""
    p95_ms = profile.slow_p95_ms
    return {
        "hangs": {"hang_rate": 1.0, "hang_charge_share": 0.5},
        "unavailable": {"unavailable_rate": 1.0, "unavailable_retry_after_share": 0.5},
        "rate-limited": {"rate_limited_rate": 1.0, "retry_after_s": 1},
        "declines": {"decline_rate": 1.0},
        "slow": {"latency_median_ms": p95_ms / 5, "latency_p95_ms": p95_ms},
    }


async def ledger(run: ChaosRun, order_ids: set[str]) -> dict[str, tuple[str, int]]:
    """The gateway's record of these orders: each charge's status and how many charges its key
    made. (Not the attempts: a late retry the gateway answers from its idempotency store is a
    request, not a charge.)"""
    async with GatewayClient(run.settings.gateway) as gateway:
        listed = await gateway.list_charges()
    return {
        c.charge.order_id: (c.charge.status, c.charges)
        for c in listed
        if c.charge.order_id in order_ids
    }


async def settled_state(run: ChaosRun, sale_id: str) -> dict[str, Any]:
    """Everything a reconciler pass could change about a sale."""
    pool = await pg.create_pool(
        run.settings.postgres.model_copy(update={"pool_min": 0, "pool_max": 1})
    )
    try:
        orders = await pg.PgStore(pool).sale_orders(sale_id)
    finally:
        await pool.close()
    rows = {o.order_id: (o.status.value, o.failure_reason, o.charge_id) for o in orders}
    return {
        "orders": rows,
        "ledger": await ledger(run, set(rows)),
        "counters": await run.counters(sale_id),
    }


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two settled states, for the report."""
    found = []
    for part in ("orders", "ledger", "counters"):
        old, new = before[part], after[part]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                found.append(f"{part} {key}: {old.get(key)} -> {new.get(key)}")
    return found


async def reconciler_idempotent(run: ChaosRun, sale_id: str) -> list[str]:
    """Let the reconciler make at least two more passes over the settled sale: what moved (must
    be nothing)."""
    before = await settled_state(run, sale_id)
    await asyncio.sleep(run.profile.reconcile_interval_s * 4 + 0.5)
    return changes(before, await settled_state(run, sale_id))


async def scenario_gateway(run: ChaosRun, mode: str) -> Tally:
    """The gateway fails one way for every charge; orders end confirmed, failed (the unit sold
    again) or in reconciliation, which settles them once the gateway recovers."""
    p = run.profile
    started = time.monotonic()
    marks = run.log_marks()
    model = gateway_modes(p)[mode]
    n = p.gateway_orders
    sale_id = await run.new_sale(f"gw-{mode}", stock=n)
    tally = Tally(f"gateway-{mode}", f"gateway: {mode}", sale_id)
    await run.gateway_model(**model)
    tally.faults.append(f"gateway model {model}")
    log = await run.crowd(sale_id, buyers=n, rate=n * 2, prefix="g").run()
    tally.details["before_recovery"] = await run.wait_unpending(sale_id)
    if mode != "slow":  # slow is not an outage: the reconciler copes with it as it is
        await run.gateway_model()
        tally.faults.append("gateway recovered (fast model)")
    if mode == "declines":
        # Every unit came back: a second crowd buys them again.
        again = await run.crowd(sale_id, buyers=n, rate=n * 2, prefix="g2").run()
        log.merge(again)
    await run.tally(tally, log, started=started, marks=marks)
    moved = await reconciler_idempotent(run, sale_id)
    tally.details["reconciler_idempotent"] = not moved
    if moved:
        tally.findings.append(f"reconciler passes over the settled sale changed {moved[:5]}")
    return tally


# --- scenario: a settlement PostgreSQL committed and Redis never saw ------------------------------


async def scenario_half_settled(run: ChaosRun) -> Tally:
    """Settlements reach PostgreSQL first and Redis second. Orders in reconciliation are settled
    in PostgreSQL (half confirmed with their charge, half given up as failed) while the payment
    worker is down, as if the reconciler had died, or Redis had been unreachable, between the two
    writes. Once the worker is back, Redis must follow: the failed units back in stock, nothing
    counted as in reconciliation any more."""
    p = run.profile
    started = time.monotonic()
    marks = run.log_marks()
    n = p.gateway_orders
    sale_id = await run.new_sale("half-settled", stock=n)
    tally = Tally("half-settled", "settled in PostgreSQL, never in Redis", sale_id)
    await run.gateway_model(unavailable_rate=1.0)
    log = await run.crowd(sale_id, buyers=n, rate=n * 2, prefix="h").run()
    tally.details["before"] = await run.wait_unpending(sale_id)
    worker = run.stack.child("worker-payment-1")
    with run.supervisor.paused():
        worker.restart = False
    await asyncio.to_thread(worker.stop)
    # A cleanly stopped worker hands the reconciler lease back (its successor need not wait).
    redis = connect(run.settings.redis)
    try:
        tally.details["lease_after_stop"] = await redis.get(keys.RECONCILER_LOCK)
    finally:
        await redis.aclose()
    try:
        await run.gateway_model()
        tally.details["settled_behind_redis"] = await _settle_in_postgres_only(run, sale_id)
    finally:
        with run.supervisor.paused():
            worker.restart = True
            worker.start()
    tally.faults = [
        "gateway unavailable until every order was in reconciliation",
        "payment worker stopped; half the orders confirmed (charged), half failed, in PostgreSQL "
        "only",
        "payment worker started again",
    ]
    await run.ready()
    return await run.tally(tally, log, started=started, marks=marks)


async def _settle_in_postgres_only(run: ChaosRun, sale_id: str) -> dict[str, int]:
    """What the reconciler does before its Redis write: charge and confirm, or give up."""
    pool = await pg.create_pool(
        run.settings.postgres.model_copy(update={"pool_min": 0, "pool_max": 1})
    )
    moved = {"confirmed": 0, "failed": 0}
    try:
        store = pg.PgStore(pool)
        stuck = await store.orders_in_status(OrderStatus.NEEDS_RECONCILIATION, limit=10_000)
        async with GatewayClient(run.settings.gateway) as gateway:
            for i, order in enumerate(o for o in stuck if o.sale_id == sale_id):
                if i % 2 == 0:
                    attempt = await gateway.charge(
                        order_id=order.order_id, amount=order.amount, currency="EUR"
                    )
                    charge_id = attempt.charge.charge_id if attempt.charge else None
                    await store.transition(
                        order.order_id, status=OrderStatus.CONFIRMED, charge_id=charge_id
                    )
                    moved["confirmed"] += 1
                else:
                    await store.transition(
                        order.order_id,
                        status=OrderStatus.FAILED,
                        failure_reason=FailureReason.PAYMENT_UNRESOLVED,
                    )
                    moved["failed"] += 1
    finally:
        await pool.close()
    return moved


# --- scenario: duplicate storms ------------------------------------------------------------------


async def scenario_storms(run: ChaosRun) -> Tally:
    """One Idempotency-Key sent concurrently many times; the same key with another body; retries
    after the client gave up waiting."""
    p = run.profile
    started = time.monotonic()
    marks = run.log_marks()
    users = p.storm_keys + p.timeout_retries
    sale_id = await run.new_sale("storms", stock=users * 2, per_user_limit=2)
    tally = Tally("storms", "duplicate storms: one key, many requests", sale_id)
    log = CrowdLog()
    url = f"/v1/sales/{sale_id}/orders"
    limits = httpx.Limits(max_connections=p.storm_size, max_keepalive_connections=p.storm_size)
    async with httpx.AsyncClient(base_url=run.stack.api_url, timeout=15, limits=limits) as http:
        storms = []
        for i in range(p.storm_keys):
            user = f"storm-{i}"
            headers = {"Authorization": f"Bearer {run.token(user)}", "Idempotency-Key": f"k-{i}"}
            burst = [http.post(url, headers=headers, json={}) for _ in range(p.storm_size)]
            answers = await asyncio.gather(*burst)
            storms.append(_record(log, f"k-{i}", answers))
            reused = await http.post(url, headers=headers, json={"quantity": 2})
            _record(log, f"k-{i}", [reused])
            if reused.status_code != 422 or reused.json().get("code") != "idempotency_key_reused":
                tally.findings.append(f"key reuse with another body answered {reused.status_code}")
        retries = [
            await _retry_after_timeout(run, http, url, f"t-{i}", log)
            for i in range(p.timeout_retries)
        ]
    tally.faults = [
        f"{p.storm_keys} keys x {p.storm_size} concurrent requests, then each with another body",
        f"{p.timeout_retries} keys: the first request abandoned before its answer, then retried",
    ]
    tally.details["storms"] = storms
    tally.details["timeout_retries"] = retries
    for storm in storms:
        if storm["order_ids"] != 1 or storm["status"] != {"202": p.storm_size}:
            tally.findings.append(f"a storm of one key got {storm}")
    for retry in retries:
        if not retry["consistent"]:
            tally.findings.append(f"retries after a timeout disagreed: {retry}")
    await run.gateway_model()
    return await run.tally(tally, log, started=started, marks=marks)


def _record(log: CrowdLog, key: str, answers: list[httpx.Response]) -> dict[str, Any]:
    ids = set()
    for answer in answers:
        log.requests += 1
        log.statuses[answer.status_code] += 1
        if answer.status_code == 202:
            ids.add(answer.json()["order_id"])
            log.accepted.setdefault(key, set()).add(answer.json()["order_id"])
            log.replayed += answer.headers.get("idempotent-replayed") == "true"
        else:
            log.codes[str(answer.json().get("code"))] += 1
    statuses = Counter(str(a.status_code) for a in answers)
    return {"key": key, "order_ids": len(ids), "status": dict(statuses)}


async def _retry_after_timeout(
    run: ChaosRun, http: httpx.AsyncClient, url: str, key: str, log: CrowdLog
) -> dict[str, Any]:
    """Send a purchase and stop waiting at once (the request is on the wire, the answer is never
    read), then retry with the same key: the answer must be the original one, replayed."""
    user = f"timeout-{key}"
    headers = {"Authorization": f"Bearer {run.token(user)}", "Idempotency-Key": key}
    log.requests += 1
    try:
        await http.post(
            url,
            headers=headers,
            json={"quantity": 1},
            timeout=httpx.Timeout(5.0, read=0.000_001),
        )
        abandoned = False  # answered faster than a microsecond: nothing was abandoned
    except httpx.ReadTimeout:
        abandoned = True
        log.errors["ReadTimeout"] += 1
    answers = [await http.post(url, headers=headers, json={"quantity": 1}) for _ in range(3)]
    record = _record(log, key, answers)
    bodies = {a.text for a in answers}
    return {
        **record,
        "abandoned": abandoned,
        "replayed": all(a.headers.get("idempotent-replayed") == "true" for a in answers),
        "consistent": record["order_ids"] == 1 and len(bodies) == 1,
    }


# --- scenario: backpressure ----------------------------------------------------------------------


async def scenario_backpressure(run: ChaosRun) -> Tally:
    """The order worker stops; the queue fills to the API's bound; purchases get 503 overloaded
    with Retry-After and reserve nothing; the worker comes back, the queue drains, the refused
    buyers get in with the same keys."""
    p = run.profile
    started = time.monotonic()
    marks = run.log_marks()
    env = {
        "FLASHSALE_API__MAX_QUEUE_BACKLOG": str(p.backlog),
        "FLASHSALE_API__OVERLOADED_RETRY_AFTER_S": "1",
    }
    order_worker = run.stack.child("worker-order-1")
    async with run.extra_api("api-backpressure", env) as url:
        sale_id = await run.new_sale("backpressure", stock=p.backlog * 3, api_url=url)
        tally = Tally("backpressure", "backpressure: order queue past its bound", sale_id)
        with run.supervisor.paused():
            order_worker.restart = False
        await asyncio.to_thread(order_worker.stop)
        run.progress("backpressure: order worker stopped")
        tally.faults.append(f"order worker stopped; queue bound {p.backlog} entries")
        log = CrowdLog()
        shed: list[httpx.Response] = []
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            try:
                buyers = [f"bp-{i}" for i in range(p.backlog * 2)]
                first_shed = await _buy_until_shed(run, http, sale_id, buyers, log)
                before = await _reservation_state(run, sale_id)
                refused = buyers[first_shed : first_shed + 10]
                shed = [await _buy(run, http, sale_id, user, log) for user in refused]
                after = await _reservation_state(run, sale_id)
            finally:
                with run.supervisor.paused():
                    order_worker.restart = True
                    order_worker.start()
            tally.faults.append("order worker started again")
            run.progress("backpressure: shed")
            await run.ready()
            run.progress("backpressure: ready")
            recovered = [await _buy_patiently(run, http, sale_id, user, log) for user in refused]
    tally.details.update(
        accepted_before_shedding=first_shed,
        shed=[(r.status_code, r.json().get("code"), r.headers.get("retry-after")) for r in shed],
        reserved_while_shedding=before != after,
        recovered=[r.status_code for r in recovered],
    )
    if any(r.status_code != 503 or not r.headers.get("retry-after") for r in shed):
        tally.findings.append("a purchase past the queue bound was not 503 with Retry-After")
    if before != after:
        tally.findings.append(f"shed purchases reserved something: {before} -> {after}")
    if any(r.status_code != 202 for r in recovered):
        tally.findings.append("a refused buyer did not get in after the queue drained")
    return await run.tally(tally, log, started=started, marks=marks)


async def _buy(
    run: ChaosRun, http: httpx.AsyncClient, sale_id: str, user: str, log: CrowdLog
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {run.token(user)}", "Idempotency-Key": f"{user}-key"}
    response = await http.post(f"/v1/sales/{sale_id}/orders", headers=headers, json={})
    _record(log, f"{user}-key", [response])
    return response


async def _buy_until_shed(
    run: ChaosRun, http: httpx.AsyncClient, sale_id: str, buyers: list[str], log: CrowdLog
) -> int:
    """Buy one unit per buyer until the first 503 overloaded; the number bought before it."""
    for i, user in enumerate(buyers):
        response = await _buy(run, http, sale_id, user, log)
        if response.status_code == 503:
            return i
        if response.status_code != 202:
            raise faults.FaultError(f"unexpected answer {response.status_code}: {response.text}")
    raise faults.FaultError("the queue bound was never reached")


async def _buy_patiently(
    run: ChaosRun, http: httpx.AsyncClient, sale_id: str, user: str, log: CrowdLog
) -> httpx.Response:
    """The same key again after each Retry-After, until the answer is not 503 (bounded)."""
    deadline = time.monotonic() + run.profile.settle_timeout_s
    while True:
        response = await _buy(run, http, sale_id, user, log)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def _reservation_state(run: ChaosRun, sale_id: str) -> tuple[int, int, int]:
    """Remaining units, holders and order-stream length: what a reservation would change."""
    redis = connect(run.settings.redis)
    try:
        remaining = int(await redis.hget(keys.sale(sale_id), "remaining") or 0)
        holders = int(await redis.hlen(keys.holds(sale_id)))
        queued = int(await redis.xlen(keys.ORDER_STREAM))
    finally:
        await redis.aclose()
    return remaining, holders, queued
