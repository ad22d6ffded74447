"""The `flashsale` console command: up, migrate, token, sale create/show, verify, demo, bench,
env-doc.

Thin: each subcommand parses its arguments, builds Settings (FLASHSALE_* env first, then the URLs a
running `flashsale up` wrote to .flashsale/stack.json), and calls one function of the package.
Errors end with a one-line message on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from flashsale import errors
from flashsale.adapters import pg
from flashsale.adapters.tokens import mint
from flashsale.config import Settings
from flashsale.local.embedded import PortInUse
from flashsale.local.stack import FAST_GATEWAY_ENV, Stack, StackOptions, read_stack_file

console = Console()
err_console = Console(stderr=True)

EXIT_USAGE = 2
EXIT_FAILED = 1

# stack.json field -> the env var that, when set, wins over it.
STACK_FIELDS = {
    "api_url": "FLASHSALE_API__URL",
    "sse_url": "FLASHSALE_SSE__URL",
    "gateway_url": "FLASHSALE_GATEWAY__URL",
    "redis_url": "FLASHSALE_REDIS__URL",
    "postgres_dsn": "FLASHSALE_POSTGRES__DSN",
}


class CliError(Exception):
    """A message for the user; exits non-zero without a traceback."""

    def __init__(self, message: str, *, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def load_settings(data_dir: Path = Path(".flashsale")) -> Settings:
    """Settings from the environment; the running local stack's URLs fill what env leaves."""
    stack = read_stack_file(data_dir) or {}
    overrides = {
        env: str(stack[field])
        for field, env in STACK_FIELDS.items()
        if field in stack and not os.environ.get(env)
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        return Settings()
    except ValidationError as e:
        raise CliError(f"invalid settings: {e}") from e
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- up -------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    options = StackOptions(
        data_dir=Path(args.data_dir),
        redis_url=args.redis_url,
        postgres_dsn=args.postgres_dsn,
        api_workers=args.api_workers or max(1, os.cpu_count() or 1),
        order_workers=args.order_workers,
        payment_workers=args.payment_workers,
    )
    if args.gateway_fast:
        options.env.update(FAST_GATEWAY_ENV)
    stack = Stack(options)
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    console.print("[bold]flashsale up[/]: starting the stores and every process…")
    try:
        stack.start()
    except PortInUse as e:
        raise CliError(str(e)) from e
    except RuntimeError as e:
        raise CliError(f"the stack did not start: {e}") from e
    _print_urls(stack)
    try:
        while not stopping:
            for name in stack.supervise_once():
                err_console.print(f"[yellow]restarted {name}[/]")
            time.sleep(0.2)
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped.")
    return 0


def _print_urls(stack: Stack) -> None:
    info = stack.info()
    table = Table(title="flashsale is up (Ctrl-C to stop)", show_header=False)
    for key in (
        "api_url",
        "docs_url",
        "sse_url",
        "gateway_url",
        "redis_url",
        "postgres_dsn",
        "logs",
    ):
        table.add_row(key, str(info[key]))
    console.print(table)
    console.print(f"written to {stack.options.data_dir / 'stack.json'}")


# --- migrate, token -------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.data_dir))
    try:
        applied = asyncio.run(pg.migrate(settings.postgres.dsn))
    except errors.StoreUnavailable as e:
        raise CliError(f"cannot reach PostgreSQL: {e.detail}") from e
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.data_dir))
    try:
        token = mint(settings.auth, user_id=args.user_id, admin=args.admin, ttl_s=args.ttl)
    except ValueError as e:
        raise CliError(str(e), code=EXIT_USAGE) from e
    sys.stdout.write(token + "\n")
    return 0


# --- sale -----------------------------------------------------------------------------------------


def _admin_client(settings: Settings) -> httpx.Client:
    token = mint(settings.auth, user_id="flashsale-cli", admin=True, ttl_s=300)
    return httpx.Client(
        base_url=settings.api.url, headers={"Authorization": f"Bearer {token}"}, timeout=10.0
    )


