"""Adapters: the only code that talks to Redis, PostgreSQL and the payment gateway.

Library errors are wrapped in flashsale.errors.StoreUnavailable (raise ... from e); nothing above
this layer imports redis, asyncpg or httpx. Adapters may import the domain, never the entrypoints.
"""
