"""`python -m flashsale.api`: the API on uvicorn (uvloop, httptools), N worker processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import uvicorn

from flashsale.config import Settings
from flashsale.logs import setup
from flashsale.web import BoundedHttpToolsProtocol


def main() -> None:
    settings = Settings()
    setup(settings, process_name="api")
    if settings.api.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several processes answer /metrics in turn: each must report the sum over all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flashsale-metrics-")
    elif "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # A directory that outlives the process (an emptyDir across container restarts) still holds
        # the last run's counters: start from zero, as prometheus-client asks.
        for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
            stale.unlink()
    uvicorn.run(
        "flashsale.api.app:create_app_from_env",
        factory=True,
        host=settings.api.host,
        port=settings.api.port,
        workers=settings.api.workers,
        loop="uvloop",
        # httptools, with the request head bounded (431 past 32 KiB instead of buffering any size).
        http=BoundedHttpToolsProtocol,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.api.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
        # A client that opened a connection and went quiet holds a slot; 30 s is generous for k6
        # keep-alive.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
