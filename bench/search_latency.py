#!/usr/bin/env python
"""In-process retrieval latency, memory and ANN recall at 10k / 100k / 1M chunks, per FAISS index type.

What is measured, per size and index type (flat | hnsw | ivf), each on a real generation folder written by
the project's own writer (`indexer.writer.write_metadata` + `build_faiss` + `rag.snapshot_files.write_manifest`) and
opened by `rag.snapshot.Generation`:

  dense          gen.dense(qvec, 100)                 (100 = RetrievalSettings.candidates, the per-leg depth)
  filtered 30%   gen.dense(qvec, 100, domain=medical)   ~30% of rows pass
  filtered 1%    gen.dense(qvec, 100, domain=education) ~1% of rows pass
  keyword        gen.keyword(text, 100)                BM25 over in-memory CSR postings (once per size)
  hybrid         dense + keyword + rag.retriever.rrf + sort (RRF; Retriever's configured fusion is in 'retriever')
  retriever      rag.retriever.Retriever.search(mode="hybrid") end to end: + chunk fetch, per-doc cap
  retriever_plain     the same with the phrase leg, feedback and the neighbourhood re-ranking off: the retriever
                      before issue 11 (its baseline)
  retriever_feedback  the same with every query paying hybrid feedback's second dense search (its worst case)
  recall@10      of each type's top 10 against exact search (numpy brute force over the same vectors,
                 same filter), computed in the parent process
  build          seconds to build + write the FAISS index; RSS of a fresh process that opened the generation

The ENCODER IS NOT MEASURED: the vectors are synthetic (a clustered, anisotropic Gaussian mixture of normalized
384-d vectors, so ANN recall means something) and queries are perturbed held-out draws of the same mixture.
The TEXT is real: passages of /work/shared/eval (nfcorpus-medical, tatqa-finance, qasc-education) cycled to the
size with unique ids, queries from the same sets' queries.jsonl, so the keyword leg runs on real postings.
Each (size, index type) is measured in a fresh subprocess so RSS numbers are not polluted by the builder.

    .venv/bin/python bench/search_latency.py --sizes 10k,100k --keyword-variants     # ~15 min on 2 busy cores
    .venv/bin/python bench/search_latency.py --sizes 1m --workdir /tmp/rag-bench --reuse --resume
        # 1M: write_metadata ~10 min, HNSW build ~25 min (efConstruction 40), IVF ~8 min, measuring ~15 min on a
        # 2-core VM at load average 6-10; --reuse/--resume pick up an interrupted run without rebuilding.

Search runs with FAISS and OpenBLAS on one thread per query by default (--search-threads/--blas-threads): on a
loaded 2-core machine intra-query threading made flat search 2-3x slower (the "2thr" column shows it). Latency
is wall time; CPU ms (process CPU of all threads) is reported too because it is far less sensitive to load.

Results are printed as tables and merged (by size) into bench/results/search_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVAL = ROOT.parent / "shared" / "eval"
DEFAULT_OUT = ROOT / "bench" / "results" / "search_latency.json"
DIM = 384
K_CAND = 100  # per-leg candidates, as RetrievalSettings.candidates
TYPES = ("flat", "hnsw", "ivf")
# (folder, domain, share of chunks). medical ~30% and education ~1% are the two filter selectivities measured.
SETS = (("nfcorpus-medical", "medical", 0.30), ("qasc-education", "education", 0.01),
        ("tatqa-finance", "finance", 0.69))
FILTERS = (("filt30", "medical"), ("filt1", "education"))
CHUNK_WORDS, CHUNK_OVERLAP = 150, 30  # ~200 MiniLM tokens, as IndexSettings.chunk_tokens/overlap
N_CENTROIDS = 2048


def parse_size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1:], 1)
    return int(float(s[:-1] if s[-1:] in "km" else s) * mult)


def size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def pct(xs: list[float]) -> dict:
    a = np.asarray(xs, dtype=np.float64)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "mean_ms": round(float(a.mean()), 3)}


# ---------------------------------------------------------------------------------------------------------
# corpus: real text, cycled
# ---------------------------------------------------------------------------------------------------------
def _windows(text: str) -> list[tuple[str, int, int, int]]:
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    out = []
    step = CHUNK_WORDS - CHUNK_OVERLAP
    for s in range(0, max(len(spans), 1), step):
        part = spans[s:s + CHUNK_WORDS]
        if not part:
            break
        a, b = part[0][0], part[-1][1]
        out.append((text[a:b], a, b, len(part)))
        if s + CHUNK_WORDS >= len(spans):
            break
    return out


def load_passages(eval_dir: Path) -> dict[str, list[dict]]:
    from rag.types import Chunk

    out = {}
    for folder, domain, _ in SETS:
        items = []
        with open(eval_dir / folder / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                text = (r.get("text") or "").strip()
                if not text:
                    continue
                title = (r.get("title") or "").strip()
                wins = _windows(text)
                # Chunk text and content hash are identical for every copy of a passage: compute once.
                hashes = [Chunk("x", "x", i, w[0]).content_hash(title) for i, w in enumerate(wins)]
                items.append({"id": r["_id"], "title": title, "text": text, "wins": wins, "hashes": hashes,
                              "kind": (r.get("metadata") or {}).get("kind", "text")})
        out[domain] = items
    return out


def load_queries(eval_dir: Path) -> dict[str, list[str]]:
    out = {}
    for folder, domain, _ in SETS:
        with open(eval_dir / folder / "queries.jsonl", encoding="utf-8") as f:
            out[domain] = [json.loads(line)["text"] for line in f if line.strip()]
    return out


def build_corpus(n: int, passages: dict[str, list[dict]]):
    """Documents/chunks for exactly n chunks, domains in the SETS shares (deficit round-robin), unique ids."""
    from rag.types import Chunk, Document

    docs, chunks, hashes, row_domain = [], [], [], []
    count = {d: 0 for _, d, _ in SETS}
    cursor = {d: 0 for _, d, _ in SETS}
    total = 0
    while total < n:
        dom = max(SETS, key=lambda s: s[2] * (total + 1) - count[s[1]])[1]
        pool = passages[dom]
        i = cursor[dom]
        cursor[dom] += 1
        p = pool[i % len(pool)]
        copy = i // len(pool)
        doc_id = f"{dom[:3]}-{p['id']}-r{copy}"
        wins = p["wins"][: n - total]
        doc = Document(doc_id=doc_id, text=p["text"], title=p["title"], domain=dom, tags=[dom, p["kind"]],
                       language="en", date=None, source=f"eval/{dom}/corpus.jsonl", format="beir",
                       metadata={"orig_id": p["id"], "copy": copy})
        doc_chunks = [Chunk(chunk_id=f"{doc_id}#{j}", doc_id=doc_id, ordinal=j, text=w[0], kind=p["kind"],
                            n_tokens=w[3], start_char=w[1], end_char=w[2]) for j, w in enumerate(wins)]
        docs.append(doc)
        chunks.append(doc_chunks)
        hashes.extend(p["hashes"][: len(wins)])
        row_domain.extend([dom] * len(wins))
        count[dom] += len(wins)
        total += len(wins)
    return docs, chunks, hashes, np.asarray(row_domain)


# ---------------------------------------------------------------------------------------------------------
# vectors: clustered, anisotropic Gaussian mixture on the unit sphere
# ---------------------------------------------------------------------------------------------------------
class Mixture:
    """N_CENTROIDS topic centroids (domain-specific: a domain's chunks come from its own clusters), lognormal
    topic sizes, within-topic noise with a decaying spectrum (effective dim ~25, like real sentence embeddings)
    and a per-topic spread. Same mixture (seed) for every size: a bigger index is the same distribution, denser."""

    def __init__(self, seed: int = 7, noise: float = 0.9):
        rng = np.random.default_rng(seed)
        c = rng.standard_normal((N_CENTROIDS, DIM)).astype(np.float32)
        self.centroids = c / np.linalg.norm(c, axis=1, keepdims=True)
        w = rng.lognormal(0.0, 1.0, N_CENTROIDS)
        self.spread = rng.lognormal(0.0, 0.25, N_CENTROIDS).astype(np.float32)
        q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        s = np.arange(1, DIM + 1, dtype=np.float64) ** -0.5
        s *= noise / np.sqrt((s ** 2).sum())
        self.A = (q * s).T.astype(np.float32)  # noise = z @ A, E|noise|^2 = noise^2
        # Assign clusters to domains so that each domain's cluster weight matches its share.
        order = rng.permutation(N_CENTROIDS)
        self.dom_clusters, self.dom_p = {}, {}
        start = 0
        for j, (_, dom, share) in enumerate(SETS):
            k = max(4, int(round(share * N_CENTROIDS))) if j < len(SETS) - 1 else N_CENTROIDS - start
            ids = order[start:start + k]
            start += k
            self.dom_clusters[dom] = ids
            self.dom_p[dom] = w[ids] / w[ids].sum()

    def draw(self, domains: np.ndarray, seed: int, block: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n = len(domains)
        cl = np.empty(n, dtype=np.int64)
        for dom in self.dom_clusters:
            m = domains == dom
            cl[m] = rng.choice(self.dom_clusters[dom], size=int(m.sum()), p=self.dom_p[dom])
        out = np.empty((n, DIM), dtype=np.float32)
        for a in range(0, n, block):
            b = min(n, a + block)
            z = rng.standard_normal((b - a, DIM), dtype=np.float32)
            x = self.centroids[cl[a:b]] + (z @ self.A) * self.spread[cl[a:b], None]
            out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    def queries(self, domains: np.ndarray, seed: int, perturb: float = 0.25) -> np.ndarray:
        """Held-out draws (never inserted), perturbed by isotropic noise of norm `perturb`, renormalized."""
        x = self.draw(domains, seed)
        rng = np.random.default_rng(seed + 1)
        e = rng.standard_normal(x.shape).astype(np.float32)
        x = x + perturb * e / np.linalg.norm(e, axis=1, keepdims=True)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(vectors: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None,
               block: int = 200_000) -> np.ndarray:
    """Exact inner-product top-k rows (numpy, blockwise); `mask` restricts to allowed rows."""
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for a in range(0, len(vectors), block):
        s = q @ vectors[a:a + block].T
        if mask is not None:
            s[:, ~mask[a:a + block]] = -np.inf
        kk = min(k, s.shape[1])
        idx = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cs = np.concatenate([best_s, np.take_along_axis(s, idx, 1)], axis=1)
        ci = np.concatenate([best_i, idx + a], axis=1)
        o = np.argsort(-cs, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cs, o, 1), np.take_along_axis(ci, o, 1)
    return best_i


# ---------------------------------------------------------------------------------------------------------
# generation folders
# ---------------------------------------------------------------------------------------------------------
def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build_key(n: int, args, settings) -> dict:
    return {"n": n, "seed": args.seed, "types": list(args.types), "queries": args.queries, "warmup": args.warmup,
            "hnsw_m": settings.hnsw_m, "efc": settings.hnsw_ef_construction, "nlist": settings.ivf_nlist,
            "eval": str(args.eval_dir), "centroids": N_CENTROIDS, "chunk_words": CHUNK_WORDS, "version": 3}


def _load_built(base: Path, key: dict) -> dict | None:
    try:
        saved = json.loads((base / "built.json").read_text())
    except (OSError, ValueError):
        return None
    if saved.get("key") != key:
        return None
    gt = dict(np.load(base / "ground_truth.npz"))
    return {"info": saved["info"], "base": base, "qfile": saved["qfile"], "gt": gt, "reused": True}


class _MemoTokenize:
    """rag.text.tokenize memoized by text while write_metadata runs: the cycled corpus repeats each passage, and
    tokenize is a pure function, so the tables written are byte-for-byte the same; only the time drops."""

    def __enter__(self):
        from rag import text as textmod

        self.mod, self.orig, cache = textmod, textmod.tokenize, {}

        def tokenize(text: str) -> list[str]:
            r = cache.get(text)
            if r is None:
                r = cache[text] = self.orig(text)
            return list(r)

        textmod.tokenize = tokenize
        return self

    def __exit__(self, *exc):
        self.mod.tokenize = self.orig


def build_size(n: int, args, passages, queries_text, settings, workdir: Path) -> dict:
    import faiss

    from indexer.writer import build_faiss, write_metadata
    from rag import snapshot_files
    from rag.text import KEYWORD_TERMS

    faiss.omp_set_num_threads(args.build_threads)
    base = workdir / size_label(n)
    key = _build_key(n, args, settings)
    if args.reuse:
        got = _load_built(base, key)
        if got is not None:
            log(f"[{size_label(n)}] reusing the generations built in {base}")
            return got
    if base.exists():
        shutil.rmtree(base)
    shared = base / "shared"
    shared.mkdir(parents=True)
    info: dict = {"n": n, "phases_s": {}}

    t = time.perf_counter()
    docs, chunks, hashes, row_domain = build_corpus(n, passages)
    info["phases_s"]["corpus"] = round(time.perf_counter() - t, 2)
    info["documents"] = len(docs)
    info["domain_share"] = {d: round(float((row_domain == d).mean()), 4) for _, d, _ in SETS}
    log(f"[{size_label(n)}] corpus: {len(docs):,} docs, {n:,} chunks, shares {info['domain_share']} "
        f"({info['phases_s']['corpus']}s)")

    t = time.perf_counter()
    with _MemoTokenize():
        kw = write_metadata(shared, docs, chunks, hashes)
    info["phases_s"]["write_metadata"] = round(time.perf_counter() - t, 2)
    info["terms"], info["postings"] = kw["terms"], kw["postings"]
    info["meta_db_mb"] = round((shared / snapshot_files.META_DB).stat().st_size / 2**20, 1)
    log(f"[{size_label(n)}] write_metadata: {kw['postings']:,} postings, {kw['terms']:,} terms, "
        f"{info['meta_db_mb']} MB in {info['phases_s']['write_metadata']}s")
    counts = [len(c) for c in chunks]
    del docs, chunks, hashes

    t = time.perf_counter()
    mix = Mixture(seed=args.seed)
    vectors = mix.draw(row_domain, seed=args.seed + 1)
    # doc vectors: normalized mean of each document's chunk vectors (as indexer.writer.document_vectors)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    dv = np.add.reduceat(vectors, starts, axis=0)
    dv /= np.maximum(np.linalg.norm(dv, axis=1, keepdims=True), 1e-12)
    np.save(shared / snapshot_files.VECTORS_FILE, vectors)
    np.save(shared / snapshot_files.DOC_VECTORS_FILE, dv.astype(np.float32))
    del dv
    info["phases_s"]["vectors"] = round(time.perf_counter() - t, 2)

    # queries: unfiltered ones in the corpus' domain mix; filtered ones from the filter's own domain
    rng = np.random.default_rng(args.seed + 2)
    nq = args.queries + args.warmup
    qdom = rng.choice([d for _, d, _ in SETS], size=nq, p=[s for _, _, s in SETS])
    qsets = {"mixed": qdom}
    for name, dom in FILTERS:
        qsets[name] = np.asarray([dom] * nq)
    qfile = {}
    for j, (name, doms) in enumerate(qsets.items()):
        vecs = mix.queries(doms, seed=args.seed + 10 + j)
        texts = []
        used: set[str] = set()
        for d in doms:
            pool = queries_text[d]
            for _ in range(50):  # distinct texts where the pool allows (the dummy embedder maps text -> vector)
                cand = pool[int(rng.integers(len(pool)))]
                if cand not in used:
                    break
            if cand in used:
                cand = f"{cand} ({len(used)})"
            used.add(cand)
            texts.append(cand)
        np.save(base / f"q_{name}.npy", vecs)
        qfile[name] = {"vectors": str(base / f"q_{name}.npy"), "texts": texts}
    # exact ground truth (top 10) for recall, same vectors and filters
    t = time.perf_counter()
    gt = {"dense": exact_topk(vectors, np.load(qfile["mixed"]["vectors"]), 10)}
    for name, dom in FILTERS:
        gt[name] = exact_topk(vectors, np.load(qfile[name]["vectors"]), 10, mask=row_domain == dom)
    info["phases_s"]["ground_truth"] = round(time.perf_counter() - t, 2)
    # how much structure the data has: cosine of the 1st and 10th true neighbour
    q0 = np.load(qfile["mixed"]["vectors"])[:50]
    top = gt["dense"][:50]
    info["nn_cosine"] = {"1st": round(float(np.mean(np.sum(q0 * vectors[top[:, 0]], 1))), 3),
                         "10th": round(float(np.mean(np.sum(q0 * vectors[top[:, 9]], 1))), 3),
                         "random": round(float(np.mean(q0 @ vectors[rng.integers(0, n, 1000)].T)), 3)}
    log(f"[{size_label(n)}] vectors + queries + exact ground truth: {info['phases_s']['vectors']}s + "
        f"{info['phases_s']['ground_truth']}s; query cosine to NN1/NN10/random {info['nn_cosine']}")

    info["index"] = {}
    for kind in args.types:
        gdir = base / f"gen-{kind}"
        gdir.mkdir()
        for f in (snapshot_files.META_DB, snapshot_files.VECTORS_FILE, snapshot_files.DOC_VECTORS_FILE):
            _link_or_copy(shared / f, gdir / f)
        t = time.perf_counter()
        index = build_faiss(vectors, kind, settings)
        t_build = time.perf_counter() - t
        faiss.write_index(index, str(gdir / snapshot_files.FAISS_FILE))
        t_total = time.perf_counter() - t
        extra = {}
        if kind == "ivf":
            extra = {"nlist": int(index.nlist), "nprobe": args.ivf_nprobe}
        elif kind == "hnsw":
            extra = {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction,
                     "efSearch": args.hnsw_ef_search}
        del index
        manifest = snapshot_files.Manifest(
            id=f"bench-{size_label(n)}-{kind}",
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            embedder=snapshot_files.EmbedderInfo(spec="synthetic", name="synthetic-gmm-384",
                                        identity=f"synthetic:gmm{N_CENTROIDS}:seed{args.seed}", dim=DIM),
            counts=snapshot_files.Counts(documents=info["documents"], chunks=n, vectors=n, terms=info["terms"],
                                postings=info["postings"]),
            index_type=kind, checksums={}, source_fingerprint="bench", sources=[str(args.eval_dir)],
            chunking={"max_words": CHUNK_WORDS, "overlap_words": CHUNK_OVERLAP},
            build_seconds=round(t_total, 3), keyword_terms=KEYWORD_TERMS)
        snapshot_files.write_manifest(gdir, manifest)
        info["index"][kind] = {"build_s": round(t_build, 2), "build_write_s": round(t_total, 2),
                               "file_mb": round((gdir / snapshot_files.FAISS_FILE).stat().st_size / 2**20, 1), **extra}
        log(f"[{size_label(n)}] {kind}: built in {t_build:.1f}s (+write {t_total - t_build:.1f}s), "
            f"{info['index'][kind]['file_mb']} MB")
    info["builder_rss_mb"] = round(rss_mb(), 0)
    info["builder_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)
    del vectors
    np.savez(base / "ground_truth.npz", **gt)
    (base / "built.json").write_text(json.dumps({"key": key, "info": info, "qfile": qfile}))
    return {"info": info, "base": base, "qfile": qfile, "gt": gt}


# ---------------------------------------------------------------------------------------------------------
# measurement child: one fresh process per (size, index type)
# ---------------------------------------------------------------------------------------------------------
class _QueryVectors:
    """Stands in for the generation's embedder: maps a query text to its synthetic vector (no model)."""

    identity = "synthetic-query-vectors"  # rag.query_vectors keys its batcher and cache by the encoder identity

    def __init__(self, mapping: dict[str, np.ndarray]):
        self.mapping = mapping

    def embed_queries(self, texts, batch_size: int = 32):
        return np.stack([self.mapping[t] for t in texts])


def warm_cache(snapshot) -> float:
    """Touch the keyword/filter columns once so DuckDB's buffer cache holds them, as in a long-running service."""
    t = time.perf_counter()
    snapshot.sql("SELECT count(*), sum(row), sum(tf), max(term) FROM postings").fetchall()
    snapshot.sql("SELECT max(term), sum(idf), sum(df) FROM terms").fetchall()
    snapshot.sql("SELECT sum(row), sum(n_terms), max(domain), max(doc_id) FROM chunks").fetchall()
    return time.perf_counter() - t


def child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import faiss

    from rag.config import RetrievalSettings
    from rag.snapshot import EXACT_SUBSET_MAX, Snapshot
    from rag.retriever import Retriever, rrf
    from rag.types import Filters

    faiss.omp_set_num_threads(spec["search_threads"])
    q = {name: (np.load(v["vectors"]), v["texts"]) for name, v in spec["qfile"].items()}
    warm, counts, budget = spec["warmup"], spec["n"], spec["budget_s"]
    mapping = dict(zip(q["mixed"][1], q["mixed"][0]))
    load_start = os.getloadavg()
    rss0 = rss_mb()
    t = time.perf_counter()
    snapshot = Snapshot(Path(spec["snapshot"]), Path(spec["snapshot"]) / "no-models", hnsw_ef_search=spec["hnsw_ef_search"],
                     ivf_nprobe=spec["ivf_nprobe"], embedder=_QueryVectors(mapping))
    open_s = time.perf_counter() - t
    rss_open = rss_mb()
    warm_s = warm_cache(snapshot)
    out: dict = {"open_s": round(open_s, 3), "rss_before_open_mb": round(rss0, 1),
                 "rss_after_open_mb": round(rss_open, 1), "cache_warm_s": round(warm_s, 2),
                 "rss_after_cache_warm_mb": round(rss_mb(), 1), "lat": {}, "top10": {}, "notes": {},
                 "search_threads": spec["search_threads"]}

    def run(name, fn, vecs, texts):
        """warm-up queries untimed, then up to n timed ones (fewer only if a time budget is set and spent)."""
        n = counts[name]
        lat, tops = [], []
        for i in range(warm):
            fn(vecs[i], texts[i])
        cpu = []
        t_start = time.perf_counter()
        for i in range(warm, warm + n):
            c0, t0 = time.process_time(), time.perf_counter()
            res = fn(vecs[i], texts[i])
            lat.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)  # CPU of every thread of this process
            tops.append(res)
            if budget and len(lat) >= 20 and time.perf_counter() - t_start > budget:
                break
        c = np.asarray(cpu)
        out["lat"][name] = {**pct(lat), "cpu_p50_ms": round(float(np.percentile(c, 50)), 3),
                            "cpu_p95_ms": round(float(np.percentile(c, 95)), 3)}
        return tops

    vm, tm = q["mixed"]
    tops = run("dense", lambda v, s: snapshot.dense(v, K_CAND), vm, tm)
    out["top10"]["dense"] = [[r for r, _ in res[:10]] for res in tops]
    # The same search with FAISS allowed every core (the library default): shows intra-query threading's effect.
    faiss.omp_set_num_threads(spec["all_threads"])
    run("dense_all_threads", lambda v, s: snapshot.dense(v, K_CAND), vm, tm)
    faiss.omp_set_num_threads(spec["search_threads"])
    for name, dom in FILTERS:
        f = Filters(domain=[dom])
        allowed = snapshot.allowed_rows(f)
        path = "exact-subset (numpy over vectors.npy)" if (len(allowed) <= EXACT_SUBSET_MAX or
                                                          snapshot.faiss_index.ntotal <= EXACT_SUBSET_MAX) \
            else "faiss + cached IDSelectorBitmap"
        out["notes"][name] = {"allowed_rows": int(len(allowed)), "path": path}
        vf, tf = q[name]
        tops = run(name, lambda v, s, f=f: snapshot.dense(v, K_CAND, f), vf, tf)
        out["top10"][name] = [[r for r, _ in res[:10]] for res in tops]
        cold = []
        for _ in range(5):
            snapshot._allowed_cache.clear()
            t0 = time.perf_counter()
            snapshot.allowed_rows(f)
            cold.append((time.perf_counter() - t0) * 1000)
        out["notes"][name]["allowed_rows_sql_ms"] = round(float(np.median(cold)), 2)
    if spec["keyword"]:
        run("keyword", lambda v, s: snapshot.keyword(s, K_CAND), vm, tm)
        run("keyword_filt30", lambda v, s: snapshot.keyword(s, K_CAND, Filters(domain=["medical"])), vm, tm)

    def hybrid(v, s):
        d = snapshot.dense(v, K_CAND)
        k = snapshot.keyword(s, K_CAND)
        fused = rrf([[r for r, _ in d], [r for r, _ in k]], 60)
        return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))

    run("hybrid", hybrid, vm, tm)
    retr = Retriever(RetrievalSettings())
    legs: dict[str, list[float]] = {}

    def full(v, s):
        r = retr.search(snapshot, s, mode="hybrid")
        for key, val in r.timings_ms.items():
            legs.setdefault(key, []).append(val)
        return r

    # The retriever as it was before issue 11's additions (no phrase leg, no feedback, no neighbourhood re-ranking):
    # the baseline of its latency goal, measured on the same generation in the same process. Each run starts with
    # the chunk cache empty, so neither reads the other's fetched rows from memory.
    plain = Retriever(RetrievalSettings(phrase_weight=0.0, feedback_weight=0.0, neighbour_weight=0.0,
                                        centroid_weight=0.0))
    snapshot._chunk_cache.clear()
    run("retriever_plain", lambda v, s: plain.search(snapshot, s, mode="hybrid"), vm, tm)
    snapshot._chunk_cache.clear()
    run("retriever", full, vm, tm)
    out["notes"]["retriever_legs_mean_ms"] = {k: round(float(np.mean(v[warm:])), 3) for k, v in legs.items()}
    out["notes"]["retriever_feedback_share"] = round(len(legs.get("feedback_ms", [])) / max(1, len(legs["keyword_ms"])), 3)

    class AlwaysFeedback(Retriever):
        """The worst case of hybrid feedback: the legs "agree" on every query, so each pays the second dense search
        (the synthetic vectors rarely agree with the real text's BM25 ranking, so 'retriever' seldom does)."""

        @staticmethod
        def _legs_agree(snapshot, dense, keyword):
            return bool(dense and keyword)

    retr_fb = AlwaysFeedback(RetrievalSettings())
    snapshot._chunk_cache.clear()
    run("retriever_feedback", lambda v, s: retr_fb.search(snapshot, s, mode="hybrid"), vm, tm)
    out["rss_after_queries_mb"] = round(rss_mb(), 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["loadavg_1m"] = {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)}
    out["openblas_threads_env"] = os.environ.get("OPENBLAS_NUM_THREADS")
    snapshot.close()
    Path(spec["out"]).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------------------
