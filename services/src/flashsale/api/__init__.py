"""The HTTP API (port 8000): purchase, orders, sales, auth and admin; thin routes over adapters."""
