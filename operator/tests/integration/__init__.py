"""Integration tests of the operator: kopf in-process against the kmock emulator, with the real
API on the embedded stores.

A package (imported as `integration.*`) so that pytest never names these modules `operator.*`,
which would replace the stdlib `operator` module for the whole session; operator/tests itself has
no __init__.py, so the name cannot collide with the services' `tests` package.
"""
