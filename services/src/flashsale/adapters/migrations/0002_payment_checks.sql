-- 0002: when the refund sweep last asked the gateway about a given-up order, so each pass asks only
-- about orders it has not looked at recently instead of the same oldest hundred every time.

ALTER TABLE orders ADD COLUMN payment_checked_at timestamptz;

DROP INDEX orders_failed_unresolved;
CREATE INDEX orders_failed_unresolved ON orders (payment_checked_at NULLS FIRST, updated_at)
    WHERE status = 'failed' AND failure_reason = 'payment_unresolved';
