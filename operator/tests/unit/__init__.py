"""Unit tests of the operator: pure functions, no I/O.

A package (imported as `unit.*`) so that pytest never names these modules `operator.*`, which
would replace the stdlib `operator` module for the whole session; operator/tests itself has no
__init__.py, so the name cannot collide with the services' `tests` package.
"""
