"""`flashsale up`: every process of the product on 127.0.0.1, over embedded Valkey and PostgreSQL
(or servers you name), supervised until Ctrl-C/SIGTERM, then stopped in order with nothing left
running.

Processes are started by module (`python -m flashsale.api` ...), exactly as the chart starts them,
with their settings passed as FLASHSALE_* environment variables. A worker that dies is restarted
(with a growing delay), so a `kill -9` in a fault test looks like a pod restart. Entry points only:
this module starts processes, it never imports them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from flashsale.adapters import pg
from flashsale.config import EMBEDDED_POSTGRES_PORT, EMBEDDED_REDIS_PORT, Settings
from flashsale.local.embedded import (
    EmbeddedPostgres,
    EmbeddedValkey,
    PortInUse,
    die_with_parent,
    require_free,
)

logger = logging.getLogger(__name__)

STACK_FILE = "stack.json"
READY_TIMEOUT_S = 60.0
# A crashing worker is restarted after 0.5 s, then 1, 2, 4 ... at most 10 s apart.
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 10.0)
# A child that ran this long before it died is not crash-looping: its next restart is quick again
# (as Kubernetes resets CrashLoopBackOff after a good run).
STEADY_RUN_S = 60.0


# The mock gateway without latency or failures (`--gateway-fast`).
FAST_GATEWAY_ENV = {"FLASHSALE_MOCK__FAST": "true"}


@dataclass
class StackOptions:
    data_dir: Path = Path(".flashsale")
    redis_url: str | None = None
    postgres_dsn: str | None = None
    redis_port: int = EMBEDDED_REDIS_PORT
    postgres_port: int = EMBEDDED_POSTGRES_PORT
    api_port: int = 8000
    sse_port: int = 8001
    gateway_port: int = 8002
    order_port: int = 9101
    payment_port: int = 9102
    api_workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    order_workers: int = 1
    payment_workers: int = 1
    # Extra FLASHSALE_* settings for every process (e.g. the gateway's failure model, rate limits).
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    health_url: str
    log_path: Path
    restart: bool = True
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    reaped: bool = False
    started_at: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.reaped = False
        self.started_at = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reap(self) -> None:
        """Kill what is left of a dead child's process group. A `kill -9` of the API's uvicorn
        supervisor leaves its worker processes running (nothing tells them their parent died),
        still holding the port: the restarted API would fail with "address already in use"
        forever, and `stop` would never reach them."""
        if self.process is not None and not self.alive() and not self.reaped:
            # Once, right after the death is seen: later the group id could name someone else.
            self.reaped = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, *, timeout: float = 15.0) -> None:
        if not self.alive():
            self.reap()
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


@dataclass
class Stack:
    options: StackOptions
    valkey: EmbeddedValkey | None = None
    postgres: EmbeddedPostgres | None = None
    children: list[Child] = field(default_factory=list)
    redis_url: str = ""
    postgres_dsn: str = ""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.options.api_port}"

    @property
    def sse_url(self) -> str:
        return f"http://127.0.0.1:{self.options.sse_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.options.gateway_port}"

    def ports(self) -> dict[str, int]:
        o = self.options
        ports = {"api": o.api_port, "sse": o.sse_port, "gateway": o.gateway_port}
        for i in range(o.order_workers):
            ports[f"order worker {i + 1}"] = o.order_port + i
        for i in range(o.payment_workers):
            ports[f"payment worker {i + 1}"] = o.payment_port + i
        if o.redis_url is None:
            ports["valkey"] = o.redis_port
        if o.postgres_dsn is None:
            ports["postgresql"] = o.postgres_port
        return ports

    def check_ports(self) -> None:
        """Refuse to start, naming the port, if anything we would listen on is taken."""
        taken = []
        for what, port in self.ports().items():
            try:
                require_free(port, what)
            except PortInUse:
                taken.append(f"{port} ({what})")
        if taken:
            raise PortInUse(
                "port already in use: " + ", ".join(taken) + ". Stop whatever holds it "
                "(another `flashsale up`?) or pass other ports."
            )

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.check_ports()
        o = self.options
        o.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_stores()
            asyncio.run(pg.migrate(self.postgres_dsn))
            self._start_processes()
            self.wait_ready()
            self.write_stack_file()
        except BaseException:
            self.stop()
            raise

    def _start_stores(self) -> None:
        o = self.options
        if o.redis_url:
            self.redis_url = o.redis_url
        else:
            self.valkey = EmbeddedValkey(o.data_dir / "valkey", o.redis_port).start()
            self.redis_url = self.valkey.url
        if o.postgres_dsn:
            self.postgres_dsn = o.postgres_dsn
        else:
            self.postgres = EmbeddedPostgres(o.data_dir / "postgres" / "data", o.postgres_port)
            self.postgres.start()
            self.postgres_dsn = self.postgres.dsn

    def settings(self) -> Settings:
        """Settings that reach this stack (the same FLASHSALE_* env its processes got)."""
        env = self.base_env()
        secret = env.get("FLASHSALE_AUTH__JWT_SECRET") or Settings().auth.jwt_secret
        return Settings(
            redis={"url": self.redis_url},
            postgres={"dsn": self.postgres_dsn},
            gateway={"url": self.gateway_url},
            api={"url": self.api_url},
            auth={"jwt_secret": secret},
        )

    def base_env(self) -> dict[str, str]:
        o = self.options
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
        env.update(
            {
                "FLASHSALE_ENV": os.environ.get("FLASHSALE_ENV", "dev"),
                "FLASHSALE_REDIS__URL": self.redis_url,
                "FLASHSALE_POSTGRES__DSN": self.postgres_dsn,
                "FLASHSALE_GATEWAY__URL": self.gateway_url,
                "FLASHSALE_API__URL": self.api_url,
                "FLASHSALE_API__PORT": str(o.api_port),
                "FLASHSALE_SSE__PORT": str(o.sse_port),
                "FLASHSALE_SSE__URL": self.sse_url,
                "FLASHSALE_MOCK__PORT": str(o.gateway_port),
            }
        )
        # The user's own FLASHSALE_* settings win over our defaults, except where we place things.
        placed = set(env)
        env.update(
            {k: v for k, v in os.environ.items() if k.startswith("FLASHSALE_") and k not in placed}
        )
        env.update(o.env)
        return env

    def _child(self, name: str, module: str, *, health_url: str, env: dict[str, str]) -> Child:
        return Child(
            name=name,
            args=[sys.executable, "-m", module],
            env=env,
            health_url=health_url,
            log_path=self.options.data_dir / "logs" / f"{name}.log",
        )

    def _start_processes(self) -> None:
        o = self.options
        env = self.base_env()
        self.children.append(
            self._child(
                "gateway", "flashsale.gateway", health_url=f"{self.gateway_url}/healthz", env=env
            )
        )
        self.children.append(
            self._child(
                "api",
                "flashsale.api",
                health_url=f"{self.api_url}/readyz",
                env={**env, "FLASHSALE_API__WORKERS": str(o.api_workers)},
            )
        )
        self.children.append(
            self._child("sse", "flashsale.sse", health_url=f"{self.sse_url}/readyz", env=env)
        )
        for i in range(o.order_workers):
            port = o.order_port + i
            self.children.append(
                self._child(
                    f"worker-order-{i + 1}",
                    "flashsale.workers.order",
                    health_url=f"http://127.0.0.1:{port}/readyz",
                    env={**env, "FLASHSALE_WORKER__ORDER_PORT": str(port)},
                )
            )
        for i in range(o.payment_workers):
            port = o.payment_port + i
            self.children.append(
                self._child(
                    f"worker-payment-{i + 1}",
                    "flashsale.workers.payment",
                    health_url=f"http://127.0.0.1:{port}/readyz",
                    env={**env, "FLASHSALE_WORKER__PAYMENT_PORT": str(port)},
                )
            )
        for child in self.children:
            child.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, *, restarting: bool = False) -> None:
        """Until every process answers its health URL. A process that exits fails the wait at
        once, unless `restarting` (the supervisor is bringing killed processes back)."""
        deadline = time.monotonic() + timeout
        waiting = list(self.children)
        with httpx.Client(timeout=2.0) as client:
            while waiting:
                for child in list(waiting):
                    if not child.alive():
                        if restarting:
                            continue
                        raise RuntimeError(
                            f"{child.name} exited during startup; see {child.log_path}:\n"
                            + _tail(child.log_path)
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(child.health_url).status_code == 200:
                            waiting.remove(child)
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in waiting)
                    raise RuntimeError(f"not ready after {timeout:.0f} s: {names}")
                if waiting:
                    time.sleep(0.1)

    def info(self) -> dict[str, object]:
        return {
            "api_url": self.api_url,
            "sse_url": self.sse_url,
            "gateway_url": self.gateway_url,
            "redis_url": self.redis_url,
            "postgres_dsn": self.postgres_dsn,
            "dashboard_url": f"{self.api_url}/dashboard",
            "docs_url": f"{self.api_url}/docs",
            "pid": os.getpid(),
            "processes": {c.name: {"pid": c.pid, "health": c.health_url} for c in self.children},
            "logs": str((self.options.data_dir / "logs").resolve()),
        }

    def write_stack_file(self) -> Path:
        path = self.options.data_dir / STACK_FILE
        path.write_text(json.dumps(self.info(), indent=2) + "\n")
        return path

    def supervise_once(self) -> list[str]:
        """Restart children that died (crash or kill -9), with backoff; returns their names."""
        now = time.monotonic()
        restarted = []
        for child in self.children:
            if child.alive() or not child.restart:
                continue
            if child.next_start == 0.0:
                child.reap()
                if now - child.started_at >= STEADY_RUN_S:
                    child.restarts = 0
                delay = RESTART_BACKOFF_S[min(child.restarts, len(RESTART_BACKOFF_S) - 1)]
                child.next_start = now + delay
                code = child.process.returncode if child.process else None
                logger.warning("%s exited (%s); restarting in %.1fs", child.name, code, delay)
            elif now >= child.next_start:
                child.start()
                child.restarts += 1
                child.next_start = 0.0
                restarted.append(child.name)
        if restarted:
            self.write_stack_file()
        return restarted

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def stop(self) -> None:
        """Stop the processes first (workers finish or leave entries pending), then the stores."""
        for child in reversed(self.children):
            child.restart = False
            child.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.valkey is not None:
            self.valkey.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.options.data_dir / STACK_FILE).unlink()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


@contextlib.contextmanager
def running(options: StackOptions) -> Iterator[Stack]:
    stack = Stack(options)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def read_stack_file(data_dir: Path = Path(".flashsale")) -> dict[str, object] | None:
    try:
        doc = json.loads((data_dir / STACK_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
