"""Access labels end to end (rag.access): the real Litestar app over HTTP, one real index built once for this module
(MiniLM, FAISS, DuckDB), a real state database, and the CLI. A principal without a group never receives anything
of that group's documents through any endpoint; one with the group does. Trending and co-engagement are computed
over the visible documents only; forgetting a user removes every row of theirs."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402
from litestar.testing import TestClient  # noqa: E402

from indexer.build import Indexer, build  # noqa: E402
from rag.access import MalformedAccess, Visibility, parse_access  # noqa: E402
from rag.application import Application  # noqa: E402
from rag.config import ConfigError, load_settings  # noqa: E402
from service.app import create_app  # noqa: E402
from tests.conftest import SMALL_CORPUS, write_corpus  # noqa: E402

PUBLIC = {"X-API-Key": "public-reader-key"}
CLINIC = {"X-API-Key": "clinic-reader-key"}  # groups clinicians, teachers
ADMIN = {"X-API-Key": "admin-key-789"}
TEACHER_ADMIN = {"X-API-Key": "teacher-admin-key"}  # an admin key restricted to the group teachers
KEYS = {"public-reader-key": "reader",
        "clinic-reader-key": {"role": "reader", "groups": ["clinicians", "teachers"], "id": "clinic-app"},
        "teacher-admin-key": {"role": "admin", "groups": ["teachers"], "id": "teacher-admin"},
        "admin-key-789": "admin"}

# Group-only documents. Each carries a marker word nothing else in the corpus holds, in its title and text.
HIDDEN = {
    "med-sepsis-protocol": "Quorvex",
    "edu-pupil-notes-zh": "栎沅",
    "fin-staff-fees": "Vantrel",
}
HIDDEN_DOCS = {
    "medical/sepsis-protocol.md": """---
id: med-sepsis-protocol
title: "Quorvex sepsis triage protocol"
domain: medical
language: en
tags: [sepsis, protocol]
date: 2025-05-01
access: [clinicians]
---
# Quorvex sepsis triage protocol
Measure blood pressure and lactate within 15 minutes of arrival; a lactate above 2 mmol/L starts the Quorvex bundle.
Give 30 mL/kg of crystalloid fluid within three hours to patients with hypotension.
""",
    "education/pupil-notes-zh.md": """---
