"""The mock payment gateway (`python -m flashsale.gateway`, port 8002): a stand-in for a card
processor with a realistic failure model. model.py is the pure failure model and charge ledger;
app.py the HTTP layer.

An entrypoint-level package: it may import adapters, domain, config and errors, never api, sse or
workers.
"""
