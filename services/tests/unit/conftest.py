"""Unit-layer settings: hypothesis keeps no example database on disk (the unit layer leaves nothing
behind in the working tree) and has no per-example deadline (a loaded CI box must not make a pure
property flaky); 60 examples a property keep the whole layer under its 2 s budget."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("flashsale-unit", database=None, deadline=None, max_examples=60)
settings.load_profile("flashsale-unit")
