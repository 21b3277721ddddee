"""Retrieval over the bundled Chinese documents, RRF, MMR, per-document caps, generation hot swap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, make_settings, write_corpus
from indexer.build import build
from rag import snapshot_files
from rag.application import Application
from rag.published import PublishedSnapshot, NoSnapshot
from rag.retriever import rrf
from rag.types import Filters


@pytest.fixture(scope="module")
def chinese_docs(tmp_path_factory):
    """The bundled Chinese documents of data/, on their own (small and fast to index)."""
    src = tmp_path_factory.mktemp("zh")
    for path in sorted((REPO / "data" / "documents").glob("*/*-zh-*.md")):
        dest = src / path.parent.name / path.name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(path, dest)
    assert len(list(src.rglob("*.md"))) >= 10
    return src


def _application(tmp_path_factory, models_dir, src, **over):
    settings = make_settings(tmp_path_factory.mktemp("zh-home"), models_dir, **over)
    build(settings, [src], show_progress=False)
    return Application(settings)


@pytest.fixture(scope="module")
def chinese_application(tmp_path_factory, models_dir, chinese_docs):
    return _application(tmp_path_factory, models_dir, chinese_docs)  # the default embedder, e5-small


@pytest.fixture(scope="module")
def chinese_minilm_application(tmp_path_factory, models_dir, chinese_docs):
    return _application(tmp_path_factory, models_dir, chinese_docs, embedder="minilm")


@pytest.mark.parametrize("query, expected", [
    ("专项附加扣除 子女教育", "fin-zh-special-deductions"),
    ("住房公积金贷款", "fin-zh-housing-provident-fund"),
    ("电信诈骗", "fin-zh-telecom-fraud"),
    ("海姆立克急救法", "med-zh-heimlich"),
    ("失眠", "med-zh-insomnia"),
    ("错题本", "edu-zh-wrong-question-notebook"),
])
def test_keyword_leg_finds_bundled_chinese_documents(chinese_application, query, expected):
    res = chinese_application.search(query, mode="keyword", top_k=3)
    assert res.hits, query
    assert res.hits[0].doc_id == expected
    assert res.hits[0].keyword_score > 0


@pytest.mark.parametrize("query, expected", [
    ("孩子上学可以少交个税吗", "fin-zh-special-deductions"),
    ("有人噎住了不能呼吸怎么急救", "med-zh-heimlich"),
    ("晚上总是睡不着觉", "med-zh-insomnia"),
])
def test_default_embedder_reads_chinese_questions(chinese_application, query, expected):
    """e5-small's dense leg alone finds the document for a Chinese paraphrase that shares few keywords."""
    assert chinese_application.snapshot().manifest.embedder.name == "e5-small"
    res = chinese_application.search(query, mode="dense", top_k=3)
    assert expected in [h.doc_id for h in res.hits], [h.doc_id for h in res.hits]


def test_hybrid_with_an_english_only_embedder_lets_keywords_rank_chinese_queries(chinese_minilm_application):
    """MiniLM's cosines between Chinese texts are noise: for a Chinese query its dense leg must not reorder."""
    chinese_application = chinese_minilm_application
    assert chinese_application.snapshot().manifest.embedder.name == "minilm"
    for query in ("孩子上学的个税扣除怎么申请", "晚上睡不着怎么办", "接到自称公安的电话要我转账"):
        snapshot, search = chinese_application.snapshot(), chinese_application.retriever.search
        keyword = [h.chunk_id for h in search(snapshot, query, mode="keyword", top_k=5, max_per_doc=0).hits]
        hybrid = search(snapshot, query, mode="hybrid", top_k=5, max_per_doc=0).hits
        assert keyword and [h.chunk_id for h in hybrid][:len(keyword)] == keyword, query
        assert all(h.dense_rank is not None or h.keyword_rank is not None for h in hybrid)


def test_whitespace_tokenizing_would_have_failed(chinese_application):
    """The segmenter is what makes Chinese match: the whole sentence as one token finds nothing."""
    snapshot = chinese_application.snapshot()
    assert snapshot.sql("SELECT count(*) FROM terms WHERE term = '诈骗'").fetchone()[0] == 1
    assert snapshot.sql("SELECT count(*) FROM terms WHERE length(term) > 12 AND regexp_matches(term, '[一-鿿]')"
                   ).fetchone()[0] == 0


def test_rrf_rewards_agreement():
    fused = rrf([[1, 2, 3], [3, 1, 4]], k=60)
    assert max(fused, key=fused.get) == 1
    assert fused[3] > fused[2] and fused[4] < fused[2]