id: edu-pupil-notes-zh
title: "栎沅学生的学习记录"
domain: education
language: zh
tags: [学生]
date: 2025-05-02
access: teachers
---
# 栎沅学生的学习记录
栎沅同学的分数学习进度较慢，需要每周两次的个别辅导。数学老师建议使用数轴帮助理解分数。
""",
}
# A JSONL file: a staff-only row (column), a row with an unknown group (kept as given), a malformed one (skipped).
JSONL_ROWS = [
    {"id": "fin-staff-fees", "title": "Vantrel staff fee schedule", "domain": "finance", "language": "en",
     "access": "staff;clinicians", "text": "Vantrel staff pay no account fee; the mortgage rate for staff is "
                                         "1.9 percent fixed for ten years."},
    {"id": "fin-unknown-group", "title": "Board minutes", "domain": "finance", "language": "en",
     "access": ["Board Of Directors"], "text": "The board approved the index fund budget for next year."},
    {"id": "fin-bad-access", "title": "Bad access row", "domain": "finance", "language": "en",
     "access": 5, "text": "This row has a numeric access value and is skipped."},
]
BAD_FILE = """---
id: med-bad-access
title: Broken labels
domain: medical
access: {clinicians: yes}
---
# Broken labels
Nobody may see this document because its labels cannot be read.
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("access")
    corpus = write_corpus(root / "corpus", SMALL_CORPUS)
    for rel, text in HIDDEN_DOCS.items():
        (corpus / rel).write_text(text, encoding="utf-8")
    (corpus / "finance" / "rows.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in JSONL_ROWS) + "\n", encoding="utf-8")
    (corpus / "medical" / "bad-access.md").write_text(BAD_FILE, encoding="utf-8")
    settings = load_settings(environ={}, home=str(root / "home"), embedder="minilm",
                             model_cache=str(models_dir), generator={"backend": "extractive"},
                             recommend={"coengagement_ttl_s": 0.0},
                             service={"api_keys": KEYS, "rate_limit_per_minute": 1_000_000})
    report = build(settings, [corpus], show_progress=False)
    return settings, report


@pytest.fixture(scope="module")
def application(built):
    settings, _ = built
    app = Application(settings, builder=Indexer())
    yield app
    app.close()


@pytest.fixture(scope="module")
def client(built, application):
    settings, _ = built
    with TestClient(create_app(settings, application), raise_server_exceptions=False) as c:
        yield c


def leaks(body, query: str | None = None) -> list[str]:
    """The hidden documents' ids and marker words found in a response (the caller's own query text aside)."""
    text = json.dumps(body, ensure_ascii=False)
    if query:
        text = text.replace(json.dumps(query, ensure_ascii=False)[1:-1], "")
    return [s for pair in HIDDEN.items() for s in pair if s in text]


# --- build: labels stored, bad input ------------------------------------------------------------------------

def test_labels_are_stored_unknown_groups_kept_malformed_ones_skip_the_document(built, application):
    _, report = built
    skipped = {(Path(s.path).name, s.reason) for s in report.skipped}
    assert any(name == "bad-access.md" and "malformed access" in why for name, why in skipped), skipped
    assert any(name == "rows.jsonl" and "line 3" in why and "malformed access" in why for name, why in skipped)
    snap = application.snapshot()
    assert "med-bad-access" not in snap.doc_row_of and "fin-bad-access" not in snap.doc_row_of
    assert snap.document("med-sepsis-protocol")["access"] == ["clinicians"]
    assert snap.document("fin-staff-fees")["access"] == ["staff", "clinicians"]
    assert snap.document("fin-unknown-group")["access"] == ["Board Of Directors"]  # as given
    assert snap.document("fin-etf")["access"] == []
    # chunks carry the labels too (both legs filter on them without a join)
    rows = snap.sql("SELECT DISTINCT access FROM chunks WHERE doc_id = 'med-sepsis-protocol'").fetchall()
    assert rows == [(["clinicians"],)]


def test_labels_are_part_of_the_build_key(built, tmp_path):
    settings, report = built
    corpus = write_corpus(tmp_path / "c", {k: v for k, v in list(SMALL_CORPUS.items())[:2]})
    home = tmp_path / "home"
    s = load_settings(environ={}, home=str(home), embedder="minilm", model_cache=str(settings.models_dir))
    first = build(s, [corpus], show_progress=False)
    assert build(s, [corpus], show_progress=False).unchanged
    path = corpus / "finance" / "etf-basics.md"
    path.write_text(path.read_text().replace("audience: general\n", "audience: general\naccess: [staff]\n"))
    again = build(s, [corpus], show_progress=False)
    assert not again.unchanged and again.generation_id != first.generation_id


def test_parse_access_and_visibility():
    assert parse_access(None) == [] and parse_access([]) == []
    assert parse_access("a; b ,a") == ["a", "b"]
    for bad in (5, {"a": 1}, [["a"]], [""], "  ", "*", ["x" * 65], [1]):
        with pytest.raises(MalformedAccess):
            parse_access(bad)
    assert Visibility.public().sees([]) and not Visibility.public().sees(["g"])
    assert Visibility.of(["g"]).sees(["h", "g"]) and Visibility.of(["*"]).sees(["h"])


def test_a_key_naming_no_role_is_a_clear_start_up_error():
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"RAG_SERVICE__API_KEYS": json.dumps({"s3cret-key-value": {"groups": ["g"]}})})
    assert "names no role" in str(e.value) and "s3cret-key-value" not in str(e.value)


# --- every endpoint, random queries ---------------------------------------------------------------------------

QUERIES = ["sepsis lactate protocol", "Quorvex bundle fluids", "staff fee schedule mortgage rate",
           "Vantrel account fee", "学生 分数 辅导", "栎沅同学的学习记录", "数轴 分数", "blood pressure at home",
           "高血压 测量", "expense ratio ETF", "childhood vaccines", "how much fluid for hypotension"]
FILTERS = [None, {"domain": "medical"}, {"language": "zh"}, {"domain": ["finance", "education"]},
           {"tags": ["sepsis", "学生", "etfs"]}, {"date_from": "2025-01-01"},
           {"doc_ids": ["med-sepsis-protocol", "fin-etf", "edu-pupil-notes-zh"]}]


_SEEDED: dict[str, bool] = {}


