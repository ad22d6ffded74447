"""The purchase's auto-pipelining Redis connection: replies in order under concurrency, NOSCRIPT
recovery, a silent Redis failing every waiter after the timeout, reconnection after a restart, and
error replies as StoreUnavailable (never a hang, never a library exception)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from flashsale import errors
from flashsale.adapters.redis_pipe import Endpoint, PipelinedRedis, encode
from flashsale.local.embedded import EmbeddedValkey, Stores, free_port


def test_urls_are_parsed_with_credentials_db_and_tls() -> None:
    ep = Endpoint.from_url("rediss://user:p%40ss@cache.example:6380/3")
    assert (ep.host, ep.port, ep.db, ep.username, ep.password, ep.tls) == (
        "cache.example", 6380, 3, "user", "p@ss", True
    )  # fmt: skip
    assert Endpoint.from_url("redis://127.0.0.1").port == 6379
    with pytest.raises(ValueError, match="scheme"):
        Endpoint.from_url("http://127.0.0.1:6379")


def test_commands_are_encoded_as_resp_bulk_strings() -> None:
    assert (
        encode(("SET", "k", 12, b"\x00v"))
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\x00v\r\n"
    )


async def test_concurrent_calls_get_their_own_replies_in_order(stores: Stores) -> None:
    pipe = PipelinedRedis(stores.redis_url, timeout_s=2)
    key = f"pipe-{secrets.token_hex(4)}"
    try:
        replies = await asyncio.gather(*(pipe.call("INCR", key) for _ in range(500)))
        assert sorted(replies) == list(range(1, 501))
        assert await pipe.call("ECHO", b"\xffbinary") == b"\xffbinary"
    finally:
        await pipe.aclose()


async def test_a_script_survives_a_flushed_script_cache(stores: Stores) -> None:
    pipe = PipelinedRedis(stores.redis_url, timeout_s=2)
    admin = aioredis.Redis.from_url(stores.redis_url)
    try:
        sha = pipe.register_script("return ARGV[1] .. KEYS[1]")
        assert await pipe.evalsha(sha, ["k"], ["v"]) == b"vk"
        await admin.script_flush()
        assert await pipe.evalsha(sha, ["k2"], ["w"]) == b"wk2"
    finally:
        await pipe.aclose()
        await admin.aclose()


async def test_error_replies_are_store_unavailable(stores: Stores) -> None:
    pipe = PipelinedRedis(stores.redis_url, timeout_s=2)
    try:
        with pytest.raises(errors.StoreUnavailable, match="unknown command"):
            await pipe.call("NOSUCHCOMMAND")
        assert await pipe.call("PING") == b"PONG"  # the connection is still usable
    finally:
        await pipe.aclose()


async def test_a_silent_redis_fails_waiters_after_the_timeout_then_recovers(stores: Stores) -> None:
    pipe = PipelinedRedis(stores.redis_url, timeout_s=0.5)
    admin = aioredis.Redis.from_url(stores.redis_url)
    try:
        assert await pipe.call("PING") == b"PONG"
        await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        started = time.monotonic()
        with pytest.raises(errors.StoreUnavailable, match="no answer"):
            await pipe.call("PING")
        assert time.monotonic() - started < 1.4  # the watchdog, not the pause's end, decided
        await asyncio.sleep(1.2)  # the pause ends
        assert await pipe.call("PING") == b"PONG"  # a fresh connection
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await pipe.aclose()
        await admin.aclose()


async def test_a_restarted_redis_is_reconnected_and_a_dead_one_reported(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "valkey", free_port()).start()
    pipe = PipelinedRedis(server.url, timeout_s=1)
    try:
        assert await pipe.call("SET", "k", "v") == b"OK"
        server.stop()
        with pytest.raises(errors.StoreUnavailable):
            await pipe.call("GET", "k")
        server.start()
        assert await pipe.call("GET", "k") == b"v"  # AOF kept it; the pipe reconnected
    finally:
        await pipe.aclose()
        server.stop()


async def test_select_and_auth_run_on_connect(stores: Stores) -> None:
    url = stores.redis_url.rsplit("/", 1)[0] + "/5"
    pipe = PipelinedRedis(url, timeout_s=2)
    check = aioredis.Redis.from_url(url)
    key = f"db5-{secrets.token_hex(4)}"
    try:
        await pipe.call("SET", key, "x")
        assert await check.get(key) == b"x"
    finally:
        await check.delete(key)
        await pipe.aclose()
        await check.aclose()
    wrong = PipelinedRedis(
        stores.redis_url.replace("redis://", "redis://nobody:nope@"), timeout_s=2
    )
    try:
        with pytest.raises(errors.StoreUnavailable):
            await wrong.call("PING")
    finally:
        await wrong.aclose()


async def test_a_closed_pipe_refuses_calls(stores: Stores) -> None:
    pipe = PipelinedRedis(stores.redis_url, timeout_s=1)
    await pipe.call("PING")
    await pipe.aclose()
    with pytest.raises(errors.StoreUnavailable, match="closed"):
        await pipe.call("PING")
