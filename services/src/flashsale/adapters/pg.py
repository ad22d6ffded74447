"""PostgreSQL: the durable record of sales, orders, payment attempts and users, plus the numbered
SQL migrations that shape it (`flashsale migrate`).

Every write that matters is idempotent on order_id: batch inserts use ON CONFLICT DO NOTHING, status
updates are conditional on the states an order may move from. asyncpg errors are wrapped in
StoreUnavailable; nothing above this module imports asyncpg."""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import asyncpg
import orjson

from flashsale import errors
from flashsale.config import PostgresSettings
from flashsale.domain.orders import ALLOWED_FROM, Order, OrderStatus, PlacedOrder
from flashsale.domain.sales import SaleDefinition

logger = logging.getLogger(__name__)

# One arbitrary, fixed key: concurrent `flashsale migrate` runs (several pods starting) queue on it.
MIGRATION_LOCK_KEY = 7_231_994_001

Pool = asyncpg.Pool


@asynccontextmanager
async def unavailable_on_error(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError, TimeoutError) as e:
        raise errors.StoreUnavailable(f"postgres: {what}: {e!r}") from e
    except asyncpg.OperatorInterventionError as e:
        # Class 57: starting up, shutting down, crash recovery after another backend died: the
        # same as not answering.
        raise errors.StoreUnavailable(f"postgres: {what}: {e!r}") from e
    except asyncpg.InternalClientError as e:
        # A connection the server dropped mid-transaction fails again when the pool resets it on
        # release ("cannot switch to state ..."); it surfaced as an unhandled error that killed
        # the payment task instead of backing off.
        raise errors.StoreUnavailable(f"postgres: {what}: {e!r}") from e
    except asyncpg.CharacterNotInRepertoireError as e:
        # Text PostgreSQL cannot store (a NUL character) reached a query: schemathesis sent one
        # to POST /v1/auth/login and got a 500. No stored value can hold it either: 422.
        raise errors.InvalidRequest(f"text fields cannot contain this character ({e})") from e
    except asyncpg.UndefinedTableError as e:
        # A pod that started before `flashsale migrate` finished: wait, do not crash-loop.
        raise errors.StoreUnavailable(f"postgres: {what}: schema not migrated yet ({e})") from e


async def create_pool(settings: PostgresSettings) -> Pool:
    async with unavailable_on_error("connect"):
        pool = await asyncpg.create_pool(
            settings.dsn,
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            command_timeout=settings.command_timeout_s,
        )
    assert pool is not None
    return pool


