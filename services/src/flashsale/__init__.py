"""flashsale: the API, SSE server, order and payment workers, mock gateway and local stack."""

__version__ = "0.1.0"
