"""The k6 runner's edges (a run cut off at its deadline still yields its summary; a run without one
is an error naming the script) and `flashsale bench` as a command, in miniature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashsale import cli
from flashsale.local import k6

SLOW_SCRIPT = """
import { sleep } from 'k6';
export const options = { vus: 1, duration: '60s' };
export default function () { sleep(1); }
export function handleSummary() {
  return { [__ENV.SUMMARY_PATH]: JSON.stringify({ script: 'slow' }) };
}
"""


@pytest.mark.timeout(60)
async def test_a_run_past_its_deadline_is_interrupted_and_still_summarised(tmp_path: Path) -> None:
    script = tmp_path / "slow.js"
    script.write_text(SLOW_SCRIPT)
    run = await k6.run(script, env={}, out_dir=tmp_path, name="slow", timeout_s=2, quiet=True)
    assert run.timed_out
    assert not run.complete
    assert run.summary == {"script": "slow"}


@pytest.mark.timeout(60)
async def test_a_run_without_summary_is_an_error(tmp_path: Path) -> None:
    script = tmp_path / "broken.js"
    script.write_text("throw new Error('no');\n")
    with pytest.raises(k6.K6Error, match="broken.js ended with .* and no summary"):
        await k6.run(script, env={}, out_dir=tmp_path, name="broken", timeout_s=30, quiet=True)


def test_scripts_are_found_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flash_sale.js").write_text("export default function () {}\n")
    monkeypatch.setenv("FLASHSALE_LOADTEST_DIR", str(tmp_path))
    assert k6.scripts_dir() == tmp_path
    assert k6.script("flash_sale.js") == tmp_path / "flash_sale.js"
    with pytest.raises(k6.K6Error, match="no k6 script"):
        k6.script("missing.js")


def test_missing_scripts_say_where_they_were_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHSALE_LOADTEST_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(k6, "CHART_SCRIPTS", Path("nowhere"))
    with pytest.raises(k6.K6Error, match="FLASHSALE_LOADTEST_DIR"):
        k6.scripts_dir()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flashsale_bench_command(tmp_path: Path) -> None:
    """`make bench` in miniature: its own stack, a tiny sell-out and a drain, bench.json and
    bench.md written, exit 0 because every invariant held."""
    reports = tmp_path / "reports"
    code = cli.main([
        "--data-dir", str(tmp_path / "data"), "bench", "--only", "sellout,drain",
        "--sellout-users", "200", "--sellout-stock", "20", "--gateway-fast",
        "--drain-orders", "200", "--api-workers", "1", "--reports", str(reports),
    ])  # fmt: skip
    assert code == 0
    (report_dir,) = reports.iterdir()
    results = json.loads((report_dir / "bench.json").read_text())
    assert set(results["phases"]) == {"sellout", "drain"}
    assert results["phases"]["drain"]["complete"]
    assert results["environment"]["cpus"] >= 1
    assert "## Targets" in (report_dir / "bench.md").read_text()
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
