"""Benchmarks comparing pyproxy with direct PostgreSQL and PgBouncer (`python -m bench.run`)."""
