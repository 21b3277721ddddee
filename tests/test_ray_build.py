"""Index builds on Ray Data (`engine="ray"`) against a real local Ray instance (2 CPUs, loopback only).

A Ray build of the shared small corpus into a fresh data home makes the same generation as the local build
(documents, chunk ids, texts; vectors within 1e-5), fills that home's embedding cache, publishes a generation
that serves, and a second Ray build with nothing changed writes nothing. Marked `ray` (`-m "not ray"` skips it);
`.ci/run` runs it.
"""

from __future__ import annotations

import subprocess
import sys

import duckdb
import numpy as np
import pytest

from rag import snapshot_files
from tests.conftest import REPO, make_settings

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'; scripts/setup does it)")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=150 * 2**20,
             log_to_driver=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    yield
    ray.shutdown()


def _generation(settings):
    gen_id = snapshot_files.read_pointer(settings.home_path)
    gen = snapshot_files.snapshot_dir(settings.home_path, gen_id)
    con = duckdb.connect(str(gen / snapshot_files.META_DB), read_only=True)
    try:
        docs = con.execute("SELECT doc_id, content_hash, n_chunks FROM documents ORDER BY doc_id").fetchall()
        chunks = con.execute("SELECT chunk_id, doc_id, text FROM chunks ORDER BY chunk_id").fetchall()
        rows = {cid: r for r, cid in con.execute("SELECT row, chunk_id FROM chunks").fetchall()}
    finally:
        con.close()
    vectors = np.load(gen / snapshot_files.VECTORS_FILE)
    by_chunk = {cid: vectors[r] for cid, r in rows.items()}
    return gen_id, docs, chunks, by_chunk


@pytest.fixture(scope="module")
def ray_home(local_ray, built_home, small_corpus, models_dir, tmp_path_factory):
    from indexer.build import build

    from rag.models.embedders import resolve_backend

    local_settings, _ = built_home
    # The local build's concrete variant named explicitly (on Ray, "auto" is PyTorch): the actors must run it.
    settings = make_settings(tmp_path_factory.mktemp("ray-home"), models_dir, embedder=local_settings.embedder,
                             embedder_backend=resolve_backend(local_settings.embedder_backend))
    report = build(settings, [small_corpus], show_progress=False, engine="ray", ray_actors=2)
    return settings, report


def test_ray_build_makes_the_local_generation(built_home, ray_home):
    local_settings, _ = built_home
    settings, report = ray_home
    assert report.published and not report.unchanged
    assert report.vectors_embedded == report.chunks > 0  # a fresh home: every chunk went through the actors
    _, local_docs, local_chunks, local_vecs = _generation(local_settings)
    gen_id, docs, chunks, vecs = _generation(settings)
    assert gen_id == report.generation_id
    assert docs == local_docs
    assert chunks == local_chunks
    assert vecs.keys() == local_vecs.keys()
    worst = max(float(np.abs(vecs[c] - local_vecs[c]).max()) for c in vecs)
    assert worst <= 1e-5


def test_ray_build_fills_the_cache_serves_and_writes_nothing_when_unchanged(ray_home, small_corpus):
    from indexer.build import build
    from indexer.cache import EmbeddingCache
    from rag.application import Application

    settings, first = ray_home
    cache = EmbeddingCache(settings.cache_dir / "embeddings.duckdb")
    try:
        assert cache.count() == first.chunks
    finally:
        cache.close()
    app = Application(settings)
    try:
        hits = app.search("how often should I rebalance my portfolio", top_k=3)
        assert hits.generation_id == first.generation_id
        assert hits.hits and hits.hits[0].doc_id == "fin-etf"
    finally:
        app.close()
    before = sorted(p.name for p in snapshot_files.snapshots_dir(settings.home_path).iterdir())
    again = build(settings, [small_corpus], show_progress=False, engine="ray", ray_actors=2)
    assert again.unchanged and again.generation_id == first.generation_id and again.vectors_embedded == 0
    assert sorted(p.name for p in snapshot_files.snapshots_dir(settings.home_path).iterdir()) == before
    # Forced: a new generation from the cache alone (the cache is consulted before anything goes to Ray).
    forced = build(settings, [small_corpus], show_progress=False, engine="ray", force=True)
    assert forced.vectors_reused == forced.chunks and forced.vectors_embedded == 0
    assert snapshot_files.read_pointer(settings.home_path) == forced.generation_id


def test_a_local_build_never_imports_ray(small_corpus, models_dir, tmp_path):
    code = ("import sys; from indexer.build import build; from tests.conftest import make_settings; "
            f"build(make_settings({str(tmp_path)!r}, {str(models_dir)!r}, embedder='minilm'), [{str(small_corpus)!r}],"
            " show_progress=False); import service.cli, rag.application; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_rebuild_jobs_embed_on_ray_when_the_settings_say_so(ray_home, models_dir):
    from indexer.build import Indexer
    from rag.application import Application

    settings, _ = ray_home
    store = settings.documents_dir / "finance"
    store.mkdir(parents=True, exist_ok=True)
    (store / "fin-ray-note.md").write_text("---\nid: fin-ray-note\ntitle: Bond ladders\ndomain: finance\n---\n"
                                           "# Bond ladders\nA bond ladder holds bonds that mature in successive years, "
                                           "so some money comes due every year.\n", encoding="utf-8")
    on_ray = make_settings(settings.home_path, models_dir, embedder=settings.embedder,
                           embedder_backend=settings.embedder_backend, index={"engine": "ray", "ray_actors": 1})
    app = Application(on_ray, builder=Indexer())
    try:
        job = app.start_rebuild()
        assert app.jobs.wait(300)
        done = app.job(job.id)
    finally:
        app.close()
    assert done.state == "succeeded", done.error
    assert done.result["engine"] == "ray"
    assert done.result["vectors_embedded"] >= 1  # the new document's chunks went through the actor
    assert snapshot_files.read_pointer(settings.home_path) == done.result["generation_id"]
