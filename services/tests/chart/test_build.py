"""The build and dev-loop files agree with each other and with the chart: Dockerfile targets and
user, .dockerignore's allow-list, skaffold's artifacts/values/profiles, kind's node and pod network.

hadolint checks the Dockerfile's style (`make lint`); these tests check what hadolint cannot know:
that the chart, skaffold and the Dockerfile name the same things."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import yaml

from .conftest import CHART_DIR, REPO, Rendered

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    logical = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = [line]
            stages[match[2] or match[1]] = current
        else:
            current.append(line)
    return stages


def test_base_images_are_pinned_by_digest() -> None:
    for line in DOCKERFILE.splitlines():
        if line.startswith("FROM ") and not re.match(r"FROM \w[\w-]* AS", line):
            image = line.split()[1]
            assert re.search(r"^python:3\.11[\w.-]*@sha256:[a-f0-9]{64}$", image), line


def test_targets_run_as_uid_1000_and_match_the_chart(chart_values: dict[str, Any]) -> None:
    stages = _stages()
    for target in ("services", "operator"):
        users = [i for i in stages[target] if i.startswith("USER ")]
        assert users == ["USER 1000:1000"], target
    assert chart_values["podSecurityContext"]["runAsUser"] == 1000
    assert chart_values["podSecurityContext"]["runAsGroup"] == 1000


def test_uv_builds_dependencies_before_sources_with_cache_mounts() -> None:
    stages = _stages()
    assert any("UV_COMPILE_BYTECODE=1" in i for i in stages["uv-base"])
    assert any("PYTHONUNBUFFERED=1" in i for i in stages["runtime"])
    for stage, package, src in (
        ("services-build", "flashsale", "services/src"),
        ("operator-build", "flashsale-operator", "operator/src"),
    ):
        steps = stages[stage]
        deps = next(i for i, s in enumerate(steps) if "--no-install-workspace" in s)
        copy = next(i for i, s in enumerate(steps) if s.startswith(f"COPY {src}"))
        full = next(i for i, s in enumerate(steps) if "uv sync" in s and i > copy)
        assert deps < copy < full, stage
        for step in (steps[deps], steps[full]):
            assert "--mount=type=cache,target=/root/.cache/uv" in step
            assert "--frozen" in step
            assert f"--package {package}" in step


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern.lstrip("!")
            if fnmatch.fnmatch(path, body) or path.startswith(body.rstrip("/") + "/"):
                keep = negated
        return keep

    sources = []
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        assert included(source), source
        assert (REPO / source).exists(), source
    assert not included(".venv")
    assert not included(".git")
    assert not included("charts")


def _skaffold() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / "skaffold.yaml").read_text()) if d]


def _dig(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        assert isinstance(node, dict), dotted
        assert part in node, dotted
        node = node[part]
    return node


def test_skaffold_builds_both_targets_and_passes_both_images(chart_values: dict[str, Any]) -> None:
    app, loadtest = _skaffold()
    build = app["build"]
    assert build["tagPolicy"] == {"gitCommit": {}}
    assert build["local"]["useBuildkit"] is True
    artifacts = {a["image"]: a["docker"]["target"] for a in build["artifacts"]}
    assert artifacts == {"flashsale": "services", "operator": "operator"}
    assert set(artifacts.values()) <= set(_stages())
    (release,) = app["deploy"]["helm"]["releases"]
    assert Path(REPO / release["chartPath"]).resolve() == CHART_DIR
    assert release["setValueTemplates"] == {
        "image.repository": "{{.IMAGE_REPO_flashsale}}",
        "image.tag": "{{.IMAGE_TAG_flashsale}}",
        "operator.image.repository": "{{.IMAGE_REPO_operator}}",
        "operator.image.tag": "{{.IMAGE_TAG_operator}}",
    }
    for key in [*release["setValueTemplates"], *release["setValues"]]:
        _dig(chart_values, key)
    assert loadtest["requires"][0]["configs"] == ["app"]


def test_skaffold_profiles_switch_real_chart_values(chart_values: dict[str, Any]) -> None:
    app, loadtest = _skaffold()
    profiles = {p["name"]: p for p in app["profiles"]}
    prefix = "/deploy/helm/releases/0/setValues/"
    switched = {}
    for profile in profiles.values():
        for patch in profile["patches"]:
            if patch["path"].startswith(prefix):
                key = patch["path"].removeprefix(prefix)
                _dig(chart_values, key)  # a value the chart has, not a typo Helm would ignore
                switched[(profile["name"], key)] = patch["value"]
    assert switched == {
        ("dev", "dev.enabled"): True,
        ("loadtest", "loadtest.enabled"): True,
        ("no-keda", "workers.autoscaling.mode"): "none",
    }
    assert profiles["dev"]["activation"] == [{"command": "dev"}]
    # The loadtest config turns on the app's loadtest profile, and only when asked to.
    (dependency,) = loadtest["requires"][0]["activeProfiles"]
    assert dependency["name"] in profiles
    assert dependency["activatedBy"] == [p["name"] for p in loadtest["profiles"]]


def test_dev_sync_lands_where_the_image_keeps_the_sources(renders: dict[str, Rendered]) -> None:
    (app, _) = _skaffold()
    dev = next(p for p in app["profiles"] if p["name"] == "dev")
    patches = {p["path"]: p["value"] for p in dev["patches"]}
    (rule,) = patches["/build/artifacts/0/sync"]["manual"]
    synced = [p for p in REPO.glob(rule["src"].replace("**/", "**/")) if p.is_file()]
    assert synced, rule
    # skaffold keeps the path relative to the context: /app + services/src/... = where the image has
    # it.
    assert rule["dest"] == "/app"
    assert "strip" not in rule
    assert (
        "COPY --from=services-build --chown=${SRC_OWNER} /app/services/src /app/services/src"
        in DOCKERFILE
    )
    assert patches["/build/artifacts/0/docker/buildArgs"] == {"SRC_OWNER": "1000:1000"}
    # ...and the dev-mode services watch that directory.
    api = renders["dev"].get("Deployment", "flashsale-api")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert api["command"][-1] == "/app/services/src"


def test_kind_node_fits_the_ingress_and_the_chart_defaults(chart_values: dict[str, Any]) -> None:
    kind = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    (node,) = kind["nodes"]
    assert node["labels"]["ingress-ready"] == "true"
    assert {(m["containerPort"], m["hostPort"]) for m in node["extraPortMappings"]} == {
        (80, 80),
        (443, 443),
    }
    pod_subnet = kind["networking"]["podSubnet"]
    assert chart_values["api"]["forwardedAllowIps"] == pod_subnet
    assert chart_values["ingress"]["rateLimit"]["allowlist"] == pod_subnet


def test_the_cluster_guide_uses_only_what_exists(chart_values: dict[str, Any]) -> None:
    """docs/kubernetes.md lists what a user types: its profiles, configs and files must exist."""
    guide = (REPO / "docs" / "kubernetes.md").read_text()
    app, loadtest = _skaffold()
    profiles = {p["name"] for p in app["profiles"]} | {p["name"] for p in loadtest["profiles"]}
    configs = {app["metadata"]["name"], loadtest["metadata"]["name"]}
    assert set(re.findall(r"skaffold \w+(?: -m \w+)? -p ([\w-]+)", guide)) <= profiles
    assert set(re.findall(r"skaffold \w+ -m (\w+)", guide)) <= configs
    for path in (
        "kind-config.yaml",
        "flashsale.yaml",
        "charts/flashsale/files/loadtest/flash_sale.js",
    ):
        assert path in guide
        assert (REPO / path).exists(), path
    # Pinned installs, and the names the chart really gives things.
    assert "controller-v1.15.1/deploy/static/provider/kind/deploy.yaml" in guide
    assert "keda/releases/download/v2.19.0/keda-2.19.0.yaml" in guide
    assert f"/v1/sales/{chart_values['loadtest']['saleId']}" in guide
    assert "job/flashsale-k6-r<N>" in guide
