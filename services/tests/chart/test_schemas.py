"""Every rendered object is valid for the API server it will meet, without a cluster.

- Built-in kinds: kubernetes-validate (strict: unknown fields fail) against a pinned Kubernetes
  version.
- KEDA, Prometheus Operator and Gateway API objects: the offline CRD schemas in ../shared/schemas
  (skipped, saying so, when that folder is absent); KopfPeering: the CRD the chart ships.
- The chart's CRDs are valid apiextensions.k8s.io/v1 objects, and flashsale.yaml validates against
  the FlashSale CRD's openAPIV3Schema, with unknown fields refused (the API server would silently
  prune them).
- skaffold.yaml (every document, and every profile's patches applied) and kind-config.yaml against
  their schemas.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .conftest import CHART_DIR, KUBE_VERSION, REPO, Obj, Rendered

# Custom resources the chart renders -> the offline schema that validates them.
SHARED_CR_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh/scaledobject_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh/triggerauthentication_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com/podmonitor_v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io/httproute_v1.json",
}
CHART_CRDS = {("kopf.dev/v1", "KopfPeering")}


def _unique(renders: dict[str, Rendered]) -> dict[str, tuple[str, str, Obj]]:
    """Objects by canonical JSON: identical objects across combinations are validated once."""
    out: dict[str, tuple[str, str, Obj]] = {}
    for combination, rendered in renders.items():
        for template, obj in rendered.objects:
            if obj["kind"] == "Secret":
                # Generated values differ per render; validate the shape once per combination
                # anyway.
                key = json.dumps({**obj, "data": sorted(obj.get("data", {}))}, sort_keys=True)
            else:
                key = json.dumps(obj, sort_keys=True)
            out.setdefault(key, (combination, template, obj))
    return out


def test_builtin_objects_are_valid_for_kubernetes(renders: dict[str, Rendered]) -> None:
    failures = []
    for combination, template, obj in _unique(renders).values():
        if (obj["apiVersion"], obj["kind"]) in SHARED_CR_SCHEMAS or (
            obj["apiVersion"],
            obj["kind"],
        ) in CHART_CRDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            failures.append(
                f"{combination} {template} {obj['kind']}: {e.message} at {list(e.path)}"
            )
        except kubernetes_validate.SchemaNotFoundError as e:
            failures.append(
                f"{combination} {template}: no Kubernetes {KUBE_VERSION} schema: {e.message}"
            )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("api_version", "kind"), sorted(SHARED_CR_SCHEMAS))
def test_custom_resources_match_their_crd_schemas(
    renders: dict[str, Rendered],
    load_shared_schema: Callable[[str], dict[str, Any]],
    api_version: str,
    kind: str,
) -> None:
    schema = load_shared_schema(SHARED_CR_SCHEMAS[(api_version, kind)])
    validator = jsonschema.Draft202012Validator(schema)
    seen = 0
    for combination, template, obj in _unique(renders).values():
        if (obj["apiVersion"], obj["kind"]) != (api_version, kind):
            continue
        seen += 1
        errors = [f"{e.message} at {list(e.path)}" for e in validator.iter_errors(obj)]
        assert not errors, f"{combination} {template}: {errors}"
    assert seen, f"no {kind} in any combination: the combinations no longer cover it"


def test_keda_trigger_metadata_values_are_strings(default: Rendered) -> None:
    # KEDA reads trigger metadata as map[string]string: an unquoted number fails at admission.
    for scaled in default.of_kind("ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger


def test_no_kind_escapes_validation(renders: dict[str, Rendered]) -> None:
    for _, _, obj in _unique(renders).values():
        key = (obj["apiVersion"], obj["kind"])
        if "." in obj["apiVersion"].split("/")[0] and key not in CHART_CRDS:
            builtin = obj["apiVersion"].split("/")[0].endswith(".k8s.io") and not obj[
                "apiVersion"
            ].startswith("gateway.networking.k8s.io")
            assert builtin or key in SHARED_CR_SCHEMAS, f"{key} has no schema in these tests"


# --- CRDs and the example resource ----------------------------------------------------------------


def _crd_documents() -> list[Obj]:
    files = sorted((CHART_DIR / "crds").glob("*.yaml"))
    if not files:
        pytest.skip("charts/flashsale/crds/ is empty (the operator's CRDs are not written yet)")
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def _crd_for(group: str, kind: str) -> Obj:
    for crd in _crd_documents():
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind:
            return crd
    pytest.skip(f"no CRD for {kind}.{group} in charts/flashsale/crds/ yet")


def _strict(schema: Any) -> Any:
    """openAPIV3Schema as a JSON Schema that refuses unknown fields (the API server prunes them)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _object_schema(crd: Obj, version: str) -> dict[str, Any]:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = _strict(served["schema"]["openAPIV3Schema"])
    group = crd["spec"]["group"]
    schema.setdefault("properties", {}).update(
        {
            "apiVersion": {"const": f"{group}/{version}"},
            "kind": {"const": crd["spec"]["names"]["kind"]},
            "metadata": {"type": "object"},
        }
    )
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return schema


