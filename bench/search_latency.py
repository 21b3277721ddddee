#!/usr/bin/env python
"""In-process retrieval latency, memory and ANN recall at 10k / 100k / 1M chunks, per FAISS index type.

What is measured, per size and index type (flat | hnsw | ivf), each on a real generation folder written by
the project's own writer (`indexer.writer.write_metadata` + `build_faiss` + `rag.store.write_manifest`) and
opened by `rag.generation.Generation`:

  dense          gen.dense(qvec, 100)                 (100 = RetrievalSettings.candidates, the per-leg depth)
  filtered 30%   gen.dense(qvec, 100, domain=medical)   ~30% of rows pass
  filtered 1%    gen.dense(qvec, 100, domain=education) ~1% of rows pass
  keyword        gen.keyword(text, 100)                BM25 in DuckDB (once per size: FAISS-independent)
  hybrid         dense + keyword + rag.retriever.rrf + sort (the fusion the Retriever does)
  retriever      rag.retriever.Retriever.search(mode="hybrid") end to end: + chunk fetch, per-doc cap
  recall@10      of each type's top 10 against exact search (numpy brute force over the same vectors,
                 same filter), computed in the parent process
  build          seconds to build + write the FAISS index; RSS of a fresh process that opened the generation

The ENCODER IS NOT MEASURED: the vectors are synthetic (a clustered, anisotropic Gaussian mixture of normalized
384-d vectors, so ANN recall means something) and queries are perturbed held-out draws of the same mixture.
The TEXT is real: passages of /work/shared/eval (nfcorpus-medical, tatqa-finance, qasc-education) cycled to the
size with unique ids, queries from the same sets' queries.jsonl, so the keyword leg runs on real postings.
Each (size, index type) is measured in a fresh subprocess so RSS numbers are not polluted by the builder.

    .venv/bin/python bench/search_latency.py --sizes 10k,100k
    .venv/bin/python bench/search_latency.py --sizes 1m          # ~20 min on 2 cores
    .venv/bin/python bench/search_latency.py --sizes 100k --keyword-variants   # + alternative BM25 SQL

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


def build_size(n: int, args, passages, queries_text, settings, workdir: Path) -> dict:
    import faiss

    from indexer.writer import build_faiss, write_metadata
    from rag import store

    faiss.omp_set_num_threads(args.threads)
    base = workdir / size_label(n)
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
    kw = write_metadata(shared, docs, chunks, hashes)
    info["phases_s"]["write_metadata"] = round(time.perf_counter() - t, 2)
    info["terms"], info["postings"] = kw["terms"], kw["postings"]
    info["meta_db_mb"] = round((shared / store.META_DB).stat().st_size / 2**20, 1)
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
    np.save(shared / store.VECTORS_FILE, vectors)
    np.save(shared / store.DOC_VECTORS_FILE, dv.astype(np.float32))
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
        for f in (store.META_DB, store.VECTORS_FILE, store.DOC_VECTORS_FILE):
            _link_or_copy(shared / f, gdir / f)
        t = time.perf_counter()
        index = build_faiss(vectors, kind, settings)
        t_build = time.perf_counter() - t
        faiss.write_index(index, str(gdir / store.FAISS_FILE))
        t_total = time.perf_counter() - t
        extra = {}
        if kind == "ivf":
            extra = {"nlist": int(index.nlist), "nprobe": args.ivf_nprobe}
        elif kind == "hnsw":
            extra = {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction,
                     "efSearch": args.hnsw_ef_search}
        del index
        manifest = store.Manifest(
            id=f"bench-{size_label(n)}-{kind}",
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            embedder=store.EmbedderInfo(spec="synthetic", name="synthetic-gmm-384",
                                        identity=f"synthetic:gmm{N_CENTROIDS}:seed{args.seed}", dim=DIM),
            counts=store.Counts(documents=info["documents"], chunks=n, vectors=n, terms=info["terms"],
                                postings=info["postings"]),
            index_type=kind, checksums={}, source_fingerprint="bench", sources=[str(args.eval_dir)],
            chunking={"max_words": CHUNK_WORDS, "overlap_words": CHUNK_OVERLAP},
            build_seconds=round(t_total, 3))
        store.write_manifest(gdir, manifest)
        info["index"][kind] = {"build_s": round(t_build, 2), "build_write_s": round(t_total, 2),
                               "file_mb": round((gdir / store.FAISS_FILE).stat().st_size / 2**20, 1), **extra}
        log(f"[{size_label(n)}] {kind}: built in {t_build:.1f}s (+write {t_total - t_build:.1f}s), "
            f"{info['index'][kind]['file_mb']} MB")
    info["builder_rss_mb"] = round(rss_mb(), 0)
    del vectors
    return {"info": info, "base": base, "qfile": qfile, "gt": gt}


# ---------------------------------------------------------------------------------------------------------
# measurement child: one fresh process per (size, index type)
# ---------------------------------------------------------------------------------------------------------
class _QueryVectors:
    """Stands in for the generation's embedder: maps a query text to its synthetic vector (no model)."""

    def __init__(self, mapping: dict[str, np.ndarray]):
        self.mapping = mapping

    def embed_queries(self, texts, batch_size: int = 32):
        return np.stack([self.mapping[t] for t in texts])


