"""Settings of the operator: one object, built once in main() (or at kopf startup), in kopf's memo.

Env vars read like the services' (prefix FLASHSALE_, nested groups joined by __):
FLASHSALE_API__URL, FLASHSALE_AUTH__JWT_SECRET, FLASHSALE_ENV, and FLASHSALE_OPERATOR__* for the
operator's own knobs. Must not import the services package (`flashsale`): it ships in its own image.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The same dev-only secret as services/src/flashsale/config.py (copied, not imported: the operator
# does not depend on the services package). Refused outside FLASHSALE_ENV=dev, as there.
DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"


class ApiSettings(BaseModel):
    url: str = Field(default="http://127.0.0.1:8000", description="where to find the API")


class AuthSettings(BaseModel):
    jwt_secret: str = Field(default=DEV_JWT_SECRET, description="HS256 secret of the API's tokens")


class OperatorSettings(BaseModel):
    namespace: str = Field(default="", description="watch only this namespace (empty: all)")
    admin_token: str = Field(
        default="", description="a ready admin bearer token (empty: mint one from the JWT secret)"
    )
    # 2 s: "every few seconds" for kubectl; each refresh costs the API two small GETs per sale.
    status_interval_s: float = Field(default=2.0, gt=0, description="how often status is refreshed")
    # 5 s: the admin API answers in milliseconds; a slower answer is an outage, retried by kopf.
    request_timeout_s: float = Field(default=5.0, gt=0, description="timeout of one admin API call")
    # 1 s: a sale opens and closes "within one second"; clocks that disagree by more are overruled.
    skew_tolerance_s: float = Field(
        default=1.0, ge=0, description="how long to wait for the API's clock at opensAt/closesAt"
    )
    retry_delay_s: float = Field(default=5.0, gt=0, description="retry delay while the API is down")
    peering_name: str = Field(
        default="flashsale", description="kopf peering object of the replicas (leader election)"
    )
    standalone: bool = Field(default=False, description="run without peering (a single replica)")
    priority: int | None = Field(
        default=None, description="peering priority (default: random, so that one replica leads)"
    )
    # 60 s is kopf's default; 15 s lets a standby take over a crashed leader's sales sooner.
    peering_lifetime_s: int = Field(default=15, ge=5, description="keep-alive lifetime of a peer")
    health_host: str = Field(default="0.0.0.0", description="bind address of /healthz")
    health_port: int = Field(default=8080, ge=1, le=65535, description="port of /healthz")
    log_format: Literal["json", "plain"] = Field(default="json", description="log line format")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLASHSALE_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="ignore",
    )

    env: Literal["dev", "test", "staging", "prod"] = Field(
        default="dev", description="dev allows the built-in secret"
    )
    log_level: str = Field(default="INFO", description="root log level")
    api: ApiSettings = ApiSettings()
    auth: AuthSettings = AuthSettings()
    operator: OperatorSettings = OperatorSettings()

    @model_validator(mode="after")
    def _enforce_non_default_secrets(self) -> Settings:
        if self.env == "dev" or self.operator.admin_token:
            return self
        if self.auth.jwt_secret == DEV_JWT_SECRET:
            raise ValueError(
                "FLASHSALE_AUTH__JWT_SECRET is the built-in dev secret; set a real one "
                f"(it is refused when FLASHSALE_ENV={self.env})"
            )
        if len(self.auth.jwt_secret) < 32:
            raise ValueError("FLASHSALE_AUTH__JWT_SECRET must be at least 32 characters")
        return self