def test_max_per_doc_and_mmr(application):
    capped = application.retriever.search(application.snapshot(), "blood pressure measurement treatment", top_k=10,
                                     max_per_doc=1)
    docs = [h.doc_id for h in capped.hits]
    assert len(docs) == len(set(docs))
    diverse = application.search("blood pressure", top_k=3, mmr_lambda=0.3)
    assert len({h.doc_id for h in diverse.hits}) == 3


def test_bad_mode_is_a_clear_error(application):
    with pytest.raises(ValueError, match="mode must be one of"):
        application.search("x", mode="semantic")


def test_rerank_requires_a_configured_model(application):
    with pytest.raises(ValueError, match="no reranker configured"):
        application.search("blood pressure", rerank=True)


def test_handle_swaps_to_newly_published_generation(tmp_path, models_dir):
    src = write_corpus(tmp_path / "src")
    settings = make_settings(tmp_path / "home", models_dir)
    handle = PublishedSnapshot(settings, poll_s=0)
    with pytest.raises(NoSnapshot):
        handle.current()
    first = build(settings, [src], show_progress=False).generation_id
    old = handle.current()
    assert old.id == first
    (src / "finance" / "budget.md").write_text("---\nid: fin-budget\ndomain: finance\n---\n# Budget\n"
                                               "The 50/30/20 budget splits income into needs, wants and savings.\n")
    second = build(settings, [src], show_progress=False).generation_id
    new = handle.current()
    assert new.id == second and handle.swaps == 1
    # a request that grabbed the old generation keeps working on it, unmixed
    assert old.document("fin-budget") is None and new.document("fin-budget") is not None
    assert Application(settings, published=handle).search("50/30/20 needs wants", snapshot=old).generation_id == first
    snapshot_files.publish(settings.home_path, first)  # rollback is just another publish
    assert handle.current().id == first


def test_zscore_fusion_keeps_score_gaps():
    from rag.retriever import zscore_fuse

    # dense is confident about row 1; keyword barely prefers row 2 over 1: the confident leg wins
    dense = [(1, 0.90), (2, 0.40), (3, 0.38)]
    keyword = [(2, 10.1), (1, 10.0), (4, 2.0)]
    fused = zscore_fuse([dense, keyword], [0.5, 0.5])
    assert max(fused, key=fused.get) == 1
    # a row found by one leg only is ranked with that leg's floor for the other, not dropped
    assert set(fused) == {1, 2, 3, 4}
    assert fused[1] > fused[2] > fused[3] >= fused[4]
    # a leg's weakest hit still counts for more than absence from that leg
    tie = zscore_fuse([[(1, 0.9), (2, 0.5), (3, 0.5)], [(1, 3.0), (2, 1.0)]], [0.5, 0.5])
    assert tie[2] > tie[3]
    assert zscore_fuse([[], []], [0.5, 0.5]) == {}


def test_faiss_filter_path_matches_exact_search_on_the_subset(application, monkeypatch):
    """Large filtered subsets search FAISS with a cached bitmap selector: same rows as exact search."""
    import numpy as np

    import rag.snapshot as generation_mod

    snapshot = application.snapshot()
    monkeypatch.setattr(generation_mod, "EXACT_SUBSET_MAX", 0)  # small test index: force the FAISS path
    qvec = snapshot.embed_query("blood pressure at home")
    for filters in (Filters(domain=["medical"]), Filters(domain=["finance", "education"]), Filters(language=["en"])):
        allowed = snapshot.allowed_rows(filters)
        exact = np.asarray(snapshot.vectors[allowed]) @ qvec
        want = [int(allowed[i]) for i in np.argsort(-exact)[:5]]
        got = snapshot.dense(qvec, 5, filters)
        assert [r for r, _ in got] == want, filters
        assert set(r for r, _ in snapshot.dense(qvec, 100, filters)) <= set(allowed.tolist())
        assert snapshot._selector(filters, allowed) is snapshot._selector(filters, allowed)  # cached per filter


