"""The chart and the code agree (CONTRACT.md is the reference for both).

- Every env var the chart sets is a field of flashsale.config.Settings (services) or
  flashsale_operator.config.Settings (operator), and the rendered env builds a valid prod Settings
  whose bind address and port are the container's.
- Every container port and probe path is the one the process serves; every `command` names a module
  that exists (importlib.util.find_spec) and runs as `python -m`.
- Every Service, Ingress/HTTPRoute backend, autoscaler, PDB, NetworkPolicy and monitor points at
  something the render contains, on a port it exposes; KEDA watches the streams and groups
  redis_keys.py names.
- The k6 Job mounts scripts that exist, from the one copy in files/loadtest/.
"""

from __future__ import annotations

import ast
import base64
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from flashsale import config as services_config
from flashsale.adapters import redis_keys

from .conftest import CHART_DIR, REPO, Obj, Rendered


@dataclass(frozen=True)
class Process:
    module: str
    port: int
    # (group, field) of the bind address and port in flashsale.config.Settings
    host_field: tuple[str, str]
    port_field: tuple[str, str]


# CONTRACT.md "Processes and default ports".
PROCESSES = {
    "api": Process("flashsale.api", 8000, ("api", "host"), ("api", "port")),
    "sse": Process("flashsale.sse", 8001, ("sse", "host"), ("sse", "port")),
    "worker-order": Process(
        "flashsale.workers.order", 9101, ("worker", "host"), ("worker", "order_port")
    ),
    "worker-payment": Process(
        "flashsale.workers.payment", 9102, ("worker", "host"), ("worker", "payment_port")
    ),
    "gateway": Process("flashsale.gateway", 8002, ("mock", "host"), ("mock", "port")),
}
OPERATOR = Process(
    "flashsale_operator", 8080, ("operator", "health_host"), ("operator", "health_port")
)
# Allowed besides Settings: prometheus-client's multiprocess directory (api with several workers).
EXTRA_SERVICES_ENV = {"PROMETHEUS_MULTIPROC_DIR"}


def settings_env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", ""))
    delimiter = str(settings.model_config.get("env_nested_delimiter", "__"))
    names = set()
    for name, info in settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                names.add(f"{prefix}{name}{delimiter}{sub}".upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def operator_settings() -> type[BaseSettings] | None:
    if importlib.util.find_spec("flashsale_operator.config") is None:
        return None
    from flashsale_operator import config as operator_config

    settings: type[BaseSettings] = operator_config.Settings
    return settings


SERVICES_ENV = settings_env_names(services_config.Settings)
_OPERATOR_SETTINGS = operator_settings()
# Until the operator's settings class exists, only the names CONTRACT.md gives it.
OPERATOR_ENV = (
    settings_env_names(_OPERATOR_SETTINGS)
    if _OPERATOR_SETTINGS is not None
    else {"FLASHSALE_API__URL", "FLASHSALE_AUTH__JWT_SECRET", "FLASHSALE_ENV"}
)


# --- helpers over a render ------------------------------------------------------------------------


def containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def image_kind(rendered: Rendered, image: str) -> str:
    """`services`, `operator` or `other` for an image reference in this render."""
    values = rendered.merged_values
    if image.startswith(values["image"]["repository"] + ":"):
        return "services"
    if image.startswith(values["operator"]["image"]["repository"] + ":"):
        return "operator"
    return "other"


def secret_data(rendered: Rendered) -> dict[str, str]:
    secrets = rendered.of_kind("Secret")
    if not secrets:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}


