"""pyproxy: a PostgreSQL connection pooler in pure Python."""

__version__ = "0.1.0"
