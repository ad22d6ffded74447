"""End-to-end tests of the operator on a real cluster (`make up`, then `pytest --with-e2e`).

A package (imported as `e2e.*`) for the same reason as unit/ and integration/: pytest must never
name these modules `operator.*`.
"""
