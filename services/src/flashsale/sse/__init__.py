"""The SSE server (`python -m flashsale.sse`, port 8001): live stock and sale state per sale, and
each buyer's order updates, as Server-Sent Events fanned out from one Redis subscription per
process. See feed.py for the design. An entrypoint package: never imports flashsale.api."""