# keyword SQL variants (--keyword-variants): same generation, same queries, interleaved per query
# ---------------------------------------------------------------------------------------------------------
def _terms(textmod, s: str) -> dict[str, int]:
    tt: dict[str, int] = {}
    for x in textmod.tokenize(s):
        tt[x] = tt.get(x, 0) + 1
    return tt


def keyword_in_list(snapshot, query: str, k: int) -> list[tuple[int, float]]:
    """Candidate patch for Generation.keyword: the query terms as a constant IN list on postings and terms, so
    the scans get a real filter (zone maps on the term-sorted tables) instead of a join-derived optional one."""
    from rag import text as textmod
    from rag.snapshot import BM25_B, BM25_K1

    tt = _terms(textmod, query)
    if not tt:
        return []
    marks = ", ".join("?" for _ in tt)
    sql = f"""
        WITH q AS (SELECT unnest(?::VARCHAR[]) AS term, unnest(?::INTEGER[]) AS qtf)
        SELECT p.row, SUM(q.qtf * t.idf * p.tf * {BM25_K1 + 1}
                           / (p.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * c.n_terms / ?))) AS score
        FROM postings p
        JOIN q ON q.term = p.term
        JOIN terms t ON t.term = p.term
        JOIN chunks c ON c.row = p.row
        WHERE p.term IN ({marks}) AND t.term IN ({marks})
        GROUP BY p.row
        ORDER BY score DESC, p.row
        LIMIT ?"""
    rows = snapshot.sql(sql, [list(tt), list(tt.values()), snapshot.kw_avgdl, *tt, *tt, k]).fetchall()
    return [(int(r), float(s)) for r, s in rows]