def resolved_env(rendered: Rendered, container: Obj) -> dict[str, str]:
    """The env a container starts with: envFrom ConfigMaps, then env (values, Secrets, fields)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    chart_secret = secret_data(rendered)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            key = ref["secretKeyRef"]["key"]
            # A Secret the user provides (existingSecret): stand in a value of the right shape.
            env[item["name"]] = chart_secret.get(key) or _stand_in(item["name"])
        elif "fieldRef" in ref:
            env[item["name"]] = {"metadata.namespace": "default"}.get(
                ref["fieldRef"]["fieldPath"], "x"
            )
    return env


def _stand_in(name: str) -> str:
    return {
        "FLASHSALE_POSTGRES__DSN": "postgresql://shop:from-a-secret@db.example.com:5432/shop",
        "FLASHSALE_REDIS__URL": "redis://:from-a-secret@redis.example.com:6379/0",
    }.get(name, "a-secret-from-an-existing-secret-0123456789")


def deployment_container(rendered: Rendered, component: str) -> Obj:
    deployment = rendered.get("Deployment", f"flashsale-{component}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    found: Obj = container
    return found


# --- env ------------------------------------------------------------------------------------------


def test_every_env_var_is_a_setting_the_process_reads(
    renders: dict[str, Rendered], workloads: Callable[[Rendered], list[tuple[str, Obj, Obj]]]
) -> None:
    for name, rendered in renders.items():
        for template, _, spec in workloads(rendered):
            for container in containers(spec):
                kind = image_kind(rendered, container["image"])
                if kind == "other":
                    continue
                allowed = SERVICES_ENV | EXTRA_SERVICES_ENV if kind == "services" else OPERATOR_ENV
                unknown = set(resolved_env(rendered, container)) - allowed
                assert not unknown, f"{name} {template} {container['name']}: {sorted(unknown)}"


def test_configmap_holds_only_settings_names(renders: dict[str, Rendered]) -> None:
    for name, rendered in renders.items():
        data = rendered.get("ConfigMap", "flashsale-config")["data"]
        assert set(data) <= SERVICES_ENV, f"{name}: {sorted(set(data) - SERVICES_ENV)}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Replace every FLASHSALE_* variable of this process with the given env."""
    import os

    for key in list(os.environ):
        if key.startswith("FLASHSALE_"):
            monkeypatch.delenv(key)

    def _apply(env: dict[str, str]) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return _apply


@pytest.mark.parametrize("combination", ["default", "external-stores", "existing-secrets"])
@pytest.mark.parametrize("component", sorted(PROCESSES))
def test_rendered_env_builds_a_valid_prod_settings(
    renders: dict[str, Rendered],
    clean_env: Callable[[dict[str, str]], None],
    combination: str,
    component: str,
) -> None:
    rendered = renders[combination]
    container = deployment_container(rendered, component)
    clean_env(resolved_env(rendered, container))
    # In prod this refuses the dev JWT secret and the dev database password: the chart must supply
    # both.
    settings = services_config.Settings()
    assert settings.env == "prod"
    process = PROCESSES[component]
    group, host = process.host_field
    assert getattr(getattr(settings, group), host) == "0.0.0.0"
    group, port = process.port_field
    (container_port,) = container["ports"]
    assert (
        getattr(getattr(settings, group), port) == container_port["containerPort"] == process.port
    )
    assert settings.api.url == "http://flashsale-api:8000"


def test_rendered_env_builds_a_valid_operator_settings(
    default: Rendered, clean_env: Callable[[dict[str, str]], None]
) -> None:
    if _OPERATOR_SETTINGS is None:
        pytest.skip("operator/src/flashsale_operator/config.py is not written yet")
    container = deployment_container(default, "operator")
    clean_env(resolved_env(default, container))
    settings: Any = _OPERATOR_SETTINGS()
    assert settings.env == "prod"
    assert settings.api.url == "http://flashsale-api:8000"
    # Namespaced (the Role grants nothing cluster-wide), peering through the object the chart
    # creates.
    assert settings.operator.namespace == "default"
    (peering,) = default.of_kind("KopfPeering")
    assert settings.operator.peering_name == peering["metadata"]["name"]
    assert settings.operator.health_port == container["ports"][0]["containerPort"] == OPERATOR.port


def test_operator_without_peering_object_runs_standalone(
    render: Callable[[dict[str, Any]], Rendered], clean_env: Callable[[dict[str, str]], None]
) -> None:
    if _OPERATOR_SETTINGS is None:
        pytest.skip("operator/src/flashsale_operator/config.py is not written yet")
    rendered = render({"operator": {"peering": {"create": False}}})
    assert rendered.of_kind("KopfPeering") == []
    clean_env(resolved_env(rendered, deployment_container(rendered, "operator")))
    settings: Any = _OPERATOR_SETTINGS()
    assert settings.operator.standalone is True


