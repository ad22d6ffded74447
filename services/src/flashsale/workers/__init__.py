"""The background workers: order (stream -> PostgreSQL) and payment (gateway charges,
reconciliation)."""
