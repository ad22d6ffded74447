"""The Kubernetes side of the operator's integration tests: kmock's emulator taught the apiserver
habits kopf relies on, the FlashSale resource registered from the chart's CRD, and a helper that
runs kopf in-process.

kopf runs as a task inside each test body, never in a pytest-asyncio fixture: when it stops, kopf
cancels every task created after it started, and a fixture on the same loop would be among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import secrets
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import jsonpatch
import kmock
import kopf
import pytest
import yaml

from flashsale_operator import config
from flashsale_operator import handlers as handlers  # registers the product's handlers with kopf

CRD_PATH = Path(__file__).parents[3] / "charts" / "flashsale" / "crds" / "flashsale.yaml"
NAMESPACE = "shop"

# kopf's own operator stops within ~1 s when nothing hangs; 10 s means something does.
KOPF_STOP_TIMEOUT_S = 10.0


@attrs.define(kw_only=True)
class Apiserver(kmock.KubernetesEmulator):
    """kmock's emulator plus what a real apiserver does and kopf depends on.

    - every create/patch gets a uid and a new, increasing metadata.resourceVersion (kopf's
      JSON-patches start with a `test` op on it, so the bump is appended after that op);
    - a failed JSON-patch `test` answers 422, which kopf reads as "conflict, retry soon";
    - spec changes bump metadata.generation;
    - lists carry the current resourceVersion, and a watch replays only objects newer than
      ?resourceVersion=, the snapshot and the subscription taken under one lock (no event lost);
    - metadata.namespace comes from the URL, and generateName is honoured.
    """

    _revisions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _revision: int = attrs.field(default=0, init=False)

    def _next_revision(self) -> str:
        self._revision = next(self._revisions)
        return str(self._revision)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None:
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._prepare_create(request)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                await self._prepare_patch(request)
            elif request.action == kmock.action.DELETE and request.name is not None:
                await self._mark_deleting(request)
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as e:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from e

    def _prepare_create(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_revision()
        meta["generation"] = 1
        meta["creationTimestamp"] = _now()

    async def _prepare_patch(self, request: kmock.Request) -> None:
        revision = self._next_revision()
        if isinstance(request.data, list):  # JSON-patch: after kopf's `test` op, never before it
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": revision}
            )
        elif isinstance(request.data, dict):  # merge-patch
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = revision
            if "spec" in request.data and request.subresource is None:
                async with self._lock:
                    current = self._current(request)
                generation = (current or {}).get("metadata", {}).get("generation", 1)
                meta["generation"] = generation + 1

    async def _mark_deleting(self, request: kmock.Request) -> None:
        """Mark a finalized object as deleting, with a new resourceVersion (kmock keeps the old)."""
        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            current = self._current(request)
            if current is None:
                return
            meta = current.get("metadata", {})
            if meta.get("finalizers") and not meta.get("deletionTimestamp"):
                self._objects[key].patch(
                    {
                        "metadata": {
                            "deletionTimestamp": _now(),
                            "resourceVersion": self._next_revision(),
                        }
                    }
                )
                raw = self._objects[key].raw
                await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _visible(self, request: kmock.Request, since: int = 0) -> list[dict[str, Any]]:
        items = []
        for (resource, namespace, _), obj in self._objects.items():
            if resource != request.resource or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            raw = obj.raw
            if int(raw.get("metadata", {}).get("resourceVersion", "0")) > since:
                items.append(raw)
        return items

    async def _serve_list(self, request: kmock.Request) -> Any:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._visible(request)
            revision = str(self._revision)
        return {"metadata": {"resourceVersion": revision}, "items": items}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # send the headers now, as kmock's own watch does
        since = int(request.params.get("resourceVersion") or "0")
        assert request.resource is not None
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()
            replay = self._visible(request, since)
        try:
            for raw in replay:
                yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=marker):
                namespace = event.get("object", {}).get("metadata", {}).get("namespace")
                if request.namespace is None or namespace == request.namespace:
                    yield event
        finally:
            await bus.unmark(marker)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def load_crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


def register_crd(server: Apiserver, crd: Mapping[str, Any]) -> str:
    """Declare a CRD's resource to the emulator as an apiserver serves it; return its key."""
    spec = crd["spec"]
    version = next(v for v in spec["versions"] if v.get("served"))
    key = f"{spec['group']}/{version['name']}/{spec['names']['plural']}"
    server.resources[key] = kmock.ResourceInfo(
        kind=spec["names"]["kind"],
        singular=spec["names"]["singular"],
        namespaced=spec["scope"] == "Namespaced",
        shortnames=set(spec["names"].get("shortNames", [])),
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
        subresources=set(version.get("subresources", {})),
    )
    return key