class NumpyBM25:
    """Candidate patch: chunk lengths held in memory (4 bytes/chunk, read once at open); SQL only fetches the
    query terms' postings (constant IN list), BM25 + top-k in numpy. No per-query scan/join of `chunks`."""

    def __init__(self, snapshot):
        self.snapshot = snapshot
        self.n_terms = np.asarray(snapshot.sql("SELECT n_terms FROM chunks ORDER BY row").fetchnumpy()["n_terms"],
                                  dtype=np.float64)

    def __call__(self, query: str, k: int, filters=None) -> list[tuple[int, float]]:
        from rag import text as textmod
        from rag.snapshot import BM25_B, BM25_K1, top_scored

        tt = _terms(textmod, query)
        if not tt:
            return []
        marks = ", ".join("?" for _ in tt)
        res = self.snapshot.sql(f"SELECT p.term, p.row, p.tf, t.idf FROM postings p JOIN terms t ON t.term = p.term "
                           f"WHERE p.term IN ({marks}) AND t.term IN ({marks})", [*tt, *tt]).fetchnumpy()
        rows = np.asarray(res["row"], dtype=np.int64)
        if not len(rows):
            return []
        qtf = np.array([tt[x] for x in res["term"]], dtype=np.float64)
        tf = np.asarray(res["tf"], dtype=np.float64)
        w = qtf * np.asarray(res["idf"], dtype=np.float64) * tf * (BM25_K1 + 1) / (
            tf + BM25_K1 * (1 - BM25_B + BM25_B * self.n_terms[rows] / self.snapshot.kw_avgdl))
        scores = np.bincount(rows, weights=w, minlength=len(self.n_terms))
        allowed = self.snapshot.allowed_rows(filters)
        return top_scored(scores, np.flatnonzero(scores) if allowed is None else allowed[scores[allowed] > 0], k)


