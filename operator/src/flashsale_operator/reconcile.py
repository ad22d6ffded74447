"""Reconciling one FlashSale: look at its sale in the API, let the lifecycle decide, act, look
again, and write the resulting status; and the cleanup on delete. The handlers call this module;
it translates API failures into kopf's retry contract (TemporaryError / PermanentError).

The only module that both talks to the API and applies lifecycle decisions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import kopf

from flashsale_operator import api_client, builders, config, lifecycle

logger = logging.getLogger(__name__)

# An upsert, an open and a close, each followed by a fresh look: more steps in one reconciliation
# would mean the API keeps disagreeing with us, and the next tick will look again anyway.
MAX_STEPS = 4
# The kopf timer's period (handlers.TICK_S): a tick with a transition closer than this sleeps
# until the exact moment instead of waiting for the next tick.
TICK_S = 0.5


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler needs, built once at startup and kept in kopf's memo."""

    settings: config.Settings
    api: api_client.AdminApi
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Resource:
    """The parts of a FlashSale body a reconciliation reads."""

    namespace: str
    name: str
    generation: int
    created: datetime
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @classmethod
    def of(
        cls, *, meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
    ) -> Resource:
        created = meta.get("creationTimestamp")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            generation=int(meta.get("generation") or 1),
            created=lifecycle.parse_time(created) if created else datetime.now(UTC),
            spec=spec,
            status=status,
        )

    def sale_spec(self) -> lifecycle.SaleSpec:
        return lifecycle.parse_spec(
            self.spec, namespace=self.namespace, name=self.name, created=self.created
        )


def context(memo: kopf.Memo) -> Context:
    ctx = memo.get("ctx")
    if not isinstance(ctx, Context):
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return ctx


async def run(
    *,
    ctx: Context,
    resource: Resource,
    patch: kopf.Patch,
    owners: Mapping[str, Iterable[str]] | None = None,
) -> lifecycle.Decision:
    """Reconcile now: validate, act, write patch.status. Raises kopf's errors on failure.

    `owners` (kopf's sale-id index) refuses a sale id that another FlashSale already manages."""
    sale = _parse(ctx, resource, patch)
    if owners is not None:
        _claim(ctx, resource, patch, sale.sale_id, owners)
    try:
        decision, desired = await _reconcile(ctx, sale, resource)
    except api_client.ApiUnavailable as e:
        _write_unavailable(ctx, resource, patch, str(e))
        delay = e.delay if e.delay is not None else ctx.settings.operator.retry_delay_s
        raise kopf.TemporaryError(f"the API is unavailable: {e}", delay=delay) from e
    except api_client.ApiError as e:
        _refused(ctx, resource, patch, e)
    patch.status.update(builders.status_patch(resource.status, desired))
    return decision


async def tick(
    *,
    ctx: Context,
    resource: Resource,
    patch: kopf.Patch,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped | None,
) -> None:
    """One timer tick: reconcile when due (status interval, or a transition within this tick)."""
    try:
        resource.sale_spec()
    except lifecycle.InvalidSpec:
        return  # the change handlers report it; the API keeps enforcing the applied window
    loop = asyncio.get_running_loop()
    due_in = float(memo.get("next_look", 0.0)) - loop.time()
    if due_in > TICK_S:
        return
    if due_in > 0:  # < TICK_S: meet the transition to the millisecond
        # A plain sleep, not `stopped.wait()`: kopf cancels a timer that must stop, and the
        # helper task behind an async `stopped.wait()` ends in TimeoutError, which kopf's
        # shutdown re-raises as the operator's own failure when the stop comes during that wait.
        await asyncio.sleep(due_in)
    if stopped or ctx.api.closed:
        return  # deleted, or the operator is stopping
    decision = await run(ctx=ctx, resource=resource, patch=patch)
    schedule(ctx, memo, decision)


def schedule(ctx: Context, memo: kopf.Memo, decision: lifecycle.Decision) -> None:
    """Remember in the resource's memo when its timer should look at the API next."""
    interval = ctx.settings.operator.status_interval_s
    wake_in = decision.wake_in if decision.wake_in is not None else interval
    memo["next_look"] = asyncio.get_running_loop().time() + min(interval, wake_in)


async def remove(*, ctx: Context, resource: Resource) -> None:
    """On delete: close the sale and delete it in the API (its keys go, its orders stay)."""
    sale_id = resource.status.get("saleId")
    if not sale_id:
        if resource.status.get("phase") == lifecycle.Phase.ERROR:
            return  # never created: nothing to clean up, and a conflicting id is not ours
        try:
            sale_id = resource.sale_spec().sale_id
        except lifecycle.InvalidSpec:
            return
    try:
        await ctx.api.close(sale_id)
        deleted = await ctx.api.delete(sale_id)
    except api_client.SaleNotFound:
        deleted = False
    except api_client.ApiUnavailable as e:
        delay = e.delay if e.delay is not None else ctx.settings.operator.retry_delay_s
        raise kopf.TemporaryError(f"cannot delete sale {sale_id} yet: {e}", delay=delay) from e
    logger.info("sale %s %s", sale_id, "deleted" if deleted else "was already gone")