def _events(client):
    """Users who read hidden documents next to public ones (co-engagement) and heavily (trending); once."""
    if _SEEDED.get("events"):
        return
    _SEEDED["events"] = True
    evs = []
    for n in range(6):
        for j, doc in enumerate(["fin-etf", "med-sepsis-protocol", "fin-staff-fees", "edu-pupil-notes-zh",
                                 "med-hypertension"]):
            evs.append({"user_id": f"u-mixed-{n}", "doc_id": doc, "type": "like",
                        "timestamp": f"2025-06-0{1 + n}T1{j}:00:00Z"})
    r = client.post("/v1/events", json={"events": evs}, headers=PUBLIC)  # accepted, hidden documents included
    assert r.status_code == 200 and r.json()["accepted"] == len(evs), r.text


@hsettings(max_examples=45, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=st.sampled_from(QUERIES), filters=st.sampled_from(FILTERS),
       mode=st.sampled_from(["dense", "keyword", "hybrid"]),
       route=st.sampled_from(["search", "ask", "stream", "summarize", "recommend", "similar", "trending", "list"]))
def test_a_principal_without_the_group_never_receives_a_group_document(client, route, query, filters, mode):
    _events(client)
    f = {"filters": filters} if filters else {}
    if route == "search":
        r = client.post("/v1/search", json={"query": query, "mode": mode, **f, "top_k": 10},
                        headers=PUBLIC)
    elif route == "ask":
        r = client.post("/v1/ask", json={"question": query, "mode": mode, **f}, headers=PUBLIC)
    elif route == "stream":
        r = client.post("/v1/ask", json={"question": query, "mode": mode, **f, "stream": True},
                        headers=PUBLIC)
    elif route == "summarize":
        r = client.post("/v1/summarize", json={"query": query, **f}, headers=PUBLIC)
    elif route == "recommend":
        r = client.get(f"/v1/users/u-mixed-{len(query) % 6}/recommendations",
                       params={"k": 10, "exclude_seen": "false"}, headers=PUBLIC)
    elif route == "similar":
        r = client.get(f"/v1/items/{['fin-etf', 'med-hypertension', 'edu-fractions-zh'][len(query) % 3]}/similar",
                       params={"k": 10}, headers=PUBLIC)
    elif route == "trending":
        r = client.get("/v1/trending", params={"k": 20, **({"domain": filters["domain"]} if filters and isinstance(
            filters.get("domain"), str) else {})}, headers=PUBLIC)
    else:
        r = client.get("/v1/documents", params={"limit": 200}, headers=PUBLIC)
    assert r.status_code == 200, r.text
    body = r.text if route == "stream" else r.json()
    assert leaks(body, query) == [], (route, query, filters, mode)


def test_the_group_member_does_receive_them(client):
    _events(client)
    hits = client.post("/v1/search", json={"query": "Quorvex sepsis lactate", "mode": "keyword"},
                       headers=CLINIC).json()["hits"]
    assert hits[0]["doc_id"] == "med-sepsis-protocol"
    hits = client.post("/v1/search", json={"query": "栎沅同学 分数 辅导", "mode": "hybrid"}, headers=CLINIC).json()["hits"]
    assert "edu-pupil-notes-zh" in {h["doc_id"] for h in hits}
    answer = client.post("/v1/ask", json={"question": "How much crystalloid fluid should patients with hypotension "
                                                       "get in the Quorvex sepsis protocol?"}, headers=CLINIC).json()
    assert "med-sepsis-protocol" in {p["doc_id"] for p in answer["passages"]}, answer  # what the answer read
    summary = client.post("/v1/summarize", json={"doc_id": "med-sepsis-protocol"}, headers=CLINIC)
    assert summary.status_code == 200 and "Quorvex" in summary.text
    doc = client.get("/v1/documents/fin-staff-fees", headers=CLINIC)
    assert doc.status_code == 200 and doc.json()["access"] == ["staff", "clinicians"]
    listed = {d["doc_id"] for d in client.get("/v1/documents", params={"limit": 200}, headers=CLINIC).json()["items"]}
    assert set(HIDDEN) <= listed and "fin-unknown-group" not in listed  # nobody has "Board Of Directors"
    trending = {i["doc_id"] for i in client.get("/v1/trending", params={"k": 20}, headers=CLINIC).json()["items"]}
    assert "med-sepsis-protocol" in trending
    similar = client.get("/v1/items/med-sepsis-protocol/similar", headers=CLINIC)
    assert similar.status_code == 200
    admin = {d["doc_id"] for d in client.get("/v1/documents", params={"limit": 200}, headers=ADMIN).json()["items"]}
    assert "fin-unknown-group" in admin  # an admin key sees every document


