"""Bad values fail the render with a message that names what to set (values.schema.json, or a
`fail` in templates/_helpers.tpl for what a schema cannot express), and the values documentation
stays complete: every value has a `# --` comment and the README table is generated from them.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import helm_python
import pytest

from .conftest import CHART_DIR, REPO

BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("negative replicas", {"api": {"replicas": -1}}, ["/api/replicas", "minimum"]),
    (
        "negative worker replicas",
        {"workers": {"order": {"replicas": -3}}},
        ["/workers/order/replicas"],
    ),
    (
        "unknown autoscaler mode",
        {"workers": {"autoscaling": {"mode": "vpa"}}},
        ["/workers/autoscaling/mode", "'keda', 'hpa', 'none'"],
    ),
    (
        "in-chart Valkey off without an external one",
        {"valkey": {"enabled": False}},
        ["externalRedis.url or externalRedis.existingSecret"],
    ),
    (
        "in-chart PostgreSQL off without an external one",
        {"postgresql": {"enabled": False}},
        ["externalPostgresql.dsn or externalPostgresql.existingSecret"],
    ),
    (
        "mock gateway off without a real one",
        {"gateway": {"enabled": False}},
        ["gateway.externalUrl"],
    ),
    (
        "KEDA cannot see the address inside an existing Secret",
        {"valkey": {"enabled": False}, "externalRedis": {"existingSecret": "redis"}},
        ["workers.autoscaling.keda.redisAddress"],
    ),
    ("JWT secret too short", {"auth": {"jwtSecret": "short"}}, ["/auth/jwtSecret"]),
    (
        "HTTPRoute without a Gateway",
        {"ingress": {"enabled": False}, "httpRoute": {"enabled": True}},
        ["httpRoute.parentRefs"],
    ),
    (
        "load test script that does not exist",
        {"loadtest": {"enabled": True, "script": "nope.js"}},
        ["loadtest.script=nope.js"],
    ),
    ("misspelt top-level key", {"ingres": {"enabled": False}}, ["additional properties 'ingres'"]),
    ("misspelt nested key", {"api": {"replica": 3}}, ["additional properties 'replica'"]),
    (
        "extraConfig outside the settings",
        {"extraConfig": {"DEBUG": "1"}},
        ["'DEBUG' does not match pattern '^FLASHSALE_"],
    ),
    ("unknown FLASHSALE_ENV", {"environment": "production"}, ["/environment"]),
    (
        "wrong Redis URL scheme",
        {"valkey": {"enabled": False}, "externalRedis": {"url": "valkey://x"}},
        ["/externalRedis/url"],
    ),
    (
        "password that breaks the DSN",
        {"postgresql": {"password": "a@b:c"}},
        ["/postgresql/password"],
    ),
    (
        "operator without the API",
        {"api": {"enabled": False}},
        ["operator.enabled=true needs api.enabled=true"],
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"), [(v, e) for _, v, e in BAD_VALUES], ids=[n for n, _, _ in BAD_VALUES]
)
def test_bad_values_fail_the_render_with_a_clear_message(
    chart: helm_python.Chart, values: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(helm_python.HelmError) as failure:
        chart.render(values, name="flashsale", namespace="default")
    message = str(failure.value)
    for fragment in expected:
        assert fragment in message, message


def test_lint_reports_bad_values_too() -> None:
    report = helm_python.lint(CHART_DIR, {"api": {"replicas": -1}}, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


@pytest.fixture(scope="module")
def gen_readme() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_readme", REPO / "charts" / "gen_readme.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being created.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_value_has_a_doc_comment(gen_readme: ModuleType) -> None:
    _, undocumented = gen_readme.documented_values((CHART_DIR / "values.yaml").read_text())
    assert undocumented == []


def test_readme_table_matches_values_yaml(gen_readme: ModuleType) -> None:
    readme = (CHART_DIR / "README.md").read_text()
    expected = gen_readme.rendered_readme(readme, (CHART_DIR / "values.yaml").read_text())
    assert readme == expected, (
        "charts/flashsale/README.md is stale: run python charts/gen_readme.py"
    )


def test_readme_generator_reads_helm_docs_comments(gen_readme: ModuleType) -> None:
    text = "# -- top\na: 1\nb:\n  # -- nested,\n  # continued\n  c: [x]\n  d: {e: 1}\n"
    values, undocumented = gen_readme.documented_values(text)
    assert [(v.key, v.type, v.default, v.description) for v in values] == [
        ("a", "int", "1", "top"),
        ("b.c", "list", '["x"]', "nested, continued"),
    ]
    assert undocumented == ["b.d.e"]


def test_schema_accepts_the_defaults_and_every_combination(
    chart: helm_python.Chart, renders: dict[str, Any], render: Callable[[dict[str, Any]], Any]
) -> None:
    chart.validate_schema(None)
    assert renders  # each combination rendered, hence passed the schema
    render(
        {
            "environment": "staging",
            "logLevel": "DEBUG",
            "extraConfig": {"FLASHSALE_GATEWAY__TIMEOUT_S": 3},
        }
    )
