"""Unit-layer settings for hypothesis: no example database (a failing example is printed, not
replayed from disk), no per-example deadline (a loaded CI box must not make a pure property flaky),
and 60 examples a property, which keeps the whole layer under its 2 s budget."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("flashsale-unit", database=None, deadline=None, max_examples=60)
settings.load_profile("flashsale-unit")