# --- migrations -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    folder = resources.files("flashsale.adapters") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append(Migration(version, entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not applied yet, each in its own transaction, under an advisory lock.
    Refuses to run if an applied migration's text has changed. Returns the names applied."""
    async with unavailable_on_error("migrate"):
        conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        done = []
        for migration in load_migrations():
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise RuntimeError(
                        f"migration {migration.name} was changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            logger.info("applied migration %s", migration.name)
            done.append(migration.name)
        return done
    finally:
        await conn.close()


# --- rows -----------------------------------------------------------------------------------------

ORDER_COLUMNS = (
    "order_id, sale_id, user_id, quantity, unit_price, status, failure_reason, created_at, "
    "updated_at, charge_id"
)


def _order(row: asyncpg.Record) -> Order:
    return Order(
        order_id=str(row["order_id"]),
        sale_id=row["sale_id"],
        user_id=row["user_id"],
        quantity=row["quantity"],
        unit_price=row["unit_price"],
        status=OrderStatus(row["status"]),
        failure_reason=row["failure_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        charge_id=row["charge_id"],
    )


def encode_cursor(created_at: datetime, order_id: str) -> str:
    raw = orjson.dumps([created_at.isoformat(), order_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position encode_cursor wrote; ValueError for anything else (a client may send any
    text, and none of it may reach PostgreSQL as a 500)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = orjson.loads(raw)
        if not (isinstance(doc, list) and len(doc) == 2 and all(isinstance(v, str) for v in doc)):
            raise ValueError("not a [created_at, order_id] pair of strings")
        created = datetime.fromisoformat(doc[0])
        if created.tzinfo is None:
            raise ValueError("created_at has no time zone")
        # Normalised to UTC here: an instant PostgreSQL cannot hold fails now, not in the query.
        return created.astimezone(UTC), uuid.UUID(doc[1])
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError("invalid cursor") from e


@dataclass(frozen=True, slots=True)
class Transition:
    """A conditional status update's result: the order as it now is, and whether we moved it."""

    order: Order
    applied: bool


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    name: str
    password_hash: str


class PgStore:
    """Orders, sales, payment attempts and users in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            return True
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return False

    # --- sales ------------------------------------------------------------------------------------

    async def upsert_sale(self, sale: SaleDefinition) -> None:
        async with unavailable_on_error("upsert sale"):
            try:
                await self.pool.execute(
                    """INSERT INTO sales (sale_id, name, price, initial_stock, per_user_limit,
                                          opens_at, closes_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7)
                       ON CONFLICT (sale_id) DO UPDATE SET
                           name = EXCLUDED.name, price = EXCLUDED.price,
                           initial_stock = EXCLUDED.initial_stock,
                           per_user_limit = EXCLUDED.per_user_limit,
                           opens_at = EXCLUDED.opens_at, closes_at = EXCLUDED.closes_at,
                           updated_at = now(), deleted_at = NULL""",
                    sale.sale_id,
                    sale.name,
                    sale.price,
                    sale.stock,
                    sale.per_user_limit,
                    sale.opens_at,
                    sale.closes_at,
                )
            except asyncpg.CheckViolationError as e:
                raise errors.SaleInProgress() from e

    async def set_window(self, sale_id: str, *, opens_at: datetime, closes_at: datetime) -> None:
        async with unavailable_on_error("set window"):
            await self.pool.execute(
                """UPDATE sales SET opens_at = $2, closes_at = $3, updated_at = now()
                   WHERE sale_id = $1""",
                sale_id,
                opens_at,
                closes_at,
            )

    async def mark_sale_deleted(self, sale_id: str) -> None:
        async with unavailable_on_error("delete sale"):
            await self.pool.execute(
                """UPDATE sales SET deleted_at = now(), closes_at = LEAST(closes_at, now()),
                                    opens_at = LEAST(opens_at, now()), updated_at = now()
                   WHERE sale_id = $1 AND deleted_at IS NULL""",
                sale_id,
            )

    async def deleted_with_orders(self, sale_id: str) -> bool:
        """Whether the sale was deleted and has order rows: its id then belongs to those orders and
        cannot name a new sale (its `sold` counter, per-user holds and invariants would mix)."""
        async with unavailable_on_error("read sale"):
            found = await self.pool.fetchval(
                """SELECT EXISTS (SELECT 1 FROM orders WHERE sale_id = $1)
                   FROM sales WHERE sale_id = $1 AND deleted_at IS NOT NULL""",
                sale_id,
            )
        return bool(found)

    async def sale_sold(self, sale_id: str) -> int | None:
        async with unavailable_on_error("read sale"):
            value = await self.pool.fetchval("SELECT sold FROM sales WHERE sale_id = $1", sale_id)
        return None if value is None else int(value)

    # --- orders: the order worker ---------------------------------------------------------------

    async def insert_orders(self, orders: Sequence[PlacedOrder]) -> int:
        """Insert a batch in one statement (ON CONFLICT DO NOTHING, so redelivery is harmless) and
        move each sale's `sold` counter by the units actually inserted, in the same transaction.
        Returns the number of rows inserted."""
        if not orders:
            return 0
        async with unavailable_on_error("insert orders"), self.pool.acquire() as conn:
            try:
                inserted = await conn.fetchval(
                    """WITH input AS (
                           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[],
                                                $5::numeric[], $6::text[], $7::timestamptz[])
                               AS t(order_id, sale_id, user_id, quantity, unit_price, idem,
                                    created_at)
                       ), ins AS (
                           INSERT INTO orders (order_id, sale_id, user_id, quantity, unit_price,
                                               idempotency_key, created_at)
                           SELECT order_id, sale_id, user_id, quantity, unit_price, idem, created_at
                           FROM input
                           ON CONFLICT DO NOTHING
                           RETURNING sale_id, quantity
                       ), per_sale AS (
                           SELECT sale_id, sum(quantity) AS units, count(*) AS n
                           FROM ins GROUP BY sale_id
                       ), upd AS (
                           UPDATE sales s SET sold = s.sold + p.units
                           FROM per_sale p WHERE s.sale_id = p.sale_id
                           RETURNING p.n
                       )
                       SELECT coalesce(sum(n), 0)::int FROM upd""",
                    [uuid.UUID(o.order_id) for o in orders],
                    [o.sale_id for o in orders],
                    [o.user_id for o in orders],
                    [o.quantity for o in orders],
                    [o.unit_price for o in orders],
                    [o.idempotency_key for o in orders],
                    [o.created_at for o in orders],
                )
            except asyncpg.IntegrityConstraintViolationError as e:
                # An unknown sale (foreign key) or the oversell guard (CHECK sold <= stock).
                raise errors.PermanentError(f"{type(e).__name__}: {e}") from e
        return int(inserted)

    async def existing_order_ids(self, order_ids: Sequence[str]) -> set[str]:
        async with unavailable_on_error("read orders"):
            rows = await self.pool.fetch(
                "SELECT order_id FROM orders WHERE order_id = ANY($1::uuid[])",
                [uuid.UUID(o) for o in order_ids],
            )
        return {str(r["order_id"]) for r in rows}

    # --- orders: reads ----------------------------------------------------------------------------

    async def get_order(self, order_id: str) -> Order | None:
        try:
            key = uuid.UUID(order_id)
        except ValueError:
            return None
        async with unavailable_on_error("read order"):
            row = await self.pool.fetchrow(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1", key
            )
        return None if row is None else _order(row)

    async def user_orders(
        self, user_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        """Newest first; `cursor` continues after the last order of the previous page."""
        args: list[Any] = [user_id, limit + 1]
        where = "user_id = $1"
        if cursor:
            created_at, order_id = decode_cursor(cursor)
            where += " AND (created_at, order_id) < ($3, $4)"
            args += [created_at, order_id]
        async with unavailable_on_error("list orders"):
            rows = await self.pool.fetch(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE {where} "
                "ORDER BY created_at DESC, order_id DESC LIMIT $2",
                *args,
            )
        orders = [_order(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = orders[-1]
            next_cursor = encode_cursor(last.created_at, last.order_id)
        return orders, next_cursor

    async def sale_orders(self, sale_id: str) -> list[Order]:
        async with unavailable_on_error("read sale orders"):
            rows = await self.pool.fetch(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE sale_id = $1", sale_id
            )
        return [_order(r) for r in rows]

    async def units_by_status(self, sale_id: str) -> dict[OrderStatus, int]:
        async with unavailable_on_error("count orders"):
            rows = await self.pool.fetch(
                "SELECT status, sum(quantity)::int AS units FROM orders WHERE sale_id = $1 "
                "GROUP BY status",
                sale_id,
            )
        units = dict.fromkeys(OrderStatus, 0)
        for row in rows:
            units[OrderStatus(row["status"])] = row["units"]
        return units

    # --- orders: payment outcomes ----------------------------------------------------------------

    async def transition(
        self,
        order_id: str,
        *,
        status: OrderStatus,
        failure_reason: str | None = None,
        charge_id: str | None = None,
    ) -> Transition | None:
        """Move an order to `status` if it is in a state that may move there (domain.orders); a
        failed order gives its units back to the sale's `sold` counter in the same transaction.
        Returns None for an unknown order."""
        allowed = [s.value for s in ALLOWED_FROM[status]]
        async with (
            unavailable_on_error("update order"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            row = await conn.fetchrow(
                f"""UPDATE orders SET status = $2, failure_reason = $3,
                                      charge_id = coalesce($4, charge_id), updated_at = now()
                    WHERE order_id = $1 AND status = ANY($5::text[])
                    RETURNING {ORDER_COLUMNS}""",
                uuid.UUID(order_id),
                status.value,
                failure_reason,
                charge_id,
                allowed,
            )
            if row is not None:
                if status is OrderStatus.FAILED:
                    await conn.execute(
                        "UPDATE sales SET sold = sold - $2 WHERE sale_id = $1",
                        row["sale_id"],
                        row["quantity"],
                    )
                return Transition(_order(row), applied=True)
            current = await conn.fetchrow(
                f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1", uuid.UUID(order_id)
            )
        return None if current is None else Transition(_order(current), applied=False)

    async def record_attempt(
        self,
        order_id: str,
        *,
        attempt: int,
        outcome: str,
        http_status: int | None,
        latency_ms: int,
    ) -> None:
        async with unavailable_on_error("record attempt"):
            await self.pool.execute(
                """INSERT INTO payment_attempts
                       (order_id, attempt, outcome, http_status, latency_ms)
                   VALUES ($1, $2, $3, $4, $5)""",
                uuid.UUID(order_id),
                attempt,
                outcome,
                http_status,
                latency_ms,
            )

    async def orders_in_status(
        self, status: OrderStatus, *, limit: int, older_than_s: float = 0.0
    ) -> list[Order]:
        async with unavailable_on_error("list orders by status"):
            rows = await self.pool.fetch(
                f"""SELECT {ORDER_COLUMNS} FROM orders
                    WHERE status = $1 AND updated_at <= now() - make_interval(secs => $3)
                    ORDER BY updated_at LIMIT $2""",
                status.value,
                limit,
                older_than_s,
            )
        return [_order(r) for r in rows]

    async def unresolved_failures(
        self, *, since_s: float, recheck_after_s: float, limit: int
    ) -> list[Order]:
        """The refund sweep's list: orders given up as payment_unresolved within `since_s`, not
        asked about in the last `recheck_after_s`, the never-asked first; marked as asked now."""
        async with unavailable_on_error("list unresolved"):
            rows = await self.pool.fetch(
                f"""UPDATE orders SET payment_checked_at = now()
                    WHERE order_id IN (
                        SELECT order_id FROM orders
                        WHERE status = 'failed' AND failure_reason = 'payment_unresolved'
                          AND updated_at >= now() - make_interval(secs => $1)
                          AND (payment_checked_at IS NULL
                               OR payment_checked_at < now() - make_interval(secs => $2))
                        ORDER BY payment_checked_at NULLS FIRST, updated_at
                        LIMIT $3
                        FOR UPDATE SKIP LOCKED)
                    RETURNING {ORDER_COLUMNS}""",
                since_s,
                recheck_after_s,
                limit,
            )
        return [_order(r) for r in rows]

    # --- users ------------------------------------------------------------------------------------

    async def create_user(self, user: User) -> None:
        async with unavailable_on_error("create user"):
            try:
                await self.pool.execute(
                    """INSERT INTO users (user_id, email, name, password_hash)
                       VALUES ($1, $2, $3, $4)""",
                    user.user_id,
                    user.email,
                    user.name,
                    user.password_hash,
                )
            except asyncpg.UniqueViolationError as e:
                raise errors.EmailTaken() from e

    async def user_by_email(self, email: str) -> User | None:
        async with unavailable_on_error("read user"):
            row = await self.pool.fetchrow(
                """SELECT user_id, email, name, password_hash FROM users
                   WHERE lower(email) = lower($1)""",
                email,
            )
        return None if row is None else User(**dict(row))


def money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"