class WeightedPostings:
    """Writer-side idea, emulated in a side database: the per-posting BM25 weight idf*tf*(k1+1)/(tf+k1*norm)
    computed once at build time (it only depends on the generation), so a query is one postings-only SUM."""

    def __init__(self, snapshot, path: Path):
        import duckdb

        from rag.snapshot import BM25_B, BM25_K1

        path.unlink(missing_ok=True)
        con = duckdb.connect(str(path))
        con.execute(f"ATTACH '{snapshot.path / 'meta.duckdb'}' AS m (READ_ONLY)")
        t = time.perf_counter()
        con.execute(f"""CREATE TABLE postings_w AS
            SELECT p.term, p.row, (t.idf * p.tf * {BM25_K1 + 1}
                   / (p.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * c.n_terms / {snapshot.kw_avgdl})))::DOUBLE AS w
            FROM m.postings p JOIN m.terms t USING (term) JOIN m.chunks c ON c.row = p.row ORDER BY p.term, p.row""")
        self.build_s = time.perf_counter() - t
        con.execute("DETACH m")
        con.close()
        self.con = duckdb.connect(str(path), read_only=True)

    def __call__(self, query: str, k: int) -> list[tuple[int, float]]:
        from rag import text as textmod

        tt = _terms(textmod, query)
        if not tt:
            return []
        marks = ", ".join("?" for _ in tt)
        sql = f"""WITH q AS (SELECT unnest(?::VARCHAR[]) AS term, unnest(?::INTEGER[]) AS qtf)
                  SELECT p.row, SUM(q.qtf * p.w) AS score FROM postings_w p JOIN q ON q.term = p.term
                  WHERE p.term IN ({marks}) GROUP BY p.row ORDER BY score DESC, p.row LIMIT ?"""
        return [(int(r), float(s)) for r, s in self.con.cursor().execute(sql, [list(tt), list(tt.values()), *tt, k]).fetchall()]