def _parse(ctx: Context, resource: Resource, patch: kopf.Patch) -> lifecycle.SaleSpec:
    try:
        return resource.sale_spec()
    except lifecycle.InvalidSpec as e:
        has_sale = bool(resource.status.get("saleId"))
        patch.status.update(
            builders.build_error_status(
                resource.status,
                reason="InvalidSpec",
                message=str(e),
                generation=resource.generation,
                now=ctx.clock(),
                types=(lifecycle.SPEC_APPLIED,) if has_sale else _BOTH,
            )
        )
        raise kopf.PermanentError(f"invalid spec: {e}") from e


_BOTH = (lifecycle.READY, lifecycle.SPEC_APPLIED)


def _claim(
    ctx: Context,
    resource: Resource,
    patch: kopf.Patch,
    sale_id: str,
    owners: Mapping[str, Iterable[str]],
) -> None:
    """Refuse to manage a sale another FlashSale manages: both would upsert it, and deleting
    either would delete the other's sale."""
    if resource.status.get("saleId"):
        return  # ours already
    me = f"{resource.namespace}/{resource.name}"
    others = sorted(owner for owner in owners.get(sale_id, ()) if owner != me)
    if not others:
        return
    message = f"sale {sale_id} is already managed by FlashSale {others[0]}; set another spec.saleId"
    patch.status.update(
        builders.build_error_status(
            resource.status,
            reason="SaleIdConflict",
            message=message,
            generation=resource.generation,
            now=ctx.clock(),
            types=_BOTH,
        )
    )
    raise kopf.PermanentError(message)


async def _reconcile(
    ctx: Context, sale: lifecycle.SaleSpec, resource: Resource
) -> tuple[lifecycle.Decision, dict[str, Any]]:
    recorded = lifecycle.Recorded.from_status(resource.status)
    tolerance = timedelta(seconds=ctx.settings.operator.skew_tolerance_s)
    conditions: dict[str, lifecycle.Condition] = {}
    for _ in range(MAX_STEPS):
        observed = await _observe(ctx.api, sale.sale_id)
        decision = lifecycle.decide(
            sale,
            observed=observed,
            recorded=recorded,
            generation=resource.generation,
            now=ctx.clock(),
            tolerance=tolerance,
        )
        conditions.update({c.type: c for c in decision.conditions})
        if not decision.actions:
            break
        recorded = await _act(ctx.api, sale, decision, recorded, resource.generation, observed)
    decision = dataclasses.replace(decision, conditions=tuple(conditions.values()))
    desired = builders.build_status(
        sale=sale,
        decision=decision,
        observed=observed,
        recorded=recorded,
        current=resource.status,
        generation=resource.generation,
        now=ctx.clock(),
    )
    return decision, desired


async def _observe(api: api_client.AdminApi, sale_id: str) -> lifecycle.Observed | None:
    document = await api.get_sale(sale_id)
    if document is None:
        return None
    try:
        stats = await api.stats(sale_id)
    except api_client.SaleNotFound:
        return None  # deleted between the two reads
    return builders.build_observed(document, stats)


async def _act(
    api: api_client.AdminApi,
    sale: lifecycle.SaleSpec,
    decision: lifecycle.Decision,
    recorded: lifecycle.Recorded,
    generation: int,
    observed: lifecycle.Observed | None,
) -> lifecycle.Recorded:
    """Make the decision's first action; the caller looks again before the next one."""
    action = decision.actions[0]
    if action is lifecycle.Action.UPSERT:
        assert decision.upsert is not None  # decide() always plans the body with an upsert
        try:
            await api.upsert(sale.sale_id, builders.build_sale_body(sale, decision.upsert))
        except api_client.SaleInProgress as e:
            if observed is None:
                raise api_client.ApiUnavailable(
                    f"sale {sale.sale_id} is still being deleted (orders are settling)"
                ) from e
            return recorded  # an order arrived after our look: the next look keeps the stock
        logger.info("sale %s upserted (generation %s)", sale.sale_id, generation)
        return lifecycle.remember(recorded, action=action, generation=generation)
    if action is lifecycle.Action.OPEN:
        document = await api.open(sale.sale_id)
        at = lifecycle.parse_time(str(document["opens_at"]))
    else:
        document = await api.close(sale.sale_id)
        at = lifecycle.parse_time(str(document["closes_at"]))
    logger.info("sale %s: %s at %s", sale.sale_id, action, at.isoformat())
    return lifecycle.remember(recorded, action=action, generation=generation, at=at)


def _write_unavailable(ctx: Context, resource: Resource, patch: kopf.Patch, message: str) -> None:
    status = builders.build_error_status(
        resource.status,
        reason="ApiUnavailable",
        message=message,
        generation=resource.generation,
        now=ctx.clock(),
        phase=None,  # the sale keeps running on the API's own clock; only our view is stale
    )
    patch.status.update(builders.status_patch(resource.status, status))


def _refused(
    ctx: Context, resource: Resource, patch: kopf.Patch, error: api_client.ApiError
) -> NoReturn:
    """The API refused a request that retrying will not fix (an invalid sale, a bad token)."""
    status = builders.build_error_status(
        resource.status,
        reason="ApiRefused",
        message=str(error),
        generation=resource.generation,
        now=ctx.clock(),
        types=(lifecycle.SPEC_APPLIED,),
        phase=None if resource.status.get("saleId") else lifecycle.Phase.ERROR,
    )
    patch.status.update(builders.status_patch(resource.status, status))
    if error.status in (401, 403):  # a secret rotated without the operator: retry after a fix
        raise kopf.TemporaryError(f"the API refused the operator's token: {error}", delay=30)
    raise kopf.PermanentError(f"the API refused the sale: {error}")
