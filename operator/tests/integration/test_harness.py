"""The emulator harness itself: kopf, running in-process, reacts to a FlashSale created in kmock."""

from __future__ import annotations

from typing import Any

import kopf


async def test_kopf_reacts_to_create_patch_and_delete(
    apiserver: Any, kube: Any, run_operator: Any
) -> None:
    _, url = apiserver
    registry = kopf.OperatorRegistry()
    seen: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url)

    @kopf.on.create("flashsale.dev", "v1alpha1", "flashsales", registry=registry)
    def created(spec: Any, patch: kopf.Patch, **_: Any) -> None:
        seen.append("create")
        patch.status["phase"] = "Scheduled"
        patch.status["remaining"] = spec["stock"]

    @kopf.on.update(
        "flashsale.dev", "v1alpha1", "flashsales", field="spec.stock", registry=registry
    )
    def updated(new: Any, patch: kopf.Patch, **_: Any) -> None:
        seen.append("update")
        patch.status["remaining"] = new

    @kopf.on.delete("flashsale.dev", "v1alpha1", "flashsales", registry=registry)
    def deleted(**_: Any) -> None:
        seen.append("delete")

    async with run_operator(registry=registry):
        await kube.create("harness", {"product": "p", "price": "1.00", "stock": 3})
        await kube.wait_for(
            "harness",
            lambda o: o and o.get("status", {}).get("remaining") == 3,
            what="create handled",
        )
        await kube.patch_spec("harness", {"stock": 5})
        obj = await kube.wait_for(
            "harness",
            lambda o: o and o.get("status", {}).get("remaining") == 5,
            what="update handled",
        )
        assert obj["metadata"]["finalizers"]
        await kube.delete("harness")
        await kube.wait_for("harness", lambda o: o is None, what="finalizer released")
    assert seen == ["create", "update", "delete"]
