"""Faults injected into a running local stack (`flashsale chaos`): `kill -9` of a process, of one of
the API's uvicorn workers, of Valkey or PostgreSQL, clean restarts of the stores, the mock gateway's
failure model switched at run time; and the supervisor thread that restarts what died, as
`flashsale up` does.

Everything here acts on processes by their id, never by name, so only what the stack started is
touched; process trees are read from /proc (Linux, like the stack's PR_SET_PDEATHSIG). Blocking
steps (a store starting, a process exiting) are plain functions; async callers run them in a
thread so the load keeps running meanwhile."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from flashsale.gateway.model import FAST
from flashsale.local.embedded import EmbeddedPostgres, EmbeddedValkey
from flashsale.local.stack import Stack

logger = logging.getLogger(__name__)

SUPERVISE_EVERY_S = 0.1
READY_TIMEOUT_S = 60.0
# After a SIGKILL of the postmaster its backends notice within moments and exit; a new postmaster
# refuses to start while one of them still holds the old shared memory.
ORPHAN_EXIT_TIMEOUT_S = 15.0
STORE_START_ATTEMPTS = 20


class FaultError(RuntimeError):
    """A fault could not be injected, or the stack did not come back from it in time."""


@dataclass
class Supervisor:
    """Calls `stack.supervise_once()` from a thread, as `flashsale up`'s main loop does, and
    remembers what it restarted."""

    stack: Stack
    restarts: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="chaos-supervisor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SUPERVISE_EVERY_S):
            with self._lock:
                names = self.stack.supervise_once()
            for name in names:
                self.restarts.append((time.monotonic(), name))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the supervisor off while the caller stops or starts children itself."""
        with self._lock:
            yield

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restarted(self, name: str) -> int:
        return sum(1 for _, n in self.restarts if n == name)


# --- processes ------------------------------------------------------------------------------------


def kill_child(stack: Stack, name: str) -> int:
    """SIGKILL one of the stack's processes; returns its pid."""
    child = stack.child(name)
    pid = child.pid
    if pid is None or not child.alive():
        raise FaultError(f"{name} is not running")
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_all_ready(stack: Stack, *, timeout_s: float) -> None:
    """Until every process of the stack answers its health URL, waiting out a child that is dead
    for a moment (the supervisor is restarting it)."""
    try:
        stack.wait_ready(timeout_s, restarting=True)
    except RuntimeError as e:
        raise FaultError(str(e)) from e


def wait_child_ready(stack: Stack, name: str, *, old_pid: int, timeout_s: float) -> int:
    """Wait until `name` runs as a new process (not `old_pid`) and answers its health URL."""
    child = stack.child(name)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if child.alive() and child.pid != old_pid:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(child.health_url).status_code == 200:
                        assert child.pid is not None
                        return child.pid
            time.sleep(0.1)
    raise FaultError(f"{name} did not come back within {timeout_s:.0f} s")


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat past the command name: [state, ppid, ...]; None once the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == str(pid) and stat[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def api_workers(stack: Stack) -> list[int]:
    """The uvicorn worker processes under the API's supervisor (multiprocessing spawn children;
    its resource tracker is not one)."""
    pid = stack.child("api").pid
    if pid is None:
        return []
    return [child for child in children(pid) if "spawn_main" in cmdline(child)]


def kill_api_worker(stack: Stack) -> int:
    """SIGKILL one of the API's uvicorn workers (the supervisor stays); returns its pid."""
    workers = api_workers(stack)
    if not workers:
        raise FaultError("the API has no worker processes to kill")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    return victim


def wait_api_workers(stack: Stack, *, count: int, gone: int, timeout_s: float) -> list[int]:
    """Wait until uvicorn has replaced the killed worker `gone`: `count` workers again, none of them
    `gone`, and the API answering. Returns the worker pids."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            pids = api_workers(stack)
            if len(pids) >= count and gone not in pids:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(stack.child("api").health_url).status_code == 200:
                        return pids
            time.sleep(0.1)
    raise FaultError(f"uvicorn did not replace API worker {gone} within {timeout_s:.0f} s")


# --- stores ---------------------------------------------------------------------------------------


def restart_valkey(valkey: EmbeddedValkey, *, kill: bool, down_s: float) -> None:
    """Stop Valkey (SIGTERM, or SIGKILL when `kill`), keep it down `down_s`, start it again on the
    same data directory: it replays its AOF."""
    if kill:
        valkey.kill()
    else:
        valkey.stop()
    time.sleep(down_s)
    _start_again(valkey.start, "valkey")


def restart_postgres(postgres: EmbeddedPostgres, *, kill: bool, down_s: float) -> None:
    """Stop PostgreSQL (fast shutdown, or SIGKILL of the postmaster when `kill`), keep it down
    `down_s`, start it again: after a kill it runs crash recovery from its WAL."""
    if postgres.process is None:
        raise FaultError("postgresql is not running")
    backends = children(postgres.process.pid)
    if kill:
        postgres.kill()
        deadline = time.monotonic() + ORPHAN_EXIT_TIMEOUT_S
        while any(alive(pid) for pid in backends) and time.monotonic() < deadline:
            time.sleep(0.05)
        for orphan in backends:  # still there: a real crash takes them down too
            if alive(orphan):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(orphan, signal.SIGKILL)
    else:
        postgres.stop()
    time.sleep(down_s)
    _start_again(postgres.start, "postgresql")


def _start_again(start: Any, what: str) -> None:
    """Start a store, retrying while the old one's port or memory is still being released."""
    for attempt in range(STORE_START_ATTEMPTS):
        try:
            start()
            return
        except RuntimeError as e:
            logger.warning("%s did not start yet (%s); retrying", what, e)
            time.sleep(min(2.0, 0.2 * (attempt + 1)))
    raise FaultError(f"{what} did not start again")


# --- the mock gateway -----------------------------------------------------------------------------


async def set_gateway_model(gateway_url: str, *, seed: int | None = 7, **model: Any) -> None:
    """Replace the mock gateway's failure model: the fast one (gateway.model.FAST) with `model`
    on top, seeded."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=5) as http:
        response = await http.put("/v1/admin/model", json={**FAST, **model, "seed": seed})
    if response.status_code != 200:
        raise FaultError(f"the gateway refused the model: {response.status_code} {response.text}")
