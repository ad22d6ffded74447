"""The crowd's lane in front of FastAPI: it sheds load past `api.max_in_flight` with 503 overloaded
(reserving nothing), declares the length of its answers, and leaves /docs describing the route."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from flashsale.config import Settings
from flashsale.local.embedded import Stores
from flashsale.testing import ServerThread, bearer, create_sale, make_settings


async def test_past_the_in_flight_bound_purchases_are_shed_and_reserve_nothing(
    clean: Stores,
) -> None:
    from flashsale.api.app import create_app

    settings = make_settings(clean, api={"max_in_flight": 2})
    admin = bearer(settings, "admin-1", admin=True)
    with ServerThread(create_app(settings), port=settings.api.port) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            sale_id = await create_sale(client, admin, stock=1000, per_user_limit=1)
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"/v1/sales/{sale_id}/orders",
                        headers={**bearer(settings, f"u-{i}"), "Idempotency-Key": f"k-{i}"},
                    )
                    for i in range(200)
                )
            )
            codes = Counter(r.status_code for r in responses)
            assert set(codes) <= {202, 503}, codes
            assert codes[503] > 0, "200 concurrent purchases never exceeded 2 in flight?"
            shed = [r for r in responses if r.status_code == 503]
            assert all(r.json()["code"] == "overloaded" for r in shed)
            assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
            sale = (await client.get(f"/v1/sales/{sale_id}")).json()
            assert sale["remaining"] == 1000 - codes[202]  # a shed purchase reserved nothing
            metrics = (await client.get("/metrics")).text
            assert "flashsale_requests_shed_total" in metrics


async def test_answers_declare_their_length_and_docs_describe_the_route(
    client: httpx.AsyncClient, settings: Settings, admin_headers: dict[str, str]
) -> None:
    sale_id = await create_sale(client, admin_headers, stock=5)
    response = await client.post(
        f"/v1/sales/{sale_id}/orders",
        headers={**bearer(settings, "buyer"), "Idempotency-Key": "one"},
    )
    assert response.status_code == 202
    assert int(response.headers["content-length"]) == len(response.content)
    assert "transfer-encoding" not in response.headers
    spec = (await client.get("/openapi.json")).json()
    assert "post" in spec["paths"]["/v1/sales/{sale_id}/orders"]