def child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import faiss

    from rag.config import RetrievalSettings
    from rag.generation import EXACT_SUBSET_MAX, Generation
    from rag.retriever import Retriever, rrf
    from rag.types import Filters

    faiss.omp_set_num_threads(spec["threads"])
    q = {name: (np.load(v["vectors"]), v["texts"]) for name, v in spec["qfile"].items()}
    warm, nq = spec["warmup"], spec["queries"]
    mapping = dict(zip(q["mixed"][1], q["mixed"][0]))
    load_start = os.getloadavg()
    rss0 = rss_mb()
    t = time.perf_counter()
    gen = Generation(Path(spec["gen"]), Path(spec["gen"]) / "no-models", hnsw_ef_search=spec["hnsw_ef_search"],
                     ivf_nprobe=spec["ivf_nprobe"], embedder=_QueryVectors(mapping))
    open_s = time.perf_counter() - t
    rss_open = rss_mb()
    out: dict = {"open_s": round(open_s, 3), "rss_before_open_mb": round(rss0, 1),
                 "rss_after_open_mb": round(rss_open, 1), "lat": {}, "top10": {}, "notes": {}}

    def run(name, fn, vecs, texts, n):
        lat, tops = [], []
        for i in range(warm):
            fn(vecs[i], texts[i])
        for i in range(warm, warm + n):
            t0 = time.perf_counter()
            res = fn(vecs[i], texts[i])
            lat.append((time.perf_counter() - t0) * 1000)
            tops.append(res)
        out["lat"][name] = pct(lat)
        return tops

    n_main = spec["n_dense"]
    vm, tm = q["mixed"]
    tops = run("dense", lambda v, s: gen.dense(v, K_CAND), vm, tm, n_main)
    out["top10"]["dense"] = [[r for r, _ in res[:10]] for res in tops]
    for name, dom in FILTERS:
        f = Filters(domain=[dom])
        allowed = gen.allowed_rows(f)
        path = "exact-subset (numpy over vectors.npy)" if (len(allowed) <= EXACT_SUBSET_MAX or
                                                          gen.index.ntotal <= EXACT_SUBSET_MAX) \
            else "faiss + IDSelectorBatch"
        out["notes"][name] = {"allowed_rows": int(len(allowed)), "path": path}
        vf, tf = q[name]
        tops = run(name, lambda v, s, f=f: gen.dense(v, K_CAND, f), vf, tf, n_main)
        out["top10"][name] = [[r for r, _ in res[:10]] for res in tops]
        cold = []
        for _ in range(5):
            gen._allowed_cache.clear()
            t0 = time.perf_counter()
            gen.allowed_rows(f)
            cold.append((time.perf_counter() - t0) * 1000)
        out["notes"][name]["allowed_rows_sql_ms"] = round(float(np.median(cold)), 2)
    if spec["keyword"]:
        run("keyword", lambda v, s: gen.keyword(s, K_CAND), vm, tm, spec["n_keyword"])
        run("keyword_filt30", lambda v, s: gen.keyword(s, K_CAND, Filters(domain=["medical"])), vm, tm,
            spec["n_keyword"])

    def hybrid(v, s):
        d = gen.dense(v, K_CAND)
        k = gen.keyword(s, K_CAND)
        fused = rrf([[r for r, _ in d], [r for r, _ in k]], 60)
        return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))

    n_h = spec["n_hybrid"]
    run("hybrid", hybrid, vm, tm, n_h)
    retr = Retriever(RetrievalSettings())
    legs: dict[str, list[float]] = {}

    def full(v, s):
        r = retr.search(gen, s, mode="hybrid")
        for key, val in r.timings_ms.items():
            legs.setdefault(key, []).append(val)
        return r

    run("retriever", full, vm, tm, n_h)
    out["notes"]["retriever_legs_mean_ms"] = {k: round(float(np.mean(v[warm:])), 3) for k, v in legs.items()}
    out["rss_after_queries_mb"] = round(rss_mb(), 1)
    out["loadavg_1m"] = {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)}
    out["openblas_threads_env"] = os.environ.get("OPENBLAS_NUM_THREADS")
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    gen.close()
    Path(spec["out"]).write_text(json.dumps(out))


