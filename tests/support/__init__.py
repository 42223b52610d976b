"""Helpers for tests and benchmarks only (local processes, a throwaway PostgreSQL cluster); not shipped."""