def _api_call(settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        with _admin_client(settings) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as e:
        raise CliError(f"cannot reach the API at {settings.api.url}: {e}") from e
    if response.status_code >= 400:
        try:
            problem = response.json()
            message = f"{problem.get('code')}: {problem.get('detail')}"
        except ValueError:
            message = response.text[:200]
        raise CliError(f"{method} {path} -> {response.status_code} {message}")
    return response


def _parse_time(value: str) -> datetime:
    if value == "now":
        return datetime.now(UTC)
    if value.startswith("+"):
        return datetime.now(UTC) + timedelta(seconds=float(value[1:].rstrip("s")))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time, 'now' or '+SECONDS': {value}"
        ) from e
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value} has no time zone (add Z or +00:00)")
    return parsed


def cmd_sale_create(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.data_dir))
    opens_at: datetime = args.opens_at or datetime.now(UTC)
    body = {
        "name": args.name or args.sale_id,
        "price": args.price,
        "stock": args.stock,
        "opens_at": opens_at.isoformat(),
        "closes_at": (opens_at + timedelta(seconds=args.duration)).isoformat(),
        "per_user_limit": args.per_user_limit,
    }
    room = _waiting_room(args)
    if room is not None:
        body["waiting_room"] = room
    response = _api_call(settings, "PUT", f"/v1/admin/sales/{args.sale_id}", json=body)
    _print_sale(response.json(), title="created" if response.status_code == 201 else "updated")
    return 0


def _waiting_room(args: argparse.Namespace) -> dict[str, Any] | None:
    """--waiting-room fifo|random (and its two knobs) as the admin API's `waiting_room`."""
    if args.waiting_room is None:
        if args.admit_per_second is not None or args.session_seconds is not None:
            raise CliError(
                "--admit-per-second and --session-seconds need --waiting-room fifo|random",
                code=EXIT_USAGE,
            )
        return None
    room: dict[str, Any] = {"enabled": True, "mode": args.waiting_room}
    if args.admit_per_second is not None:
        room["admit_per_second"] = args.admit_per_second
    if args.session_seconds is not None:
        room["session_seconds"] = args.session_seconds
    return room


def cmd_sale_show(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.data_dir))
    sale = _api_call(settings, "GET", f"/v1/sales/{args.sale_id}").json()
    stats = _api_call(settings, "GET", f"/v1/admin/sales/{args.sale_id}/stats").json()
    _print_sale({**sale, **{f"units {k}": v for k, v in stats.items()}}, title=args.sale_id)
    return 0


def cmd_sale_open_close(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.data_dir))
    sale = _api_call(settings, "POST", f"/v1/admin/sales/{args.sale_id}/{args.action}").json()
    _print_sale(sale, title=f"{args.action}ed" if args.action == "open" else "closed")
    return 0


def _print_sale(doc: dict[str, Any], *, title: str) -> None:
    if not sys.stdout.isatty():
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")  # machine-readable when piped
        return
    table = Table(title=title, show_header=False)
    for key, value in doc.items():
        table.add_row(str(key), str(value))
    console.print(table)


# --- verify ---------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from flashsale.verify import verify

    settings = load_settings(Path(args.data_dir))
    try:
        verdict, quiet = asyncio.run(verify(settings, args.sale_id, wait_s=args.wait))
    except errors.SaleNotFound as e:
        raise CliError(f"sale {args.sale_id} not found") from e
    except errors.StoreUnavailable as e:
        raise CliError(f"a store is unreachable: {e.detail}") from e
    table = Table(title=f"invariants of sale {args.sale_id}")
    table.add_column("#")
    table.add_column("invariant")
    table.add_column("holds")
    table.add_column("detail", overflow="fold")
    for check in verdict.checks:
        mark = "[green]yes[/]" if check.ok else "[red]NO[/]"
        table.add_row(str(check.number), check.name, mark, check.detail)
    console.print(table)
    if not quiet.quiescent:
        console.print(
            f"[yellow]not quiescent[/]: {quiet.queued_orders} orders and {quiet.queued_payments} "
            f"payments queued, {quiet.pending_units} units pending, "
            f"{quiet.reconciling_units} in reconciliation"
        )
    console.print("[green]all invariants hold[/]" if verdict.ok else "[red]invariants violated[/]")
    return 0 if verdict.ok else EXIT_FAILED


# --- demo, bench, env-doc -------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from flashsale.local.demo import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from flashsale.local.bench import run_bench

    return run_bench(args)


