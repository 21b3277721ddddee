"""The state database on PostgreSQL: the `StateDB` interface for several service processes (or hosts) at once.

Chosen by `state.url = "postgresql://..."` (`rag.state.open_state`); DuckDB stays the embedded default. psycopg 3
with a connection pool (`psycopg_pool`): a read borrows a connection, runs, buffers its rows and gives the
connection back, so callers keep DuckDB's `execute(sql, params).fetchall()` shape; `writer()` is one transaction
on one connection. Components write the same SQL for both engines (`?` placeholders are turned into psycopg's,
DuckDB's `DOUBLE` into `DOUBLE PRECISION` in DDL). `register(name, arrow_table)` (DuckDB's way of joining a
batch) becomes a temporary table filled by COPY, dropped with the transaction.

What DuckDB kept in the one process is shared here: the change counters the recommender's caches key on
(`version`, `user_version`) live in the `state_versions` table, so replica B sees replica A's new events; and
`try_exclusive` is a PostgreSQL advisory lock, held by a connection of its own (released when that connection
closes, so a process that dies frees it).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from rag.state import ExclusiveHold, StateDB, StateLocked  # noqa: F401 - StateLocked: same errors as DuckDB's

VERSIONS_DDL = """CREATE TABLE IF NOT EXISTS state_versions (
    user_id VARCHAR PRIMARY KEY,   -- '' = every write (StateDB.version)
    version BIGINT NOT NULL)"""
# pg_advisory_xact_lock key that serializes schema changes between processes starting at once.
_SCHEMA_LOCK = 0x7261_6701
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|%")
_DOUBLE = re.compile(r"\bDOUBLE\b(?!\s+PRECISION)", re.IGNORECASE)
_BLOB = re.compile(r"\bBLOB\b", re.IGNORECASE)


def to_psycopg(sql: str) -> str:
    """`?` placeholders -> `%s`, a literal `%` -> `%%`; quoted text and comments are left as they are."""
    def sub(m: re.Match) -> str:
        t = m.group(0)
        return "%s" if t == "?" else "%%" if t == "%" else t
    return _TOKEN.sub(sub, sql)


def ddl_for_postgres(sql: str) -> str:
    return _BLOB.sub("BYTEA", _DOUBLE.sub("DOUBLE PRECISION", sql))


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks are numbered)."""
    return int.from_bytes(hashlib.blake2b(f"rag-service:{name}".encode(), digest_size=8).digest(), "big",
                          signed=True)


class Rows:
    """A read's buffered result: DuckDB cursor's fetchone/fetchall/fetchnumpy/description."""

    def __init__(self, description, rows: list[tuple]):
        self.description = description
        self._rows = rows
        self._at = 0

    def fetchone(self) -> tuple | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        out, self._at = self._rows[self._at:], len(self._rows)
        return out

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        rows = self.fetchall()
        names = [d[0] for d in self.description or []]
        return {n: np.array([r[i] for r in rows]) for i, n in enumerate(names)}


def _pg_type(t) -> str:
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "TEXT"
    if pa.types.is_floating(t):
        return "REAL" if t.bit_width == 32 else "DOUBLE PRECISION"
    if pa.types.is_integer(t):
        return "INTEGER" if t.bit_width <= 32 else "BIGINT"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTEA"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _pg_type(t.value_type) + "[]"
    raise TypeError(f"no PostgreSQL column type for Arrow type {t}")


class Cursor:
    """One connection's cursor with DuckDB's calling conventions (`?` params, `register`, chained fetches)."""

    def __init__(self, conn):
        self.conn = conn
        self._cur = conn.cursor()
        self.description = None
        self._rows: Rows | None = None

    def execute(self, sql: str, params: list[Any] | tuple | None = None) -> "Cursor":
        self._cur.execute(to_psycopg(sql), list(params) if params else None)
        self.description = self._cur.description
        self._rows = Rows(self.description, self._cur.fetchall() if self._cur.description else [])
        return self

    def executemany(self, sql: str, seq: Iterable[Any]) -> "Cursor":
        self._cur.executemany(to_psycopg(sql), [list(p) for p in seq])
        self.description, self._rows = None, Rows(None, [])
        return self

    def fetchone(self):
        return self._rows.fetchone() if self._rows else None

    def fetchall(self):
        return self._rows.fetchall() if self._rows else []

    def fetchnumpy(self):
        return self._rows.fetchnumpy() if self._rows else {}

    def register(self, name: str, table) -> None:
        """A temporary table `name` holding the Arrow `table`'s rows, gone when the transaction ends."""
        from psycopg import sql as psql

        cols = [psql.SQL("{} {}").format(psql.Identifier(f.name), psql.SQL(_pg_type(f.type))) for f in table.schema]
        self._cur.execute(psql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
            psql.Identifier(name), psql.SQL(", ").join(cols)))
        names = psql.SQL(", ").join(psql.Identifier(f.name) for f in table.schema)
        with self._cur.copy(psql.SQL("COPY {} ({}) FROM STDIN").format(psql.Identifier(name), names)) as copy:
            for row in zip(*(table.column(i).to_pylist() for i in range(table.num_columns))):
                copy.write_row(row)

    def unregister(self, name: str) -> None:
        from psycopg import sql as psql

        self._cur.execute(psql.SQL("DROP TABLE IF EXISTS {}").format(psql.Identifier(name)))

    def close(self) -> None:
        self._cur.close()


