"""Settings for every flashsale process: one object, built once in each main() and passed down.

Env vars read like FLASHSALE_REDIS__URL (prefix FLASHSALE_, nested groups joined by __). The Helm
chart's configmap renders exactly these names; the README's table is generated from this module
(`flashsale env-doc`). Must not import anything from flashsale except errors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The dev-only defaults that are refused outside FLASHSALE_ENV=dev.
DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"
DEV_DB_PASSWORD = "flashsale"

# Ports of the embedded stores that `flashsale up` starts; uncommon on purpose so a developer's own
# Redis or PostgreSQL on 6379/5432 does not collide with them.
EMBEDDED_REDIS_PORT = 16379
EMBEDDED_POSTGRES_PORT = 15432


class RedisSettings(BaseModel):
    url: str = Field(
        default=f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0", description="Redis/Valkey URL"
    )
    # 2 s: a healthy local Valkey answers in < 1 ms; anything slower is an outage we report as 503.
    socket_timeout_s: float = Field(default=2.0, gt=0, description="per-command socket timeout")
    max_connections: int = Field(default=64, ge=1, description="connection pool size per process")


class PostgresSettings(BaseModel):
    dsn: str = Field(
        default=(
            f"postgresql://flashsale:{DEV_DB_PASSWORD}@127.0.0.1:{EMBEDDED_POSTGRES_PORT}/flashsale"
        ),
        description="PostgreSQL DSN",
    )
    pool_min: int = Field(default=1, ge=0, description="asyncpg pool minimum size")
    pool_max: int = Field(default=10, ge=1, description="asyncpg pool maximum size")
    command_timeout_s: float = Field(default=10.0, gt=0, description="per-statement timeout")


class GatewaySettings(BaseModel):
    """How the payment worker talks to the payment gateway."""

    url: str = Field(default="http://127.0.0.1:8002", description="payment gateway base URL")
    # 2.5 s: just above the default model's p95 (2.3 s). A charge cut off is retried with the same
    # Idempotency-Key, and the gateway answers the retry with the first attempt's result when it
    # comes, so a slow charge loses nothing by the cut while a hang is noticed within seconds.
    timeout_s: float = Field(default=2.5, gt=0, description="per-request timeout to the gateway")
    max_attempts: int = Field(
        default=4, ge=1, description="charge attempts before needs_reconciliation"
    )
    backoff_base_s: float = Field(default=0.1, ge=0, description="first retry delay")
    backoff_cap_s: float = Field(default=2.0, ge=0, description="largest retry delay")
    concurrency: int = Field(default=200, ge=1, description="charges in flight per payment worker")
    # 10 s: a gateway asking for longer gets our next attempt then; the reconciler covers the rest.
    max_retry_after_s: float = Field(default=10.0, gt=0, description="longest Retry-After honoured")
    currency: str = Field(default="EUR", min_length=3, max_length=3, description="ISO 4217 code")


class AuthSettings(BaseModel):
    jwt_secret: str = Field(default=DEV_JWT_SECRET, description="HS256 secret for bearer tokens")
    leeway_s: int = Field(default=30, ge=0, description="clock skew allowed on exp/nbf")
    token_ttl_s: int = Field(default=3600, ge=1, description="lifetime of tokens we mint")


class ApiSettings(BaseModel):
    url: str = Field(default="http://127.0.0.1:8000", description="where tools find the API")
    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=8000, ge=1, le=65535, description="listen port")
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes")
    rate_limit_user_per_s: float = Field(default=20.0, ge=0, description="per-user rate (0 = off)")
    rate_limit_user_burst: int = Field(default=20, ge=1, description="per-user burst")
    rate_limit_addr_per_s: float = Field(
        default=2000.0, ge=0, description="per-address rate (0 = off)"
    )
    rate_limit_addr_burst: int = Field(default=2000, ge=1, description="per-address burst")
    max_body_bytes: int = Field(default=16 * 1024, ge=1, description="request body limit")
    # 24 h as the contract promises; the reserve script extends it to outlive the sale.
    idempotency_ttl_s: int = Field(
        default=24 * 3600, ge=86400, description="Idempotency-Key memory"
    )
    # 100k entries ≈ 10 s of order-worker drain: past that, answering 503 is kinder than a slow 202.
    max_queue_backlog: int = Field(
        default=100_000, ge=1, description="order queue bound before 503"
    )
    overloaded_retry_after_s: int = Field(
        default=2, ge=1, description="Retry-After on 503 overloaded"
    )
    # 256: at ~2,500 answers/s per process that is ~100 ms of queue, the most a buyer should wait
    # for an answer; beyond it, a fast 503 is kinder than a slow 202 (fastlane.py).
    max_in_flight: int = Field(default=256, ge=1, description="purchases in flight per process")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="proxies whose X-Forwarded-For is trusted"
    )


class SseSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=8001, ge=1, le=65535, description="listen port")
    url: str = Field(default="http://127.0.0.1:8001", description="where tools find the SSE server")
    # 15 s: below every proxy idle timeout we deploy behind (ingress-nginx is set to 3600 s).
    heartbeat_s: float = Field(default=15.0, gt=0, description="comment heartbeat interval")
    coalesce_ms: int = Field(default=250, ge=0, description="minimum gap between stock events")
    max_clients: int = Field(default=20_000, ge=1, description="connections per process")
    max_clients_per_addr: int = Field(default=1_000, ge=1, description="connections per address")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="proxies whose X-Forwarded-For is trusted"
    )


class WorkerSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="health/metrics bind address")
    order_port: int = Field(default=9101, ge=1, le=65535, description="order worker health port")
    payment_port: int = Field(
        default=9102, ge=1, le=65535, description="payment worker health port"
    )
    consumer: str = Field(default="", description="consumer name (default: hostname-pid)")
    # 2,000: a batch costs a few round trips and one commit whatever its size, so the drain rate
    # grows with it (measured: 7,100 orders/s at 500, 9,900/s at 2,000); under light load a read
    # returns what is there, so small batches stay fast.
    batch_size: int = Field(default=2000, ge=1, description="stream entries per read")
    block_ms: int = Field(default=1000, ge=1, description="XREADGROUP block time")
    # 30 s: longer than the slowest legitimate step, a charge with all its retries (4 × 2.5 s + …).
    claim_idle_ms: int = Field(default=30_000, ge=1000, description="XAUTOCLAIM min idle time")
    reconcile_interval_s: float = Field(default=0.5, gt=0, description="reconciler poll interval")
    # 60 s: a charge the gateway has not seen after a minute of retries is declared failed (and
    # refunded by the sweep should it land later).
    reconcile_deadline_s: float = Field(
        default=60.0, gt=0, description="give up on a payment after"
    )


class MockGatewaySettings(BaseModel):
    """The failure model of the mock payment gateway (`python -m flashsale.gateway`)."""

    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=8002, ge=1, le=65535, description="listen port")
    latency_median_ms: float = Field(default=665.0, ge=0, description="log-normal median")
    latency_p95_ms: float = Field(default=2300.0, ge=0, description="log-normal p95")
    decline_rate: float = Field(default=0.05, ge=0, le=1, description="share answered 402")
    unavailable_rate: float = Field(default=0.02, ge=0, le=1, description="share answered 503")
    rate_limited_rate: float = Field(default=0.01, ge=0, le=1, description="share answered 429")
    hang_rate: float = Field(default=0.01, ge=0, le=1, description="share never answered")
    seed: int | None = Field(default=None, description="random seed for a repeatable run")
    # One switch for load tests of everything but the gateway; the same as setting the four rates
    # and latency_median_ms to 0.
    fast: bool = Field(default=False, description="fast mode: every charge succeeds at once")
    hang_charge_share: float = Field(
        default=0.5, ge=0, le=1, description="share of hangs in which the charge is still made"
    )
    unavailable_retry_after_share: float = Field(
        default=0.5, ge=0, le=1, description="share of 503 answers that carry Retry-After"
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After on 429 (and some 503)")
    # 5 %: a processor's rate limiter and load balancer refuse at its edge, before any card-network
    # round trip, so 429/503 come back in a few tens of milliseconds.
    refusal_latency_share: float = Field(
        default=0.05, ge=0, le=1, description="429/503 latency as a share of a sampled latency"
    )
    # 10 min: far past any client timeout, so only a forgotten connection ever reaches it.
    hang_cap_s: float = Field(
        default=600.0, gt=0, description="longest a hung request is held open (then 504)"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLASHSALE_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="ignore",
    )

    env: Literal["dev", "test", "staging", "prod"] = Field(
        default="dev", description="dev allows the built-in secrets"
    )
    log_level: str = Field(default="INFO", description="root log level")
    redis: RedisSettings = RedisSettings()
    postgres: PostgresSettings = PostgresSettings()
    gateway: GatewaySettings = GatewaySettings()
    auth: AuthSettings = AuthSettings()
    api: ApiSettings = ApiSettings()
    sse: SseSettings = SseSettings()
    worker: WorkerSettings = WorkerSettings()
    mock: MockGatewaySettings = MockGatewaySettings()

    @model_validator(mode="after")
    def _enforce_non_default_secrets(self) -> Settings:
        if self.env == "dev":
            return self
        if self.auth.jwt_secret == DEV_JWT_SECRET:
            raise ValueError(
                "FLASHSALE_AUTH__JWT_SECRET is the built-in dev secret; set a real one "
                f"(it is refused when FLASHSALE_ENV={self.env})"
            )
        if len(self.auth.jwt_secret) < 32:
            raise ValueError("FLASHSALE_AUTH__JWT_SECRET must be at least 32 characters")
        if f":{DEV_DB_PASSWORD}@" in self.postgres.dsn:
            raise ValueError(
                "FLASHSALE_POSTGRES__DSN uses the dev password; "
                f"it is refused when FLASHSALE_ENV={self.env}"
            )
        if not self.gateway.url:
            raise ValueError("FLASHSALE_GATEWAY__URL must be set")
        return self
