"""schemathesis against the running API's own OpenAPI (`flashsale chaos`, scenario "fuzz"): as a
buyer whose purchases go to a real open sale, so valid requests do reserve, and as an admin. No
answer may be a 5xx, and the sale's reservations must be exactly the 202 answers schemathesis got:
no invalid request reserves anything. Runs the schemathesis CLI (the test dependency group) as a
process; the product does not import it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from flashsale.local.chaosrun import ChaosRun, Tally
from flashsale.local.crowd import CrowdLog
from flashsale.local.hostile import reservations

FUZZ_TIMEOUT_S = 600.0


# --- schemathesis --------------------------------------------------------------------------------


def schemathesis_binary() -> Path | None:
    """The schemathesis CLI beside this interpreter (the test dependency group), else on PATH."""
    here = Path(sys.executable).parent / "schemathesis"
    if here.exists():
        return here
    found = shutil.which("schemathesis")
    return Path(found) if found else None


def fuzz_command(
    binary: Path, *, api_url: str, token: str, examples: int, seed: int, report_dir: Path
) -> list[str]:
    return [
        str(binary),
        "--config-file",
        str(report_dir / "schemathesis.toml"),
        "run",
        f"{api_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--request-timeout",
        "10",
        "--report",
        "har",
        "--report-har-path",
        str(report_dir / "fuzz.har"),
        "--no-color",
        # A stream that never ends by design: every case would wait out the request timeout.
        "--exclude-path",
        "/v1/admin/dashboard/events",
    ]


def purchases_in_har(har: Path, sale_id: str) -> tuple[set[str], int, Counter[int]]:
    """From a HAR file: the order ids and units of every 202 to a purchase of `sale_id`, and the
    status of every answer."""
    doc = json.loads(har.read_text())
    order_ids: set[str] = set()
    units = 0
    statuses: Counter[int] = Counter()
    for entry in doc["log"]["entries"]:
        status = int(entry["response"]["status"])
        statuses[status] += 1
        request = entry["request"]
        path = urlparse(request["url"]).path
        if request["method"] != "POST" or path != f"/v1/sales/{sale_id}/orders" or status != 202:
            continue
        answer = json.loads(entry["response"]["content"]["text"])
        if answer["order_id"] not in order_ids:
            order_ids.add(answer["order_id"])
            units += int(answer["quantity"])
    return order_ids, units, statuses


async def scenario_fuzz(run: ChaosRun) -> Tally:
    """schemathesis against the running API's /openapi.json, as a buyer whose purchases go to a
    real open sale (so valid requests reserve) and as an admin: no 5xx, and the sale's
    reservations are exactly the 202 answers schemathesis got."""
    started = time.monotonic()
    marks = run.log_marks()
    stock = 100_000
    # The highest limit a sale may have: schemathesis buys up to 100 units at a time.
    sale_id = await run.new_sale("fuzz", stock=stock, per_user_limit=1000)
    tally = Tally("fuzz", "schemathesis against /openapi.json", sale_id)
    await run.gateway_model()  # every purchase is paid: the stock only moves by reservations
    log = CrowdLog()
    binary = schemathesis_binary()
    if binary is None:
        tally.findings.append("schemathesis is not installed (the test dependency group has it)")
        return await run.tally(tally, log, started=started, marks=marks)
    with tempfile.TemporaryDirectory(prefix="flashsale-fuzz-") as folder:
        passes: list[dict[str, Any]] = []
        users = [("buyer", run.token("fuzzer"), True)]
        if run.profile.fuzz_as_admin:
            users.append(("admin", run.token("fuzz-admin", admin=True), False))
        for who, token, fixed in users:
            report_dir = Path(folder) / who
            report_dir.mkdir()
            params = f'[parameters]\n"path.sale_id" = "{sale_id}"\n' if fixed else ""
            (report_dir / "schemathesis.toml").write_text(params)
            command = fuzz_command(
                binary,
                api_url=run.stack.api_url,
                token=token,
                examples=run.profile.fuzz_examples,
                seed=run.seed,
                report_dir=report_dir,
            )
            result = await asyncio.to_thread(_run_bounded, command, cwd=report_dir)
            har = report_dir / "fuzz.har"
            ids, units, statuses = (
                purchases_in_har(har, sale_id) if har.exists() else (set(), 0, Counter())
            )
            log.requests += sum(statuses.values())
            log.statuses.update(statuses)
            for order_id in ids:
                log.accepted.setdefault(order_id, set()).add(order_id)
            passes.append(
                {
                    "as": who,
                    "exit_code": result.returncode,
                    "requests": sum(statuses.values()),
                    "answers": {str(k): v for k, v in sorted(statuses.items())},
                    "summary": _summary_line(result.stdout),
                    "purchases_202": len(ids),
                    "units_202": units,
                }
            )
            if result.returncode != 0:
                tally.findings.append(f"schemathesis as {who} failed: {result.stdout[-1500:]}")
            server_errors = sum(v for k, v in statuses.items() if k >= 500)
            if server_errors:
                tally.findings.append(f"{server_errors} answers 5xx to schemathesis as {who}")
    _, _, accepted = await reservations(run, sale_id)
    answered = sum(p["purchases_202"] for p in passes)
    tally.details["passes"] = passes
    if accepted != answered:
        tally.findings.append(
            f"{accepted} reservations of the sale, {answered} purchases answered 202"
        )
    tally.faults = [
        f"schemathesis {run.profile.fuzz_examples} examples per operation, seed {run.seed}, "
        + (
            "as a buyer (purchases to an open sale) and as an admin"
            if len(passes) > 1
            else "as a buyer (purchases to an open sale)"
        )
    ]
    # Every order row of the sale is one schemathesis was answered 202 for (tally counts the rows
    # without an answer as duplicated and the answers without a row as lost).
    return await run.tally(tally, log, started=started, marks=marks)


def _run_bounded(command: list[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=FUZZ_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else ""
        return subprocess.CompletedProcess(command, 124, out + "\n(timed out)", "")


def _summary_line(stdout: str) -> str:
    for line in reversed(stdout.splitlines()):
        if "generated" in line or "passed" in line or "failed" in line:
            return line.strip()
    return ""
