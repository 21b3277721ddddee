"""The mutable state database: users and events (and whatever else the service adds, e.g. jobs).

Embedded default: one DuckDB file, kept apart from the immutable index generations (DESIGN decision 2). With
`state.url = "postgresql://..."` the same interface runs on PostgreSQL instead (`rag.state_postgres`, for
several service processes over one data home: DESIGN decision 8); `rag.state_engines.open_state(settings)`
picks. Components write plain SQL with `?` placeholders that both engines accept, through `execute` (reads),
`reader()` (several reads on one connection) and `writer()` (one transaction). The schema is versioned:
`MIGRATIONS` are applied in order and recorded in the `schema_version` table.

DuckDB lets exactly one process open a file read-write, so the service process owns it: it opens the file once,
every thread reads through its own cursor (`StateDB.cursor()`), and every write runs under `StateDB.lock`
(`with state.writer() as cur: ...`, one transaction). A second process (e.g. `rag events import` while the
service runs) gets `StateLocked` with a readable message instead of DuckDB's.

Change tracking for caches: `version` increases on every committed write that touches users or events, and
`user_version(user_id)` on every write for that user. The recommender keys its per-user caches on these, so a
profile is rebuilt right after new events for that user and never otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from rag.errors import Unavailable


def _utcnow():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)

SCHEMA = [  # migration 1
    """CREATE TABLE IF NOT EXISTS users (
        user_id VARCHAR PRIMARY KEY,
        name VARCHAR,
        interests VARCHAR[],
        domains VARCHAR[],
        language VARCHAR,
        created_at TIMESTAMP,
        updated_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS events (
        event_id VARCHAR NOT NULL,
        user_id VARCHAR NOT NULL,
        doc_id VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        value DOUBLE,
        dwell_s DOUBLE,
        ts TIMESTAMP NOT NULL,          -- UTC, naive
        idempotency_key VARCHAR,        -- unique when present (checked under the write lock, and indexed)
        received_at TIMESTAMP NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency ON events (idempotency_key)",
    "CREATE INDEX IF NOT EXISTS events_user ON events (user_id)",
]


# (version, what it does, statements): applied in order, each recorded in `schema_version`. Append, never edit.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "users and events", SCHEMA),
]
VERSION_DDL = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL)"""


class ExclusiveHold:
    """A held exclusive lock (`StateDB.try_exclusive`); `release()` once, from any thread."""

    def __init__(self, release=None):
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class StateLocked(Unavailable):
    """Another process holds the state database read-write (normally the running service)."""


class StateDB:
    engine = "duckdb"

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path))
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StateLocked(
                    f"the state database {self.path} is open in another process (the service?): DuckDB allows "
                    "one read-write process per file; stop it or send the data through its HTTP API") from e
            raise
        self.lock = threading.RLock()
        self._local = threading.local()
        self._version = 0
        self._user_versions: dict[str, int] = {}
        self._closed = False
        self.migrate()

    # -- connections ------------------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared between threads; cursors are)."""
        if self._closed:
            raise RuntimeError(f"state database {self.path} is closed")
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self.con.cursor()
            self._local.cur = cur
        return cur

    def execute(self, sql: str, params: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        """A read on this thread's cursor. Writes go through `writer()`."""
        return self.cursor().execute(sql, params or [])

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction under the process-wide write lock; rolled back when the block raises."""
        with self.lock:
            cur = self.con.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise
            finally:
                cur.close()

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for several reads (and `register`ed Arrow tables), closed after the block."""
        cur = self.con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def migrate(self) -> list[int]:
        """Apply the migrations not yet recorded in `schema_version`; the versions applied."""
        applied = []
        with self.writer() as cur:
            self._lock_schema(cur)
            cur.execute(VERSION_DDL)
            have = {r[0] for r in cur.execute("SELECT version FROM schema_version").fetchall()}
            for version, name, statements in self._migrations():
                if version in have:
                    continue
                for ddl in statements:
                    cur.execute(ddl)
                cur.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                            [version, name, _utcnow()])
                applied.append(version)
        return applied

    def _migrations(self) -> list[tuple[int, str, list[str]]]:
        return MIGRATIONS

    def schema_versions(self) -> list[int]:
        return [r[0] for r in self.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]

    def _lock_schema(self, cur) -> None:
        """Serialize schema changes between processes (one process per DuckDB file: nothing to do)."""

    def try_exclusive(self, name: str) -> ExclusiveHold | None:
        """An exclusive lock named `name` among every process sharing this state, or None when another holds it.
        One process per DuckDB file: the caller's own in-process lock is the whole story, so this always holds."""
        return ExclusiveHold()

    def ensure_schema(self, *ddl: str) -> None:
        """For other components (e.g. the service's jobs table): run CREATE ... IF NOT EXISTS statements."""
        with self.writer() as cur:
            self._lock_schema(cur)
            for statement in ddl:
                cur.execute(statement)

    def close(self) -> None:
        with self.lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.con.close()
            except duckdb.Error:
                pass

    def __enter__(self) -> "StateDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- change tracking --------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def user_version(self, user_id: str) -> int:
        return self._user_versions.get(user_id, 0)

    def touch(self, user_ids: Iterable[str]) -> None:
        """Record that these users' rows or events changed (called by writers after a commit)."""
        with self.lock:
            self._version += 1
            for u in set(user_ids):
                self._user_versions[u] = self._user_versions.get(u, 0) + 1

    # -- reads used by several components ---------------------------------------------------------------
    def get_user(self, user_id: str) -> dict[str, Any] | None:
        cur = self.execute("SELECT user_id, name, interests, domains, language, created_at, updated_at "
                           "FROM users WHERE user_id = ?", [user_id])
        rec = cur.fetchone()
        if rec is None:
            return None
        return dict(zip([d[0] for d in cur.description], rec))

    def user_events(self, user_id: str) -> dict[str, list]:
        """All events of one user, oldest first, as columns."""
        cur = self.execute("SELECT doc_id, type, value, dwell_s, ts FROM events WHERE user_id = ? "
                           "ORDER BY ts, received_at", [user_id])
        rows = cur.fetchall()
        cols = ("doc_id", "type", "value", "dwell_s", "ts")
        return {c: [r[i] for r in rows] for i, c in enumerate(cols)}

    def counts(self) -> dict[str, int]:
        users = self.execute("SELECT count(*) FROM users").fetchone()[0]
        events = self.execute("SELECT count(*) FROM events").fetchone()[0]
        return {"users": int(users), "events": int(events)}

    # -- privacy and audit (rag.access) ----------------------------------------------------------------------
    # Plain SQL with `?` parameters: the same statements run on DuckDB and PostgreSQL.
    KEY_USE_DDL = ("CREATE TABLE IF NOT EXISTS api_key_use (key_id VARCHAR PRIMARY KEY, "
                   "last_used_at TIMESTAMP NOT NULL, requests BIGINT NOT NULL)")

    def forget_user(self, user_id: str) -> dict[str, Any]:
        """Delete a user's row and every event of theirs, in one transaction: {"user": bool, "events": n}."""
        with self.writer() as cur:
            n_events = cur.execute("SELECT count(*) FROM events WHERE user_id = ?", [user_id]).fetchone()[0]
            n_users = cur.execute("SELECT count(*) FROM users WHERE user_id = ?", [user_id]).fetchone()[0]
            cur.execute("DELETE FROM events WHERE user_id = ?", [user_id])
            cur.execute("DELETE FROM users WHERE user_id = ?", [user_id])
        self.touch([user_id])
        return {"user": bool(n_users), "events": int(n_events)}

    def record_key_use(self, uses: dict[str, tuple[Any, int]]) -> None:
        """Add API key uses: key id -> (last use, UTC naive; how many requests since the last record)."""
        if not uses:
            return
        self.ensure_schema(self.KEY_USE_DDL)
        with self.writer() as cur:
            for key_id, (at, n) in uses.items():
                cur.execute("INSERT INTO api_key_use (key_id, last_used_at, requests) VALUES (?, ?, ?) "
                            "ON CONFLICT (key_id) DO UPDATE SET "
                            "last_used_at = greatest(api_key_use.last_used_at, excluded.last_used_at), "
                            "requests = api_key_use.requests + excluded.requests", [key_id, at, int(n)])

    def key_use(self) -> dict[str, tuple[str, int]]:
        """key id -> (last use as ISO 8601 UTC, requests counted)."""
        self.ensure_schema(self.KEY_USE_DDL)
        rows = self.execute("SELECT key_id, last_used_at, requests FROM api_key_use").fetchall()
        return {k: (at.isoformat(timespec="seconds") + "Z", int(n)) for k, at, n in rows}
