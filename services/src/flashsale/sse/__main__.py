"""`python -m flashsale.sse`: the SSE server on settings.sse.host:port (8001), one process.

Builds the settings, sets up logging, lifts the open-files limit and runs uvicorn through
sse.server. Scale out with more processes/pods: each holds its own Redis subscription."""

from __future__ import annotations

from flashsale import config, logs
from flashsale.sse import server


def main() -> None:
    settings = config.Settings()
    logs.setup(settings, process_name="sse")
    server.raise_fd_limit(settings.sse.max_clients)
    server.build_server(settings).run()


if __name__ == "__main__":
    main()
