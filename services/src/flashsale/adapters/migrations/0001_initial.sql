-- 0001: sales, orders, payment attempts, users.
-- The per-sale `sold` counter moves in the same transaction as the orders it counts, and its CHECK makes
-- PostgreSQL refuse an oversell even if Redis were wrong.

CREATE TABLE sales (
    sale_id        text PRIMARY KEY,
    name           text          NOT NULL,
    price          numeric(12,2) NOT NULL CHECK (price > 0),
    initial_stock  integer       NOT NULL CHECK (initial_stock > 0),
    sold           integer       NOT NULL DEFAULT 0,
    per_user_limit integer       NOT NULL CHECK (per_user_limit >= 1),
    opens_at       timestamptz   NOT NULL,
    closes_at      timestamptz   NOT NULL,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    updated_at     timestamptz   NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    CONSTRAINT sold_within_stock CHECK (sold >= 0 AND sold <= initial_stock),
    CONSTRAINT window_in_order CHECK (closes_at >= opens_at)
);

CREATE TABLE orders (
    order_id        uuid PRIMARY KEY,
    sale_id         text          NOT NULL REFERENCES sales (sale_id),
    user_id         text          NOT NULL,
    quantity        integer       NOT NULL CHECK (quantity > 0),
    unit_price      numeric(12,2) NOT NULL CHECK (unit_price > 0),
    idempotency_key text          NOT NULL,
    status          text          NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'confirmed', 'failed', 'needs_reconciliation')),
    failure_reason  text,
    charge_id       text,
    created_at      timestamptz   NOT NULL,
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT one_order_per_key UNIQUE (sale_id, user_id, idempotency_key)
);

-- GET /v1/me/orders: newest first, keyset pagination on (created_at, order_id).
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, order_id DESC);
CREATE INDEX orders_by_sale_status ON orders (sale_id, status);
-- The reconciler's and the refund sweep's work lists stay small: only unsettled or failed orders.
CREATE INDEX orders_unsettled ON orders (updated_at) WHERE status IN ('pending', 'needs_reconciliation');
CREATE INDEX orders_failed_unresolved ON orders (updated_at)
    WHERE status = 'failed' AND failure_reason = 'payment_unresolved';

CREATE TABLE payment_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    uuid        NOT NULL REFERENCES orders (order_id),
    attempt     integer     NOT NULL,
    outcome     text        NOT NULL,
    http_status integer,
    latency_ms  integer,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_attempts_by_order ON payment_attempts (order_id);

CREATE TABLE users (
    user_id       text PRIMARY KEY,
    email         text        NOT NULL,
    name          text        NOT NULL,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));