def test_feedback_searches_again_when_the_legs_agree_under_the_same_filters(application):
    """Hybrid pseudo-relevance feedback: when both legs rank the same document first, the dense leg searches again
    from the query moved toward that passage, under the request's filters; the abstention cosine stays the
    query's own."""
    import msgspec
    import numpy as np

    from rag.retriever import Retriever, feedback_query

    snapshot = application.snapshot()
    query, filters = "blood pressure at home", Filters(domain=["medical"])
    qvec = snapshot.embed_query(query)
    dense, keyword = snapshot.dense(qvec, 100, filters), snapshot.keyword(query, 100, filters)
    assert snapshot.chunk_doc_rows[dense[0][0]] == snapshot.chunk_doc_rows[keyword[0][0]]  # the legs agree
    res = application.retriever.search(snapshot, query, filters=filters, top_k=20, max_per_doc=0)
    assert "feedback_ms" in res.timings_ms
    assert {h.metadata["domain"] for h in res.hits} == {"medical"}
    q2 = feedback_query(qvec, snapshot.chunk_vector(dense[0][0]), application.settings.retrieval.feedback_weight)
    moved = {r: s for r, s in snapshot.dense(q2, 100, filters)}
    scored = [h for h in res.hits if h.dense_score is not None]
    assert scored and all(abs(h.dense_score - moved[h.row]) < 1e-5 for h in scored)
    assert res.top_dense_score == pytest.approx(dense[0][1])
    off = Retriever(msgspec.structs.replace(application.settings.retrieval, feedback_weight=0.0))
    plain = off.search(snapshot, query, filters=filters, top_k=20, max_per_doc=0)
    assert "feedback_ms" not in plain.timings_ms
    assert all(abs(h.dense_score - float(np.dot(snapshot.chunk_vector(h.row), qvec))) < 1e-5
               for h in plain.hits if h.dense_score is not None)


PHRASE_DOCS = {
    "finance/deal-costs.md": ("fin-deal-costs", "finance", "en", ["costs"], "2024-01-01", """
        # Deal costs in 2019
        Acquisition and integration costs rose in 2019 after the company closed two deals.
        """),
    "finance/plant.md": ("fin-plant", "finance", "en", ["costs"], "2024-01-01", """
        # The new plant
        Integration work at the plant raised costs; the acquisition of land was delayed.
        """),
    "medical/clinic-costs.md": ("med-clinic-costs", "medical", "en", ["costs"], "2024-01-01", """
        # Clinic mergers
        Acquisition and integration costs of clinic mergers fall on patients.
        """),
    **{f"finance/other-{i}.md": (f"fin-other-{i}", "finance", "en", [], "2024-01-01", f"""
        # Note {i}
        {text}
        """) for i, text in enumerate([
            "Operating costs fell as freight prices eased.", "The acquisition closed in March.",
            "Systems integration took longer than planned.", "Costs of capital rose with interest rates.",
            "Customer acquisition spending doubled.", "Integration testing found no defects."])},
}


@pytest.fixture(scope="module")
def phrase_application(tmp_path_factory, models_dir):
    src = write_corpus(tmp_path_factory.mktemp("phrase-docs"), PHRASE_DOCS)
    settings = make_settings(tmp_path_factory.mktemp("phrase-home"), models_dir)
    build(settings, [src], show_progress=False)
    return Application(settings)


def test_phrase_leg_ranks_the_passage_that_holds_the_question_s_phrase(phrase_application):
    """The keyword index holds adjacent term pairs; hybrid search adds a leg over the query's pairs, under the
    same filters, so the passage with "acquisition and integration costs" outranks one holding the words apart
    (more often), which the word leg alone prefers."""
    import msgspec

    from rag.retriever import Retriever
    from rag.text import KEYWORD_TERMS, keyword_terms, tokenize

    assert keyword_terms("Acquisition and integration costs, 个人所得税") == [
        "acquisit", "integr", "cost", "个人", "所得", "所得税", "个人所得税", "acquisit integr", "integr cost"]
    assert tokenize("Acquisition and integration costs") == ["acquisit", "integr", "cost"]
    app = phrase_application
    snapshot = app.snapshot()
    assert snapshot.manifest.keyword_terms == KEYWORD_TERMS
    query, finance = "What were the acquisition and integration costs?", Filters(domain=["finance"])
    docs = lambda rows: [snapshot.chunks([r])[r]["doc_id"] for r, _ in rows]  # noqa: E731
    assert docs(snapshot.keyword(query, 10, finance))[0] == "fin-plant"  # the words alone: a near tie
    assert docs(snapshot.keyword(query, 10, finance, pairs=True)) == ["fin-deal-costs"]  # filters hold here too
    assert sorted(docs(snapshot.keyword(query, 10, pairs=True))) == ["fin-deal-costs", "med-clinic-costs"]
    margin = lambda res: res.hits[0].score - res.hits[1].score  # noqa: E731
    hybrid = app.retriever.search(snapshot, query, filters=finance, top_k=2)
    off = Retriever(msgspec.structs.replace(app.settings.retrieval, phrase_weight=0.0))
    plain = off.search(snapshot, query, filters=finance, top_k=2)
    assert [h.doc_id for h in hybrid.hits] == [h.doc_id for h in plain.hits] == ["fin-deal-costs", "fin-plant"]
    assert margin(hybrid) > margin(plain) + 0.15  # the phrase leg's own lead (weight 0.4 x half a deviation)