@pytest.fixture
async def apiserver() -> AsyncIterator[tuple[Apiserver, str]]:
    async with Apiserver() as server, kmock.Server(server) as http:
        register_crd(server, load_crd())
        server.resources["v1/namespaces"] = kmock.ResourceInfo(
            kind="Namespace", singular="namespace", namespaced=False, verbs={"get", "list", "watch"}
        )
        server.resources["v1/events"] = kmock.ResourceInfo(
            kind="Event",
            singular="event",
            namespaced=True,
            verbs={"create", "get", "list", "watch"},
        )
        server.objects["v1/namespaces", None, NAMESPACE] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "resourceVersion": "0"},
        }
        yield server, str(http.url).rstrip("/")


class Kube:
    """The test's own client of the emulator: a fresh connection per request (force_close)."""

    def __init__(self, url: str, resource: str = "apis/flashsale.dev/v1alpha1") -> None:
        self.url = url
        self.base = f"{url}/{resource}/namespaces/{NAMESPACE}/flashsales"

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, url, **kwargs) as rsp,
        ):
            return rsp.status, await rsp.json(content_type=None)

    async def create(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "flashsale.dev/v1alpha1",
            "kind": "FlashSale",
            "metadata": {"name": name},
            "spec": dict(spec),
        }
        status, data = await self._call("POST", self.base, json=body)
        assert status in (200, 201), data
        return dict(data)

    async def get(self, name: str) -> dict[str, Any] | None:
        status, data = await self._call("GET", f"{self.base}/{name}")
        return dict(data) if status == 200 else None

    async def patch_spec(self, name: str, spec: Mapping[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        payload = json.dumps({"spec": dict(spec)})
        status, data = await self._call(
            "PATCH", f"{self.base}/{name}", data=payload, headers=headers
        )
        assert status == 200, data

    async def delete(self, name: str) -> None:
        status, data = await self._call("DELETE", f"{self.base}/{name}")
        assert status == 200, data

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, Any] | None], bool],
        *,
        within: float = 10.0,
        what: str = "",
    ) -> dict[str, Any] | None:
        """Poll the object until predicate(obj) holds; obj is None once it is gone."""
        deadline = asyncio.get_running_loop().time() + within
        obj = await self.get(name)
        while not predicate(obj):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}: last seen {obj}")
            await asyncio.sleep(0.05)
            obj = await self.get(name)
        return obj


@contextlib.asynccontextmanager
async def running_operator(
    *,
    registry: kopf.OperatorRegistry,
    memo: kopf.Memo | None = None,
    settings: kopf.OperatorSettings | None = None,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run kopf in-process until the block ends; use it inside the test body (module docstring)."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            memo=memo,
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), timeout=5)
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=KOPF_STOP_TIMEOUT_S)
        # kopf installs SIGINT/SIGTERM handlers on the loop; give Ctrl-C back to pytest.
        loop = asyncio.get_running_loop()
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def login_to(url: str) -> Callable[..., kopf.ConnectionInfo]:
    """A kopf login handler for the emulator (no kubeconfig, no token)."""

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url)

    return login


@pytest.fixture
def kube(apiserver: tuple[Apiserver, str]) -> Kube:
    return Kube(apiserver[1])


@pytest.fixture
def run_operator() -> Callable[..., contextlib.AbstractAsyncContextManager[asyncio.Task[None]]]:
    return running_operator


# --- the real operator against the real API ------------------------------------------------------


@kopf.on.login()
def login_to_emulator(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """The product's handlers run on kopf's default registry; in tests they log in to kmock.

    Registered here (test code only), so the operator itself keeps kopf's usual logins."""
    return kopf.ConnectionInfo(server=str(memo["kube_url"]))


def operator_settings(api_url: str, jwt_secret: str, **operator: Any) -> config.Settings:
    """Fast timings: status every 0.2 s and retries after 0.5 s, so a lifecycle takes seconds."""
    knobs: dict[str, Any] = {
        "status_interval_s": 0.2,
        "retry_delay_s": 0.5,
        "request_timeout_s": 2.0,
        "standalone": True,
    }
    return config.Settings(
        env="dev", api={"url": api_url}, auth={"jwt_secret": jwt_secret}, operator=knobs | operator
    )


@pytest.fixture
def run_flashsale_operator(
    apiserver: tuple[Apiserver, str], settings: Any
) -> Callable[[], contextlib.AbstractAsyncContextManager[asyncio.Task[None]]]:
    """Run the product's handlers (kopf's default registry) against the emulator and the API of
    the root conftest's `settings` (whether or not its `api` fixture is running)."""
    _, url = apiserver
    operator = operator_settings(settings.api.url, settings.auth.jwt_secret)

    def run() -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
        memo = kopf.Memo(config=operator, kube_url=url)
        return running_operator(registry=kopf.get_default_registry(), memo=memo)

    return run
