"""The chart renders and lints for every values combination that matters, and each switch does what
it says.

Rendering is helm-python-sdk (Helm 4's engine, offline: `lookup` returns nothing, so generated
secrets are fresh on every render). Object counts are pinned per combination so an accidental extra
or missing object shows up as a diff here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import helm_python
import pytest

from .conftest import CHART_DIR, COMBINATIONS, KUBE_VERSION, Rendered

# Every combination at the Kubernetes version the objects are validated against; the defaults also
# at the chart's kubeVersion floor.
LINT_CASES = [(name, f"v{KUBE_VERSION}") for name in sorted(COMBINATIONS)] + [
    ("default", "v1.29.0")
]


@pytest.mark.parametrize(("combination", "kube_version"), LINT_CASES)
def test_helm_lint_strict_is_clean(combination: str, kube_version: str) -> None:
    report = helm_python.lint(
        CHART_DIR, COMBINATIONS[combination], strict=True, kube_version=kube_version
    )
    # Severity 1 is INFO ("icon is recommended"); 2 WARNING and 3 ERROR fail under --strict.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]


EXPECTED_KINDS: dict[str, dict[str, int]] = {
    "default": {
        "ConfigMap": 2,
        "Deployment": 6,
        "HorizontalPodAutoscaler": 2,
        "Ingress": 2,
        "Job": 1,
        "KopfPeering": 1,
        "NetworkPolicy": 8,
        "Pod": 1,
        "PodDisruptionBudget": 4,
        "Role": 1,
        "RoleBinding": 1,
        "ScaledObject": 2,
        "Secret": 1,
        "Service": 9,
        "ServiceAccount": 2,
        "StatefulSet": 2,
        "TriggerAuthentication": 1,
    },
}


def test_default_render_has_exactly_the_expected_objects(default: Rendered) -> None:
    kinds = Counter(o["kind"] for _, o in default.objects)
    assert dict(kinds) == EXPECTED_KINDS["default"]


def test_object_names_are_unique_per_kind(renders: dict[str, Rendered]) -> None:
    for name, rendered in renders.items():
        seen = Counter((o["kind"], o["metadata"]["name"]) for _, o in rendered.objects)
        duplicates = [key for key, count in seen.items() if count > 1]
        assert not duplicates, f"{name}: {duplicates}"


def test_every_object_carries_the_release_labels(renders: dict[str, Rendered]) -> None:
    for name, rendered in renders.items():
        for template, obj in rendered.objects:
            labels = obj["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/instance") == "flashsale", (name, template)
            assert labels.get("app.kubernetes.io/name") == "flashsale", (name, template)
            assert len(obj["metadata"]["name"]) <= 63, (name, template)


def test_operator_not_rendered_when_disabled(renders: dict[str, Rendered]) -> None:
    off = renders["operator-off"]
    operator_objects = [
        o
        for _, o in off.objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "operator"
    ]
    assert operator_objects == []
    assert not off.of_kind("Role")
    assert not off.of_kind("KopfPeering")
    assert "flashsale-operator" in renders["default"].names("Deployment")


def test_gateway_off_points_the_payment_worker_at_the_external_gateway(
    renders: dict[str, Rendered],
) -> None:
    off = renders["gateway-off"]
    assert "flashsale-gateway" not in off.names("Deployment")
    assert "flashsale-gateway" not in off.names("Service")
    config = off.get("ConfigMap", "flashsale-config")["data"]
    assert config["FLASHSALE_GATEWAY__URL"] == "https://payments.example.com"
    default_config = renders["default"].get("ConfigMap", "flashsale-config")["data"]
    assert default_config["FLASHSALE_GATEWAY__URL"] == "http://flashsale-gateway:8002"


def test_external_stores_replace_the_statefulsets(renders: dict[str, Rendered]) -> None:
    for name in ("external-stores", "existing-secrets"):
        rendered = renders[name]
        assert rendered.of_kind("StatefulSet") == [], name
        assert not any("valkey" in n or "postgresql" in n for n in rendered.names("Service")), name
    # The in-chart database needs its wait; an external one does not get it.
    job = renders["external-stores"].get("Job", "flashsale-migrate")
    assert "initContainers" not in job["spec"]["template"]["spec"]


def test_migrations_hook_phase_depends_on_where_the_database_lives(
    renders: dict[str, Rendered],
) -> None:
    in_chart = renders["default"].get("Job", "flashsale-migrate")["metadata"]["annotations"]
    external = renders["external-stores"].get("Job", "flashsale-migrate")["metadata"]["annotations"]
    # The in-chart PostgreSQL is part of the release: it cannot exist before the install hooks.
    assert in_chart["helm.sh/hook"] == "post-install,pre-upgrade"
    assert external["helm.sh/hook"] == "pre-install,pre-upgrade"
    secret = renders["default"].get("Secret", "flashsale")["metadata"]["annotations"]
    # The Secret the hook reads is itself an earlier hook.
    assert "pre-install" in secret["helm.sh/hook"]
    assert int(secret["helm.sh/hook-weight"]) < int(in_chart["helm.sh/hook-weight"])


def test_keda_and_hpa_modes_are_alternatives(renders: dict[str, Rendered]) -> None:
    keda, hpa, none = renders["default"], renders["hpa-workers"], renders["no-autoscaling"]
    assert keda.names("ScaledObject") == {"flashsale-worker-order", "flashsale-worker-payment"}
    assert {"flashsale-worker-order", "flashsale-worker-payment"} <= hpa.names(
        "HorizontalPodAutoscaler"
    )
    assert hpa.of_kind("ScaledObject") == []
    assert hpa.of_kind("TriggerAuthentication") == []
    assert none.of_kind("ScaledObject") == []
    assert none.of_kind("HorizontalPodAutoscaler") == []
    # An autoscaler owns the replica count; without one the Deployment states it.
    assert "replicas" not in keda.get("Deployment", "flashsale-worker-order")["spec"]
    assert none.get("Deployment", "flashsale-worker-order")["spec"]["replicas"] == 1
    assert none.get("Deployment", "flashsale-api")["spec"]["replicas"] == 2


def test_httproute_replaces_the_ingress(renders: dict[str, Rendered]) -> None:
    route = renders["httproute"]
    assert route.of_kind("Ingress") == []
    (http_route,) = route.of_kind("HTTPRoute")
    assert http_route["spec"]["parentRefs"] == [{"name": "eg", "namespace": "envoy-gateway-system"}]
    assert renders["default"].of_kind("HTTPRoute") == []


def test_loadtest_is_off_by_default_and_one_job_per_revision(
    renders: dict[str, Rendered], chart: helm_python.Chart
) -> None:
    assert not any(
        "loadtest" in template or "k6" in o["metadata"]["name"]
        for template, o in renders["default"].objects
    )
    names = renders["loadtest"].names("Job")
    assert "flashsale-k6-r1" in names
    manifests = chart.render(COMBINATIONS["loadtest"], name="flashsale", revision=7)
    assert "flashsale-k6-r7" in manifests["flashsale/templates/loadtest-job.yaml"]


def test_monitoring_objects_only_when_asked(renders: dict[str, Rendered]) -> None:
    assert renders["default"].of_kind("ServiceMonitor") == []
    on = renders["monitoring"]
    (monitor,) = on.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert len(on.of_kind("PodMonitor")) == 1
    dashboard = on.get("ConfigMap", "flashsale-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert '"uid": "flashsale-overview"' in dashboard["data"]["flashsale.json"]


def test_dev_mode_runs_the_services_under_watchfiles(renders: dict[str, Rendered]) -> None:
    api = renders["dev"].get("Deployment", "flashsale-api")["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["command"][0] == "watchfiles"
    assert "python -m flashsale.api" in container["command"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    # Only the synced services relax; the stores and the operator keep a read-only root filesystem.
    operator = renders["dev"].get("Deployment", "flashsale-operator")["spec"]["template"]["spec"]
    assert operator["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_generated_secrets_are_complete_and_strong(default: Rendered) -> None:
    import base64

    data = {
        k: base64.b64decode(v).decode()
        for k, v in default.get("Secret", "flashsale")["data"].items()
    }
    assert set(data) == {
        "FLASHSALE_AUTH__JWT_SECRET",
        "FLASHSALE_POSTGRES__DSN",
        "FLASHSALE_REDIS__URL",
        "postgres-password",
        "redis-password",
    }
    assert len(data["FLASHSALE_AUTH__JWT_SECRET"]) >= 32
    assert data["postgres-password"] in data["FLASHSALE_POSTGRES__DSN"]
    assert data["FLASHSALE_REDIS__URL"] == (
        f"redis://:{data['redis-password']}@flashsale-valkey:6379/0"
    )


def test_explicit_values_win_over_generated_ones(
    render: Callable[[dict[str, Any]], Rendered],
) -> None:
    import base64

    rendered = render({"auth": {"jwtSecret": "j" * 40}, "postgresql": {"password": "pw-123"}})
    data = rendered.get("Secret", "flashsale")["data"]
    assert base64.b64decode(data["FLASHSALE_AUTH__JWT_SECRET"]).decode() == "j" * 40
    dsn = base64.b64decode(data["FLASHSALE_POSTGRES__DSN"]).decode()
    assert dsn == "postgresql://flashsale:pw-123@flashsale-postgresql:5432/flashsale"


def test_notes_tell_the_user_what_to_run(renders: dict[str, Rendered]) -> None:
    assert "helm test flashsale" in renders["default"].notes
    assert "kubectl -n default apply -f flashsale.yaml" in renders["default"].notes
    assert "logs -f job/flashsale-k6-r1" in renders["loadtest"].notes
