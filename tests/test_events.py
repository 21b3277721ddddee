"""Events, users and the state database: validation, idempotency, bulk loaders, the one-writer rule."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from rag.events import (EVENT_TYPES, InvalidUser, IngestReport, ingest, load_events_jsonl, load_users_jsonl,
                        upsert_user)
from rag.state import StateDB


@pytest.fixture
def state(tmp_path):
    store = StateDB(tmp_path / "state.duckdb")
    yield store
    store.close()


def n_events(state: StateDB, where: str = "TRUE", params=None) -> int:
    return state.execute(f"SELECT count(*) FROM events WHERE {where}", params or []).fetchone()[0]


def test_every_event_type_is_accepted(state):
    batch = [{"user_id": "u1", "doc_id": "d1", "type": t} for t in EVENT_TYPES if t not in ("rating", "dwell")]
    batch += [{"user_id": "u1", "doc_id": "d1", "type": "rating", "value": 4},
              {"user_id": "u1", "doc_id": "d1", "type": "dwell", "dwell_s": 95.5}]
    report = ingest(state, batch)
    assert report == IngestReport(accepted=len(EVENT_TYPES), duplicates=0, rejected=[])
    assert n_events(state) == len(EVENT_TYPES)
    row = state.execute("SELECT value, dwell_s FROM events WHERE type = 'rating'").fetchone()
    assert row == (4.0, None)
    assert state.execute("SELECT dwell_s FROM events WHERE type = 'dwell'").fetchone()[0] == 95.5


def test_idempotency_key_stored_once_across_and_within_batches(state):
    ev = {"user_id": "u1", "doc_id": "d1", "type": "like", "idempotency_key": "k-1"}
    first = ingest(state, [ev, dict(ev), {**ev, "idempotency_key": "k-2"}])
    assert (first.accepted, first.duplicates) == (2, 1)
    again = ingest(state, [ev, {**ev, "idempotency_key": "k-3"}])
    assert (again.accepted, again.duplicates) == (1, 1)
    assert n_events(state, "idempotency_key = ?", ["k-1"]) == 1
    assert n_events(state) == 3
    # Events without a key are never deduplicated: two views are two views.
    plain = ingest(state, [{"user_id": "u1", "doc_id": "d1", "type": "view"}] * 2)
    assert (plain.accepted, plain.duplicates) == (2, 0)


def test_bad_events_rejected_one_by_one_with_field_names_good_ones_kept(state):
    batch = [
        {"user_id": "u1", "doc_id": "d1", "type": "view"},  # 0 good
        {"doc_id": "d1", "type": "view"},  # 1 no user
        {"user_id": "u1", "doc_id": "d1", "type": "teleport"},  # 2 unknown type
        {"user_id": "u1", "doc_id": "d1", "type": "rating"},  # 3 rating without value
        {"user_id": "u1", "doc_id": "d1", "type": "rating", "value": 9},  # 4 out of range
        {"user_id": "u1", "doc_id": "d1", "type": "dwell"},  # 5 dwell without dwell_s
        {"user_id": "u1", "doc_id": "d1", "type": "view", "timestamp": "yesterday"},  # 6 bad timestamp
        {"user_id": "u1", "doc_id": "d1", "type": "like", "timestamp": "2999-01-01T00:00:00Z"},  # 7 future
        {"user_id": "u1", "doc_id": "", "type": "like"},  # 8 empty doc id
        "not an object",  # 9
        {"user_id": "u2", "doc_id": "d2", "type": "rating", "value": 5, "timestamp": "2025-01-02T03:04:05Z"},  # 10
        {"user_id": "u1", "doc_id": "d1", "type": "view", "dwell_s": -3},  # 11 negative dwell
        {"user_id": "u1", "doc_id": "d1", "type": "view", "idempotency_key": {"a": 1}},  # 12 bad key
        {"user_id": True, "doc_id": "d1", "type": "view"},  # 13 bool user id
    ]
    report = ingest(state, batch)
    assert report.accepted == 2 and report.duplicates == 0
    by_index = {}
    for r in report.rejected:
        by_index.setdefault(r["index"], set()).add(r["field"])
        assert r["reason"]
    assert by_index == {1: {"user_id"}, 2: {"type"}, 3: {"value"}, 4: {"value"}, 5: {"dwell_s"},
                        6: {"timestamp"}, 7: {"timestamp"}, 8: {"doc_id"}, 9: {"event"}, 11: {"dwell_s"},
                        12: {"idempotency_key"}, 13: {"user_id"}}
    assert report.rejected_events == 12
    reason = next(r["reason"] for r in report.rejected if r["index"] == 2)
    assert "teleport" in reason and "view" in reason
    assert n_events(state) == 2
    ts = state.execute("SELECT ts FROM events WHERE user_id = 'u2'").fetchone()[0]
    assert ts == datetime(2025, 1, 2, 3, 4, 5)


def test_several_problems_in_one_event_are_all_named(state):
    report = ingest(state, [{"type": "rating", "value": "lots"}])
    fields = {r["field"] for r in report.rejected}
    assert fields == {"user_id", "doc_id", "value"}
    assert report.accepted == 0


def test_timestamps_zones_epochs_and_default_now(state):
    before = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=5)
    ingest(state, [
        {"user_id": "a", "doc_id": "d", "type": "view", "timestamp": "2025-03-01T12:00:00+02:00"},
        {"user_id": "b", "doc_id": "d", "type": "view", "ts": 1_700_000_000},
        {"user_id": "c", "doc_id": "d", "type": "view"},
        {"user_id": "e", "doc_id": "d", "type": "view", "timestamp": "2025-03-01"},
    ])
    got = dict(state.execute("SELECT user_id, ts FROM events").fetchall())
    assert got["a"] == datetime(2025, 3, 1, 10, 0, 0)  # stored in UTC
    assert got["b"] == datetime(2023, 11, 14, 22, 13, 20)
    assert got["c"] >= before
    assert got["e"] == datetime(2025, 3, 1)


def test_events_for_unknown_documents_are_kept(state):
    report = ingest(state, [{"user_id": "u1", "doc_id": "no-such-document", "type": "like"}])
    assert report.accepted == 1
    assert n_events(state, "doc_id = 'no-such-document'") == 1


def test_not_a_list(state):
    report = ingest(state, {"user_id": "u1"})  # type: ignore[arg-type]
    assert report.accepted == 0 and report.rejected[0]["field"] == "events"


def test_user_versions_change_with_new_events_and_profiles(state):
    v0 = state.user_version("u1")
    ingest(state, [{"user_id": "u1", "doc_id": "d", "type": "view"}])
    v1 = state.user_version("u1")
    assert v1 > v0 and state.user_version("u2") == 0
    upsert_user(state, "u1", interests=["index funds"])
    assert state.user_version("u1") > v1
    # A batch that stores nothing changes nothing.
    ingest(state, [{"user_id": "u1", "type": "view"}])
    assert state.user_version("u1") == v1 + 1


def test_upsert_user_creates_and_updates(state):
    row = upsert_user(state, "u1", name="Ana", interests="index funds, retirement", domains=["Finance"],
                      language="en")
    assert row["interests"] == ["index funds", "retirement"] and row["domains"] == ["finance"]
    created = row["created_at"]
    row = upsert_user(state, "u1", name="Ana B", interests=["asthma"])
    assert row["name"] == "Ana B" and row["interests"] == ["asthma"] and row["domains"] == []
    assert row["created_at"] == created
    assert state.counts()["users"] == 1
    with pytest.raises(InvalidUser) as e:
        upsert_user(state, "", interests=["x"])
    assert e.value.field == "user_id"
    with pytest.raises(InvalidUser) as e:
        upsert_user(state, "u2", interests=[1, 2])
    assert e.value.field == "interests"


def test_bulk_loaders_report_line_numbers(state, tmp_path):
    users = tmp_path / "users.jsonl"
    users.write_text("\n".join([
        json.dumps({"user_id": "u1", "name": "Ana", "interests": ["budgeting"], "domains": ["finance"]}),
        "{broken",
        json.dumps({"id": "u2", "interests": "asthma; sleep"}),
        json.dumps({"name": "nobody"}),
        "",
    ]) + "\n", encoding="utf-8")
    ur = load_users_jsonl(state, users)
    assert ur.accepted == 2
    assert [(r["index"], r["field"]) for r in ur.rejected] == [(2, "line"), (4, "user_id")]
    assert state.get_user("u2")["interests"] == ["asthma", "sleep"]

    events = tmp_path / "events.jsonl"
    lines = [json.dumps({"user_id": "u1", "doc_id": f"d{i}", "type": "view", "idempotency_key": f"k{i}"})
             for i in range(5)]
    lines.insert(2, json.dumps({"user_id": "u1", "doc_id": "d9", "type": "rating", "value": 0}))
    lines.append(lines[0])  # a repeated key
    lines.append("[1, 2]")
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    er = load_events_jsonl(state, events, batch_size=2)  # keys repeat across internal batches too
    assert (er.accepted, er.duplicates) == (5, 1)
    assert [(r["index"], r["field"]) for r in er.rejected] == [(3, "value"), (8, "event")]
    with pytest.raises(FileNotFoundError):
        load_events_jsonl(state, tmp_path / "missing.jsonl")


def test_state_survives_reopen_and_refuses_a_second_writer_process(tmp_path):
    path = tmp_path / "state.duckdb"
    with StateDB(path) as s:
        ingest(s, [{"user_id": "u1", "doc_id": "d1", "type": "like", "idempotency_key": "k"}])
    with StateDB(path) as s:
        assert s.counts()["events"] == 1
        assert ingest(s, [{"user_id": "u1", "doc_id": "d1", "type": "like", "idempotency_key": "k"}]).duplicates == 1
        code = textwrap.dedent(f"""
            from rag.state import StateLocked, StateDB
            try:
                StateDB({str(path)!r})
            except StateLocked as e:
                print("LOCKED", e)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert "LOCKED" in out.stdout and "another process" in out.stdout, out.stderr


def test_service_can_add_its_own_tables(state):
    state.ensure_schema("CREATE TABLE IF NOT EXISTS jobs (job_id VARCHAR PRIMARY KEY, status VARCHAR)")
    with state.writer() as cur:
        cur.execute("INSERT INTO jobs VALUES ('j1', 'queued')")
    assert state.execute("SELECT status FROM jobs").fetchone()[0] == "queued"
    with pytest.raises(RuntimeError):
        with state.writer() as cur:
            cur.execute("INSERT INTO jobs VALUES ('j2', 'queued')")
            raise RuntimeError("boom")
    assert state.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1  # rolled back


# --- rating scales ---------------------------------------------------------------------------------------

def test_ratings_are_checked_against_the_configured_scale(state):
    from rag.config import load_settings

    half_stars = load_settings(environ={"RAG_EVENTS__RATING_SCALE": "[0.5, 5]"}).events
    batch = [
        {"user_id": "u1", "doc_id": "d1", "type": "rating", "value": 0.5},  # 0 bottom of the scale
        {"user_id": "u1", "doc_id": "d2", "type": "rating", "value": 0.25},  # 1 below it
        {"user_id": "u1", "doc_id": "d3", "type": "rating", "value": 5.5},  # 2 above it
        {"user_id": "u1", "doc_id": "d4", "type": "rating", "value": 3.5},  # 3
        {"user_id": "u1", "doc_id": "d5", "type": "rating"},  # 4 no value
        {"user_id": "u1", "doc_id": "d6", "type": "view"},  # 5
    ]
    report = ingest(state, batch, rating_scale=half_stars)
    assert report.accepted == 3
    reasons = {r["index"]: r["reason"] for r in report.rejected}
    assert {r["field"] for r in report.rejected} == {"value"}
    assert reasons == {1: "a rating must be from 0.5 to 5, got 0.25", 2: "a rating must be from 0.5 to 5, got 5.5",
                       4: "required for a rating (a number from 0.5 to 5)"}
    assert sorted(r[0] for r in state.execute("SELECT value FROM events WHERE type = 'rating'").fetchall()) == \
        [0.5, 3.5]
    # the default scale is 1 to 5 stars: a half star is out of range there
    report = ingest(state, [{"user_id": "u2", "doc_id": "d1", "type": "rating", "value": 0.5}])
    assert report.accepted == 0 and report.rejected[0]["reason"] == "a rating must be from 1 to 5, got 0.5"


def test_events_import_uses_the_configured_scale(tmp_path, monkeypatch, capsys):
    from service.cli import main

    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps({"user_id": "u", "doc_id": f"d{v}", "type": "rating", "value": v})
                              for v in (0, 7, 10, 11)) + "\n", encoding="utf-8")
    monkeypatch.setenv("RAG_EVENTS__RATING_SCALE", "[0, 10]")
    assert main(["--home", str(tmp_path / "home"), "events", "import", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accepted"] == 3 and report["rejected_events"] == 1
    assert report["rejected"] == [{"index": 4, "field": "value", "reason": "a rating must be from 0 to 10, got 11"}]


def test_rating_scale_settings_and_normalization():
    from rag.config import ConfigError, load_settings
    from rag.events import RatingScale

    assert load_settings(environ={}).events.rating_scale == (1.0, 5.0)
    for env, why in (({"RAG_EVENTS__RATING_SCALE": "[5, 1]"}, "min < max"),
                     ({"RAG_EVENTS__RATING_SCALE": "[1, 10]", "RAG_EVENTS__RATING_NEUTRAL": "10"}, "inside"),
                     ({"RAG_EVENTS__RATING_SCALE": "[1]"}, "length 2")):
        with pytest.raises(ConfigError, match=why):
            load_settings(environ=env)
    stars = RatingScale()
    assert [stars.normalize(v) for v in (1, 2, 3, 4, 5)] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert list(stars.normalize([1, 3, 5])) == [-1.0, 0.0, 1.0]
    percent = RatingScale.of(load_settings(environ={"RAG_EVENTS__RATING_SCALE": "[0, 100]",
                                                    "RAG_EVENTS__RATING_NEUTRAL": "60"}).events)
    assert (percent.mid, percent.normalize(60), percent.normalize(30), percent.normalize(80)) == (60, 0.0, -0.5, 0.5)
    assert percent.normalize(150) == 1.0  # a stored value from before a scale change is clipped
    thumbs = RatingScale(0, 1)
    assert (thumbs.normalize(0), thumbs.normalize(1)) == (-1.0, 1.0)