def test_hidden_documents_are_not_found_not_forbidden(client):
    for r in (client.post("/v1/summarize", json={"doc_id": "med-sepsis-protocol"}, headers=PUBLIC),
              client.post("/v1/summarize", json={"doc_ids": ["fin-etf", "fin-staff-fees"]}, headers=PUBLIC),
              client.get("/v1/items/edu-pupil-notes-zh/similar", headers=PUBLIC),
              client.get("/v1/documents/med-sepsis-protocol", headers=PUBLIC)):
        assert r.status_code == 404, r.text
    hidden = client.post("/v1/summarize", json={"doc_id": "med-sepsis-protocol"}, headers=PUBLIC).json()["error"]
    absent = client.post("/v1/summarize", json={"doc_id": "med-no-such-doc"}, headers=PUBLIC).json()["error"]
    assert hidden["message"].replace("med-sepsis-protocol", "X") == absent["message"].replace("med-no-such-doc", "X")
    assert client.get("/v1/documents/no-such-doc", headers=PUBLIC).json()["error"]["message"].replace(
        "no-such-doc", "X") == client.get("/v1/documents/fin-staff-fees", headers=PUBLIC).json()["error"][
        "message"].replace("fin-staff-fees", "X")


def test_open_mode_sees_public_documents_unless_configured(built, application):
    settings, _ = built
    for groups, visible in (([], False), (["clinicians"], True)):
        svc = load_settings(environ={}, home=str(settings.home_path),
                            service={"open_mode": True, "open_groups": groups})
        with TestClient(create_app(svc, application), raise_server_exceptions=False) as c:
            r = c.post("/v1/search", json={"query": "Quorvex sepsis lactate", "mode": "keyword"})
            assert ("med-sepsis-protocol" in r.text) is visible, groups


def test_cli_as_groups(built, capsys):
    from service.cli import main

    settings, _ = built
    home = ["--home", str(settings.home_path)]
    for groups, visible in (("", False), ("nurses,billing", False), ("clinicians", True), (None, True)):
        flag = [] if groups is None else ["--as", groups]
        assert main([*home, "search", "Quorvex sepsis lactate", "--mode", "keyword", "--json", *flag]) == 0
        out = capsys.readouterr().out
        assert ("med-sepsis-protocol" in out) is visible, groups
        assert main([*home, "ask", "What starts the Quorvex bundle?", "--json", *flag]) == 0
        assert ("Quorvex" in capsys.readouterr().out.replace("What starts the Quorvex bundle?", "")) is visible
    assert main([*home, "summarize", "--doc", "med-sepsis-protocol", "--as", ""]) == 2
    assert main([*home, "similar", "med-sepsis-protocol", "--as", "teachers"]) == 2
    assert main([*home, "similar", "med-sepsis-protocol", "--as", "clinicians", "--json"]) == 0
    capsys.readouterr()


# --- trending and co-engagement count only what the caller sees --------------------------------------------------

def test_hidden_events_do_not_move_what_a_public_caller_reads_back(client):
    """Add events on a hidden document only, between and after the visible ones: everything a public caller reads
    back (trending order and scores, similar items with scores and reasons, a user's recommendations) stays
    exactly as it was, while a caller who sees the document gets a different trending list."""
    base = [{"user_id": f"u-co-{n}", "doc_id": doc, "type": "like", "timestamp": f"2025-07-0{1 + n}T{10 + j}:00:00Z"}
            for n in range(4) for j, doc in enumerate(["edu-study", "edu-formative", "med-vaccines"])]
    assert client.post("/v1/events", json={"events": base}, headers=PUBLIC).json()["accepted"] == len(base)

    def readback(headers):
        return (client.get("/v1/trending", params={"k": 20}, headers=headers).json()["items"],
                client.get("/v1/items/edu-study/similar", params={"k": 8}, headers=headers).json()["items"],
                client.get("/v1/users/u-co-1/recommendations", params={"k": 8}, headers=headers).json()["items"])

    public_before, clinic_before = readback(PUBLIC), readback(CLINIC)
    hidden = [{"user_id": f"u-co-{n}", "doc_id": "med-sepsis-protocol", "type": "like",
               "timestamp": f"2025-07-0{1 + n}T10:30:00Z"} for n in range(4)]  # between edu-study and edu-formative
    hidden += [{"user_id": f"u-hidden-{n}", "doc_id": "med-sepsis-protocol", "type": "share",
                "timestamp": "2025-08-01T12:00:00Z"} for n in range(12)]  # the most popular, and the newest
    assert client.post("/v1/events", json={"events": hidden}, headers=PUBLIC).json()["accepted"] == len(hidden)
    public_after, clinic_after = readback(PUBLIC), readback(CLINIC)
    assert public_after == public_before
    assert clinic_after[0] != clinic_before[0] and clinic_after[0][0]["doc_id"] == "med-sepsis-protocol"