class PostgresStateDB(StateDB):
    engine = "postgresql"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8, timeout_s: float = 10.0):
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        self.path = _redact(url)  # what messages and `rag config` show
        self.timeout_s = timeout_s
        self.lock = threading.RLock()  # this process's writers (cross-process: PostgreSQL's transactions)
        self._closed = False
        self.pool = ConnectionPool(url, min_size=min_size, max_size=max(max_size, min_size), timeout=timeout_s,
                                   open=False, kwargs={"connect_timeout": max(1, int(timeout_s))},
                                   name="rag-state")
        try:
            self.pool.open(wait=True, timeout=timeout_s)
        except Exception as e:  # psycopg_pool.PoolTimeout, psycopg.OperationalError
            self.pool.close()
            raise StateLocked(f"cannot reach the state database {self.path}: {e}") from e
        self._psycopg = psycopg
        self.migrate()
        self.ensure_schema(VERSIONS_DDL)

    # -- connections ------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise RuntimeError(f"state database {self.path} is closed")

    def cursor(self):  # DuckDB's per-thread cursor has no equivalent here: use execute/reader/writer
        raise NotImplementedError("PostgresStateDB has no long-lived cursor: use execute(), reader() or writer()")

    def execute(self, sql: str, params: list[Any] | None = None) -> Rows:
        self._check()
        with self.pool.connection() as conn:
            cur = Cursor(conn).execute(sql, params)
            return Rows(cur.description, cur.fetchall())

    @contextmanager
    def reader(self) -> Iterator[Cursor]:
        self._check()
        with self.pool.connection() as conn:
            cur = Cursor(conn)
            try:
                yield cur
            finally:
                cur.close()
                conn.rollback()  # reads only: drops what `register` made

    @contextmanager
    def writer(self) -> Iterator[Cursor]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        self._check()
        with self.pool.connection() as conn:  # the pool commits on a clean exit and rolls back on an error
            with conn.transaction():
                cur = Cursor(conn)
                try:
                    yield cur
                finally:
                    cur.close()

    def _lock_schema(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", [_SCHEMA_LOCK])

    def ensure_schema(self, *ddl: str) -> None:
        super().ensure_schema(*(ddl_for_postgres(d) for d in ddl))

    def _migrations(self):
        return [(v, n, [ddl_for_postgres(d) for d in stmts]) for v, n, stmts in super()._migrations()]

    def try_exclusive(self, name: str) -> ExclusiveHold | None:
        """A session advisory lock on a connection of its own (not the pool's: the lock lives as long as it)."""
        self._check()
        conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.timeout_s)))
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", [advisory_key(name)]).fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return None

        def release() -> None:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", [advisory_key(name)])
            finally:
                conn.close()
        return ExclusiveHold(release)

    def close(self) -> None:
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.pool.close()

    # -- change tracking, shared by every process ---------------------------------------------------------
    @property
    def version(self) -> int:
        row = self.execute("SELECT version FROM state_versions WHERE user_id = ''").fetchone()
        return int(row[0]) if row else 0

    def user_version(self, user_id: str) -> int:
        row = self.execute("SELECT version FROM state_versions WHERE user_id = ?", [user_id]).fetchone()
        return int(row[0]) if row else 0

    def touch(self, user_ids: Iterable[str]) -> None:
        keys = sorted({"", *(str(u) for u in user_ids)})  # sorted: concurrent writers lock rows in one order
        with self.writer() as cur:
            cur.executemany("INSERT INTO state_versions (user_id, version) VALUES (?, 1) ON CONFLICT (user_id) "
                            "DO UPDATE SET version = state_versions.version + 1", [[k] for k in keys])


def _redact(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
