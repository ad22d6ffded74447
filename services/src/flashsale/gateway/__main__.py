"""`python -m flashsale.gateway`: the mock payment gateway on settings.mock.host:port (8002).

Builds the settings, sets up logging and runs uvicorn (uvloop, httptools, no access log). Imports
only config, logs and the gateway app.
"""

from __future__ import annotations

import uvicorn

from flashsale import config, logs
from flashsale.gateway import app, model

# 30 s: longer than the clients' keep-alive (httpx drops idle connections after 5 s), so the client,
# not the server, closes an idle connection and never reuses one the server is closing.
KEEP_ALIVE_S = 30
# 3 s: hung requests are held for minutes by design; a shutdown must not wait for them.
GRACEFUL_SHUTDOWN_S = 3


def main() -> None:
    settings = config.Settings()
    logs.setup(settings, process_name="gateway")
    try:
        application = app.create_app(settings)
    except model.InvalidModel as e:
        raise SystemExit(f"flashsale.gateway: invalid FLASHSALE_MOCK__* settings: {e}") from e
    uvicorn.run(
        application,
        host=settings.mock.host,
        port=settings.mock.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,  # logs.setup() configured logging; uvicorn must not replace it
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


if __name__ == "__main__":
    main()