def test_a_generation_without_pairs_searches_its_terms(phrase_application, tmp_path):
    """Generations written before term pairs were indexed say so in their manifest: no pair is looked up."""
    import json

    from rag.snapshot import Snapshot

    snapshot = phrase_application.snapshot()
    old = tmp_path / snapshot.id
    shutil.copytree(snapshot.path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["keyword_terms"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    legacy = Snapshot(old, phrase_application.settings.models_dir)
    try:
        query = "acquisition and integration costs"
        assert legacy.manifest.keyword_terms == "terms"
        assert legacy.keyword(query, 10, pairs=True) == []
        assert legacy.keyword(query, 10) == snapshot.keyword(query, 10)
    finally:
        legacy.close()


def test_neighbourhood_rerank_lifts_the_company_of_the_best_and_keeps_the_head():
    """A candidate whose nearest fellow candidates score well, and that resembles the best ones, rises past an
    isolated candidate the legs scored a little higher; the first documents' passages keep their places."""
    import numpy as np

    from rag.retriever import neighbourhood_rerank

    def unit(*xs):
        v = np.zeros(8, dtype=np.float32)
        for i, x in xs:
            v[i] = x
        return v / np.linalg.norm(v)

    topic = [unit((0, 1.0), (j, 0.15)) for j in range(1, 6)]  # five passages on one topic
    lone = unit((7, 1.0))  # a passage on nothing like them
    fused = [(10, 3.0), (11, 2.9), (12, 1.0), (13, 0.9), (14, 0.8), (15, 0.7)]
    vectors = np.stack([topic[0], topic[1], lone, topic[2], topic[3], topic[4]])
    ranked = neighbourhood_rerank(fused, vectors, weight=0.75, neighbours=2, centroid_weight=1.0, keep_docs=[0, 1],
                                  depth=100)
    rows = [r for r, _ in ranked]
    assert rows[:2] == [10, 11]  # the head stays
    assert rows.index(13) < rows.index(12) and rows.index(14) < rows.index(12)  # the topic's passages pass it
    assert rows[-1] == 12
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)  # scores say the order
    # with no weight nothing moves
    still = neighbourhood_rerank(fused, vectors, weight=0.0, neighbours=2, centroid_weight=0.0, keep_docs=[0, 1],
                                 depth=100)
    assert [r for r, _ in still] == [r for r, _ in fused]
    assert neighbourhood_rerank([], vectors[:0], weight=0.75, neighbours=2, centroid_weight=1.0, keep_docs=[],
                                depth=100) == []
    # a head passage the neighbourhood would sink is lifted just above the rest, in its place
    sunk = neighbourhood_rerank([(1, 3.0), (2, 2.9), (3, 2.8), (4, 2.7)],
                                np.stack([lone, topic[0], topic[1], topic[2]]), weight=0.75, neighbours=2,
                                centroid_weight=1.0, keep_docs=[0, 1], depth=100)
    assert [r for r, _ in sunk][:2] == [1, 2]
    assert sunk[0][1] > sunk[1][1] > sunk[2][1]


def test_neighbourhood_reranking_keeps_filters_and_the_head_and_answers_skip_it(application):
    """On the real index: the re-ranking reorders only the filtered candidates below the first two documents,
    and `neighbourhood=False` (what answers ask for) is the fused order alone."""
    import msgspec

    from rag.retriever import Retriever

    snapshot = application.snapshot()
    query, filters = "how to lower blood pressure", Filters(domain=["medical"])
    on = application.retriever.search(snapshot, query, filters=filters, top_k=50, max_per_doc=0)
    off = application.retriever.search(snapshot, query, filters=filters, top_k=50, max_per_doc=0,
                                       neighbourhood=False)
    assert "neighbourhood_ms" in on.timings_ms and "neighbourhood_ms" not in off.timings_ms
    assert {h.metadata["domain"] for h in on.hits} == {"medical"}
    assert sorted(h.row for h in on.hits) == sorted(h.row for h in off.hits)  # the same candidates, reordered
    head = lambda res: list(dict.fromkeys(h.doc_id for h in res.hits))[:2]  # noqa: E731
    assert head(on) == head(off)
    assert [h.score for h in on.hits] == sorted((h.score for h in on.hits), reverse=True)
    unweighted = Retriever(msgspec.structs.replace(application.settings.retrieval, neighbour_weight=0.0,
                                                   centroid_weight=0.0))
    plain = unweighted.search(snapshot, query, filters=filters, top_k=50, max_per_doc=0)
    assert [(h.row, h.score) for h in plain.hits] == [(h.row, h.score) for h in off.hits]
    assert [h.row for h in on.hits] != [h.row for h in off.hits]  # it does reorder this query's candidates
    # a filter nothing passes: no candidates, no error
    nothing = Filters(domain=["medical"], language=["xx"])
    assert application.retriever.search(snapshot, query, filters=nothing).hits == []
