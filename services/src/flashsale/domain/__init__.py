"""The pure domain: sale lifecycle, purchase rules, order states, payment outcomes, invariants.

Imports only the standard library and flashsale.errors (import-linter enforces it).
"""