# --- ports, probes, commands ----------------------------------------------------------------------


@pytest.mark.parametrize("component", sorted(PROCESSES))
def test_ports_and_probes_match_the_contract(default: Rendered, component: str) -> None:
    container = deployment_container(default, component)
    process = PROCESSES[component]
    assert container["command"] == ["python", "-m", process.module]
    assert container["ports"] == [
        {"name": "http", "containerPort": process.port, "protocol": "TCP"}
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


PROCESS_SOURCES = {
    "api": "flashsale/api",
    "sse": "flashsale/sse",
    "worker-order": "flashsale/workers",
    "worker-payment": "flashsale/workers",
    "gateway": "flashsale/gateway",
}


@pytest.mark.parametrize("component", sorted(PROCESSES))
def test_probe_paths_are_routes_the_process_serves(default: Rendered, component: str) -> None:
    package = REPO / "services" / "src" / PROCESS_SOURCES[component]
    source = "\n".join(p.read_text() for p in package.rglob("*.py"))
    container = deployment_container(default, component)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        path = container[probe]["httpGet"]["path"]
        assert f'"{path}"' in source, f"{component} serves no {path} route ({package})"


def test_operator_port_and_probe_match_the_contract(default: Rendered) -> None:
    container = deployment_container(default, "operator")
    assert container["command"] == ["python", "-m", OPERATOR.module]
    assert container["ports"][0]["containerPort"] == OPERATOR.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def _check_module(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"module {module} does not exist"
    if spec.submodule_search_locations is not None:  # a package runs through its __main__
        assert importlib.util.find_spec(f"{module}.__main__") is not None, (
            f"{module} has no __main__"
        )
    else:
        assert spec.origin is not None
        source = Path(spec.origin).read_text()
        assert '__name__ == "__main__"' in source, f"{module} does nothing under python -m"


def _check_command(command: list[str]) -> None:
    if command[:2] == ["python", "-m"]:
        _check_module(command[2])
    elif command[:2] == ["python", "-c"]:
        # The helm test: standard library only (the image has no test dependencies).
        tree = ast.parse(command[2])
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                )
                for imported in names:
                    assert imported, node
                    assert imported.split(".")[0] in sys.stdlib_module_names, imported
    elif command[0] == "watchfiles":
        assert importlib.util.find_spec("watchfiles") is not None
        inner = command[command.index("command") + 1].split()
        _check_command(inner)
    else:
        (script,) = importlib.metadata.entry_points(group="console_scripts", name=command[0])
        _check_module_has(script.value)
        module = script.value.partition(":")[0]
        spec = importlib.util.find_spec(module)
        assert spec is not None
        assert spec.origin is not None
        for subcommand in command[1:2]:
            assert f'add_parser("{subcommand}"' in Path(spec.origin).read_text(), (
                module,
                subcommand,
            )


def _check_module_has(target: str) -> None:
    module, _, attribute = target.partition(":")
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"console script target {module} missing"
    assert spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert attribute in defined, f"{target}: no function {attribute}"


def test_every_command_names_a_real_module(
    renders: dict[str, Rendered], workloads: Callable[[Rendered], list[tuple[str, Obj, Obj]]]
) -> None:
    seen: set[tuple[str, ...]] = set()
    for rendered in renders.values():
        for _, _, spec in workloads(rendered):
            for container in containers(spec):
                if image_kind(rendered, container["image"]) != "other":
                    seen.add(tuple(container["command"]))
    assert ("flashsale", "migrate") in seen
    for command in sorted(seen):
        _check_command(list(command))


# --- wiring between objects -----------------------------------------------------------------------


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pods(rendered: Rendered) -> list[tuple[Obj, Obj]]:
    """(workload, pod template) of every long-running workload."""
    return [
        (o, o["spec"]["template"])
        for o in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")
    ]


def _container_ports(template: Obj) -> dict[str | int, int]:
    ports: dict[str | int, int] = {}
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def test_services_select_one_workload_and_reach_a_container_port(
    renders: dict[str, Rendered],
) -> None:
    for name, rendered in renders.items():
        for service in rendered.of_kind("Service"):
            selected = [
                t
                for _, t in _pods(rendered)
                if _selects(service["spec"]["selector"], t["metadata"]["labels"])
            ]
            assert len(selected) == 1, (
                f"{name}: Service {service['metadata']['name']} selects {len(selected)}"
            )
            ports = _container_ports(selected[0])
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports, f"{name}: {service['metadata']['name']} {port}"


def _service_port(rendered: Rendered, service: str, port: str | int) -> int:
    for candidate in rendered.get("Service", service)["spec"]["ports"]:
        if port in (candidate["name"], candidate["port"]):
            number: int = candidate["port"]
            return number
    raise AssertionError(f"Service {service} has no port {port}")


def test_ingress_backends_are_services_with_that_port(renders: dict[str, Rendered]) -> None:
    for name, rendered in renders.items():
        for ingress in rendered.of_kind("Ingress"):
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    _service_port(rendered, backend["name"], backend["port"]["name"])
        for route in rendered.of_kind("HTTPRoute"):
            for rule in route["spec"]["rules"]:
                for ref in rule["backendRefs"]:
                    _service_port(rendered, ref["name"], ref["port"])
            assert name == "httproute"


def test_event_streams_reach_the_sse_server_unbuffered(default: Rendered) -> None:
    stream = default.get("Ingress", "flashsale-stream")
    annotations = stream["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    routes = {
        p["path"]: p["backend"]["service"]["name"]
        for p in stream["spec"]["rules"][0]["http"]["paths"]
    }
    assert routes["/v1/sales/[^/]+/events$"] == "flashsale-sse"
    assert routes["/v1/me/events$"] == "flashsale-sse"
    # The SSE heartbeat (15 s default) must come well within the proxy's read timeout.
    heartbeat = services_config.SseSettings().heartbeat_s
    assert heartbeat * 4 < int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])


