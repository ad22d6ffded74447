"""The `flashsale` console command, run in-process (`cli.main([...])`) against the real API, stores
and workers, and once as the installed script: `token`, `sale create/show/open/close`, `verify`
exit codes, `migrate` twice, `env-doc`, and bad arguments or unreachable servers ending in a message
and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from pydantic import BaseModel

from flashsale import cli
from flashsale.adapters import pg
from flashsale.config import DEV_JWT_SECRET, Settings
from flashsale.local.embedded import Stores
from flashsale.testing import ServerThread, bearer, random_sale_id

FLASHSALE = Path(sys.executable).with_name("flashsale")


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Run the CLI from an empty directory (no stack.json) with the test's stores in the env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLASHSALE_REDIS__URL", settings.redis.url)
    monkeypatch.setenv("FLASHSALE_POSTGRES__DSN", settings.postgres.dsn)
    monkeypatch.setenv("FLASHSALE_API__URL", settings.api.url)
    monkeypatch.setenv("FLASHSALE_GATEWAY__URL", settings.gateway.url)
    return settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "usage: flashsale" in err
    return err


# --- token ----------------------------------------------------------------------------------------


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"])
    return decoded


@pytest.mark.usefixtures("cli_env")
def test_token_prints_a_verifiable_jwt(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "token", "alice")
    assert code == 0
    token = out.strip()
    assert "\n" not in token
    decoded = claims(token)
    assert decoded["sub"] == "alice"
    assert "role" not in decoded
    assert decoded["exp"] - decoded["iat"] == Settings().auth.token_ttl_s
    assert abs(decoded["iat"] - time.time()) < 5


@pytest.mark.usefixtures("cli_env")
def test_token_admin_and_ttl(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "token", "ops@example.com", "--admin", "--ttl", "60")
    assert code == 0
    decoded = claims(out.strip())
    assert (decoded["sub"], decoded["role"]) == ("ops@example.com", "admin")
    assert decoded["exp"] - decoded["iat"] == 60


def test_a_minted_token_is_accepted_by_the_api(
    cli_env: Settings, api: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    _, user_token, _ = run(capsys, "token", "alice")
    _, admin_token, _ = run(capsys, "token", "root", "--admin")
    with httpx.Client(base_url=api.url) as http:
        mine = http.get("/v1/me/orders", headers={"Authorization": f"Bearer {user_token.strip()}"})
        assert mine.status_code == 200
        stats = http.get(
            "/v1/admin/sales/none/stats", headers={"Authorization": f"Bearer {admin_token.strip()}"}
        )
        assert stats.json()["code"] == "sale_not_found"  # past auth and the admin role check
    assert cli_env.api.url == api.url


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("user_id", ["bad id", "a/b", "x" * 129, "ünïcode", ""])
def test_token_refuses_a_bad_user_id_with_exit_2(
    capsys: pytest.CaptureFixture[str], user_id: str
) -> None:
    code, out, err = run(capsys, "token", user_id)
    assert code == 2
    assert out == ""
    assert "user id must be" in err


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("ttl", ["0", "-5", "soon", "1.5"])
def test_token_refuses_a_bad_ttl(capsys: pytest.CaptureFixture[str], ttl: str) -> None:
    assert "--ttl" in usage_error(capsys, "token", "alice", "--ttl", ttl)


@pytest.mark.usefixtures("cli_env")
def test_dev_secrets_are_refused_outside_dev(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHSALE_ENV", "prod")
    code, out, err = run(capsys, "token", "alice")
    assert code == 1
    assert out == ""
    assert "FLASHSALE_AUTH__JWT_SECRET" in err


# --- sale -----------------------------------------------------------------------------------------


def sale_doc(out: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out)  # piped output is JSON
    return doc


@pytest.mark.usefixtures("cli_env", "api")
def test_sale_create_show_open_close(capsys: pytest.CaptureFixture[str]) -> None:
    sale_id = random_sale_id()
    create = ["sale", "create", sale_id, "--stock", "5", "--price", "9.99", "--opens-at", "+600"]
    code, out, _ = run(capsys, *create, "--duration", "120", "--per-user-limit", "2")
    assert code == 0
    doc = sale_doc(out)
    assert (doc["sale_id"], doc["state"], doc["initial_stock"]) == (sale_id, "scheduled", 5)
    assert (doc["price"], doc["per_user_limit"], doc["name"]) == ("9.99", 2, sale_id)
    opens = doc["opens_at"]

    code, out, _ = run(capsys, "sale", "show", sale_id)
    assert code == 0
    shown = sale_doc(out)
    assert shown["opens_at"] == opens
    assert (shown["units pending"], shown["units remaining"]) == (0, 5)

    code, out, _ = run(capsys, "sale", "open", sale_id)
    assert (code, sale_doc(out)["state"]) == (0, "open")
    code, out, _ = run(capsys, "sale", "close", sale_id)
    assert (code, sale_doc(out)["state"]) == (0, "closed")
    code, out, _ = run(capsys, "sale", "close", sale_id)  # idempotent
    assert (code, sale_doc(out)["state"]) == (0, "closed")


@pytest.mark.usefixtures("cli_env", "api")
def test_sale_create_is_an_upsert(capsys: pytest.CaptureFixture[str]) -> None:
    sale_id = random_sale_id()
    args = ["sale", "create", sale_id, "--stock", "3", "--price", "1.50", "--name", "Socks"]
    assert run(capsys, *args)[0] == 0
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert (sale_doc(out)["name"], sale_doc(out)["state"]) == ("Socks", "open")


@pytest.mark.usefixtures("cli_env", "api")
def test_sale_errors_are_messages_with_a_non_zero_exit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sale", "show", "no-such-sale")
    assert (code, out) == (1, "")
    assert "404" in err
    assert "sale_not_found" in err
    code, _, err = run(capsys, "sale", "create", random_sale_id(), "--stock", "3", "--price", "abc")
    assert code == 1
    assert "invalid_request" in err
    code, _, err = run(capsys, "sale", "create", "Bad_Id", "--stock", "3", "--price", "1.00")
    assert code == 1
    assert "sale_id" in err
    code, _, err = run(capsys, "sale", "open", "no-such-sale")
    assert code == 1
    assert "sale_not_found" in err


@pytest.mark.usefixtures("cli_env")
def test_sale_commands_report_an_unreachable_api(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHSALE_API__URL", "http://127.0.0.1:9")
    code, _, err = run(capsys, "sale", "show", "some-sale")
    assert code == 1
    assert "cannot reach the API at http://127.0.0.1:9" in err


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    "argv",
    [
        ["sale", "create", "s"],  # --stock and --price are required
        ["sale", "create", "s", "--stock", "0", "--price", "1"],
        ["sale", "create", "s", "--stock", "many", "--price", "1"],
        ["sale", "create", "s", "--stock", "1", "--price", "1", "--opens-at", "tomorrow"],
        ["sale", "create", "s", "--stock", "1", "--price", "1", "--opens-at", "2030-01-01T00:00"],
        ["sale", "create", "s", "--stock", "1", "--price", "1", "--duration", "-1"],
        ["sale"],
        ["sale", "delete", "s"],
        ["sale", "show"],
    ],
)
def test_bad_sale_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert "error:" in usage_error(capsys, *argv)


# --- verify ---------------------------------------------------------------------------------------


async def _delete_order(dsn: str, order_id: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM payment_attempts WHERE order_id = $1::uuid", order_id)
        assert await conn.execute("DELETE FROM orders WHERE order_id = $1::uuid", order_id) == (
            "DELETE 1"
        )
    finally:
        await conn.close()


@pytest.mark.usefixtures("workers")
def test_verify_exits_0_when_the_invariants_hold_and_1_when_one_is_broken(
    cli_env: Settings, api: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    sale_id = random_sale_id()
    assert run(capsys, "sale", "create", sale_id, "--stock", "4", "--price", "5.00")[0] == 0
    order_ids = []
    with httpx.Client(base_url=api.url) as http:
        for user in ("alice", "bob"):
            response = http.post(
                f"/v1/sales/{sale_id}/orders",
                headers={**bearer(cli_env, user), "Idempotency-Key": "k"},
            )
            assert response.status_code == 202
            order_ids.append(response.json()["order_id"])

    code, out, _ = run(capsys, "verify", sale_id, "--wait", "15")
    assert code == 0, out
    assert "all invariants hold" in out
    for name in ("stock balances", "no oversell", "every 202 has exactly one order", "charges"):
        assert name in out

    # Lose an order behind the system's back: invariants 1, 3 and 4 must notice.
    asyncio.run(_delete_order(cli_env.postgres.dsn, order_ids[0]))
    code, out, _ = run(capsys, "verify", sale_id)
    assert code == 1
    assert "invariants violated" in out
    assert "lost" in out


@pytest.mark.usefixtures("cli_env", "gateway")
def test_verify_of_an_unknown_sale_is_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "verify", "no-such-sale")
    assert code == 1
    assert "sale no-such-sale not found" in err
    assert out == ""


@pytest.mark.usefixtures("cli_env")
def test_verify_reports_an_unreachable_store(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHSALE_REDIS__URL", "redis://127.0.0.1:9/0")
    code, _, err = run(capsys, "verify", "some-sale")
    assert code == 1
    assert "a store is unreachable" in err


# --- migrate --------------------------------------------------------------------------------------


async def _applied(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
    finally:
        await conn.close()


def test_migrate_applies_once_and_then_reports_up_to_date(
    clean: Stores,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    everything = [m.name for m in pg.load_migrations()]
    if clean.postgres is not None:
        # A fresh database of the session's server: the first run applies every migration.
        dsn = clean.postgres.create_database(f"migrate_{time.time_ns()}")
        monkeypatch.setenv("FLASHSALE_POSTGRES__DSN", dsn)
        code, out, _ = run(capsys, "migrate")
        assert code == 0
        assert out.strip() == f"applied: {', '.join(everything)}"
    else:
        dsn = clean.postgres_dsn  # an external server: already migrated by the session fixture
        monkeypatch.setenv("FLASHSALE_POSTGRES__DSN", dsn)
    for _ in range(2):
        code, out, _ = run(capsys, "migrate")
        assert (code, out.strip()) == (0, "schema is up to date")
    assert sorted(asyncio.run(_applied(dsn))) == sorted(everything)


def test_migrate_reports_an_unreachable_database(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLASHSALE_POSTGRES__DSN", "postgresql://nobody:x@127.0.0.1:9/none")
    code, _, err = run(capsys, "migrate")
    assert code == 1
    assert "cannot reach PostgreSQL" in err


# --- env-doc and the parser -----------------------------------------------------------------------


def every_env_var() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        group = field.default
        if isinstance(group, BaseModel):
            names += [
                f"FLASHSALE_{name.upper()}__{sub.upper()}" for sub in type(group).model_fields
            ]
        else:
            names.append(f"FLASHSALE_{name.upper()}")
    return names


def test_env_doc_lists_every_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "env-doc")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| `FLASHSALE_")]
    documented = [row.split("`")[1] for row in rows]
    assert documented == every_env_var()
    for must in ("FLASHSALE_REDIS__URL", "FLASHSALE_POSTGRES__DSN", "FLASHSALE_GATEWAY__URL",
                 "FLASHSALE_AUTH__JWT_SECRET", "FLASHSALE_API__URL"):  # fmt: skip
        assert must in documented
    assert all(row.count("|") >= 4 for row in rows)


@pytest.mark.parametrize(
    "argv", [[], ["nope"], ["verify"], ["token"], ["--data-dir"], ["migrate", "extra"]]
)
def test_bad_arguments_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    usage_error(capsys, *argv)


def test_the_installed_script_runs_and_fails_cleanly(tmp_path: Path) -> None:
    ok = subprocess.run(
        [str(FLASHSALE), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=30
    )
    assert ok.returncode == 0
    for command in ("up", "migrate", "token", "sale", "verify", "demo", "env-doc"):
        assert command in ok.stdout
    bad = subprocess.run(
        [str(FLASHSALE), "token", "not valid"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "user id must be" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout
