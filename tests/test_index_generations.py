"""Index generations: build, verify, publish, incremental rebuild, deletion, rollback, gc, crash safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import faiss
import pytest

from conftest import REPO, SMALL_CORPUS, make_settings, write_corpus
from indexer.build import BuildLock, BuildLocked, build
from rag import snapshot_files
from rag.application import Application
from rag.snapshot import Snapshot
from rag.types import Filters
from service.cli import main as cli


def test_build_writes_a_verified_published_generation(built_home):
    settings, report = built_home
    home = settings.home_path
    assert snapshot_files.read_pointer(home) == report.generation_id
    gen_dir = snapshot_files.snapshot_dir(home, report.generation_id)
    m = snapshot_files.read_manifest(gen_dir)
    assert m.counts.documents == len(SMALL_CORPUS) == report.documents
    assert m.counts.chunks == report.chunks >= len(SMALL_CORPUS)
    assert m.embedder.name == "e5-small" and m.embedder.dim == 384  # the default embedder
    assert m.index_type == "flat"
    assert set(m.checksums) == {snapshot_files.META_DB, snapshot_files.FAISS_FILE, snapshot_files.VECTORS_FILE,
                                snapshot_files.DOC_VECTORS_FILE}
    assert len(m.source_fingerprint) == 64
    assert faiss.read_index(str(gen_dir / snapshot_files.FAISS_FILE)).ntotal == m.counts.chunks
    con = duckdb.connect(str(gen_dir / snapshot_files.META_DB), read_only=True)
    rows = con.execute("SELECT row FROM chunks ORDER BY row").fetchall()
    assert [r[0] for r in rows] == list(range(m.counts.chunks))  # FAISS row ids are the chunk rows
    langs = dict(con.execute("SELECT doc_id, language FROM documents").fetchall())
    assert langs["fin-tax-zh"] == "zh" and langs["fin-etf"] == "en"
    # the table was kept whole with its header row
    table = con.execute("SELECT text FROM chunks WHERE kind = 'table'").fetchall()
    assert table and "| Term |" in table[0][0] and "30 years" in table[0][0]
    con.close()
    assert not [p for p in snapshot_files.snapshots_dir(home).iterdir() if p.name.startswith(".tmp-")]


def test_keyword_leg_scores_chinese(application):
    res = application.search("专项附加扣除 住房贷款利息", mode="keyword", top_k=3)
    assert res.hits and res.hits[0].doc_id == "fin-tax-zh"
    assert res.hits[0].keyword_score > 0
    res = application.search("高血压 测量", mode="keyword", top_k=3)
    assert res.hits[0].doc_id == "med-hypertension-zh"


def test_filters_apply_inside_both_legs(application):
    snapshot = application.snapshot()
    for mode in ("dense", "keyword", "hybrid"):
        # a query that matches finance best, filtered to medical: every hit must still be medical
        res = application.search("ETF expense ratio rebalancing blood pressure", mode=mode,
                            filters=Filters(domain=["medical"]), top_k=10)
        assert res.hits, mode
        assert {h.metadata["domain"] for h in res.hits} == {"medical"}, mode
        res = application.search("mortgage rates 分数 住房贷款", mode=mode, filters=Filters(language=["zh"]), top_k=10)
        assert {h.metadata["language"] for h in res.hits} == {"zh"}, mode
        res = application.search("vaccination", mode=mode, filters=Filters(date_from="2025-01-01"), top_k=10)
        assert all(h.metadata["date"] >= "2025-01-01" for h in res.hits), mode
        assert "med-vaccines" not in {h.doc_id for h in res.hits}
        res = application.search("rates", mode=mode, filters=Filters(tags=["mortgage"]), top_k=10)
        assert {h.doc_id for h in res.hits} == {"fin-mortgage"}, mode
    # the dense leg is filtered before truncation: with k=1 a filtered search still finds the medical doc
    qvec = snapshot.embed_query("index funds and ETFs")
    education = Filters(domain=["education"])
    assert snapshot.dense(qvec, 1, education)[0][0] in snapshot.allowed_rows(education)


def test_hybrid_fuses_both_legs(application):
    res = application.search("How often should I rebalance my ETF portfolio?", mode="hybrid", top_k=5)
    assert res.hits[0].doc_id == "fin-etf"
    assert res.hits[0].dense_rank is not None and res.hits[0].keyword_rank is not None


def _search_all_modes(application, query):
    return {mode: {h.doc_id for h in application.search(query, mode=mode, top_k=20).hits}
            for mode in ("dense", "keyword", "hybrid")}


def test_rebuild_reuses_vectors_and_reflects_changes(tmp_path, models_dir):
    src = write_corpus(tmp_path / "src")
    settings = make_settings(tmp_path / "home", models_dir)
    first = build(settings, [src], show_progress=False)
    assert first.vectors_reused == 0

    unchanged = build(settings, [src], show_progress=False)
    assert unchanged.unchanged and not unchanged.published and unchanged.generation_id == first.generation_id
    assert snapshot_files.read_pointer(settings.home_path) == first.generation_id
    assert len(snapshot_files.list_snapshots(settings.home_path)) == 1  # nothing written

    again = build(settings, [src], show_progress=False, force=True)
    assert again.vectors_reused == again.chunks == first.chunks and not again.unchanged
    assert again.generation_id != first.generation_id
    assert snapshot_files.read_pointer(settings.home_path) == again.generation_id

    # metadata alone is a change: a new generation, with every vector reused
    vacc = src / "medical" / "vaccines.md"
    vacc.write_text(vacc.read_text().replace("audience: general", "audience: parents"),
                    encoding="utf-8")
    meta = build(settings, [src], show_progress=False)
    assert not meta.unchanged and meta.vectors_reused == meta.chunks

    # delete one document, change another, add a third
    (src / "medical" / "vaccines.md").unlink()
    etf = src / "finance" / "etf-basics.md"
    etf.write_text(etf.read_text().replace("below 0.2 percent", "below 0.1 percent"), encoding="utf-8")
    (src / "education" / "phonics.md").write_text(
        "---\nid: edu-phonics\ntitle: Phonics\ndomain: education\n---\n# Phonics\n"
        "Systematic synthetic phonics teaches children to blend letter sounds into words.\n", encoding="utf-8")
    third = build(settings, [src], show_progress=False)
    assert 0 < third.vectors_reused < third.chunks
    assert third.vectors_embedded >= 2  # the changed chunk(s) and the new document

    application = Application(settings)
    snapshot = application.snapshot()
    assert snapshot.id == third.generation_id
    assert snapshot.document("med-vaccines") is None
    for query in ("MMR vaccine measles mumps rubella doses", "influenza vaccination every year"):
        for mode, docs in _search_all_modes(application, query).items():
            assert "med-vaccines" not in docs, (mode, query)
    assert snapshot.sql("SELECT count(*) FROM chunks WHERE doc_id = 'med-vaccines'").fetchone()[0] == 0
    assert "edu-phonics" in _search_all_modes(application, "synthetic phonics blending")["hybrid"]
    assert "0.1 percent" in snapshot.document("fin-etf")["text"]


def test_rollback_gc_and_cli(tmp_path, models_dir, capsys, monkeypatch):
    src = write_corpus(tmp_path / "src")
    settings = make_settings(tmp_path / "home", models_dir)
    monkeypatch.setenv("RAG_MODEL_CACHE", str(models_dir))
    home = ["--home", str(settings.home_path)]
    assert cli([*home, "index", "build", str(src), "--quiet"]) == 0
    capsys.readouterr()
    assert cli([*home, "index", "build", str(src)]) == 0
    assert "nothing changed" in capsys.readouterr().err
    assert cli([*home, "index", "build", str(src), "--json", "--force"]) == 0
    out = capsys.readouterr().out
    second = json.loads(out[out.index("{"):])
    assert second["vectors_reused"] == second["chunks"]
    ids = [m.id for m in snapshot_files.list_snapshots(settings.home_path)]
    assert snapshot_files.read_pointer(settings.home_path) == ids[0] == second["generation_id"]

    assert cli([*home, "index", "rollback"]) == 0
    assert snapshot_files.read_pointer(settings.home_path) == ids[1]
    capsys.readouterr()
    assert cli([*home, "index", "rollback", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli([*home, "index", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == ids[1]

    # gc keeps the newest N and always the published one
    assert cli([*home, "index", "gc", "--keep", "1"]) == 0
    left = {m.id for m in snapshot_files.list_snapshots(settings.home_path)}
    assert left == {ids[0], ids[1]}  # ids[1] is published, so it survives beside the newest
    assert cli([*home, "index", "build", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_bad_sources_are_reported_not_fatal(tmp_path, models_dir):
    src = write_corpus(tmp_path / "src", {k: v for k, v in list(SMALL_CORPUS.items())[:2]})
    (src / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (src / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    report = build(make_settings(tmp_path / "home", models_dir), [src], show_progress=False)
    assert report.documents == 2
    skipped = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(skipped) == {"broken.pdf", "latin1.txt"}
    assert all(skipped.values())


def test_one_build_at_a_time(tmp_path, models_dir):
    settings = make_settings(tmp_path / "home", models_dir)
    with BuildLock(settings.home_path):
        with pytest.raises(BuildLocked, match="another index build"):
            build(settings, [write_corpus(tmp_path / "src")], show_progress=False)


def _build_cmd(src: Path, home: Path, models: Path) -> tuple[list[str], dict]:
    # Small encoder batches: the cache is written every 8 batches, so the embed stage spans several writes and
    # the test can catch it between two of them.
    env = {**os.environ, "RAG_HOME": str(home), "RAG_MODEL_CACHE": str(models), "PYTHONUNBUFFERED": "1",
           "RAG_INDEX__BATCH_SIZE": "2"}
    return [sys.executable, "-m", "service.cli", "index", "build", str(src), "--quiet"], env


@pytest.mark.slow
@pytest.mark.parametrize("kill_when", ["embedding", "writing"])
def test_killed_build_leaves_published_generation_serving(tmp_path, models_dir, kill_when):
    src = write_corpus(tmp_path / "src")
    # enough text that the embed and write stages take a moment
    for i in range(24):
        (src / "education" / f"filler-{i}.md").write_text(
            f"---\nid: filler-{i}\ndomain: education\n---\n# Filler {i}\n" +
            " ".join(f"Sentence {j} about topic {i} and lesson planning number {j}." for j in range(40)),
            encoding="utf-8")
    home = tmp_path / "home"
    settings = make_settings(home, models_dir)
    published = build(settings, [tmp_path / "src" / "finance"], show_progress=False).generation_id

    cmd, env = _build_cmd(src, home, models_dir)
    log = open(tmp_path / "build.log", "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    gens = snapshot_files.snapshots_dir(home)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            tmp = [p for p in gens.iterdir() if p.name.startswith(".tmp-")]
            # Never open the cache from here: a reader's lock would make the build fail, not us.
            wal = settings.cache_dir / "embeddings.duckdb.wal"
            if kill_when == "embedding" and tmp and wal.exists() and wal.stat().st_size > 0:
                break
            if kill_when == "writing" and tmp and (tmp[0] / snapshot_files.META_DB).exists():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the build ended before it could be killed: " + \
            (tmp_path / "build.log").read_text(errors="replace")[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)

    # the published generation is untouched and still serves
    assert snapshot_files.read_pointer(home) == published
    application = Application(settings)
    assert application.search("mortgage fixed rate", top_k=3).hits[0].doc_id == "fin-mortgage"
    # the next build cleans up and succeeds, reusing what the killed one embedded
    report = build(settings, [src], show_progress=False)
    assert snapshot_files.read_pointer(home) == report.generation_id
    assert not [p for p in gens.iterdir() if p.name.startswith(".tmp-")]
    if kill_when == "embedding":
        assert report.vectors_reused > 0


def test_index_build_makes_no_network_access(tmp_path, models_dir, monkeypatch):
    """Block every socket in this process, drop cached models, and run a whole build plus a query."""
    from rag.models import embedders

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(embedders, "_cache", {})
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)  # must hold without the environment's help

    settings = make_settings(tmp_path / "home", models_dir)
    report = build(settings, [write_corpus(tmp_path / "src")], show_progress=False)
    assert report.documents == len(SMALL_CORPUS)
    assert Application(settings).search("blood pressure cuff", top_k=1).hits[0].doc_id == "med-hypertension"
    assert attempts == []


def test_generation_ids_sort_in_build_order_within_one_second():
    """Listings (newest first) and `rag index rollback` (the previous one) go by id: two builds started a few
    milliseconds apart must not be ordered by their random suffix."""
    from indexer.build import new_snapshot_id

    ids = []
    for _ in range(5):
        ids.append(new_snapshot_id())
        time.sleep(0.002)
    assert sorted(ids) == ids and len(set(ids)) == 5
