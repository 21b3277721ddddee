"""Which state database the settings name: PostgreSQL for `state.url`, else the data home's DuckDB file."""

from __future__ import annotations

from rag.config import Settings
from rag.state import StateDB


def open_state(settings: Settings) -> StateDB:
    url = settings.state.url
    if url:
        from rag.state_postgres import PostgresStateDB

        return PostgresStateDB(url, min_size=settings.state.pool_min, max_size=settings.state.pool_max,
                               timeout_s=settings.state.timeout_s)
    return StateDB(settings.state_db)
