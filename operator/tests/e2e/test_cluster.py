"""The operator deployed by the chart, on a real cluster: `kubectl apply` the CRD and the example
FlashSale, watch it open, read its printer columns, delete it. Needs `make up` (kind + skaffold)
and kubectl on PATH; skipped unless pytest runs with --with-e2e."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[3]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH"),
]


def kubectl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def get(name: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(kubectl("get", "flashsale", name, "-o", "json")))
    except subprocess.CalledProcessError:
        return None


def wait_for(name: str, what: str, predicate: Any, within: float = 60) -> dict[str, Any] | None:
    deadline = time.monotonic() + within
    obj = get(name)
    while not predicate(obj):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {obj}"
        time.sleep(0.5)
        obj = get(name)
    return obj


def test_a_flashsale_applied_with_kubectl_opens_and_cleans_up() -> None:
    kubectl("apply", "-f", str(ROOT / "charts" / "flashsale" / "crds" / "flashsale.yaml"))
    resource = yaml.safe_load((ROOT / "flashsale.yaml").read_text())
    name = f"e2e-{secrets.token_hex(3)}"
    resource["metadata"]["name"] = name
    resource["spec"]["duration"] = "20s"
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(resource))
    try:
        opened = wait_for(
            name, "Open", lambda o: (o or {}).get("status", {}).get("phase") == "Open"
        )
        assert opened is not None
        assert opened["status"]["remaining"] == 1000
        columns = kubectl("get", "flashsale", name)
        assert {"PHASE", "REMAINING", "OPENS", "Open"} <= set(columns.split())
        closed = wait_for(
            name, "closed", lambda o: "closedAt" in (o or {}).get("status", {}), within=40
        )
        assert closed is not None
        assert closed["status"]["phase"] == "Closed"
    finally:
        kubectl("delete", "flashsale", name, "--wait=true", "--timeout=60s")
    assert get(name) is None