class CsrBM25:
    """Design alternative: the postings held in memory as CSR arrays (term -> slice of rows and precomputed BM25
    weights, 12 bytes per posting in float64), read once at open; a query is a few slices + bincount + top-k in
    numpy, no SQL at all. Costs RAM (postings * 12 B) and open time; float32 weights would halve it."""

    def __init__(self, snapshot):
        from rag.snapshot import BM25_B, BM25_K1

        self.snapshot = snapshot
        terms = snapshot.sql("SELECT term, df FROM terms ORDER BY term").fetchnumpy()
        p = snapshot.sql("SELECT p.row, p.tf, t.idf FROM postings p JOIN terms t USING (term) "
                         "ORDER BY p.term, p.row").fetchnumpy()
        n_terms = np.asarray(snapshot.sql("SELECT n_terms FROM chunks ORDER BY row").fetchnumpy()["n_terms"],
                             dtype=np.float64)
        self.rows = np.asarray(p["row"], dtype=np.int32)
        tf = np.asarray(p["tf"], dtype=np.float64)
        self.w = np.asarray(p["idf"], dtype=np.float64) * tf * (BM25_K1 + 1) / (
            tf + BM25_K1 * (1 - BM25_B + BM25_B * n_terms[self.rows] / snapshot.kw_avgdl))
        del p, tf
        ends = np.cumsum(np.asarray(terms["df"], dtype=np.int64))
        self.slices = {t: (int(e - d), int(e)) for t, d, e in zip(terms["term"], terms["df"], ends)}
        self.n = len(n_terms)
        self.nbytes = self.rows.nbytes + self.w.nbytes

    def __call__(self, query: str, k: int, filters=None) -> list[tuple[int, float]]:
        from rag import text as textmod
        from rag.snapshot import top_scored

        tt = _terms(textmod, query)
        parts = [(self.slices[t], q) for t, q in tt.items() if t in self.slices]
        if not parts:
            return []
        rows = np.concatenate([self.rows[a:b] for (a, b), _ in parts])
        w = np.concatenate([self.w[a:b] * q for (a, b), q in parts])
        scores = np.bincount(rows, weights=w, minlength=self.n)
        allowed = self.snapshot.allowed_rows(filters)
        return top_scored(scores, np.flatnonzero(scores) if allowed is None else allowed[scores[allowed] > 0], k)


