"""The operator's settings: env names, defaults, and the dev secret refused outside dev."""

from __future__ import annotations

import logging

import pytest

from flashsale_operator import config, logs


def test_defaults_match_the_contract() -> None:
    settings = config.Settings()
    assert settings.api.url == "http://127.0.0.1:8000"
    assert settings.auth.jwt_secret == config.DEV_JWT_SECRET
    assert (settings.operator.health_port, settings.operator.namespace) == (8080, "")


def test_env_vars_use_the_flashsale_prefix_and_nested_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASHSALE_API__URL", "http://api:8000")
    monkeypatch.setenv("FLASHSALE_OPERATOR__NAMESPACE", "shop")
    monkeypatch.setenv("FLASHSALE_OPERATOR__STATUS_INTERVAL_S", "0.5")
    settings = config.Settings()
    assert settings.api.url == "http://api:8000"
    assert settings.operator.namespace == "shop"
    assert settings.operator.status_interval_s == 0.5


def test_the_dev_secret_is_the_services_one() -> None:
    from flashsale import config as services_config  # the operator itself never imports it

    assert config.DEV_JWT_SECRET == services_config.DEV_JWT_SECRET


def test_the_dev_secret_is_refused_outside_dev() -> None:
    with pytest.raises(ValueError, match="built-in dev secret"):
        config.Settings(env="prod")
    with pytest.raises(ValueError, match="at least 32"):
        config.Settings(env="prod", auth={"jwt_secret": "short"})
    assert config.Settings(env="prod", auth={"jwt_secret": "x" * 32}).env == "prod"


def test_a_ready_admin_token_needs_no_secret() -> None:
    assert config.Settings(env="prod", operator={"admin_token": "t"}).operator.admin_token == "t"


def test_quiet_ticks_drops_only_the_timers_success_lines() -> None:
    quiet = logs.QuietTicks()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)

    assert not quiet.filter(record("Timer 'flashsale_tick' succeeded."))
    assert quiet.filter(record("Timer 'flashsale_tick' failed with an exception."))
    assert quiet.filter(record("Handler 'flashsale_create' succeeded."))
