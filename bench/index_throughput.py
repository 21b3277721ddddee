"""Index build throughput against the raw encoder, no-change rebuild speed-up, and peak memory.

    .venv/bin/python bench/index_throughput.py ../shared/eval/nfcorpus-medical [--embedder minilm] [--limit N]
        [--backends torch,openvino-int8]

In one process: (1) load and chunk the corpus and time the raw encoder on exactly those chunk texts,
(2) run a full build into an empty data home, (3) rebuild with nothing changed (the build notices from the
documents' hashes and writes nothing), (4) force a rebuild with nothing changed (a new generation; every vector
comes from the embedding cache: chunking, keyword index and FAISS are redone). Goals: the build keeps >= 90% of
the encoder's chunks/s; the unchanged rebuild is >= 20x faster than the full build. With several --backends
(encoder variants, rag.models.encoder_variants), (1) and (2) run once per backend, each into its own empty data
home, and the build chunks/s are compared with the first backend's; (3) and (4) run for the last one. Prints and
saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.build import build  # noqa: E402
from indexer.chunking import Chunker  # noqa: E402
from indexer.loaders import load_sources  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.models.embedders import load_embedder  # noqa: E402


class PeakRSS:
    """Samples this process's RSS every 50 ms: the peak of one phase, not of the whole run."""

    def __init__(self):
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="BEIR folder (its corpus.jsonl is indexed) or any source folder/file")
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--limit", type=int, help="index only the first N documents (a JSONL subset is written)")
    ap.add_argument("--backends", default="torch", help="encoder variants to build with, in this order (comma list)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "index_throughput.json"))
    args = ap.parse_args()
    backends = args.backends.split(",")

    src = Path(args.dataset)
    corpus = src / "corpus.jsonl" if (src / "corpus.jsonl").exists() else src
    work = Path(tempfile.mkdtemp(prefix="bench-index-"))
    if args.limit and corpus.suffix == ".jsonl":
        subset = work / "corpus.jsonl"
        with open(corpus, encoding="utf-8") as f, open(subset, "w", encoding="utf-8") as out:
            for i, line in enumerate(f):
                if i >= args.limit:
                    break
                out.write(line)
        corpus = subset
    # RAG_MODEL_CACHE (or model_cache) reuses converted and exported models; loading them is timed apart.
    cache = load_settings().model_cache or str(work / "models")
    per_backend = {}
    for backend in backends:
        per_backend[backend] = run_backend(args, backend, corpus, work, cache, src)
    result = per_backend[backends[-1]]
    first = per_backend[backends[0]]
    result["backends"] = {b: {"raw_encoder": r["raw_encoder"], "full_build": r["full_build"],
                              "model_load_s": r["model_load_s"],
                              "build_vs_first": round(r["full_build"]["chunks_per_s"]
                                                      / first["full_build"]["chunks_per_s"], 2)}
                          for b, r in per_backend.items()}
    if len(backends) > 1:
        print(f"\n{'backend':<15}{'encoder c/s':>12}{'build c/s':>11}{'vs ' + backends[0]:>10}   stage seconds")
        for b, r in result["backends"].items():
            print(f"{b:<15}{r['raw_encoder']['chunks_per_s']:>12.1f}{r['full_build']['chunks_per_s']:>11.1f}"
                  f"{r['build_vs_first']:>9.2f}x   {r['full_build']['stage_seconds']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")
    return 0


def run_backend(args, backend: str, corpus: Path, work: Path, cache: str, src: Path) -> dict:
    settings = load_settings(home=str(work / f"home-{backend}"), model_cache=cache, embedder_backend=backend)
    last = backend == args.backends.split(",")[-1]
    t = time.perf_counter()
    emb = load_embedder(args.embedder, settings.models_dir, backend)
    load_s = time.perf_counter() - t
    docs = load_sources([corpus]).documents
    max_tokens = min(settings.index.chunk_tokens, emb.max_tokens - 32)
    chunker = Chunker(emb.token_counter, max_tokens=max_tokens, overlap=min(settings.index.chunk_overlap, max_tokens // 3))
    texts = [c.embed_text(d.title) for d, chunks in chunker.chunk_many(docs) for c in chunks]
    print(f"{len(docs)} documents -> {len(texts)} chunks; embedder {emb.name} ({backend}) on {emb.device}",
          file=sys.stderr)

    emb.embed_passages(texts[:64], batch_size=settings.index.batch_size)  # warm-up, excluded
    with PeakRSS() as mem_raw:
        t = time.perf_counter()
        emb.embed_passages(texts, batch_size=settings.index.batch_size)
        raw_s = time.perf_counter() - t

    with PeakRSS() as mem_full:
        full = build(settings, [corpus], embedder=args.embedder, show_progress=True)
    raw_cps = len(texts) / raw_s
    print(f"{backend}: raw encoder {raw_cps:.1f} chunks/s, full build {full.chunks_per_s:.1f} chunks/s "
          f"({full.seconds:.1f} s; {full.stage_seconds})", file=sys.stderr, flush=True)
    if not last:
        return {"raw_encoder": {"seconds": round(raw_s, 2), "chunks_per_s": round(raw_cps, 2)},
                "full_build": {"seconds": round(full.seconds, 2), "chunks_per_s": round(full.chunks_per_s, 2),
                               "stage_seconds": {k: round(v, 2) for k, v in full.stage_seconds.items()}},
                "model_load_s": round(load_s, 2)}
    with PeakRSS() as mem_re:
        again = build(settings, [corpus], embedder=args.embedder, show_progress=False)
    with PeakRSS() as mem_forced:
        forced = build(settings, [corpus], embedder=args.embedder, show_progress=False, force=True)
    assert again.unchanged and forced.vectors_reused == forced.chunks

    result = {
        "dataset": str(src), "documents": full.documents, "chunks": full.chunks, "embedder": emb.name,
        "backend": backend, "model_load_s": round(load_s, 2),
        "device": emb.device, "cpus": os.cpu_count(), "machine": platform.machine(),
        "raw_encoder": {"seconds": round(raw_s, 2), "chunks_per_s": round(raw_cps, 2)},
        "full_build": {"seconds": round(full.seconds, 2), "chunks_per_s": round(full.chunks_per_s, 2),
                       "stage_seconds": {k: round(v, 2) for k, v in full.stage_seconds.items()}},
        "rebuild_unchanged": {"seconds": round(again.seconds, 2), "vectors_reused": again.vectors_reused,
                              "stage_seconds": {k: round(v, 2) for k, v in again.stage_seconds.items()}},
        "rebuild_forced": {"seconds": round(forced.seconds, 2), "vectors_reused": forced.vectors_reused,
                           "stage_seconds": {k: round(v, 2) for k, v in forced.stage_seconds.items()}},
        "pipeline_vs_encoder": round(full.chunks_per_s / raw_cps, 3),
        "rebuild_speedup": round(full.seconds / again.seconds, 1),
        "forced_rebuild_speedup": round(full.seconds / forced.seconds, 1),
        "peak_rss_mb": {"raw_encoder": mem_raw.peak >> 20, "full_build": mem_full.peak >> 20,
                        "rebuild": mem_re.peak >> 20, "forced_rebuild": mem_forced.peak >> 20,
                        "process_max": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10},
        "goals": {"pipeline_vs_encoder>=0.9": full.chunks_per_s / raw_cps >= 0.9,
                  "rebuild_speedup>=20": full.seconds / again.seconds >= 20},
    }
    print(f"\nraw encoder          {raw_cps:8.1f} chunks/s   ({len(texts)} chunks in {raw_s:.1f} s)")
    print(f"full build           {full.chunks_per_s:8.1f} chunks/s   ({full.seconds:.1f} s)  "
          f"= {result['pipeline_vs_encoder']:.1%} of the encoder")
    print(f"rebuild (unchanged)  {again.seconds:8.2f} s          = {result['rebuild_speedup']}x faster "
          "than the full build")
    print(f"rebuild (--force)    {forced.seconds:8.2f} s          = {result['forced_rebuild_speedup']}x faster "
          f"(all {forced.vectors_reused} vectors from the cache)")
    mem = result["peak_rss_mb"]
    print(f"peak RSS             raw {mem['raw_encoder']} MB, build {mem['full_build']} MB, "
          f"rebuild {mem['rebuild']} MB, forced {mem['forced_rebuild']} MB")
    return result


if __name__ == "__main__":
    sys.exit(main())