def keyword_variants_main(spec_path: str) -> None:
    """Alternative BM25 SQL on the same generation: same results (checked), timings side by side."""
    spec = json.loads(Path(spec_path).read_text())
    from rag.generation import BM25_B, BM25_K1, Generation
    from rag import text as textmod

    gen = Generation(Path(spec["gen"]), Path(spec["gen"]) / "no-models")
    texts = spec["texts"]
    k1, b = BM25_K1, BM25_B
    score = f"q.qtf * t.idf * p.tf * {k1 + 1} / (p.tf + {k1} * (1 - {b} + {b} * c.n_terms / ?))"
    variants = {
        "current": None,  # gen.keyword itself
        # terms resolved first into a literal IN list, so the postings scan gets a constant filter (zone maps
        # on the term-sorted table skip row groups); chunks joined after the postings are narrowed
        "in_list": "in_list",
    }
    out = {"n": len(texts), "variants": {}}

    def terms_of(s):
        tt: dict[str, int] = {}
        for x in textmod.tokenize(s):
            tt[x] = tt.get(x, 0) + 1
        return tt

    def run_in_list(s, k):
        tt = terms_of(s)
        if not tt:
            return []
        marks = ", ".join("?" for _ in tt)
        sql = f"""
            WITH q AS (SELECT unnest(?::VARCHAR[]) AS term, unnest(?::INTEGER[]) AS qtf),
                 p AS (SELECT term, row, tf FROM postings WHERE term IN ({marks}))
            SELECT p.row, SUM({score}) AS score
            FROM p JOIN q ON q.term = p.term JOIN terms t ON t.term = p.term JOIN chunks c ON c.row = p.row
            GROUP BY p.row ORDER BY score DESC, p.row LIMIT ?"""
        params = [list(tt), list(tt.values()), *tt, gen.kw_avgdl, k]
        return [(int(r), float(x)) for r, x in gen.sql(sql, params).fetchall()]

    fns = {"current": lambda s: gen.keyword(s, K_CAND), "in_list": lambda s: run_in_list(s, K_CAND)}
    for extra in spec.get("extra_sql", []):
        pass
    ref = {s: fns["current"](s) for s in texts[:20]}
    for name, fn in fns.items():
        for s in texts[: spec["warmup"]]:
            fn(s)
        lat = []
        for s in texts[spec["warmup"]:]:
            t0 = time.perf_counter()
            fn(s)
            lat.append((time.perf_counter() - t0) * 1000)
        same = all([r for r, _ in fn(s)] == [r for r, _ in ref[s]] for s in texts[:20])
        out["variants"][name] = {**pct(lat), "same_results_as_current": same}
    Path(spec["out"]).write_text(json.dumps(out))


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
    for j, kind in enumerate(args.types):
        gdir = built["base"] / f"gen-{kind}"
        big_flat = kind == "flat" and n >= args.flat_reduce_from
        n_dense = min(args.queries, args.flat_queries) if big_flat else args.queries
        spec = {"gen": str(gdir), "qfile": built["qfile"], "warmup": args.warmup, "queries": args.queries,
                "n_dense": n_dense, "n_hybrid": n_dense, "keyword": j == 0,
                "n_keyword": min(args.queries, args.keyword_queries) if n >= args.flat_reduce_from else args.queries,
                "threads": args.threads, "hnsw_ef_search": args.hnsw_ef_search, "ivf_nprobe": args.ivf_nprobe,
                "out": str(built["base"] / f"res-{kind}.json")}
        sp = built["base"] / f"spec-{kind}.json"
        sp.write_text(json.dumps(spec))
        t = time.perf_counter()
        env = dict(os.environ)
        if args.blas_threads:
            env["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
        subprocess.run([sys.executable, __file__, "--_child", str(sp)], check=True, env=env)
        r = json.loads(Path(spec["out"]).read_text())
        r["reduced_queries"] = n_dense < args.queries
        log(f"[{size_label(n)}] {kind}: measured in {time.perf_counter() - t:.0f}s "
            f"(dense p50 {r['lat']['dense']['p50_ms']} ms)")
        for name in ("dense", *[f for f, _ in FILTERS]):
            got, exp = r["top10"].pop(name), built["gt"][name if name != "dense" else "dense"]
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
    if args.keyword_variants:
        texts = built["qfile"]["mixed"]["texts"]
        spec = {"gen": str(built["base"] / f"gen-{args.types[0]}"), "texts": texts, "warmup": args.warmup,
                "out": str(built["base"] / "res-kwvariants.json")}
        sp = built["base"] / "spec-kwvariants.json"
        sp.write_text(json.dumps(spec))
        subprocess.run([sys.executable, __file__, "--_kwvariants", str(sp)], check=True)
        res["keyword_sql_variants"] = json.loads(Path(spec["out"]).read_text())
    return res


def fmt(x, w=8, p=2):
    return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{str(x):>{w}}"


def print_tables(results: dict, mach: dict) -> None:
    print()
    print(f"machine: {mach['cpu_model']}, {mach['logical_cores']} logical cores, {mach['ram_gb']} GB RAM; "
          f"faiss {mach['faiss']}, duckdb {mach['duckdb']}")
    print("in-process, single query at a time; the query ENCODER is NOT measured (synthetic 384-d vectors); "
          "text/keyword leg on real passages")
    for label, r in results.items():
        print()
        print(f"== {label}: {r['size']:,} chunks, {r['documents']:,} docs, {r['postings']:,} postings, "
              f"{r['terms']:,} terms; write_metadata {r['phases_s']['write_metadata']}s, meta.duckdb "
              f"{r['meta_db_mb']} MB; NN cosine 1st/10th/random {r['nn_cosine']['1st']}/{r['nn_cosine']['10th']}/"
              f"{r['nn_cosine']['random']}")
        hdr = (f"{'type':5} {'build_s':>8} {'file_MB':>8} {'RSS_MB':>7} | {'dense p50':>9} {'p95':>7} {'x flat':>6} "
               f"{'R@10':>5} | {'f30% p50':>8} {'p95':>7} {'R@10':>5} | {'f1% p50':>8} {'p95':>7} {'R@10':>5} | "
               f"{'hybrid p50':>10} {'p95':>7} | {'retr p50':>8} {'p95':>7}")
        print(hdr)
        print("-" * len(hdr))
        for kind, t in r["types"].items():
            L, R = t["lat"], t["recall_at_10"]
            print(f"{kind:5} {fmt(t['build_s'], 8, 1)} {fmt(t['file_mb'], 8, 0)} {fmt(t['rss_after_queries_mb'], 7, 0)} | "
                  f"{fmt(L['dense']['p50_ms'], 9)} {fmt(L['dense']['p95_ms'], 7)} "
                  f"{fmt(t.get('ratio_vs_flat_p50', {}).get('dense', float('nan')), 6)} {fmt(R['dense'], 5, 3)} | "
                  f"{fmt(L['filt30']['p50_ms'], 8)} {fmt(L['filt30']['p95_ms'], 7)} {fmt(R['filt30'], 5, 3)} | "
                  f"{fmt(L['filt1']['p50_ms'], 8)} {fmt(L['filt1']['p95_ms'], 7)} {fmt(R['filt1'], 5, 3)} | "
                  f"{fmt(L['hybrid']['p50_ms'], 10)} {fmt(L['hybrid']['p95_ms'], 7)} | "
                  f"{fmt(L['retriever']['p50_ms'], 8)} {fmt(L['retriever']['p95_ms'], 7)}")
        first = next(iter(r["types"].values()))
        kwl = first["lat"].get("keyword")
        if kwl:
            kf = first["lat"]["keyword_filt30"]
            print(f"keyword (BM25/DuckDB, FAISS-independent): p50 {kwl['p50_ms']} ms, p95 {kwl['p95_ms']} ms "
                  f"(n={kwl['n']}); with domain filter 30%: p50 {kf['p50_ms']} / p95 {kf['p95_ms']} ms")
        for kind, t in r["types"].items():
            nd, nh = t["lat"]["dense"]["n"], t["lat"]["hybrid"]["n"]
            extra = f"; only {nd} timed dense/filtered/hybrid queries (reduced for flat at this size)" \
                if t.get("reduced_queries") else ""
            print(f"  {kind}: filter paths: 30% {t['notes']['filt30']['path']} "
                  f"({t['notes']['filt30']['allowed_rows']:,} rows, cold row-set SQL "
                  f"{t['notes']['filt30']['allowed_rows_sql_ms']} ms), 1% {t['notes']['filt1']['path']} "
                  f"({t['notes']['filt1']['allowed_rows']:,} rows); retriever legs "
                  f"{t['notes']['retriever_legs_mean_ms']}; open {t['open_s']}s, RSS after open "
                  f"{t['rss_after_open_mb']} MB; load avg {t['loadavg_1m']['start']}->{t['loadavg_1m']['end']}{extra}")
        if "keyword_sql_variants" in r:
            for name, v in r["keyword_sql_variants"]["variants"].items():
                print(f"  keyword SQL variant {name:10}: p50 {v['p50_ms']} ms, p95 {v['p95_ms']} ms, "
                      f"same results: {v['same_results_as_current']}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--_child":
        child_main(sys.argv[2])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--_kwvariants":
        keyword_variants_main(sys.argv[2])
        return
    from rag.config import IndexSettings

    d = IndexSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10k,100k,1m", help="comma-separated chunk counts (10k,100k,1m or ints)")
    ap.add_argument("--types", default=",".join(TYPES), help="index types (flat first: ratios and recall refer to it)")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per configuration")
    ap.add_argument("--warmup", type=int, default=10, help="untimed warm-up queries per configuration")
    ap.add_argument("--flat-queries", type=int, default=100,
                    help="timed queries for flat from --flat-reduce-from chunks up (exhaustive search is slow)")
    ap.add_argument("--keyword-queries", type=int, default=200,
                    help="timed keyword-only queries from --flat-reduce-from chunks up")
    ap.add_argument("--flat-reduce-from", type=lambda s: parse_size(s), default=500_000)
    ap.add_argument("--threads", type=int, default=psutil.cpu_count() or 1, help="FAISS OpenMP threads")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="OPENBLAS_NUM_THREADS for the measuring processes (0 = leave the environment alone)")
    ap.add_argument("--hnsw-m", type=int, default=d.hnsw_m)
    ap.add_argument("--hnsw-ef-construction", type=int, default=d.hnsw_ef_construction)
    ap.add_argument("--hnsw-ef-search", type=int, default=d.hnsw_ef_search)
    ap.add_argument("--ivf-nlist", type=int, default=d.ivf_nlist, help="0 = 4*sqrt(n), as the project")
    ap.add_argument("--ivf-nprobe", type=int, default=d.ivf_nprobe)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    ap.add_argument("--workdir", type=Path, default=None, help="where generations are built (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generation folders")
    ap.add_argument("--keyword-variants", action="store_true", help="also time alternative BM25 SQL")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-merge", action="store_true", help="overwrite --out instead of merging sizes into it")
    args = ap.parse_args()
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    settings = IndexSettings(hnsw_m=args.hnsw_m, hnsw_ef_construction=args.hnsw_ef_construction,
                             hnsw_ef_search=args.hnsw_ef_search, ivf_nlist=args.ivf_nlist, ivf_nprobe=args.ivf_nprobe)

    mach = machine()
    log(f"machine: {mach['cpu_model']}, {mach['logical_cores']} cores, {mach['ram_gb']} GB; sizes "
        f"{[size_label(s) for s in sizes]}, types {args.types}, {args.queries} queries (+{args.warmup} warm-up)")
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
            built = build_size(n, args, passages, queries_text, settings, tmp_root)
            res = measure(n, built, args)
            res["wall_s"] = round(time.perf_counter() - t, 1)
            res["settings"] = {"hnsw_m": args.hnsw_m, "hnsw_ef_construction": args.hnsw_ef_construction,
                               "hnsw_ef_search": args.hnsw_ef_search, "ivf_nlist": args.ivf_nlist or "4*sqrt(n)",
                               "ivf_nprobe": args.ivf_nprobe, "candidates_per_leg": K_CAND,
                               "queries": args.queries, "warmup": args.warmup, "faiss_threads": args.threads}
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
