"""The state database on a real PostgreSQL (`rag.state_postgres`): the StateDB interface and its SQL unchanged,
migrations recorded once, change counters and the exclusive lock shared between processes' connections.
Marked `postgres`; `.ci/run` installs PostgreSQL and runs it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime

import pytest

from rag import events
from rag.state import MIGRATIONS
from tests.conftest import REPO

pytestmark = pytest.mark.postgres


@pytest.fixture
def url(postgres, request):
    return postgres.fresh_database("t_" + request.node.name.lower()[:40].replace("-", "_"))


def _open(url):
    from rag.state_postgres import PostgresStateDB

    return PostgresStateDB(url, max_size=4)


def test_migrations_are_applied_once_and_recorded(url):
    with _open(url) as first:
        assert first.schema_versions() == [v for v, _, _ in MIGRATIONS]
        with _open(url) as second:  # a second replica starting: nothing left to apply
            assert second.migrate() == []


def test_the_statedb_methods_run_unchanged(url):
    with _open(url) as state:
        got = events.ingest(state, [{"user_id": "u1", "doc_id": "d1", "type": "view"},
                                    {"user_id": "u1", "doc_id": "d2", "type": "rating", "value": 4,
                                     "idempotency_key": "k-1", "ts": "2025-06-01T10:00:00Z"}])
        assert (got.accepted, got.duplicates) == (2, 0)
        again = events.ingest(state, [{"user_id": "u1", "doc_id": "d2", "type": "rating", "value": 4,
                                       "idempotency_key": "k-1"}])
        assert (again.accepted, again.duplicates) == (0, 1)
        user = events.upsert_user(state, "u1", name="Ada", interests=["index funds"], domains=["finance"])
        assert user["interests"] == ["index funds"] and user["domains"] == ["finance"]
        evs = state.user_events("u1")
        assert evs["doc_id"] == ["d2", "d1"] and evs["value"] == [4.0, None]
        assert isinstance(evs["ts"][0], datetime) and evs["ts"][0].tzinfo is None
        assert state.counts() == {"users": 1, "events": 2}
        assert state.forget_user("u1") == {"user": True, "events": 2}
        assert state.counts() == {"users": 0, "events": 0}
        state.record_key_use({"key-a": (datetime(2025, 6, 1, 12), 3)})
        state.record_key_use({"key-a": (datetime(2025, 6, 2, 12), 2)})
        assert state.key_use() == {"key-a": ("2025-06-02T12:00:00Z", 5)}


def test_change_counters_are_shared_between_processes(url):
    with _open(url) as a, _open(url) as b:
        before, user_before = b.version, b.user_version("u7")
        events.ingest(a, [{"user_id": "u7", "doc_id": "d1", "type": "like"}])
        assert b.version > before and b.user_version("u7") == user_before + 1
        assert b.user_version("u8") == 0


def test_one_exclusive_hold_at_a_time_freed_with_its_connection(url):
    with _open(url) as a, _open(url) as b:
        hold = a.try_exclusive("rebuild")
        assert hold is not None
        assert b.try_exclusive("rebuild") is None
        assert b.try_exclusive("something-else") is not None  # locks are per name
        hold.release()
        assert b.try_exclusive("rebuild") is not None


def test_a_process_that_dies_frees_its_exclusive_hold(url):
    code = ("import sys, time; from rag.state_postgres import PostgresStateDB; "
            f"h = PostgresStateDB({url!r}).try_exclusive('rebuild'); print('held' if h else 'refused', flush=True); "
            "time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout.readline().strip() == "held"
        with _open(url) as state:
            assert state.try_exclusive("rebuild") is None
            child.kill()
            child.wait(30)
            deadline = time.monotonic() + 10
            hold = None
            while hold is None and time.monotonic() < deadline:
                hold = state.try_exclusive("rebuild")
                time.sleep(0.1)
            assert hold is not None
    finally:
        if child.poll() is None:
            child.kill()


def test_an_unreachable_server_is_unavailable(postgres):
    from rag.state import StateLocked
    from rag.state_postgres import PostgresStateDB
    from tests.engines import free_port

    with pytest.raises(StateLocked, match="cannot reach the state database"):
        PostgresStateDB(f"postgresql://rag:secret@127.0.0.1:{free_port()}/rag", timeout_s=1)