def keyword_variants_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    from rag.snapshot import Snapshot
    from rag.types import Filters

    snapshot = Snapshot(Path(spec["snapshot"]), Path(spec["snapshot"]) / "no-models")
    warm_cache(snapshot)
    texts, warm, rounds = spec["texts"], spec["warmup"], spec["rounds"]
    t = time.perf_counter()
    nb = NumpyBM25(snapshot)
    nb_open_ms = (time.perf_counter() - t) * 1000
    wp = WeightedPostings(snapshot, Path(spec["side_db"]))
    t = time.perf_counter()
    rss_before_csr = rss_mb()
    csr = CsrBM25(snapshot)
    csr_open_s, csr_rss_mb = time.perf_counter() - t, rss_mb() - rss_before_csr
    fns = {"current": lambda s: snapshot.keyword(s, K_CAND),
           "in_list": lambda s: keyword_in_list(snapshot, s, K_CAND),
           "numpy": lambda s: nb(s, K_CAND),
           "weights": lambda s: wp(s, K_CAND),
           "csr_memory": lambda s: csr(s, K_CAND)}
    f30 = Filters(domain=["medical"])
    snapshot.allowed_rows(f30)
    fns["current_filt30"] = lambda s: snapshot.keyword(s, K_CAND, f30)
    fns["numpy_filt30"] = lambda s: nb(s, K_CAND, f30)
    fns["csr_memory_filt30"] = lambda s: csr(s, K_CAND, f30)
    ref = {s: snapshot.keyword(s, K_CAND) for s in texts}
    ref30 = {s: snapshot.keyword(s, K_CAND, f30) for s in texts}
    lat: dict[str, list[float]] = {n: [] for n in fns}
    agree: dict[str, list[float]] = {n: [] for n in fns}
    cpu: dict[str, list[float]] = {n: [] for n in fns}
    for s in texts[:warm]:
        for fn in fns.values():
            fn(s)
    deadline = time.perf_counter() + spec["budget_s"]
    for r in range(rounds):
        for s in texts[warm:]:
            for name, fn in fns.items():  # interleaved: every variant sees the same machine load
                c0, t0 = time.process_time(), time.perf_counter()
                res = fn(s)
                lat[name].append((time.perf_counter() - t0) * 1000)
                cpu[name].append((time.process_time() - c0) * 1000)
                if r == 0:
                    exp = ref30[s] if name.endswith("filt30") else ref[s]
                    # Ties are common (cycled passages score identically), so compare the top-k score lists.
                    a, b = [round(x, 6) for _, x in res], [round(x, 6) for _, x in exp]
                    agree[name].append(float(a == b))
            if time.perf_counter() > deadline:
                break
        if time.perf_counter() > deadline:
            break
    out = {"queries": len(lat["current"]), "rounds_started": r + 1, "numpy_open_ms": round(nb_open_ms, 1),
           "weights_build_s": round(wp.build_s, 2), "csr_open_s": round(csr_open_s, 2),
           "csr_arrays_mb": round(csr.nbytes / 2**20, 1), "csr_rss_delta_mb": round(csr_rss_mb, 1), "variants": {}}
    for name in fns:
        out["variants"][name] = {**pct(lat[name]), "cpu_p50_ms": round(float(np.percentile(cpu[name], 50)), 3),
                                 "same_topk_scores": round(float(np.mean(agree[name])), 3)}
    # The same leg with DuckDB limited to one thread (its default is every core).
    snapshot.sql("SET threads = 1")
    l1 = []
    for s in texts[warm:warm + 100]:
        t0 = time.perf_counter()
        snapshot.keyword(s, K_CAND)
        l1.append((time.perf_counter() - t0) * 1000)
    out["variants"]["current_duckdb_1thread"] = {**pct(l1), "same_topk_scores": None}
    # EXPLAIN ANALYZE of the current statement for one multi-term query, operator timings in the JSON.
    snapshot.sql("SET threads = %d" % (psutil.cpu_count() or 1))
    out["explain_query"] = spec["explain_query"]
    out["explain_analyze_current"] = _explain(snapshot, spec["explain_query"])
    Path(spec["out"]).write_text(json.dumps(out))


def _explain(snapshot, query: str) -> str:
    from rag import text as textmod
    from rag.snapshot import BM25_B, BM25_K1

    tt = _terms(textmod, query)
    sql = f"""
        WITH q AS (SELECT unnest(?::VARCHAR[]) AS term, unnest(?::INTEGER[]) AS qtf)
        SELECT p.row, SUM(q.qtf * t.idf * p.tf * {BM25_K1 + 1}
                           / (p.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * c.n_terms / ?))) AS score
        FROM q JOIN terms t ON t.term = q.term JOIN postings p ON p.term = q.term JOIN chunks c ON c.row = p.row
        WHERE TRUE GROUP BY p.row ORDER BY score DESC, p.row LIMIT ?"""
    rows = snapshot.sql("EXPLAIN ANALYZE " + sql, [list(tt), list(tt.values()), snapshot.kw_avgdl, K_CAND]).fetchall()
    return rows[0][1]


