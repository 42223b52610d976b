"""The Connection Pool Manager in rooms; the entry point is ``python -m components.pool_manager``."""
