"""The CRD (the chart's only copy) is a well-formed apiextensions.k8s.io/v1 object, agrees with
the operator, and validates the example flashsale.yaml and refuses bad specs."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from flashsale_operator import handlers, lifecycle

ROOT = Path(__file__).parents[3]
CRDS = ROOT / "charts" / "flashsale" / "crds"
CRD = yaml.safe_load((CRDS / "flashsale.yaml").read_text())
EXAMPLE = yaml.safe_load((ROOT / "flashsale.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_PROPS = SCHEMA["properties"]["spec"]["properties"]
# The newest Kubernetes schemas kubernetes-validate ships; CEL rules need >= 1.25.
K8S_VERSION = kubernetes_validate.utils.latest_version()

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339(value: object) -> bool:
    return not isinstance(value, str) or lifecycle.parse_time(value) is not None


def validate(resource: dict[str, Any]) -> None:
    """The openAPIV3Schema as the apiserver applies it (minus CEL, checked below by hand)."""
    jsonschema.Draft7Validator(SCHEMA, format_checker=FORMATS).validate(resource)


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_crd_is_a_valid_apiextensions_v1_object(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        assert document["apiVersion"] == "apiextensions.k8s.io/v1"
        assert document["kind"] == "CustomResourceDefinition"
        kubernetes_validate.validate(document, desired_version=K8S_VERSION, strict=True)


def test_the_crd_names_the_resource_the_handlers_watch() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == f"{handlers.PLURAL}.{handlers.GROUP}"
    assert (spec["group"], spec["names"]["plural"]) == (handlers.GROUP, handlers.PLURAL)
    assert (spec["names"]["kind"], spec["scope"]) == ("FlashSale", "Namespaced")
    assert "fs" in spec["names"]["shortNames"]
    assert [v["name"] for v in spec["versions"] if v["storage"]] == [handlers.VERSION]
    assert VERSION["subresources"] == {"status": {}}


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_the_schema_is_structural() -> None:
    """Every node has a type (or preserves unknown fields), as the apiserver requires."""
    for path, node in _walk(SCHEMA):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_the_printer_columns_point_into_the_schema() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert {"Phase", "Remaining", "Opens", "Age"} <= set(columns)
    paths = {path for path, _ in _walk(SCHEMA)}
    for column in columns.values():
        if column["jsonPath"] != ".metadata.creationTimestamp":
            assert column["jsonPath"] in paths, column


def test_status_has_the_contract_fields() -> None:
    status = SCHEMA["properties"]["status"]["properties"]
    contract = ["phase", "remaining", "pending", "confirmed", "failed", "openedAt", "closedAt"]
    assert set(contract + ["conditions"]) <= set(status)
    assert status["phase"]["enum"] == [str(p) for p in lifecycle.Phase]


def test_the_schema_uses_the_operators_own_limits() -> None:
    assert SPEC_PROPS["price"]["pattern"] == lifecycle.PRICE_RE.pattern
    assert SPEC_PROPS["saleId"]["pattern"] == lifecycle.SALE_ID_RE.pattern
    assert SPEC_PROPS["stock"]["maximum"] == lifecycle.MAX_STOCK
    assert SPEC_PROPS["perUserLimit"]["maximum"] == lifecycle.MAX_PER_USER_LIMIT
    assert SPEC_PROPS["product"]["maxLength"] == lifecycle.MAX_PRODUCT_LEN
    assert SPEC_PROPS["duration"]["default"] == lifecycle.DEFAULT_DURATION
    assert SPEC_PROPS["perUserLimit"]["default"] == 1


def test_the_duration_and_sale_id_carry_cel_rules() -> None:
    duration_rules = [r["rule"] for r in SPEC_PROPS["duration"]["x-kubernetes-validations"]]
    assert any("duration('24h')" in rule for rule in duration_rules)
    spec_rules = [r["rule"] for r in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]]
    assert any("oldSelf.saleId" in rule for rule in spec_rules)


def test_the_spec_leaves_room_for_later_fields() -> None:
    assert "additionalProperties" not in SCHEMA["properties"]["spec"]


def test_the_example_validates_and_is_a_1000_unit_five_minute_sale() -> None:
    validate(EXAMPLE)
    assert (EXAMPLE["apiVersion"], EXAMPLE["kind"]) == ("flashsale.dev/v1alpha1", "FlashSale")
    sale = lifecycle.parse_spec(
        EXAMPLE["spec"], namespace="default", name=EXAMPLE["metadata"]["name"], created=T0
    )
    assert (sale.stock, sale.duration.total_seconds(), sale.sale_id) == (
        1000,
        300,
        "default-summer-sneakers",
    )


T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "changes",
    [
        {"stock": 0},
        {"stock": "1000"},
        {"price": 49.99},
        {"price": "49.999"},
        {"price": "1e3"},
        {"duration": "5 minutes"},
        {"duration": "5d"},
        {"perUserLimit": 0},
        {"opensAt": "tomorrow"},
        {"product": ""},
        {"saleId": "Not_A_Sale_Id"},
    ],
)
def test_the_schema_refuses_bad_specs(changes: dict[str, Any]) -> None:
    resource = copy.deepcopy(EXAMPLE)
    resource["spec"].update(changes)
    with pytest.raises(jsonschema.ValidationError):
        validate(resource)


def test_the_schema_requires_product_price_and_stock() -> None:
    for field in ("product", "price", "stock"):
        resource = copy.deepcopy(EXAMPLE)
        del resource["spec"][field]
        with pytest.raises(jsonschema.ValidationError, match=field):
            validate(resource)