def test_ingress_rate_limit_lets_the_api_answer_and_exempts_the_pod_network(
    default: Rendered,
) -> None:
    annotations = default.get("Ingress", "flashsale-api")["metadata"]["annotations"]
    config = default.get("ConfigMap", "flashsale-config")["data"]
    assert int(annotations["nginx.ingress.kubernetes.io/limit-rps"]) >= float(
        config["FLASHSALE_API__RATE_LIMIT_ADDR_PER_S"]
    )
    # The k6 Job (and anything else in the pod network) is not limited by nginx.
    assert annotations["nginx.ingress.kubernetes.io/limit-whitelist"] == "10.244.0.0/16"


def test_autoscalers_and_budgets_target_rendered_workloads(renders: dict[str, Rendered]) -> None:
    for name, rendered in renders.items():
        deployments = rendered.names("Deployment")
        for hpa in rendered.of_kind("HorizontalPodAutoscaler") + rendered.of_kind("ScaledObject"):
            target = hpa["spec"]["scaleTargetRef"]
            assert target["kind"] == "Deployment", (name, target)
            assert target["name"] in deployments, (name, target)
        for pdb in rendered.of_kind("PodDisruptionBudget"):
            selector = pdb["spec"]["selector"]["matchLabels"]
            assert any(_selects(selector, t["metadata"]["labels"]) for _, t in _pods(rendered)), (
                name,
                pdb,
            )


