"""spec.waitingRoom end to end, in-process: kopf with the product's handlers against the kmock
emulator and the real API over embedded Valkey and PostgreSQL. The room reaches the sale, its rate
follows an edit, its mode stays once the sale has opened, and the queue works for a buyer."""

from __future__ import annotations

import time
from typing import Any

import jwt

from flashsale.config import Settings

from .test_operator import condition, phase_is, status


def bearer(settings: Settings, user: str) -> dict[str, str]:
    token = jwt.encode(
        {"sub": user, "exp": int(time.time()) + 300}, settings.auth.jwt_secret, algorithm="HS256"
    )
    return {"Authorization": f"Bearer {token}"}


async def test_the_operator_passes_the_waiting_room_through(
    kube: Any, run_flashsale_operator: Any, settings: Settings, client: Any
) -> None:
    room = {"enabled": True, "mode": "random", "admitPerSecond": 500, "sessionSeconds": 60}
    spec = {"product": "Queued", "price": "10.00", "stock": 5, "waitingRoom": room}
    async with run_flashsale_operator():
        await kube.create("queued", spec)
        opened = await kube.wait_for("queued", phase_is("Open"), what="Open")
        sale_id = status(opened)["saleId"]
        sale = (await client.get(f"/v1/sales/{sale_id}")).json()
        assert sale["waiting_room"] == {
            "enabled": True, "mode": "random", "admit_per_second": 500, "session_seconds": 60,
        }  # fmt: skip
        joined = await client.post(f"/v1/sales/{sale_id}/queue", headers=bearer(settings, "u1"))
        assert joined.status_code == 202, joined.text

        edited = {**room, "mode": "fifo", "admitPerSecond": 7}
        await kube.patch_spec("queued", {"waitingRoom": edited})
        locked = await kube.wait_for(
            "queued",
            lambda o: condition(o, "SpecApplied").get("reason") == "WaitingRoomModeLocked",
            what="mode kept",
        )
        assert status(locked)["observedGeneration"] == locked["metadata"]["generation"]
        sale = (await client.get(f"/v1/sales/{sale_id}")).json()
        assert (sale["waiting_room"]["mode"], sale["waiting_room"]["admit_per_second"]) == (
            "random", 7,
        )  # fmt: skip

        await kube.patch_spec("queued", {"waitingRoom": {"enabled": False}})
        await kube.wait_for(
            "queued", lambda o: condition(o, "SpecApplied").get("status") == "True", what="off"
        )
    assert "waiting_room" not in (await client.get(f"/v1/sales/{sale_id}")).json()
