"""Recommendations on a small real generation (real MiniLM embeddings), a real state DuckDB and real events."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from rag.events import upsert_user
from rag.recommend import Recommendation, Recommender
from rag.errors import NotFound
from rag.state import StateDB

# doc id -> (domain, language, audience, title, body)
DOCS = {
    "fin-etf": ("finance", "en", "general", "Exchange-Traded Funds Explained",
                "An exchange-traded fund holds a basket of stocks or bonds and trades on an exchange like a share. "
                "Most ETFs track an index and charge low expense ratios."),
    "fin-etf-copy": ("finance", "en", "general", "Exchange-Traded Funds Explained",
                     "An exchange-traded fund holds a basket of stocks or bonds and trades on an exchange like a "
                     "share. Most ETFs track an index and charge low expense ratios. Reprinted."),
    "fin-index": ("finance", "en", "general", "Index Funds and Rebalancing",
                  "Index funds follow a market index such as the S&P 500. Rebalancing a portfolio once a year keeps "
                  "the stock and bond allocation on target."),
    "fin-bonds": ("finance", "en", "general", "Bond Yields and Duration",
                  "A bond pays a fixed coupon. When interest rates rise, bond prices fall; duration measures how "
                  "sensitive a bond is to rate changes."),
    "fin-budget": ("finance", "en", "general", "Household Budgeting with the 50/30/20 Rule",
                   "Spend half of take-home pay on needs, thirty percent on wants and save twenty percent. Track "
                   "every expense for a month before setting the budget."),
    "fin-mortgage": ("finance", "en", "general", "Fixed and Variable Mortgages",
                     "A fixed-rate mortgage keeps the same interest rate for the whole term. A variable-rate "
                     "mortgage follows the central bank rate, so monthly payments can rise."),
    "fin-tax-zh": ("finance", "zh", "general", "个人所得税专项附加扣除",
                   "个人所得税专项附加扣除包括子女教育、继续教育、大病医疗、住房贷款利息、住房租金和赡养老人。"),
    "med-bp": ("medical", "en", "patient", "Measuring Blood Pressure at Home",
               "Measure blood pressure every morning, seated, after five minutes of rest, with the cuff at heart "
               "level. Hypertension means readings at or above 130/80 mmHg."),
    "med-diabetes": ("medical", "en", "patient", "Living with Type 2 Diabetes",
                     "Type 2 diabetes is managed with diet, exercise and metformin. Check blood glucose and HbA1c "
                     "regularly and look after your feet."),
    "med-asthma": ("medical", "en", "patient", "Asthma Inhaler Technique",
                   "Shake the inhaler, breathe out, seal your lips around the mouthpiece and press while breathing "
                   "in slowly. A spacer helps children with asthma."),
    "med-sleep": ("medical", "en", "general", "Sleep Hygiene for Insomnia",
                  "Keep a regular wake time, avoid caffeine after noon and keep screens out of the bedroom. Cognitive "
                  "behavioural therapy is the first treatment for chronic insomnia."),
    "med-vaccines": ("medical", "en", "clinician", "Childhood Vaccination Schedule",
                     "The measles, mumps and rubella vaccine is given at 12 to 15 months and again at 4 to 6 years. "
                     "Influenza vaccination is recommended every year."),
    "med-cholesterol": ("medical", "en", "clinician", "Cholesterol and Statins",
                        "LDL cholesterol above 190 mg/dL usually calls for a statin. Statins lower the risk of heart "
                        "attack and stroke; muscle aches are the most common side effect."),
    "edu-formative": ("education", "en", "teacher", "Formative Assessment in the Classroom",
                      "Exit tickets, mini whiteboards and think-pair-share show what students understood during the "
                      "lesson so that teaching can adjust."),
    "edu-reading": ("education", "en", "teacher", "Teaching Early Reading with Phonics",
                    "Systematic phonics teaches children to connect letters and sounds. Decodable books let "
                    "beginning readers practise the patterns they have learned."),
    "edu-study": ("education", "en", "student", "Study Skills that Work",
                  "Spaced repetition and retrieval practice with flashcards beat rereading. Interleave different "
                  "kinds of problems in one session."),
}
FINANCE_EN = ["fin-etf", "fin-index", "fin-bonds", "fin-budget", "fin-mortgage"]
MEDICAL = ["med-bp", "med-diabetes", "med-asthma", "med-sleep", "med-vaccines", "med-cholesterol"]
TITLES = {doc_id: d[3] for doc_id, d in DOCS.items()}


def write_docs(root: Path) -> Path:
    for doc_id, (domain, lang, audience, title, body) in DOCS.items():
        path = root / domain / f"{doc_id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        front = (f"---\nid: {doc_id}\ntitle: \"{title}\"\ndomain: {domain}\nlanguage: {lang}\n"
                 f"audience: {audience}\ndate: 2025-01-15\n---\n")
        path.write_text(front + f"# {title}\n\n" + textwrap.fill(body, 100) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def rec_home(tmp_path_factory, models_dir):
    """A data home with the corpus above built and published once for this module (real MiniLM)."""
    from indexer.build import build
    from rag.config import load_settings

    home = tmp_path_factory.mktemp("rec-home")
    corpus = write_docs(tmp_path_factory.mktemp("rec-corpus"))
    settings = load_settings(environ={}, home=str(home), model_cache=str(models_dir),
                             recommend={"coengagement_ttl_s": 0})
    build(settings, [corpus], show_progress=False)
    return settings


@pytest.fixture(scope="module")
def snapshot(rec_home):
    from rag.published import PublishedSnapshot

    return PublishedSnapshot(rec_home).current()


@pytest.fixture
def state(tmp_path):
    store = StateDB(tmp_path / "state.duckdb")
    yield store
    store.close()


@pytest.fixture
def rec(rec_home, state):
    return Recommender(rec_home, state)


T0 = datetime(2025, 5, 1, 9, 0, tzinfo=timezone.utc)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def events(user: str, docs: list[str], etype: str = "view", start: float = 0.0, **extra) -> list[dict]:
    return [{"user_id": user, "doc_id": d, "type": etype, "timestamp": at(start + i), **extra}
            for i, d in enumerate(docs)]


def ids(result) -> list[str]:
    return [it.doc_id for it in result.items]


# --- personalized ------------------------------------------------------------------------------------------

def test_personalized_recommendations_follow_reading_and_exclude_seen(rec, snapshot):
    rec.ingest(events("ana", ["fin-etf", "fin-bonds"]))
    res = rec.recommend(snapshot, "ana", k=5)
    assert res.strategy == "personalized" and res.generation_id == snapshot.id
    assert len(res.items) == 5
    got = ids(res)
    assert not {"fin-etf", "fin-bonds"} & set(got)  # seen
    assert "fin-etf-copy" not in got  # a copy of something she read is not news
    assert got[0] in FINANCE_EN
    assert sum(d.startswith("fin-") for d in got[:3]) >= 2
    assert set(res.timings_ms) >= {"profile", "candidates", "rank", "total"}
    assert all(isinstance(it, Recommendation) and it.reason for it in res.items)

    with_seen = rec.recommend(snapshot, "ana", k=len(DOCS), exclude_seen=False)
    assert {"fin-etf", "fin-bonds"} & set(ids(with_seen))


def test_reasons_mention_real_titles_of_what_the_user_read(rec, snapshot):
    rec.ingest(events("ben", ["med-bp", "med-cholesterol"], "like"))
    res = rec.recommend(snapshot, "ben", k=4)
    because = [it.reason for it in res.items if it.reason.startswith("because you")]
    assert because, [it.reason for it in res.items]
    for reason in because:
        assert any(reason.endswith(TITLES[d]) for d in ("med-bp", "med-cholesterol")), reason
    assert any(r.startswith("because you liked ") for r in because)
    for it in res.items:
        assert it.title == TITLES[it.doc_id] and it.domain == DOCS[it.doc_id][0]


def test_dismissed_documents_are_never_recommended(rec, snapshot):
    rec.ingest(events("cy", ["fin-etf", "fin-index"]) + [
        {"user_id": "cy", "doc_id": "fin-bonds", "type": "dismiss", "timestamp": at(5)}])
    # Other users make the dismissed document popular and co-engaged with what cy read.
    for u in ("o1", "o2", "o3"):
        rec.ingest(events(u, ["fin-etf", "fin-bonds", "fin-index"], "like"))
    for kwargs in ({}, {"exclude_seen": False}, {"domain": "finance"}):
        assert "fin-bonds" not in ids(rec.recommend(snapshot, "cy", k=len(DOCS), **kwargs))


def test_co_engagement_brings_what_similar_readers_read_next(rec, snapshot):
    # Readers of the ETF explainer went on to the sleep article, an unrelated topic by content.
    for n in range(6):
        rec.ingest(events(f"r{n}", ["fin-etf", "med-sleep"], start=n * 10))
    rec.ingest(events("dee", ["fin-etf"], start=100))
    res = rec.recommend(snapshot, "dee", k=3)
    assert "med-sleep" in ids(res)
    item = next(it for it in res.items if it.doc_id == "med-sleep")
    assert item.reason == f"because you read {TITLES['fin-etf']}"


def test_profile_shifts_after_new_events(rec, snapshot):
    rec.ingest(events("eve", FINANCE_EN[:2], "view"))
    before = rec.recommend(snapshot, "eve", k=3)
    assert sum(d.startswith("fin-") for d in ids(before)) >= 2, ids(before)
    assert ids(before)[0].startswith("fin-")
    # A day later she likes several medical documents: the cached profile must be dropped and rebuilt.
    rec.ingest(events("eve", MEDICAL[:3], "like", start=60 * 24))
    after = rec.recommend(snapshot, "eve", k=3)
    assert after.strategy == "personalized"
    assert sum(d.startswith("med-") for d in ids(after)) >= 2, ids(after)
    assert ids(after)[0].startswith("med-")


def test_low_ratings_count_against(rec, snapshot):
    rec.ingest([{"user_id": "fay", "doc_id": "med-bp", "type": "rating", "value": 5, "timestamp": at(0)},
                {"user_id": "fay", "doc_id": "fin-mortgage", "type": "rating", "value": 1, "timestamp": at(1)}])
    prof = rec.profile(snapshot, "fay")
    cat = rec.catalog(snapshot)
    # Relative, not absolute: cosine ranges differ by embedder (e5 puts every pair of documents near 0.75).
    sims = cat.vectors @ prof.vector
    assert int(np.argmax(sims)) == cat.row_of["med-bp"]
    assert sims[cat.row_of["fin-mortgage"]] == sims.min()  # the disliked one is the farthest of all
    assert ids(rec.recommend(snapshot, "fay", k=3))[0].startswith("med-")


def test_ratings_on_a_configured_scale_are_normalized_for_the_profile(rec_home, state, snapshot):
    import msgspec

    from rag.config import EventsSettings
    from rag.events import RatingScale
    from rag.recommend.profile import event_weight

    half_stars = msgspec.structs.replace(rec_home, events=EventsSettings(rating_scale=(0.5, 5.0)))
    rec = Recommender(half_stars, state)
    report = rec.ingest([
        {"user_id": "gus", "doc_id": "med-bp", "type": "rating", "value": 4.5, "timestamp": at(0)},
        {"user_id": "gus", "doc_id": "fin-mortgage", "type": "rating", "value": 0.5, "timestamp": at(1)},
        {"user_id": "gus", "doc_id": "edu-study", "type": "rating", "value": 3.0, "timestamp": at(2)},
        {"user_id": "gus", "doc_id": "fin-etf", "type": "rating", "value": 6, "timestamp": at(3)}])
    assert report.accepted == 3
    assert report.rejected == [{"index": 3, "field": "value", "reason": "a rating must be from 0.5 to 5, got 6"}]
    cat = rec.catalog(snapshot)
    prof = rec.profile(snapshot, "gus")
    assert prof.liked == {cat.row_of["med-bp"]}  # 4.5 of 5 is a like, 3.0 (just above the midpoint) is not
    sims = cat.rank_vectors(rec.cfg.center_vectors) @ prof.vector
    assert int(np.argmax(sims)) == cat.row_of["med-bp"]
    assert sims[cat.row_of["fin-mortgage"]] == sims.min()  # half a star counts against
    # the same weights as 1-5 stars at the ends and the midpoint, whatever the scale
    cfg, scale = rec.cfg, RatingScale(0.5, 5.0)
    assert [event_weight("rating", v, None, cfg, scale) for v in (0.5, 2.75, 5.0)] == [-3.0, 0.0, 3.0]
    assert [event_weight("rating", v, None, cfg) for v in (1, 3, 4, 5)] == [-3.0, 0.0, 1.5, 3.0]


def test_centred_item_vectors_remove_the_shared_direction(rec, snapshot):
    cat = rec.catalog(snapshot)
    raw, centred = cat.rank_vectors(False), cat.rank_vectors(True)
    assert raw is cat.vectors and rec.cfg.center_vectors
    np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cat.mean_vector, raw.mean(axis=0), atol=1e-6)
    off = ~np.eye(cat.n, dtype=bool)
    assert (raw @ raw.T)[off].mean() > 0.5  # e5: every pair of documents far above zero
    assert abs((centred @ centred.T)[off].mean()) < 0.15  # centred: spread around zero


def test_per_domain_request_uses_that_domain(rec, snapshot):
    rec.ingest(events("gus", ["fin-etf", "fin-index", "fin-bonds"]) + events("gus", ["med-diabetes"], start=10))
    res = rec.recommend(snapshot, "gus", k=4, domain="medical")
    assert res.items and all(it.domain == "medical" for it in res.items)
    assert "med-diabetes" not in ids(res)


def test_filters_language_and_audience(rec, snapshot):
    rec.ingest(events("hal", ["fin-etf"]))
    zh = rec.recommend(snapshot, "hal", k=5, language="zh")
    assert ids(zh) == ["fin-tax-zh"]
    clinicians = rec.recommend(snapshot, "hal", k=5, audience=["clinician"])
    assert set(ids(clinicians)) == {"med-vaccines", "med-cholesterol"}


def test_events_for_unknown_documents_are_kept_and_harmless(rec, snapshot, state):
    report = rec.ingest(events("ivy", ["ghost-1", "fin-budget", "ghost-2"]))
    assert report.accepted == 3
    res = rec.recommend(snapshot, "ivy", k=5)
    assert res.strategy == "personalized" and len(res.items) == 5
    assert not any(d.startswith("ghost") for d in ids(res))
    # Only unknown documents: nothing usable here, so the user is treated as new.
    rec.ingest(events("jon", ["ghost-3"]))
    assert rec.recommend(snapshot, "jon", k=3).strategy == "trending"
    assert state.execute("SELECT count(*) FROM events WHERE doc_id LIKE 'ghost-%'").fetchone()[0] == 3
    assert rec.similar(snapshot, "fin-budget", k=3).items  # the co-engagement model ignores them too


# --- cold start --------------------------------------------------------------------------------------------

def test_unknown_user_gets_trending_per_domain(rec, snapshot):
    for u in ("p1", "p2", "p3"):
        rec.ingest(events(u, ["med-asthma", "fin-budget"], "view"))
    rec.ingest(events("p4", ["med-sleep"]))
    now = datetime.now(timezone.utc).isoformat()
    rec.ingest([{"user_id": "p5", "doc_id": "med-asthma", "type": "like", "timestamp": now}])
    res = rec.recommend(snapshot, "never-seen-before", k=3, domain="medical")
    assert res.strategy == "trending"
    assert ids(res)[:2] == ["med-asthma", "med-sleep"]
    assert all(it.domain == "medical" for it in res.items)
    assert res.items[0].reason == "popular in medical this week"
    overall = rec.trending(snapshot, k=2)
    assert overall.strategy == "trending" and ids(overall)[0] == "med-asthma"
    assert ids(rec.trending(snapshot, domain="finance", k=1)) == ["fin-budget"]


def test_trending_with_no_events_at_all_falls_back_to_new_documents(rec, snapshot):
    res = rec.recommend(snapshot, "first-visitor", k=4, domain="education")
    assert res.strategy == "trending" and len(res.items) == 3
    assert all(it.domain == "education" and it.reason == "new in education" for it in res.items)


def test_declared_interests_cold_start(rec, snapshot, state):
    upsert_user(state, "kim", interests=["asthma inhaler for children"], domains=["medical"])
    res = rec.recommend(snapshot, "kim", k=3)
    assert res.strategy == "interests"
    assert res.items[0].doc_id == "med-asthma"
    assert res.items[0].reason == "matches your interest in asthma inhaler for children"
    # Declared domains steer trending for a user without interests.
    for u in ("q1", "q2"):
        rec.ingest(events(u, ["fin-mortgage", "edu-study"]))
    upsert_user(state, "lea", domains=["education"])
    res = rec.recommend(snapshot, "lea", k=2)
    assert res.strategy == "trending" and res.items[0].doc_id == "edu-study"


def test_interests_blend_into_an_existing_profile(rec, snapshot, state):
    upsert_user(state, "max", interests=["teaching children to read"])
    rec.ingest(events("max", ["edu-formative"]))
    res = rec.recommend(snapshot, "max", k=3)
    assert res.strategy == "personalized"
    assert "edu-reading" in ids(res)


# --- more like this ----------------------------------------------------------------------------------------

def test_similar_excludes_itself_and_its_duplicates(rec, snapshot):
    res = rec.similar(snapshot, "fin-etf", k=5)
    got = ids(res)
    assert res.strategy == "similar" and len(got) == 5
    assert "fin-etf" not in got and "fin-etf-copy" not in got
    assert got[0] in ("fin-index", "fin-bonds")
    assert all(it.reason == f"similar to {TITLES['fin-etf']}" for it in res.items)
    with pytest.raises(NotFound, match="no-such-doc") as e:
        rec.similar(snapshot, "no-such-doc")
    assert e.value.field == "doc_id"


def test_similar_blends_in_co_engagement(rec, snapshot):
    for n in range(5):
        rec.ingest(events(f"s{n}", ["med-vaccines", "edu-reading"], start=n))
    res = rec.similar(snapshot, "med-vaccines", k=3)
    assert "edu-reading" in ids(res)
    item = next(it for it in res.items if it.doc_id == "edu-reading")
    assert item.reason == f"readers of {TITLES['med-vaccines']} also read this"


# --- explanations, API shape -------------------------------------------------------------------------------

def test_explainer_sets_blurbs_and_failures_are_harmless(rec, snapshot):
    rec.ingest(events("ned", ["med-sleep"], "like"))
    seen = []

    def explainer(doc, profile):
        seen.append((doc, profile))
        return f"{doc['title']} fits {profile['user_id']}."

    res = rec.recommend(snapshot, "ned", k=2, explain=True, explainer=explainer)
    assert [it.blurb for it in res.items] == [f"{it.title} fits ned." for it in res.items]
    doc, profile = seen[0]
    assert doc["text"] and doc["reason"] and profile["recent_titles"] == [TITLES["med-sleep"]]
    assert "explain" in res.timings_ms

    def broken(doc, profile):
        raise RuntimeError("generator down")

    res = rec.recommend(snapshot, "ned", k=2, explain=True, explainer=broken)
    assert len(res.items) == 2 and all(it.blurb is None for it in res.items)
    assert all(it.blurb is None for it in rec.recommend(snapshot, "ned", k=2, explainer=explainer).items)


def test_as_dict_is_json_ready(rec, snapshot):
    rec.ingest(events("ola", ["fin-etf"]))
    data = rec.recommend(snapshot, "ola", k=2).as_dict()
    json.dumps(data)
    assert set(data["items"][0]) == {"doc_id", "title", "domain", "score", "reason", "blurb"}


def test_application_wires_state_and_recommender(rec_home, snapshot):
    from rag.application import Application

    application = Application(rec_home)
    try:
        assert application.state.path == rec_home.state_db
        assert application.recommender.recommend(application.snapshot(), "nobody", k=2).strategy == "trending"
        with pytest.raises(NotFound, match="nobody") as e:
            application.user("nobody")
        assert e.value.field == "user_id"
        upsert_user(application.state, "somebody", interests=["bonds"])
        assert application.user("somebody")["interests"] == ["bonds"]
    finally:
        application.state.close()


# --- CLI -----------------------------------------------------------------------------------------------------

def test_cli_import_recommend_similar(rec_home, snapshot, tmp_path, capsys):
    from service.cli import main

    home = str(rec_home.home_path)
    users = tmp_path / "users.jsonl"
    users.write_text(json.dumps({"user_id": "cli-u", "interests": ["bond yields"]}) + "\n", encoding="utf-8")
    assert main(["--home", home, "users", "import", str(users)]) == 0
    assert "1 imported" in capsys.readouterr().out

    evs = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in events("cli-u", ["fin-etf", "fin-index"], idempotency_key=None)]
    lines.append(json.dumps({"user_id": "cli-u", "doc_id": "fin-etf", "type": "rating", "value": 11}))
    lines.append(json.dumps({"user_id": "cli-u", "doc_id": "fin-etf", "type": "like", "idempotency_key": "x"}))
    lines.append(json.dumps({"user_id": "cli-u", "doc_id": "fin-etf", "type": "like", "idempotency_key": "x"}))
    evs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["--home", home, "events", "import", str(evs)]) == 0
    out = capsys.readouterr()
    assert "3 accepted, 1 duplicates, 1 rejected" in out.out
    assert "line 3: value:" in out.err

    assert main(["--home", home, "recommend", "cli-u", "--k", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["strategy"] == "personalized" and len(data["items"]) == 3
    assert not {"fin-etf", "fin-index"} & {it["doc_id"] for it in data["items"]}

    assert main(["--home", home, "recommend", "cli-u", "--domain", "medical", "--k", "2"]) == 0
    text = capsys.readouterr().out
    assert "recommendations for cli-u" in text and "[medical]" in text

    assert main(["--home", home, "similar", "fin-bonds", "--k", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["strategy"] == "similar" and "fin-bonds" not in [it["doc_id"] for it in data["items"]]

    assert main(["--home", home, "similar", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


# --- generated blurbs (explain=true) ----------------------------------------------------------------------

class _Scripted:
    """A generator backend that answers from a script, to drive the blurb checks deterministically."""

    name = "scripted"

    def __init__(self, reply):
        self.reply = reply
        self.batches = []

    def generate(self, messages, *, max_new_tokens, temperature=0.0):
        return self.generate_batch([messages], max_new_tokens=max_new_tokens)[0]

    def stream(self, messages, *, max_new_tokens, temperature=0.0):
        yield self.generate(messages, max_new_tokens=max_new_tokens)

    def generate_batch(self, batch, *, max_new_tokens):
        self.batches.append(batch)
        return [self.reply(m[-1]["content"]) for m in batch]


def _writer(rec_home, snapshot, reply):
    from rag.generators.base import GeneratorPool
    from rag.recommend.blurbs import BlurbWriter

    pool = GeneratorPool(rec_home.generator, rec_home.models_dir)
    backend = _Scripted(reply)
    pool.register("scripted", backend)
    return BlurbWriter(pool, embedder=snapshot.embedder, backend="scripted"), backend


def test_blurbs_come_from_the_generator_in_one_batch_when_grounded(rec_home, rec, snapshot):
    rec.ingest(events("gil", ["fin-etf", "fin-index"], "like"))

    def reply(prompt):
        if "Bond Yields" in prompt:
            return "You will see why bond prices fall when interest rates rise [1]. Then more text."
        return "You get a short guide to fixed and variable mortgage rates and monthly payments."

    writer, backend = _writer(rec_home, snapshot, reply)
    res = rec.recommend(snapshot, "gil", k=3, domain="finance", explain=True, explainer=writer)
    assert len(backend.batches) == 1 and len(backend.batches[0]) == len(res.items)  # one batch per list
    prompt = backend.batches[0][0][-1]["content"]
    assert "Exchange-Traded Funds Explained" in prompt or "Index Funds" in prompt  # the reader's history
    by_id = {it.doc_id: it.blurb for it in res.items}
    if "fin-bonds" in by_id:  # the first sentence only, citation markers removed
        assert by_id["fin-bonds"] == "You will see why bond prices fall when interest rates rise."
    if "fin-mortgage" in by_id:
        assert by_id["fin-mortgage"].startswith("You get a short guide to fixed and variable mortgage")
    assert {"fin-bonds", "fin-mortgage"} & set(by_id)


def test_unsupported_or_failed_blurbs_fall_back_to_the_documents_opening(rec_home, snapshot):
    from rag.generators.base import GeneratorError

    docs = [{**snapshot.document("fin-bonds"), "reason": "popular in finance this week"},
            {**snapshot.document("med-bp"), "reason": "popular in medical this week"}]
    summary = {"recent_titles": [], "interests": [], "domains": ["finance"]}
    invented = {
        "figures": "You will earn a guaranteed 12% return every year with these bonds.",
        "off-topic": "You will love this thrilling story about pirates sailing across distant oceans.",
        "too short": "Read this.",
    }
    for case, text in invented.items():
        writer, _ = _writer(rec_home, snapshot, lambda prompt, text=text: text)
        blurbs = writer.blurbs(docs, summary)
        assert [b.source for b in blurbs] == ["document", "document"], case
        assert blurbs[0].text.startswith("A bond pays a fixed coupon."), case

    def down(prompt):
        raise GeneratorError("server unreachable")

    writer, _ = _writer(rec_home, snapshot, down)
    assert [b.source for b in writer.blurbs(docs, summary)] == ["document", "document"]


@pytest.mark.slow
def test_smollm2_blurbs_are_grounded_or_replaced(rec_home, snapshot):
    """The real default generator: whatever it writes, a shown blurb is a checked sentence or the opening."""
    from rag.generators.base import GeneratorPool
    from rag.grounding import Evidence, Passage
    from rag.recommend.blurbs import BlurbWriter, lead_sentences

    pool = GeneratorPool(rec_home.generator, rec_home.models_dir)
    writer = BlurbWriter(pool, embedder=snapshot.embedder)  # the configured backend: transformers (SmolLM2)
    docs = [{**snapshot.document(d), "reason": "matches your interest in saving"} for d in ("fin-budget", "med-sleep")]
    blurbs = writer.blurbs(docs, {"recent_titles": [], "interests": ["saving money"], "domains": []})
    for doc, b in zip(docs, blurbs):
        assert b is not None and b.text
        if b.source == "document":
            assert b.text == lead_sentences(doc)
        else:
            source = f"{doc['title']}\n{doc['text']}\n{doc['reason']}\nsaving money"
            evidence = Evidence([Passage(1, doc["doc_id"], "", doc["title"], source, 1.0)], snapshot.embedder)
            assert evidence.verdict(b.text).supported, b.text
            assert 6 <= len(b.text.split()) <= 45