def test_keda_watches_the_streams_the_workers_read(renders: dict[str, Rendered]) -> None:
    expected = {
        "flashsale-worker-order": (redis_keys.ORDER_STREAM, redis_keys.ORDER_GROUP),
        "flashsale-worker-payment": (redis_keys.PAYMENT_STREAM, redis_keys.PAYMENT_GROUP),
    }
    for name in ("default", "external-stores", "existing-secrets"):
        rendered = renders[name]
        for scaled in rendered.of_kind("ScaledObject"):
            (trigger,) = scaled["spec"]["triggers"]
            metadata = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert (metadata["stream"], metadata["consumerGroup"]) == expected[
                scaled["metadata"]["name"]
            ]
            assert "lagCount" in metadata
            assert "pendingEntriesCount" not in metadata
    # In-chart Valkey: KEDA dials its Service with the password from the chart's Secret.
    default = renders["default"]
    (scaled, _) = default.of_kind("ScaledObject")
    host, port = scaled["spec"]["triggers"][0]["metadata"]["address"].split(":")
    assert _service_port(default, host, int(port)) == 6379
    (auth,) = default.of_kind("TriggerAuthentication")
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["key"] in secret_data(default)
    # External Redis: address, TLS and database index come from the URL.
    external = renders["external-stores"].of_kind("ScaledObject")[0]["spec"]["triggers"][0][
        "metadata"
    ]
    assert (external["address"], external["enableTLS"], external["databaseIndex"]) == (
        "redis.example.com:6380",
        "true",
        "2",
    )


def test_hpa_alternative_selects_the_consumer_group(renders: dict[str, Rendered]) -> None:
    import re

    label_value = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    groups = {redis_keys.ORDER_GROUP, redis_keys.PAYMENT_GROUP}
    for hpa in renders["hpa-workers"].of_kind("HorizontalPodAutoscaler"):
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] != "External":
                continue
            labels = metric["external"]["metric"]["selector"]["matchLabels"]
            assert set(labels.values()) <= groups
            assert all(label_value.match(v) for v in labels.values()), labels


def test_secret_and_configmap_references_resolve(
    renders: dict[str, Rendered], workloads: Callable[[Rendered], list[tuple[str, Obj, Obj]]]
) -> None:
    for name, rendered in renders.items():
        chart_secret = rendered.of_kind("Secret")
        chart_secret_name = chart_secret[0]["metadata"]["name"] if chart_secret else None
        keys = set(secret_data(rendered))
        configmaps = rendered.names("ConfigMap")
        for template, _, spec in workloads(rendered):
            for container in containers(spec):
                for item in container.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref and ref["name"] == "flashsale":
                        assert ref["name"] == chart_secret_name, (name, template, ref)
                        assert ref["key"] in keys, (name, template, ref)
                for source in container.get("envFrom", []):
                    assert source["configMapRef"]["name"] in configmaps, (name, template)
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in configmaps, (name, template, volume)


def test_service_accounts_exist(
    renders: dict[str, Rendered], workloads: Callable[[Rendered], list[tuple[str, Obj, Obj]]]
) -> None:
    for name, rendered in renders.items():
        accounts = rendered.names("ServiceAccount") | {"default"}
        for template, _, spec in workloads(rendered):
            assert spec.get("serviceAccountName", "default") in accounts, (name, template)


def test_network_policies_open_the_ports_the_pods_listen_on(renders: dict[str, Rendered]) -> None:
    for name, rendered in renders.items():
        for policy in rendered.of_kind("NetworkPolicy"):
            selector = policy["spec"]["podSelector"]["matchLabels"]
            selected = [
                t for _, t in _pods(rendered) if _selects(selector, t["metadata"]["labels"])
            ]
            assert selected, (name, policy["metadata"]["name"])
            for rule in policy["spec"]["ingress"]:
                for port in rule.get("ports", []):
                    assert all(port["port"] in _container_ports(t) for t in selected), (
                        name,
                        policy,
                    )


def test_keda_and_the_ingress_controller_may_reach_their_targets(default: Rendered) -> None:
    def sources(policy: str) -> list[Obj]:
        (rule,) = default.get("NetworkPolicy", policy)["spec"]["ingress"]
        return list(rule["from"])

    keda = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    nginx = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert keda in sources("flashsale-valkey")
    assert nginx in sources("flashsale-api")
    assert nginx in sources("flashsale-sse")
    assert nginx not in sources("flashsale-valkey")
    assert nginx not in sources("flashsale-postgresql")


def test_monitors_scrape_named_ports_that_exist(renders: dict[str, Rendered]) -> None:
    rendered = renders["monitoring"]
    (monitor,) = rendered.of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        s for s in rendered.of_kind("Service") if _selects(selector, s["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in scraped} == {
        f"flashsale-{c}" for c in ("api", "sse", "gateway", "worker-order", "worker-payment")
    }
    for service in scraped:
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    (pod_monitor,) = rendered.of_kind("PodMonitor")
    components = pod_monitor["spec"]["selector"]["matchExpressions"][0]["values"]
    assert sorted(components) == sorted(PROCESSES)


def test_operator_rbac_covers_what_kopf_and_the_handlers_use(default: Rendered) -> None:
    rules = default.get("Role", "flashsale-operator")["rules"]
    granted = {
        (g, r): set(rule["verbs"])
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert granted[("flashsale.dev", "flashsales")] >= {"get", "list", "watch", "patch"}
    assert granted[("flashsale.dev", "flashsales/status")] >= {"patch"}
    assert granted[("kopf.dev", "kopfpeerings")] >= {"get", "list", "watch", "patch"}
    assert granted[("", "events")] >= {"create"}
    # Minimal: nothing else, no delete, no cluster scope.
    assert set(granted) == {
        ("flashsale.dev", "flashsales"),
        ("flashsale.dev", "flashsales/status"),
        ("kopf.dev", "kopfpeerings"),
        ("", "events"),
    }
    assert not any("delete" in verbs or "*" in verbs for verbs in granted.values())
    assert default.of_kind("ClusterRole") == []
    assert default.of_kind("ClusterRoleBinding") == []


def test_the_role_matches_the_crds_the_chart_ships(default: Rendered) -> None:
    import yaml

    crds = [
        d
        for f in (CHART_DIR / "crds").glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    if not crds:
        pytest.skip("charts/flashsale/crds/ is empty")
    namespaced = {
        (c["spec"]["group"], c["spec"]["names"]["plural"])
        for c in crds
        if c["spec"]["scope"] == "Namespaced"
    }
    rules = default.get("Role", "flashsale-operator")["rules"]
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                if group:
                    assert (group, resource.split("/")[0]) in namespaced, (group, resource)


# --- the k6 Job -----------------------------------------------------------------------------------


def test_k6_job_mounts_scripts_that_exist(renders: dict[str, Rendered]) -> None:
    rendered = renders["loadtest"]
    (job,) = [
        j for j in rendered.of_kind("Job") if j["metadata"]["name"].startswith("flashsale-k6")
    ]
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    script = container["command"][-1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount_path = mounts["scripts"]
    assert script.startswith(mount_path + "/")
    configmap = rendered.get("ConfigMap", volumes["scripts"]["configMap"]["name"])
    files = {p.name: p.read_text() for p in (CHART_DIR / "files" / "loadtest").glob("*.js")}
    assert configmap["data"] == files
    assert script.removeprefix(mount_path + "/") in files
    env = {e["name"]: e for e in container["env"]}
    assert env["BASE_URL"]["value"] == "http://flashsale-api:8000"
    assert env["SSE_URL"]["value"] == "http://flashsale-sse:8001"
    assert env["JWT_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "FLASHSALE_AUTH__JWT_SECRET"


def test_loadtest_scripts_have_one_copy() -> None:
    link = REPO / "loadtest"
    assert link.is_symlink(), "loadtest/ must be the symlink to charts/flashsale/files/loadtest"
    assert link.resolve() == (CHART_DIR / "files" / "loadtest").resolve()


def test_default_sale_id_is_the_example_flashsale(chart_values: dict[str, Any]) -> None:
    import yaml

    path = REPO / "flashsale.yaml"
    if not path.is_file():
        pytest.skip("flashsale.yaml is not written yet")
    sale = yaml.safe_load(path.read_text())
    sale_id = sale["spec"].get("saleId") or f"default-{sale['metadata']['name']}"
    assert chart_values["loadtest"]["saleId"] == sale_id
