"""Security properties of every render: the restricted Pod Security Standard for every pod,
including init containers, Jobs and the helm test; resources on every container; no secret material
in ConfigMaps; only the operator talks to the Kubernetes API; pinned images.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

from .conftest import Obj, Rendered

WorkloadsFn = Callable[[Rendered], list[tuple[str, Obj, Obj]]]


def all_containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def test_no_container_runs_as_root_or_can_escalate(
    renders: dict[str, Rendered], workloads: WorkloadsFn
) -> None:
    for name, rendered in renders.items():
        for template, _, spec in workloads(rendered):
            pod = spec.get("securityContext", {})
            assert pod.get("runAsNonRoot") is True, (name, template)
            assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", (name, template)
            assert pod.get("runAsUser", 1) != 0, (name, template)
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                assert not spec.get(key), (name, template, key)
            assert not any("hostPath" in v for v in spec.get("volumes", [])), (name, template)
            for container in all_containers(spec):
                where = (name, template, container["name"])
                sc = container.get("securityContext", {})
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("privileged") is not True, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
                assert not sc.get("capabilities", {}).get("add"), where
                assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
                assert sc.get("runAsUser", pod.get("runAsUser")) not in (0, None), where
                assert sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type") == (
                    "RuntimeDefault"
                ), where


def test_root_filesystems_are_read_only_with_a_writable_tmp(
    renders: dict[str, Rendered], workloads: WorkloadsFn
) -> None:
    for name, rendered in renders.items():
        for template, _, spec in workloads(rendered):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for container in all_containers(spec):
                where = (name, template, container["name"])
                read_only = container["securityContext"].get("readOnlyRootFilesystem")
                if name == "dev" and container.get("command", [""])[0] == "watchfiles":
                    # skaffold's file sync writes into the container: relaxed in dev mode only.
                    assert read_only is False, where
                    continue
                assert read_only is True, where
                if container["name"].startswith("wait-for-"):
                    continue  # pg_isready writes nothing
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert "/tmp" in mounts, where
                assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_every_container_has_requests_and_limits(
    renders: dict[str, Rendered], workloads: WorkloadsFn
) -> None:
    for name, rendered in renders.items():
        for template, _, spec in workloads(rendered):
            for container in all_containers(spec):
                resources = container.get("resources", {})
                where = (name, template, container["name"])
                assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
                assert {"cpu", "memory"} <= set(resources.get("limits", {})), where


def test_only_the_operator_mounts_an_api_token(
    renders: dict[str, Rendered], workloads: WorkloadsFn
) -> None:
    for name, rendered in renders.items():
        for template, obj, spec in workloads(rendered):
            component = obj["metadata"]["labels"].get("app.kubernetes.io/component")
            expected = component == "operator"
            assert spec.get("automountServiceAccountToken") is expected, (name, template)
        for account in rendered.of_kind("ServiceAccount"):
            if account["metadata"]["name"] == "flashsale":
                assert account["automountServiceAccountToken"] is False


def _secret_values(rendered: Rendered) -> list[str]:
    values = []
    for secret in rendered.of_kind("Secret"):
        for encoded in secret.get("data", {}).values():
            values.append(base64.b64decode(encoded).decode())
    return values


def test_no_secret_values_in_configmaps(renders: dict[str, Rendered]) -> None:
    for name, rendered in renders.items():
        secrets = _secret_values(rendered)
        explicit = ["s3cret-redis", "s3cret-pg"]  # the external-stores combination's passwords
        for configmap in rendered.of_kind("ConfigMap"):
            for key, value in configmap.get("data", {}).items():
                where = (name, configmap["metadata"]["name"], key)
                for secret in secrets + explicit:
                    assert secret not in value, where
                upper = key.upper()
                assert not any(w in upper for w in ("PASSWORD", "SECRET", "TOKEN", "DSN")), where
                assert "REDIS__URL" not in upper, where


def test_secrets_are_referenced_not_inlined(
    renders: dict[str, Rendered], workloads: WorkloadsFn
) -> None:
    """Secret material reaches containers through secretKeyRef only, never as a literal value."""
    for name, rendered in renders.items():
        secrets = [s for s in _secret_values(rendered) if len(s) >= 8]
        for template, _, spec in workloads(rendered):
            for container in all_containers(spec):
                for item in container.get("env", []):
                    if "value" in item:
                        assert not any(s in item["value"] for s in secrets), (
                            name,
                            template,
                            item["name"],
                        )
                        assert "SECRET" not in item["name"], (name, template)
                        assert "PASSWORD" not in item["name"], (name, template)


def test_images_are_pinned(renders: dict[str, Rendered], workloads: WorkloadsFn) -> None:
    for name, rendered in renders.items():
        for template, _, spec in workloads(rendered):
            for container in all_containers(spec):
                image = container["image"]
                repository, _, tag = image.partition("@")[0].rpartition(":")
                assert repository, (name, template, image)
                assert tag, (name, template, image)
                assert tag != "latest", (name, template, image)
                assert container["imagePullPolicy"] in ("IfNotPresent", "Always"), (name, template)


def test_stores_keep_durability_settings(default: Rendered) -> None:
    conf = default.get("ConfigMap", "flashsale-valkey-config")["data"]["valkey.conf"].splitlines()
    assert "appendonly yes" in conf
    assert "appendfsync always" in conf
    assert "maxmemory-policy noeviction" in conf
    # The cap sits below the container's memory limit, so a full Valkey refuses writes, not dies.
    assert "maxmemory 400mb" in conf
    valkey = default.get("StatefulSet", "flashsale-valkey")["spec"]["template"]["spec"]
    assert valkey["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
    postgres = default.get("StatefulSet", "flashsale-postgresql")["spec"]["template"]["spec"]
    args = postgres["containers"][0]["args"]
    assert not any("synchronous_commit" in a or "fsync=off" in a for a in args)