def test_crds_are_valid_apiextensions_v1_objects() -> None:
    for crd in _crd_documents():
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1", crd["metadata"]["name"]
        kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
        names = crd["spec"]["names"]
        assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"


def test_flashsale_crd_has_status_and_printer_columns() -> None:
    crd = _crd_for("flashsale.dev", "FlashSale")
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["plural"] == "flashsales"
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["status"] == {}
    columns = {c["name"].lower(): c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["phase"] == ".status.phase"
    assert columns["remaining"] == ".status.remaining"


def test_example_flashsale_validates_against_the_crd() -> None:
    path = REPO / "flashsale.yaml"
    if not path.is_file():
        pytest.skip("flashsale.yaml (the example FlashSale) is not written yet")
    crd = _crd_for("flashsale.dev", "FlashSale")
    schema = _object_schema(crd, "v1alpha1")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        errors = [
            f"{e.message} at {list(e.path)}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)
        ]
        assert not errors, errors


def test_kopf_peering_object_matches_its_crd(renders: dict[str, Rendered]) -> None:
    crd = _crd_for("kopf.dev", "KopfPeering")
    schema = _object_schema(crd, "v1")
    (peering,) = renders["default"].of_kind("KopfPeering")
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(peering)]
    assert not errors, errors
    assert crd["spec"]["scope"] == "Namespaced"


# --- skaffold and kind ----------------------------------------------------------------------------


def _skaffold_docs() -> list[Obj]:
    return [d for d in yaml.safe_load_all((REPO / "skaffold.yaml").read_text()) if d]


def _apply_patches(doc: Obj, patches: list[Obj]) -> Obj:
    """RFC 6902 add/replace, the two operations skaffold.yaml uses; a missing parent fails."""
    doc = copy.deepcopy(doc)
    for patch in patches:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in patch["path"].split("/")[1:]
        ]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if patch["op"] == "replace":
            assert last in node, f"replace of a missing {patch['path']}"
        else:
            assert patch["op"] == "add", patch
        node[last] = patch["value"]
    return doc


def test_skaffold_config_matches_the_v4beta14_schema(
    load_shared_schema: Callable[[str], dict[str, Any]],
) -> None:
    schema = load_shared_schema("skaffold-v4beta14.json")
    validator = jsonschema.Draft7Validator(schema)
    docs = _skaffold_docs()
    assert [d["metadata"]["name"] for d in docs] == ["app", "loadtest"]
    for doc in docs:
        # The schema does not check the version string: the file must be read by a v4beta14
        # skaffold.
        assert doc["apiVersion"] == "skaffold/v4beta14"
        assert not [e.message for e in validator.iter_errors(doc)]
        for profile in doc.get("profiles", []):
            patched = _apply_patches(doc, profile.get("patches", []))
            errors = [e.message for e in validator.iter_errors(patched)]
            assert not errors, (profile["name"], errors)


def test_kind_config_matches_its_schema(
    load_shared_schema: Callable[[str], dict[str, Any]],
) -> None:
    schema = load_shared_schema("kind-cluster.schemastore.json")
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert not errors, errors