def cmd_chaos(args: argparse.Namespace) -> int:
    from flashsale.local.chaos import run_chaos, selected

    try:
        selected(args.only)
    except ValueError as e:
        raise CliError(str(e), code=EXIT_USAGE) from e
    try:
        return run_chaos(args)
    except PortInUse as e:
        raise CliError(str(e)) from e


def cmd_env_doc(args: argparse.Namespace) -> int:
    from flashsale.local.envdoc import markdown_table, with_table

    if args.write is None:
        sys.stdout.write(markdown_table() + "\n")
        return 0
    path = Path(args.write)
    try:
        path.write_text(with_table(path.read_text()))
    except (OSError, ValueError) as e:
        raise CliError(f"cannot update {path}: {e}") from e
    return 0


# --- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashsale", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=".flashsale", help="where the local stack keeps data")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run every process locally on embedded Valkey and PostgreSQL")
    up.add_argument("--redis-url", help="use this Redis/Valkey instead of the embedded one")
    up.add_argument("--postgres-dsn", help="use this PostgreSQL instead of the embedded one")
    up.add_argument("--api-workers", type=_positive, help="uvicorn workers (default: CPU count)")
    up.add_argument("--order-workers", type=_positive, default=1)
    up.add_argument("--payment-workers", type=_positive, default=1)
    up.add_argument("--gateway-fast", action="store_true", help="mock gateway without failures")
    up.set_defaults(func=cmd_up)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("user_id")
    token.add_argument("--admin", action="store_true", help="with role admin")
    token.add_argument("--ttl", type=_positive, default=None, help="lifetime in seconds")
    token.set_defaults(func=cmd_token)

    sale = sub.add_parser("sale", help="create, show, open or close a sale").add_subparsers(
        dest="sale_command", required=True, metavar="ACTION"
    )
    create = sale.add_parser("create", help="create or update a sale")
    create.add_argument("sale_id")
    create.add_argument("--stock", type=_positive, required=True)
    create.add_argument("--price", required=True, help='decimal string, e.g. "49.99"')
    create.add_argument("--name", default=None)
    create.add_argument(
        "--opens-at", type=_parse_time, default=None, help="RFC 3339, now, +SECONDS"
    )
    create.add_argument("--duration", type=_positive, default=300, help="seconds (default 300)")
    create.add_argument("--per-user-limit", type=_positive, default=1)
    create.add_argument(
        "--waiting-room",
        choices=("fifo", "random"),
        default=None,
        help="a virtual waiting room: admit in join order, or draw the pre-queue (default: none)",
    )
    create.add_argument(
        "--admit-per-second", type=_positive, default=None, help="admissions per second (100)"
    )
    create.add_argument(
        "--session-seconds", type=_positive, default=None, help="lifetime of a pass (120)"
    )
    create.set_defaults(func=cmd_sale_create)
    show = sale.add_parser("show", help="a sale and its unit counts")
    show.add_argument("sale_id")
    show.set_defaults(func=cmd_sale_show)
    for action in ("open", "close"):
        p = sale.add_parser(action, help=f"{action} the sale now")
        p.add_argument("sale_id")
        p.set_defaults(func=cmd_sale_open_close, action=action)

    verify = sub.add_parser("verify", help="check a sale's invariants; exit 0 only if all hold")
    verify.add_argument("sale_id")
    verify.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for queues to drain first"
    )
    verify.set_defaults(func=cmd_verify)

    demo = sub.add_parser("demo", help="run a flash sale end to end and write the report")
    from flashsale.local.demo import add_arguments as demo_arguments

    demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="the benchmark suite; writes reports/<time>/bench.*")
    from flashsale.local.bench import add_arguments as bench_arguments

    bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)

    chaos = sub.add_parser(
        "chaos", help="fault injection on a local stack; writes reports/<time>/chaos.*"
    )
    from flashsale.local.chaos import add_arguments as chaos_arguments

    chaos_arguments(chaos)
    chaos.set_defaults(func=cmd_chaos)

    env_doc = sub.add_parser("env-doc", help="the FLASHSALE_* settings as a Markdown table")
    env_doc.add_argument("--write", metavar="FILE", help="replace the table between the markers")
    env_doc.set_defaults(func=cmd_env_doc)
    return parser


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from e
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CliError as e:
        err_console.print(f"[red]flashsale: {e}[/]")
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