# --- forget a user ------------------------------------------------------------------------------------------

def test_forget_a_user_removes_every_row_and_trending_is_recomputed(client, application, built, capsys):
    evs = [{"user_id": "u-forget", "doc_id": "edu-fractions-zh", "type": "share",
            "timestamp": "2025-09-01T10:00:00Z"} for _ in range(8)]
    client.post("/v1/events", json={"events": evs}, headers=PUBLIC)
    from rag.events import upsert_user

    upsert_user(application.state, "u-forget", name="Forget Me", interests=["fractions"])

    def fractions_score() -> float:
        items = client.get("/v1/trending", params={"k": 20}, headers=PUBLIC).json()["items"]
        return next(i["score"] for i in items if i["doc_id"] == "edu-fractions-zh")

    assert fractions_score() > 0  # only u-forget engaged with it
    assert client.delete("/v1/users/u-forget", headers=PUBLIC).status_code == 403  # admin only
    r = client.delete("/v1/users/u-forget", headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"user_id": "u-forget", "user_removed": True, "events_removed": 8}
    for table in ("users", "events"):
        assert application.state.execute(f"SELECT count(*) FROM {table} WHERE user_id = ?",
                                          ["u-forget"]).fetchone()[0] == 0
    assert fractions_score() == 0.0  # listed as new, no longer as engaged with
    assert client.delete("/v1/users/u-forget", headers=ADMIN).status_code == 404
    # the CLI makes the same call
    from service.cli import main

    client.post("/v1/events", json={"events": [{**e, "user_id": "u-cli"} for e in evs[:3]]}, headers=PUBLIC)
    settings, _ = built
    assert main(["--home", str(settings.home_path), "users", "forget", "u-cli"]) == 0
    assert "3 events removed" in capsys.readouterr().out


# --- audit ----------------------------------------------------------------------------------------------------

def test_audit_line_names_the_key_id_and_the_admin_lists_last_use(client, caplog):
    question = "Does my e-mail jane.doe@example.org appear in the logs?"
    with caplog.at_level(logging.INFO, logger="service.access"):
        r = client.post("/v1/search", json={"query": question}, headers={**CLINIC, "X-Request-ID": "audit-1"})
    assert r.status_code == 200
    rec = next(x for x in caplog.records if getattr(x, "request_id", None) == "audit-1")
    from service.request_log import JsonFormatter

    line = json.loads(JsonFormatter().format(rec))
    assert line["principal"] == "clinic-app" and line["route"] == "/v1/search" and line["status"] == 200
    assert line["generation_id"] == r.json()["generation_id"] and line["query_chars"] == len(question)
    assert "jane.doe" not in json.dumps(line) and "clinic-reader-key" not in json.dumps(line)
    keys = client.get("/v1/admin/keys", headers=ADMIN)
    assert keys.status_code == 200, keys.text
    by_id = {k["key_id"]: k for k in keys.json()}
    assert by_id["clinic-app"]["groups"] == ["clinicians", "teachers"] and by_id["clinic-app"]["requests"] >= 1
    assert by_id["clinic-app"]["last_used_at"].endswith("Z")
    assert "clinic-reader-key" not in keys.text and client.get("/v1/admin/keys", headers=PUBLIC).status_code == 403


def test_documents_api_body_carries_access(client):
    body = {"id": "med-ward-rota", "title": "Ward rota", "domain": "medical", "text": "The night ward rota.",
            "access": ["clinicians"]}
    assert client.post("/v1/documents", json={**body, "access": ["*"]}, headers=ADMIN).json()["error"]["field"] == \
        "access"
    r = client.post("/v1/documents", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    try:
        assert client.get("/v1/documents/med-ward-rota", headers=PUBLIC).status_code == 404
        stored = client.get("/v1/documents/med-ward-rota", headers=CLINIC)
        assert stored.status_code == 200 and stored.json()["access"] == ["clinicians"]
        assert stored.json()["indexed"] is False
    finally:
        client.delete("/v1/documents/med-ward-rota", headers=ADMIN)


def test_a_restricted_admin_never_replaces_or_deletes_a_document_it_may_not_see(client):
    store_copy = {"id": "med-ward-notes", "title": "Ward notes", "domain": "medical", "access": ["clinicians"],
                  "text": "Only clinicians read the ward notes."}
    assert client.post("/v1/documents", json=store_copy, headers=ADMIN).status_code == 201
    try:
        fields = {k: v for k, v in store_copy.items() if k != "id"} | {"access": [], "text": "Overwritten."}
        # In the store only (not built yet) and published only (a read-only source): neither is touched.
        for doc_id in ("med-ward-notes", "med-sepsis-protocol"):
            put = client.put(f"/v1/documents/{doc_id}", json=fields, headers=TEACHER_ADMIN)
            assert put.status_code == 409 and put.json()["error"]["code"] == "id_unavailable", put.text
            post = client.post("/v1/documents", json={**fields, "id": doc_id}, headers=TEACHER_ADMIN)
            assert post.status_code == 409 and post.json()["error"]["code"] == "id_unavailable", post.text
        hidden = client.delete("/v1/documents/med-ward-notes", headers=TEACHER_ADMIN)
        absent = client.delete("/v1/documents/med-no-such-notes", headers=TEACHER_ADMIN)
        assert hidden.status_code == absent.status_code == 404
        assert hidden.json()["error"]["message"].replace("med-ward-notes", "X") == \
            absent.json()["error"]["message"].replace("med-no-such-notes", "X")
        kept = client.get("/v1/documents/med-ward-notes", headers=CLINIC).json()
        assert kept["text"] == "Only clinicians read the ward notes." and kept["access"] == ["clinicians"]
        # Its own group's documents and public ones it manages as any admin does.
        own = {"title": "Reading plan", "domain": "education", "access": ["teachers"], "text": "Read daily."}
        assert client.put("/v1/documents/edu-reading-plan", json=own, headers=TEACHER_ADMIN).status_code == 201
        assert client.delete("/v1/documents/edu-reading-plan", headers=TEACHER_ADMIN).status_code == 200
    finally:
        assert client.delete("/v1/documents/med-ward-notes", headers=ADMIN).status_code == 200


def test_readiness_counts_only_public_documents(client, application):
    ready = client.get("/ready")
    assert ready.status_code == 200
    listed = client.get("/v1/documents", params={"limit": 1}, headers=PUBLIC).json()["total"]
    everything = client.get("/v1/documents", params={"limit": 1}, headers=ADMIN).json()["total"]
    assert ready.json()["documents"] == listed < everything
    chunks = application.snapshot().manifest.counts.chunks
    assert ready.json()["chunks"] < chunks


def test_keyword_scores_never_depend_on_hidden_documents(built, application, tmp_path, models_dir):
    """A public caller's BM25 scores are those of an index that never held the labelled documents: the collection
    statistics (N, df, avgdl) are the visible chunks', so no score tells how many hidden chunks hold a term."""
    from rag.types import Filters

    settings, _ = built
    clean_settings = load_settings(environ={}, home=str(tmp_path / "home"), embedder=settings.embedder,
                                   model_cache=str(models_dir))
    build(clean_settings, [write_corpus(tmp_path / "corpus", SMALL_CORPUS)], show_progress=False)
    clean = Application(clean_settings)
    try:
        labelled, public = application.snapshot(), clean.snapshot()
        public_only = Filters(access=Visibility.public().key())

        def by_chunk(snapshot, query, filters):
            hits = snapshot.keyword(query, 50, filters)
            return {snapshot.chunks([r])[r]["chunk_id"]: s for r, s in hits}

        for query in ("blood pressure lactate within minutes", "分数 学习 进度"):
            seen, expected = by_chunk(labelled, query, public_only), by_chunk(public, query, None)
            assert seen.keys() == expected.keys() and seen, query
            assert max(abs(seen[c] - expected[c]) for c in seen) < 1e-9, query
            # With the generation's own statistics the same chunks score otherwise: the check above can fail.
            global_stats = {c: s for c, s in by_chunk(labelled, query, None).items() if c in seen}
            assert max(abs(global_stats[c] - expected[c]) for c in seen) > 1e-4, query
        # The answer selector's word rarity too: a word only hidden chunks hold weighs as an unseen one.
        from rag.answer_select import term_weights
        from rag.text import tokenize

        terms = set(tokenize("Quorvex lactate blood pressure 分数 学习"))
        clean_weights = term_weights(public, terms)
        assert term_weights(labelled, terms, public_only) == pytest.approx(clean_weights, abs=1e-9)
        assert term_weights(labelled, terms) != pytest.approx(clean_weights, abs=1e-4)
    finally:
        clean.close()
