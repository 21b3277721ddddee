#!/usr/bin/env python
"""Recommendation latency at 10k documents and 100k events over ~2k users.

Setup (nothing is mocked below the Recommender):
- a REAL generation folder written with the project's own writer (`indexer.writer.write_metadata` +
  `write_vectors` + `rag.snapshot_files.write_manifest`) and opened by `rag.snapshot.Generation`; one chunk per
  document; vectors are SYNTHETIC (a Gaussian mixture of 64 topics, normalized, 384-d) because the encoder is
  not what is measured and embedding 10k real documents takes long on 2 cores; three domains;
- a REAL state DuckDB (`rag.state.StateDB`) filled through `rag.events.ingest` with 100k events of 2k
  users (each user reads mostly within 2-3 topics; view/click/like/share/bookmark/rating/dwell/dismiss mix,
  timestamps over 60 days);
- `rag.recommend.Recommender` with the default settings.

Measured:
  comodel_build_s       building the co-engagement/popularity model from the 100k events (once per change+TTL)
  warm_one_user         recommend(k=10) for one user, repeated (profile cached): p50/p95/mean   <- the target
  warm_many_users       one warm call for each of 200 users (profiles cached)
  cold_profile          first call per user (profile built from the state DB), 200 users
  after_new_event       ingest 1 event for the user, then recommend (profile rebuilt), 50 rounds
  domain_filter         warm recommend(domain="medical")
  similar               similar(doc, k=10), 200 docs
  trending              trending(domain="finance", k=10)
  ingest_events_per_s   bulk ingest throughput (validation + insert)

    .venv/bin/python bench/recommend_latency.py [--docs 10000 --events 100000 --users 2000]

Prints a table and writes bench/results/recommend_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DIM = 384
TOPICS = 64
DOMAINS = ("finance", "medical", "education")
TYPES = (("view", 0.58), ("click", 0.15), ("like", 0.09), ("rating", 0.06), ("bookmark", 0.03),
         ("share", 0.02), ("dwell", 0.04), ("dismiss", 0.03))


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if xs else 0.0


def stats(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(xs, 50), 3), "p95_ms": round(pct(xs, 95), 3), "mean_ms": round(float(np.mean(xs)), 3),
            "n": len(xs)}


def write_generation(root: Path, n_docs: int, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    from indexer.writer import document_vectors, write_metadata, write_vectors
    from rag import snapshot_files
    from rag.config import IndexSettings
    from rag.types import Chunk, Document

    centroids = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    topic = rng.integers(0, TOPICS, size=n_docs)
    vecs = centroids[topic] + 0.9 * rng.normal(size=(n_docs, DIM)).astype(np.float32) / np.sqrt(DIM)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs, chunks, hashes = [], [], []
    for i in range(n_docs):
        dom = DOMAINS[topic[i] % 3]
        text = f"Synthetic document {i} on topic {topic[i]} in {dom}."
        doc = Document(doc_id=f"doc-{i:05d}", text=text, title=f"Document {i} (topic {topic[i]})", domain=dom,
                       language="en", audience="general", date="2025-01-01", format="md")
        ch = Chunk(chunk_id=f"{doc.doc_id}#0", doc_id=doc.doc_id, ordinal=0, text=text, n_tokens=12)
        docs.append(doc)
        chunks.append([ch])
        hashes.append(ch.content_hash(doc.title))
    gdir = root / "generations" / "bench-recommend"
    gdir.mkdir(parents=True)
    kw = write_metadata(gdir, docs, chunks, hashes)
    write_vectors(gdir, vecs, document_vectors(vecs, [1] * n_docs), "flat", IndexSettings())
    snapshot_files.write_manifest(gdir, snapshot_files.Manifest(
        id="bench-recommend", created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        embedder=snapshot_files.EmbedderInfo(spec="synthetic", name="synthetic-gmm-384", identity="synthetic", dim=DIM),
        counts=snapshot_files.Counts(documents=n_docs, chunks=n_docs, vectors=n_docs, terms=kw["terms"],
                            postings=kw["postings"]),
        index_type="flat", checksums={}, source_fingerprint="bench", sources=[], chunking={}, build_seconds=0.0))
    snapshot_files.publish(root, "bench-recommend")
    return gdir, topic


def make_events(n_events: int, n_users: int, topic: np.ndarray, rng: np.random.Generator) -> list[dict]:
    by_topic = [np.nonzero(topic == t)[0] for t in range(TOPICS)]
    names = [t for t, _ in TYPES]
    probs = np.asarray([p for _, p in TYPES])
    probs /= probs.sum()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    per_user = rng.multinomial(n_events, rng.dirichlet(np.ones(n_users) * 2.0))
    out = []
    for u, n in enumerate(per_user):
        favs = rng.choice(TOPICS, size=rng.integers(2, 4), replace=False)
        t0 = now - timedelta(days=60) + timedelta(seconds=float(rng.uniform(0, 50 * 86400)))
        for j in range(n):
            t = favs[rng.integers(len(favs))] if rng.random() < 0.85 else rng.integers(TOPICS)
            doc = int(rng.choice(by_topic[t]))
            etype = names[rng.choice(len(names), p=probs)]
            ev = {"user_id": f"user-{u:04d}", "doc_id": f"doc-{doc:05d}", "type": etype,
                  "timestamp": (t0 + timedelta(minutes=7 * j)).isoformat() + "Z"}
            if etype == "rating":
                ev["value"] = int(rng.integers(1, 6))
            if etype == "dwell":
                ev["dwell_s"] = float(rng.uniform(5, 400))
            out.append(ev)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=300, help="warm calls for the one-user figure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "recommend_latency.json"))
    args = ap.parse_args()

    from rag.config import load_settings
    from rag.events import ingest
    from rag.snapshot import Snapshot
    from rag.recommend import Recommender
    from rag.state import StateDB

    rng = np.random.default_rng(args.seed)
    result: dict = {"params": vars(args) | {"out": None}, "machine": {
        "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
        "loadavg_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="rag-bench-rec-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        gdir, topic = write_generation(root, args.docs, rng)
        result["write_generation_s"] = round(time.perf_counter() - t, 2)
        settings = load_settings(environ={}, home=str(root))
        snapshot = Snapshot(gdir, settings.models_dir)
        state = StateDB(root / "state.duckdb")
        evs = make_events(args.events, args.users, topic, rng)
        t = time.perf_counter()
        for i in range(0, len(evs), 20_000):
            rep = ingest(state, evs[i:i + 20_000])
            assert not rep.rejected, rep.rejected[:3]
        ingest_s = time.perf_counter() - t
        result["ingest_events_per_s"] = round(len(evs) / ingest_s)
        print(f"generation: {args.docs} docs written in {result['write_generation_s']}s; "
              f"{len(evs)} events ingested in {ingest_s:.1f}s", file=sys.stderr)

        rec = Recommender(settings, state)
        t = time.perf_counter()
        rec.recommend(snapshot, "user-0000", k=10)  # catalog arrays + co-engagement model
        result["first_call_s"] = round(time.perf_counter() - t, 3)
        model = rec.co.get(rec.catalog(snapshot), rec.cfg)
        result["comodel_build_s"] = round(model.seconds, 3)
        result["comodel_links"] = int(model.sim.nnz)

        counts = state.execute("SELECT user_id, count(*) c FROM events GROUP BY user_id ORDER BY c").fetchall()
        median_user = counts[len(counts) // 2][0]
        result["one_user"] = {"user_id": median_user, "events": int(counts[len(counts) // 2][1])}
        users = [u for u, _ in counts]
        sample = [users[i] for i in rng.choice(len(users), size=min(200, len(users)), replace=False)]

        def timed(fn, *a, **kw) -> float:
            t0 = time.perf_counter()
            fn(*a, **kw)
            return (time.perf_counter() - t0) * 1e3

        # Cold profiles (first request of each sampled user), then warm ones.
        result["cold_profile"] = stats([timed(rec.recommend, snapshot, u, k=10) for u in sample])
        for _ in range(5):
            rec.recommend(snapshot, median_user, k=10)
        result["warm_one_user"] = stats([timed(rec.recommend, snapshot, median_user, k=10) for _ in range(args.repeat)])
        result["warm_many_users"] = stats([timed(rec.recommend, snapshot, u, k=10) for u in sample])
        rec.recommend(snapshot, median_user, k=10, domain="medical")
        result["domain_filter"] = stats([timed(rec.recommend, snapshot, median_user, k=10, domain="medical")
                                         for _ in range(100)])
        after = []
        for i in range(50):
            rec.ingest([{"user_id": median_user, "doc_id": f"doc-{int(rng.integers(args.docs)):05d}", "type": "click"}])
            after.append(timed(rec.recommend, snapshot, median_user, k=10))
        result["after_new_event"] = stats(after)
        docs = [f"doc-{int(i):05d}" for i in rng.choice(args.docs, size=200, replace=False)]
        result["similar"] = stats([timed(rec.similar, snapshot, d, k=10) for d in docs])
        result["trending"] = stats([timed(rec.trending, snapshot, domain="finance", k=10) for _ in range(100)])
        result["timings_breakdown_ms"] = rec.recommend(snapshot, median_user, k=10).timings_ms
        state.close()
        snapshot.close()
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")

    print(f"\nrecommend latency, {args.docs} docs / {args.events} events / {args.users} users "
          f"(co-engagement model: {result['comodel_build_s']}s, {result['comodel_links']} links; "
          f"ingest {result['ingest_events_per_s']} events/s)")
    print(f"{'case':<18}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'n':>6}")
    for key in ("warm_one_user", "warm_many_users", "cold_profile", "after_new_event", "domain_filter", "similar",
                "trending"):
        s = result[key]
        print(f"{key:<18}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['mean_ms']:>9.2f}{s['n']:>6}")
    print(f"load average start/end: {result['machine']['loadavg_start']} / {result['machine']['loadavg_end']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
