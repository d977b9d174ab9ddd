"""Helpers for running pyproxy against a throwaway PostgreSQL in tests, demos and benchmarks."""
