"""`rag eval retrieval`: nDCG@10, recall@10/100, MRR@10 and latency per retrieval mode on a BEIR folder.

The corpus is indexed with the production indexer into an eval data home keyed by (dataset, embedder), and a
later run reuses that generation while the corpus file and the embedder are unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from evaluation.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k
from indexer.build import build
from rag import snapshot_files
from rag.config import Settings
from rag.models.embedders import resolve_backend
from rag.retriever import Retriever
from rag.snapshot import Snapshot
from rag.types import SEARCH_MODES


@dataclass
class BeirSet:
    name: str
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(folder: Path, split: str = "test") -> BeirSet:
    folder = Path(folder)
    corpus = folder / "corpus.jsonl"
    qfile = folder / "queries.jsonl"
    qrels_file = folder / "qrels" / f"{split}.tsv"
    for f in (corpus, qfile, qrels_file):
        if not f.exists():
            raise FileNotFoundError(f"{f} is missing: expected a BEIR folder (corpus.jsonl, queries.jsonl, "
                                    f"qrels/{split}.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_file, encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {}
    with open(qfile, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                if q["_id"] in qrels:
                    queries[q["_id"]] = q["text"]
    return BeirSet(folder.name, corpus, queries, qrels)


def _corpus_key(corpus: Path, embedder: str) -> str:
    h = hashlib.sha256()
    with open(corpus, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    h.update(embedder.encode())
    return h.hexdigest()[:16]


def ensure_generation(settings: Settings, data: BeirSet, embedder: str, show_progress: bool = True
                      ) -> tuple[Settings, str, bool]:
    """(eval settings, generation id, reused?) for the dataset's corpus under an eval data home."""
    backend = resolve_backend(settings.embedder_backend)
    tag = embedder if backend == "torch" else f"{embedder}@{backend}"  # one eval home per encoder variant
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in tag)[-40:]
    key = _corpus_key(data.corpus, tag)
    home = settings.home_path / "eval" / f"{data.name}-{safe}-{key}"
    eval_settings = Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__},
                                "home": str(home), "embedder": embedder,
                                "model_cache": str(settings.models_dir)})
    # The build notices an unchanged corpus, embedder, settings and code version and writes nothing; a change
    # of any (a new chunker) builds again, reusing every cached vector it can.
    report = build(eval_settings, [data.corpus], embedder=embedder, show_progress=show_progress)
    return eval_settings, report.generation_id, report.unchanged


def evaluate(settings: Settings, folder: Path, *, embedder: str | None = None, modes: list[str] | None = None,
             limit: int | None = None, show_progress: bool = True) -> dict:
    data = load_beir(folder)
    embedder = embedder or settings.embedder
    eval_settings, snapshot_id, reused = ensure_generation(settings, data, embedder, show_progress)
    snapshot = Snapshot(snapshot_files.snapshot_dir(eval_settings.home_path, snapshot_id), settings.models_dir,
                        hnsw_ef_search=settings.index.hnsw_ef_search, ivf_nprobe=settings.index.ivf_nprobe)
    retriever = Retriever(settings.retrieval)
    modes = modes or ([*SEARCH_MODES] + (["hybrid+rerank"] if retriever.can_rerank else []))
    qids = sorted(data.queries)[: limit or None]
    results: dict[str, dict] = {}
    for mode in modes:
        base, rerank = (mode.split("+")[0], mode.endswith("+rerank"))
        ndcg, r10, r100, mrr, lat, lat_search = [], [], [], [], [], []
        for qid in qids:
            t = time.perf_counter()
            res = retriever.search(snapshot, data.queries[qid], mode=base, top_k=100, max_per_doc=1, rerank=rerank,
                                   candidates=300, mmr_lambda=0)
            lat.append((time.perf_counter() - t) * 1000)
            lat_search.append(lat[-1] - res.timings_ms.get("embed_ms", 0.0))
            ranked = [h.doc_id for h in res.hits]
            rel = data.qrels[qid]
            ndcg.append(ndcg_at_k(ranked, rel, 10))
            r10.append(recall_at_k(ranked, rel, 10))
            r100.append(recall_at_k(ranked, rel, 100))
            mrr.append(mrr_at_k(ranked, rel, 10))
        n = max(1, len(qids))
        results[mode] = {"ndcg@10": round(sum(ndcg) / n, 4), "recall@10": round(sum(r10) / n, 4),
                         "recall@100": round(sum(r100) / n, 4), "mrr@10": round(sum(mrr) / n, 4),
                         "p50_ms": round(percentile(lat, 50), 2), "p95_ms": round(percentile(lat, 95), 2),
                         "p50_search_ms": round(percentile(lat_search, 50), 2),
                         "queries": len(qids)}
    m = snapshot.manifest
    snapshot.close()
    return {"dataset": data.name, "path": str(folder), "embedder": embedder, "generation_id": snapshot_id,
            "generation_reused": reused, "documents": m.counts.documents, "chunks": m.counts.chunks,
            "index_type": m.index_type, "modes": results}


def format_table(report: dict) -> str:
    lines = [f"{report['dataset']}  embedder={report['embedder']}  docs={report['documents']} "
             f"chunks={report['chunks']}  generation={report['generation_id']}"
             f"{' (reused)' if report['generation_reused'] else ''}",
             f"{'mode':<15}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>9}{'p95 ms':>9}"]
    for mode, r in report["modes"].items():
        lines.append(f"{mode:<15}{r['ndcg@10']:>9.4f}{r['recall@10']:>8.4f}{r['recall@100']:>8.4f}"
                     f"{r['mrr@10']:>8.4f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}")
    return "\n".join(lines)
