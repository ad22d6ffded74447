"""The chaos layer's fixtures: one local stack for the whole package, as `flashsale up` runs it but
with its own Valkey and PostgreSQL (the scenarios restart and kill them), free ports, the SHORT
profile's worker timings, and the supervisor thread that restarts what the scenarios kill. Every
scenario's tally is collected and written to test-artifacts/chaos/ (chaos.json, chaos.md) at the
end, in the same format `make chaos` writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flashsale.local import chaos, faults
from flashsale.local.chaosrun import SHORT, ChaosRun, Tally, stack_options
from flashsale.local.stack import Stack

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "chaos"


@dataclass
class ChaosStack:
    stack: Stack
    supervisor: faults.Supervisor
    tallies: list[Tally] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


@pytest.fixture(scope="package")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    stack = Stack(stack_options(SHORT, tmp_path_factory.mktemp("chaos") / "stack"))
    stack.start()
    running = ChaosStack(stack, faults.Supervisor(stack).start())
    try:
        yield running
    finally:
        running.supervisor.stop()
        stack.stop()
        if running.tallies:
            report = chaos.build_report(
                running.tallies, profile=SHORT, seconds=time.monotonic() - running.started
            )
            chaos.write_report(report, ARTIFACTS)


@pytest.fixture
def run(chaos_stack: ChaosStack) -> ChaosRun:
    return ChaosRun(chaos_stack.stack, SHORT, supervisor=chaos_stack.supervisor)


@pytest.fixture
def record(chaos_stack: ChaosStack) -> Iterator[list[Tally]]:
    """Tallies a test appends here go into the package's report."""
    tallies: list[Tally] = []
    yield tallies
    chaos_stack.tallies.extend(tallies)


def assert_held(tally: Tally) -> None:
    """The scenario's verdict: invariants 1-4 by verify, the four counts 0, no finding."""
    report = "\n".join([*tally.checks, *tally.faults, *(f"FINDING {f}" for f in tally.findings)])
    assert tally.verified, report
    assert (tally.oversold, tally.lost, tally.duplicated, tally.double_charged) == (0, 0, 0, 0), (
        report
    )
    assert not tally.findings, report
    assert tally.orders == tally.accepted, report  # every 202 a buyer saw is one order row
