"""The operator's tests: a package, so pytest imports them as `tests.*` and never as `operator.*` (which would
replace the stdlib `operator` module for the whole session)."""
