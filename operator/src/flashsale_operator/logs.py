"""Logging of the operator: kopf's formatter (JSON lines by default) set up once from main(), and
a filter that keeps kopf from logging every successful timer tick.

Every other module does `logger = logging.getLogger(__name__)`.
"""

from __future__ import annotations

import logging

import kopf

from flashsale_operator import config

# kopf's per-object logger; it also feeds kopf's Kubernetes Events poster.
KOPF_OBJECTS_LOGGER = "kopf.objects"
TICK_HANDLER = "flashsale_tick"


class QuietTicks(logging.Filter):
    """Drop kopf's "Timer 'flashsale_tick' succeeded." line: the timer runs twice a second per
    FlashSale and succeeding is its normal state; failures are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (TICK_HANDLER in message and message.endswith("succeeded."))


def setup(settings: config.Settings) -> None:
    """Configure the root logger through kopf (which also tunes its own loggers)."""
    log_format = (
        kopf.LogFormat.JSON if settings.operator.log_format == "json" else kopf.LogFormat.FULL
    )
    kopf.configure(debug=settings.log_level.upper() == "DEBUG", log_format=log_format)
    logging.getLogger().setLevel(settings.log_level.upper())
    quiet_ticks()


def quiet_ticks() -> None:
    """Install the QuietTicks filter once (idempotent: startup may run more than once in tests)."""
    objects = logging.getLogger(KOPF_OBJECTS_LOGGER)
    if not any(isinstance(f, QuietTicks) for f in objects.filters):
        objects.addFilter(QuietTicks())
