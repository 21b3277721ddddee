"""Encoder variants against PyTorch: dense nDCG@10 on the retrieval sets, and encode speed.

    .venv/bin/python bench/encoder_variants.py quality ../shared/eval [--sets nfcorpus-medical] [--backends onnx-int8]
    .venv/bin/python bench/encoder_variants.py speed ../shared/eval/nfcorpus-medical [--backends torch,onnx,...]
    .venv/bin/python bench/encoder_variants.py table        # the README table from the saved results

`quality` builds (or reuses) one eval generation per (set, variant) through `rag eval retrieval`'s code, so
each variant embeds the corpus with its own encoder (the embedding cache keys vectors by encoder identity) and
embeds its queries with the same one. Results accumulate in bench/results/encoder_variants.json, one entry per
(set, variant), so each run can take one set under the heavy lock. `speed` loads every backend in one process
and times the same texts: single queries (p50 ms, as a request embeds them) and passages in batches of 32
(passages/s), as ratios against PyTorch measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402

from rag.config import load_settings  # noqa: E402
from rag.models.embedders import load_embedder  # noqa: E402
from rag.models.encoder_variants import BACKENDS  # noqa: E402

SETS = ("nfcorpus-medical", "qasc-education", "tatqa-finance")
RESULTS = Path(__file__).parent / "results" / "encoder_variants.json"
MAX_LOSS = 0.005  # a variant may become the CPU default only within this much of PyTorch's nDCG@10 on every set


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"quality": {}, "speed": {}}


def _save(data: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def quality(args) -> None:
    from evaluation.retrieval import evaluate

    base = load_settings()
    data = _load()
    for name in args.sets.split(","):
        for backend in args.backends.split(","):
            settings = msgspec.structs.replace(base, embedder_backend=backend)
            t = time.perf_counter()
            rep = evaluate(settings, Path(args.eval_dir) / name, embedder=args.embedder, modes=["dense"])
            r = rep["modes"]["dense"]
            entry = {"ndcg@10": r["ndcg@10"], "recall@10": r["recall@10"], "p50_ms": r["p50_ms"],
                     "chunks": rep["chunks"], "generation_id": rep["generation_id"],
                     "reused": rep["generation_reused"], "seconds": round(time.perf_counter() - t, 1)}
            data["quality"].setdefault(args.embedder, {}).setdefault(name, {})[backend] = entry
            _save(data)
            print(f"{name:<18}{backend:<15}dense nDCG@10 {r['ndcg@10']:.4f}  ({entry['seconds']}s)", flush=True)


def _texts(folder: Path, n_passages: int, n_queries: int) -> tuple[list[str], list[str]]:
    passages, queries = [], []
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            passages.append(((row.get("title") or "") + "\n" + row.get("text", "")).strip())
            if len(passages) >= n_passages:
                break
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            queries.append(json.loads(line)["text"])
            if len(queries) >= n_queries:
                break
    return passages, queries


def speed(args) -> None:
    settings = load_settings()
    passages, queries = _texts(Path(args.dataset), args.passages, args.queries)
    out = {}
    for backend in args.backends.split(","):
        emb = load_embedder(args.embedder, settings.models_dir, backend)
        emb.embed_passages(passages[:32])
        emb.embed_queries(queries[:4])
        lat = []
        for q in queries:
            t = time.perf_counter()
            emb.embed_queries([q])
            lat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        emb.embed_passages(passages, batch_size=32)
        pps = len(passages) / (time.perf_counter() - t)
        out[backend] = {"query_p50_ms": round(statistics.median(lat), 2), "passages_per_s": round(pps, 1),
                        "identity": emb.identity}
        print(f"{backend:<15}query p50 {out[backend]['query_p50_ms']:7.2f} ms   passages {pps:7.1f}/s", flush=True)
    if "torch" in out:
        for r in out.values():
            r["query_speedup"] = round(out["torch"]["query_p50_ms"] / r["query_p50_ms"], 2)
            r["passage_speedup"] = round(r["passages_per_s"] / out["torch"]["passages_per_s"], 2)
    data = _load()
    data["speed"][args.embedder] = {"dataset": Path(args.dataset).name, "passages": len(passages),
                                    "queries": len(queries), "results": out}
    _save(data)
    table(args)


def table(args) -> None:
    data = _load()
    q = data["quality"].get(args.embedder, {})
    sp = data["speed"].get(args.embedder, {}).get("results", {})
    backends = [b for b in BACKENDS if any(b in q.get(s, {}) for s in SETS) or b in sp]
    print(f"| set ({args.embedder}, dense nDCG@10) | " + " | ".join(backends) + " |")
    print("|---|" + "---|" * len(backends))
    for s in SETS:
        row = q.get(s, {})
        print(f"| {s} | " + " | ".join(f"{row[b]['ndcg@10']:.4f}" if b in row else "not run" for b in backends)
              + " |")
    if sp:
        print("| query p50 ms (1 query) | " + " | ".join(f"{sp[b]['query_p50_ms']:.1f}" if b in sp else "-"
                                                     for b in backends) + " |")
        print("| passages/s (batch 32) | " + " | ".join(f"{sp[b]['passages_per_s']:.1f}" if b in sp else "-"
                                                    for b in backends) + " |")
    ok = []
    for b in backends:
        if b == "torch":
            continue
        losses = [q[s]["torch"]["ndcg@10"] - q[s][b]["ndcg@10"] for s in SETS if b in q.get(s, {})
                  and "torch" in q.get(s, {})]
        if len(losses) == len(SETS) and max(losses) <= MAX_LOSS:
            ok.append(b)
        print(f"{b}: nDCG@10 loss vs torch per set {[round(x, 4) for x in losses]}"
              f"{' (within ' + str(MAX_LOSS) + ' on every set)' if b in ok else ''}")
    best = max(ok, key=lambda b: sp.get(b, {}).get("passages_per_s", 0.0), default="torch")
    print(f"CPU default by this rule: {best}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    qp = sub.add_parser("quality")
    qp.add_argument("eval_dir")
    qp.add_argument("--sets", default=",".join(SETS))
    qp.add_argument("--backends", default=",".join(BACKENDS))
    sp = sub.add_parser("speed")
    sp.add_argument("dataset")
    sp.add_argument("--backends", default=",".join(BACKENDS))
    sp.add_argument("--passages", type=int, default=256)
    sp.add_argument("--queries", type=int, default=100)
    tp = sub.add_parser("table")
    for p in (qp, sp, tp):
        p.add_argument("--embedder", default="e5-small")
    args = ap.parse_args()
    {"quality": quality, "speed": speed, "table": table}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
