"""Fixtures of the chart test layer: the chart rendered through helm-python-sdk (real Helm 4, no
binary, no cluster) once per values combination and session, and helpers to find objects in a
render.

Nothing here touches the network or a cluster: the only I/O is reading the repository's files and,
when present, the offline JSON schemas in ../shared/schemas (FLASHSALE_SHARED_SCHEMAS overrides the
path). Shared code lives here: the test modules import its constants and types and reach the
renders and helpers as session fixtures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART_DIR = REPO / "charts" / "flashsale"
RELEASE = "flashsale"
NAMESPACE = "default"
# The newest Kubernetes schema kubernetes-validate 1.37.0 ships (kind's current node images are
# older, and every API the chart uses is GA well before 1.29, the chart's kubeVersion floor).
KUBE_VERSION = "1.37.0"
SHARED_SCHEMAS = Path(
    os.environ.get("FLASHSALE_SHARED_SCHEMAS", REPO.parent / "shared" / "schemas")
)

Obj = dict[str, Any]

# The values combinations that matter: each switches one feature family away from the defaults.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "gateway-off": {"gateway": {"enabled": False, "externalUrl": "https://payments.example.com"}},
    "external-stores": {
        "valkey": {"enabled": False},
        "externalRedis": {"url": "rediss://:s3cret-redis@redis.example.com:6380/2"},
        "postgresql": {"enabled": False},
        "externalPostgresql": {"dsn": "postgresql://shop:s3cret-pg@db.example.com:5432/shop"},
    },
    "existing-secrets": {
        "auth": {"existingSecret": "shop-auth"},
        "valkey": {"enabled": False},
        "externalRedis": {"existingSecret": "shop-redis", "passwordSecretKey": "password"},
        "postgresql": {"enabled": False},
        "externalPostgresql": {"existingSecret": "shop-pg"},
        "workers": {"autoscaling": {"keda": {"redisAddress": "redis.example.com:6379"}}},
    },
    "hpa-workers": {"workers": {"autoscaling": {"mode": "hpa"}}},
    "no-autoscaling": {
        "workers": {"autoscaling": {"mode": "none"}},
        "api": {"autoscaling": {"enabled": False}},
        "sse": {"autoscaling": {"enabled": False}},
    },
    "httproute": {
        "ingress": {"enabled": False},
        "httpRoute": {
            "enabled": True,
            "parentRefs": [{"name": "eg", "namespace": "envoy-gateway-system"}],
            "hostnames": ["shop.example.com"],
        },
        "networkPolicy": {"ingressNamespaces": ["envoy-gateway-system"]},
    },
    "loadtest": {"loadtest": {"enabled": True}},
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "podMonitor": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        }
    },
    "operator-off": {"operator": {"enabled": False}},
    "dev": {"dev": {"enabled": True}},
    "bare": {
        "networkPolicy": {"enabled": False},
        "api": {"pdb": {"enabled": False}},
        "sse": {"pdb": {"enabled": False}},
        "workers": {"pdb": {"enabled": False}},
        "migrations": {"enabled": False},
        "tests": {"enabled": False},
        "valkey": {"persistence": {"enabled": False}},
        "postgresql": {"persistence": {"enabled": False}},
    },
}


@dataclass(frozen=True)
class Rendered:
    """One render: the objects (with the template each came from) and NOTES.txt."""

    values: dict[str, Any]
    objects: list[tuple[str, Obj]]
    notes: str
    merged_values: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for _, o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        raise KeyError(f"no {kind}/{name} in the render")

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}


def _parse(manifests: dict[str, str]) -> tuple[list[tuple[str, Obj]], str]:
    objects: list[tuple[str, Obj]] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        # libyaml's loader: ten times faster than the pure-Python one on a full render.
        for doc in yaml.load_all(text, Loader=yaml.CSafeLoader):
            if doc:
                objects.append((template.removeprefix(f"{RELEASE}/"), doc))
    return objects, notes


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Callable[[dict[str, Any]], Rendered]:
    """Render the chart with these values (cached: the same values render once per session)."""
    cache: dict[str, Rendered] = {}

    def _render(values: dict[str, Any]) -> Rendered:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            objects, notes = _parse(manifests)
            cache[key] = Rendered(values, objects, notes, chart.merge_values(values))
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def renders(render: Callable[[dict[str, Any]], Rendered]) -> dict[str, Rendered]:
    return {name: render(values) for name, values in COMBINATIONS.items()}


@pytest.fixture(scope="session")
def default(renders: dict[str, Rendered]) -> Rendered:
    return renders["default"]


@pytest.fixture(scope="session")
def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return values


def shared_schema(relative: str) -> dict[str, Any]:
    """An offline schema from ../shared/schemas, or a skip that says why it is missing."""
    path = SHARED_SCHEMAS / relative
    if not path.is_file():
        pytest.skip(f"offline schema {path} not present (set FLASHSALE_SHARED_SCHEMAS to validate)")
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@pytest.fixture(scope="session")
def load_shared_schema() -> Callable[[str], dict[str, Any]]:
    return shared_schema


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec of a workload object (Deployment, StatefulSet, Job, Pod), else None."""
    if obj["kind"] == "Pod":
        spec: Obj = obj["spec"]
        return spec
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        template: Obj = obj["spec"]["template"]["spec"]
        return template
    return None


@pytest.fixture(scope="session")
def get_pod_spec() -> Callable[[Obj], Obj | None]:
    return pod_spec


@pytest.fixture(scope="session")
def workloads() -> Callable[[Rendered], list[tuple[str, Obj, Obj]]]:
    """(template, object, pod spec) of every workload in a render."""

    def _workloads(rendered: Rendered) -> list[tuple[str, Obj, Obj]]:
        out = []
        for template, obj in rendered.objects:
            spec = pod_spec(obj)
            if spec is not None:
                out.append((template, obj, spec))
        return out

    return _workloads
