"""kopf handlers of the FlashSale resource (flashsale.dev/v1alpha1). Only kopf-decorated functions
live here; each one reads the resource and hands it to `reconcile`, which decides through the pure
`lifecycle` and writes patch.status.

Run with `python -m flashsale_operator`, or `kopf run -m flashsale_operator.handlers --standalone
--all-namespaces` for a quick local try.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from flashsale_operator import api_client, builders, config, lifecycle, logs, reconcile

GROUP = "flashsale.dev"
VERSION = "v1alpha1"
PLURAL = "flashsales"
# Retry an unexpected failure after 5 s (kopf's default is 60 s, far too long during a sale);
# an outage of the API is a TemporaryError with its own delay (FLASHSALE_OPERATOR__RETRY_DELAY_S).
BACKOFF_S = 5


@kopf.on.startup()
async def flashsale_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = memo.get("config")
    if not isinstance(cfg, config.Settings):  # started by `kopf run`, not by main()
        cfg = config.Settings()
    # Watches: ask the apiserver to end each watch after 5 min, and give up on one that stays silent
    # for 6: a connection dropped by a load balancer or NAT without a FIN would otherwise hang
    # forever, and the operator would stop seeing FlashSales without any error (kopf's advice).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 360
    settings.watching.connect_timeout = 10
    # Other Kubernetes calls (status patches, finalizers): fail a hung one after 30 s and retry,
    # instead of aiohttp's 5-minute default during which the FlashSale's handling stalls.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    # Our own names on the resources, and progress kept in annotations only: the CRD's status
    # schema is structural, so kopf's status.kopf would be pruned by the apiserver anyway.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # Events for warnings and errors only: at INFO kopf posts one per handler success.
    settings.posting.level = logging.WARNING
    settings.peering.lifetime = cfg.operator.peering_lifetime_s
    # Namespaced (the chart's mode), the Role grants no list/watch on CRDs: kopf would warn and
    # could not watch them anyway. The FlashSale CRD is installed before the operator starts.
    settings.scanning.disabled = bool(cfg.operator.namespace)
    # A timer caught mid-tick when its FlashSale is deleted or the operator stops gets 0.5 s to
    # finish (its calls take milliseconds) instead of kopf's ten loop cycles, then is abandoned.
    settings.background.instant_exit_timeout = 0.5
    logs.quiet_ticks()
    memo["ctx"] = reconcile.Context(settings=cfg, api=api_client.AdminApi(cfg))


@kopf.on.cleanup()
async def flashsale_cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx = memo.get("ctx")
    if isinstance(ctx, reconcile.Context):
        await ctx.api.aclose()


@kopf.index(GROUP, VERSION, PLURAL)
def flashsale_sale_ids(status: kopf.Status, meta: kopf.Meta, **_: Any) -> dict[str, str]:
    """Which FlashSale manages which sale id, so a second one cannot take over a running sale."""
    return builders.build_owner_entry(status=status, meta=meta)


async def _apply(
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    patch: kopf.Patch,
    owners: kopf.Index[str, str] | None,
) -> None:
    """Create and spec update alike: reconcile now, then tell the timer when to look next."""
    ctx = reconcile.context(memo)
    resource = reconcile.Resource.of(meta=meta, spec=spec, status=status)
    decision = await reconcile.run(ctx=ctx, resource=resource, patch=patch, owners=owners)
    reconcile.schedule(ctx, memo, decision)


@kopf.on.create(GROUP, VERSION, PLURAL, backoff=BACKOFF_S)
async def flashsale_create(
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    patch: kopf.Patch,
    flashsale_sale_ids: kopf.Index[str, str] | None = None,
    **_: Any,
) -> None:
    await _apply(spec, status, meta, memo, patch, flashsale_sale_ids)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", backoff=BACKOFF_S)
async def flashsale_update(
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    patch: kopf.Patch,
    flashsale_sale_ids: kopf.Index[str, str] | None = None,
    **_: Any,
) -> None:
    await _apply(spec, status, meta, memo, patch, flashsale_sale_ids)


@kopf.timer(
    GROUP, VERSION, PLURAL, interval=reconcile.TICK_S, when=lifecycle.has_sale, backoff=BACKOFF_S
)
async def flashsale_tick(
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    patch: kopf.Patch,
    stopped: kopf.DaemonStopped | None = None,
    **_: Any,
) -> None:
    resource = reconcile.Resource.of(meta=meta, spec=spec, status=status)
    await reconcile.tick(
        ctx=reconcile.context(memo), resource=resource, patch=patch, memo=memo, stopped=stopped
    )


@kopf.on.delete(GROUP, VERSION, PLURAL, backoff=BACKOFF_S)
async def flashsale_delete(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    resource = reconcile.Resource.of(meta=meta, spec=spec, status=status)
    await reconcile.remove(ctx=reconcile.context(memo), resource=resource)
