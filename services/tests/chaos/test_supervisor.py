"""The local stack's supervisor, the part of `flashsale up` the kill scenarios lean on: a dead child
leaves nothing running behind it (the API's uvicorn workers outlived a kill -9 of their supervisor
and kept its port), and a child that had been running steadily restarts quickly again."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flashsale.local import faults
from flashsale.local.stack import RESTART_BACKOFF_S, STEADY_RUN_S, Child, Stack, StackOptions

# A parent that forks a worker and waits, as uvicorn's supervisor does; both sleep until killed.
FORKER = """
import os, time
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def forker(tmp_path: Path) -> tuple[Stack, Child]:
    stack = Stack(StackOptions(data_dir=tmp_path))
    child = Child(
        name="forker",
        args=[sys.executable, "-c", FORKER],
        env=dict(os.environ),
        health_url="http://127.0.0.1:9/healthz",
        log_path=tmp_path / "forker.log",
    )
    stack.children.append(child)
    child.start()
    return stack, child


def wait_for(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_dead_childs_leftover_processes_are_killed_before_its_restart(tmp_path: Path) -> None:
    stack, child = forker(tmp_path)
    try:
        assert child.pid is not None
        pid = child.pid
        wait_for(lambda: faults.children(pid))
        (worker,) = faults.children(pid)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not child.alive())
        assert faults.alive(worker)  # orphaned, still running: what held the API's port
        stack.supervise_once()
        wait_for(lambda: not faults.alive(worker))
        assert child.next_start > 0  # and the restart is scheduled
    finally:
        child.restart = False
        stack.stop()


def test_a_child_that_ran_steadily_restarts_without_the_grown_backoff(tmp_path: Path) -> None:
    stack, child = forker(tmp_path)
    try:
        child.restarts = len(RESTART_BACKOFF_S)  # it crashed often, long ago
        child.started_at -= STEADY_RUN_S
        assert child.process is not None
        os.killpg(child.process.pid, signal.SIGKILL)
        wait_for(lambda: not child.alive())
        before = time.monotonic()
        stack.supervise_once()
        assert child.restarts == 0
        assert child.next_start - before <= RESTART_BACKOFF_S[0] + 0.5
    finally:
        child.restart = False
        stack.stop()