# ---------------------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------------------
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"{time.perf_counter() - _T0:7.1f}s  {msg}", flush=True)


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import duckdb
    import faiss

    return {"cpu_model": model or platform.processor(), "logical_cores": psutil.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "faiss": faiss.__version__, "duckdb": duckdb.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


def measure(n: int, built: dict, args) -> dict:
    info = built["info"]
    res: dict = {"size": n, "label": size_label(n), **info, "types": {}}
    large = n >= args.large_from
    res["reductions"] = []
    if large:
        res["reductions"].append(
            f"flat: {min(args.queries, args.flat_queries)} timed queries for dense/filtered/hybrid/retriever; "
            f"keyword-bearing configs (keyword, hybrid, retriever) stop after {args.config_budget_s:.0f}s "
            f"(min 20 queries); actual n per config in the JSON")
    for j, kind in enumerate(args.types):
        gdir = built["base"] / f"gen-{kind}"
        nq = args.queries
        nd = min(nq, args.flat_queries) if (large and kind == "flat") else nq
        counts = {"dense": nd, "dense_all_threads": min(nd, 100), "filt30": nd, "filt1": nd, "keyword": nq,
                  "keyword_filt30": nq, "hybrid": nd, "retriever": nd, "retriever_plain": nd, "retriever_feedback": nd}
        spec = {"snapshot": str(gdir), "qfile": built["qfile"], "warmup": args.warmup, "n": counts,
                "budget_s": args.config_budget_s if large else None, "keyword": j == 0,
                "search_threads": args.search_threads, "all_threads": psutil.cpu_count() or 1,
                "hnsw_ef_search": args.hnsw_ef_search, "ivf_nprobe": args.ivf_nprobe,
                "out": str(built["base"] / f"res-{kind}.json")}
        sp = built["base"] / f"spec-{kind}.json"
        t = time.perf_counter()
        if args.resume and Path(spec["out"]).exists() and sp.exists() and json.loads(sp.read_text()) == spec:
            log(f"[{size_label(n)}] {kind}: --resume, using the measurement already in {spec['out']}")
        else:
            sp.write_text(json.dumps(spec))
            env = dict(os.environ)
            if args.blas_threads:
                env["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
            subprocess.run([sys.executable, __file__, "--_child", str(sp)], check=True, env=env)
        r = json.loads(Path(spec["out"]).read_text())
        r["measure_s"] = round(time.perf_counter() - t, 1)
        log(f"[{size_label(n)}] {kind}: measured in {r['measure_s']:.0f}s (dense p50 {r['lat']['dense']['p50_ms']} ms, "
            f"load avg {r['loadavg_1m']['start']}->{r['loadavg_1m']['end']})")
        for name in ("dense", *[f for f, _ in FILTERS]):
            got, exp = r["top10"].pop(name), built["gt"][name]
            rec = [len(set(g) & set(e.tolist())) / 10 for g, e in zip(got, exp[args.warmup:args.warmup + len(got)])]
            r.setdefault("recall_at_10", {})[name] = round(float(np.mean(rec)), 4)
        r.pop("top10", None)
        r.update(info["index"].get(kind, {}))
        res["types"][kind] = r
    if "flat" in res["types"]:
        flat = res["types"]["flat"]
        for kind, r in res["types"].items():
            r["ratio_vs_flat_p50"] = {name: round(r["lat"][name]["p50_ms"] / flat["lat"][name]["p50_ms"], 3)
                                      for name in r["lat"] if name in flat["lat"] and flat["lat"][name]["p50_ms"]}
            r["ratio_vs_flat_p50"]["build_s"] = round(r["build_s"] / max(flat["build_s"], 1e-3), 1)
            r["ratio_vs_flat_p50"]["rss_after_queries"] = round(r["rss_after_queries_mb"] / flat["rss_after_queries_mb"], 3)
    if args.keyword_variants:
        texts = built["qfile"]["mixed"]["texts"]
        explain_q = next((t for t in texts if len(t.split()) >= 6), texts[0])
        spec = {"snapshot": str(built["base"] / f"gen-{args.types[0]}"), "texts": texts, "warmup": args.warmup,
                "rounds": 2, "budget_s": args.config_budget_s * 3, "explain_query": explain_q,
                "side_db": str(built["base"] / "postings_weighted.duckdb"),
                "out": str(built["base"] / "res-kwvariants.json")}
        sp = built["base"] / "spec-kwvariants.json"
        sp.write_text(json.dumps(spec))
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--_kwvariants", str(sp)], check=True)
        res["keyword_sql_variants"] = json.loads(Path(spec["out"]).read_text())
        log(f"[{size_label(n)}] keyword SQL variants measured in {time.perf_counter() - t:.0f}s")
    return res


def fmt(x, w=8, p=2):
    return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{str(x):>{w}}"


def print_tables(results: dict, mach: dict) -> None:
    print()
    print(f"machine: {mach['cpu_model']}, {mach['logical_cores']} logical cores ({mach['physical_cores']} physical), "
          f"{mach['ram_gb']} GB RAM; faiss {mach['faiss']}, duckdb {mach['duckdb']}, numpy {mach['numpy']}")
    print("in-process, one query at a time. The query ENCODER is NOT measured: dense legs get synthetic 384-d vectors "
          "(clustered Gaussian mixture); the keyword leg runs on real eval passages and real queries.")
    for label, r in results.items():
        s = r["settings"]
        print()
        print(f"== {label}: {r['size']:,} chunks, {r['documents']:,} docs, {r['postings']:,} postings, {r['terms']:,} terms; "
              f"write_metadata {r['phases_s']['write_metadata']}s, meta.duckdb {r['meta_db_mb']} MB; query cosine to "
              f"NN1/NN10/random {r['nn_cosine']['1st']}/{r['nn_cosine']['10th']}/{r['nn_cosine']['random']}")
        print(f"   FAISS search threads {s['search_threads']}, OPENBLAS_NUM_THREADS {s['blas_threads'] or 'default'}; "
              f"HNSW M={s['hnsw_m']} efC={s['hnsw_ef_construction']} efS={s['hnsw_ef_search']}; IVF nlist="
              f"{s['ivf_nlist']} nprobe={s['ivf_nprobe']}; k={s['candidates_per_leg']} per leg; latencies in ms")
        hdr = (f"{'type':5} {'build_s':>8} {'idx_MB':>7} {'RSS_MB':>7} | {'dense p50':>9} {'p95':>7} {'xflat':>6} "
               f"{'R@10':>5} {'2thr p50':>8} | {'f30% p50':>8} {'p95':>7} {'R@10':>5} | {'f1% p50':>7} {'p95':>6} "
               f"{'R@10':>5} | {'hybrid p50':>10} {'p95':>7} | {'retr p50':>8} {'p95':>7}")
        print(hdr)
        print("-" * len(hdr))
        for kind, t in r["types"].items():
            L, R = t["lat"], t["recall_at_10"]
            print(f"{kind:5} {fmt(t['build_s'], 8, 1)} {fmt(t['file_mb'], 7, 0)} {fmt(t['rss_after_queries_mb'], 7, 0)} | "
                  f"{fmt(L['dense']['p50_ms'], 9)} {fmt(L['dense']['p95_ms'], 7)} "
                  f"{fmt(t.get('ratio_vs_flat_p50', {}).get('dense', float('nan')), 6, 3)} {fmt(R['dense'], 5, 3)} "
                  f"{fmt(L['dense_all_threads']['p50_ms'], 8)} | "
                  f"{fmt(L['filt30']['p50_ms'], 8)} {fmt(L['filt30']['p95_ms'], 7)} {fmt(R['filt30'], 5, 3)} | "
                  f"{fmt(L['filt1']['p50_ms'], 7)} {fmt(L['filt1']['p95_ms'], 6)} {fmt(R['filt1'], 5, 3)} | "
                  f"{fmt(L['hybrid']['p50_ms'], 10)} {fmt(L['hybrid']['p95_ms'], 7)} | "
                  f"{fmt(L['retriever']['p50_ms'], 8)} {fmt(L['retriever']['p95_ms'], 7)}")
        cols = ("dense", "dense_all_threads", "filt30", "filt1", "keyword", "hybrid", "retriever", "retriever_plain",
                "retriever_feedback")
        print("CPU ms p50 per query (process CPU, all threads; much less sensitive to other load on the machine):")
        for kind, t in r["types"].items():
            print(f"  {kind:5} " + ", ".join(f"{c} {t['lat'][c]['cpu_p50_ms']}" for c in cols
                                             if c in t["lat"] and "cpu_p50_ms" in t["lat"][c]))
        first = next(iter(r["types"].values()))
        kwl = first["lat"].get("keyword")
        if kwl:
            kf = first["lat"]["keyword_filt30"]
            print(f"keyword leg (BM25 over in-memory postings, independent of the FAISS type): "
                  f"p50 {kwl['p50_ms']} / p95 {kwl['p95_ms']} "
                  f"(n={kwl['n']}); with the 30% domain filter p50 {kf['p50_ms']} / p95 {kf['p95_ms']} (n={kf['n']})")
        if "flat" in r["types"]:
            print("ratios vs flat (p50):  " + "; ".join(
                f"{k}: " + ", ".join(f"{m} {v}" for m, v in t["ratio_vs_flat_p50"].items()
                                     if m in ("dense", "filt30", "filt1", "hybrid", "retriever", "build_s",
                                              "rss_after_queries"))
                for k, t in r["types"].items() if k != "flat"))
        for kind, t in r["types"].items():
            ns = {k: v["n"] for k, v in t["lat"].items()}
            print(f"  {kind}: filter 30% -> {t['notes']['filt30']['path']} ({t['notes']['filt30']['allowed_rows']:,} rows; "
                  f"uncached row-set SQL {t['notes']['filt30']['allowed_rows_sql_ms']} ms), 1% -> "
                  f"{t['notes']['filt1']['path']} ({t['notes']['filt1']['allowed_rows']:,} rows); retriever legs (mean) "
                  f"{t['notes']['retriever_legs_mean_ms']}; RSS open/warm/after {t['rss_after_open_mb']:.0f}/"
                  f"{t['rss_after_cache_warm_mb']:.0f}/{t['rss_after_queries_mb']:.0f} MB; load avg "
                  f"{t['loadavg_1m']['start']}->{t['loadavg_1m']['end']}; n {ns}")
        for line in r.get("reductions", []):
            print(f"  NOTE {line}")
        if "keyword_sql_variants" in r:
            kv = r["keyword_sql_variants"]
            print(f"  keyword SQL variants ({kv['queries']} timings each, interleaved per query; numpy variant loads "
                  f"n_terms in {kv['numpy_open_ms']} ms; weighted postings built in {kv['weights_build_s']}s; "
                  f"csr_memory loads in {kv.get('csr_open_s')}s, arrays {kv.get('csr_arrays_mb')} MB):")
            for name, v in kv["variants"].items():
                print(f"    {name:24} p50 {v['p50_ms']:>9.2f}  p95 {v['p95_ms']:>9.2f}  cpu p50 {v.get('cpu_p50_ms', '-'):>8}  "
                      f"same top-k scores as current: {v['same_topk_scores']}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--_child":
        child_main(sys.argv[2])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--_kwvariants":
        keyword_variants_main(sys.argv[2])
        return
    from rag.config import IndexSettings

    d = IndexSettings()
    cores = psutil.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10k,100k,1m", help="comma-separated chunk counts (10k,100k,1m or ints)")
    ap.add_argument("--types", default=",".join(TYPES), help="index types (flat first: ratios and recall refer to it)")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per configuration")
    ap.add_argument("--warmup", type=int, default=10, help="untimed warm-up queries per configuration")
    ap.add_argument("--large-from", type=parse_size, default=parse_size("500k"),
                    help="sizes from here up get the reductions below (default 500k)")
    ap.add_argument("--flat-queries", type=int, default=100, help="large sizes: timed queries for flat")
    ap.add_argument("--config-budget-s", type=float, default=60.0,
                    help="large sizes: a configuration stops timing after this many seconds (min 20 queries)")
    ap.add_argument("--build-threads", type=int, default=cores, help="FAISS OpenMP threads while building")
    ap.add_argument("--search-threads", type=int, default=1,
                    help="FAISS OpenMP threads while searching (1: one query per core, see README of the results)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="OPENBLAS_NUM_THREADS for the measuring processes (0 = leave the environment alone)")
    ap.add_argument("--hnsw-m", type=int, default=d.hnsw_m)
    ap.add_argument("--hnsw-ef-construction", type=int, default=d.hnsw_ef_construction)
    ap.add_argument("--hnsw-ef-construction-large", type=int, default=40,
                    help="HNSW efConstruction at large sizes (project default 80 roughly doubles the 1M build)")
    ap.add_argument("--hnsw-ef-search", type=int, default=d.hnsw_ef_search)
    ap.add_argument("--ivf-nlist", type=int, default=d.ivf_nlist, help="0 = 4*sqrt(n), as the project")
    ap.add_argument("--ivf-nprobe", type=int, default=d.ivf_nprobe)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    ap.add_argument("--workdir", type=Path, default=None, help="where generations are built (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generation folders (implied by --reuse)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse generations already built in --workdir with the same parameters")
    ap.add_argument("--resume", action="store_true",
                    help="with --reuse: keep per-index measurements already written by an interrupted run")
    ap.add_argument("--keyword-variants", action="store_true",
                    help="also time alternative BM25 statements on the same generation (+ EXPLAIN ANALYZE)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-merge", action="store_true", help="overwrite --out instead of merging sizes into it")
    args = ap.parse_args()
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    if args.reuse:
        args.keep = True
        if args.workdir is None:
            ap.error("--reuse needs --workdir")
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]

    mach = machine()
    log(f"machine: {mach['cpu_model']}, {mach['logical_cores']} cores, {mach['ram_gb']} GB; sizes "
        f"{[size_label(s) for s in sizes]}, types {args.types}, {args.queries} queries (+{args.warmup} warm-up); "
        f"load avg {os.getloadavg()[0]:.2f}")
    passages = load_passages(args.eval_dir)
    queries_text = load_queries(args.eval_dir)
    log("passages: " + ", ".join(f"{d} {len(v):,} ({sum(len(p['wins']) for p in v):,} chunks)"
                                 for d, v in passages.items()))

    tmp_root = args.workdir or Path(tempfile.mkdtemp(prefix="rag-bench-"))
    tmp_root.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    out_doc: dict = {}
    if args.out.exists() and not args.no_merge:
        try:
            out_doc = json.loads(args.out.read_text())
        except ValueError:
            out_doc = {}
    out_doc.setdefault("sizes", {})
    try:
        for n in sizes:
            t = time.perf_counter()
            efc = args.hnsw_ef_construction_large if n >= args.large_from else args.hnsw_ef_construction
            settings = IndexSettings(hnsw_m=args.hnsw_m, hnsw_ef_construction=efc, hnsw_ef_search=args.hnsw_ef_search,
                                     ivf_nlist=args.ivf_nlist, ivf_nprobe=args.ivf_nprobe)
            built = build_size(n, args, passages, queries_text, settings, tmp_root)
            res = measure(n, built, args)
            if efc != d.hnsw_ef_construction:
                res["reductions"].append(f"HNSW built with efConstruction={efc} (project default "
                                         f"{d.hnsw_ef_construction}) to bound the build time")
            res["wall_s"] = round(time.perf_counter() - t, 1)
            res["settings"] = {"hnsw_m": args.hnsw_m, "hnsw_ef_construction": efc,
                               "hnsw_ef_search": args.hnsw_ef_search,
                               "ivf_nlist": built["info"]["index"].get("ivf", {}).get("nlist", args.ivf_nlist),
                               "ivf_nprobe": args.ivf_nprobe, "candidates_per_leg": K_CAND,
                               "queries": args.queries, "warmup": args.warmup, "build_threads": args.build_threads,
                               "search_threads": args.search_threads, "blas_threads": args.blas_threads,
                               "reused_build": built.get("reused", False)}
            res["machine"] = mach
            res["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            results[size_label(n)] = res
            out_doc["sizes"][size_label(n)] = res
            out_doc["about"] = (__doc__ or "").strip().split("\n\n")[0:3]
            out_doc["machine"] = mach
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out_doc, indent=1))
            log(f"[{size_label(n)}] done in {res['wall_s']}s; results saved to {args.out}")
            if not args.keep:
                shutil.rmtree(built["base"], ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    print_tables(results, mach)


if __name__ == "__main__":
    main()
