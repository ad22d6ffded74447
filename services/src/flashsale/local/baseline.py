"""The bare baseline of `flashsale bench`: the least a Python purchase endpoint can cost on this
machine. One raw ASGI endpoint that reads the request, makes ONE Redis call (INCR, through the same
redis-py asyncio pool the API uses) and answers 202 with a JSON body of the purchase answer's size,
served by uvicorn with the API's settings (uvloop, httptools, no access log, N processes).

    python -m flashsale.local.baseline --port 18100 --redis-url redis://127.0.0.1:16379/0

The API's throughput as a share of this one, measured in the same run on the same machine, is the
figure that survives a noisy machine. Answers every POST (and GET /healthz); no auth, no sale."""

from __future__ import annotations

import argparse
import os
from typing import Any

import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

from flashsale.adapters.redis_stock import connect
from flashsale.config import RedisSettings

COUNTER_KEY = "fs:bench:baseline"
# The shape and size of a real 202 body (ids are 36-character UUIDs).
BODY = orjson.dumps(
    {
        "order_id": "0190f7a2-0000-7000-8000-000000000000",
        "sale_id": "baseline",
        "user_id": "tp-0000000000000-000-00",
        "quantity": 1,
        "status": "pending",
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


class Baseline:
    """ASGI app: POST anything -> one INCR -> 202. Its Redis client is built on first use, inside
    the worker process (a pool cannot cross a fork)."""

    def __init__(self, redis_url: str) -> None:
        self.settings = RedisSettings(url=redis_url)
        self.redis: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] == "GET":
            await _answer(send, 200, b'{"status":"ok"}')
            return
        while True:  # read the whole body, as the API does
            message = await receive()
            if not message.get("more_body", False):
                break
        if self.redis is None:
            self.redis = connect(self.settings)
        await self.redis.incr(COUNTER_KEY)
        await _answer(send, 202, BODY, headers=HEADERS)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.redis is not None:
                    await self.redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(
    send: Send, status: int, body: bytes, *, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    if headers is None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app_from_env() -> Baseline:
    """Factory for uvicorn's worker processes (the URL travels in the environment)."""
    return Baseline(os.environ["FLASHSALE_BASELINE_REDIS_URL"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flashsale.local.baseline", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    os.environ["FLASHSALE_BASELINE_REDIS_URL"] = args.redis_url
    uvicorn.run(
        "flashsale.local.baseline:create_app_from_env",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
