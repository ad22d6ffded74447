"""Shared pytest setup for services/ and operator/: the e2e switch, and the real stores every
integration test runs against: embedded Valkey and PostgreSQL, started once per session on free
ports (FLASHSALE_TEST_REDIS_URL / FLASHSALE_TEST_POSTGRES_DSN point them at existing servers)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashsale.local.embedded import EmbeddedPostgres, EmbeddedValkey, Stores, free_port


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--with-e2e", action="store_true", help="also run tests that need a cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--with-e2e"):
        return
    skip = pytest.mark.skip(reason="needs a Kubernetes cluster: --with-e2e after `make up`")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    redis_url = os.environ.get("FLASHSALE_TEST_REDIS_URL")
    dsn = os.environ.get("FLASHSALE_TEST_POSTGRES_DSN")
    root = Path(tempfile.mkdtemp(prefix="flashsale-test-"))
    valkey = postgres = None
    try:
        if not redis_url:
            valkey = EmbeddedValkey(root / "valkey", free_port()).start()
            redis_url = valkey.url
        if not dsn:
            # fsync off: test data is throwaway; the crash tests and the benchmark show durability.
            postgres = EmbeddedPostgres(root / "pg" / "data", free_port(), fsync=False).start()
            dsn = postgres.create_database(f"test_{secrets.token_hex(4)}")
        yield Stores(redis_url, dsn, valkey, postgres)
    finally:
        if postgres is not None:
            postgres.stop()
        if valkey is not None:
            valkey.stop()
        shutil.rmtree(root, ignore_errors=True)
