"""The local mode: embedded Valkey and PostgreSQL from PyPI wheels, every process on 127.0.0.1."""
