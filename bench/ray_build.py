"""Index build chunks/s on Ray Data (1 and 2 encoder actors) against the local build, on the same corpus.

    .venv/bin/python bench/ray_build.py ../shared/eval/nfcorpus-medical --limit 600 [--embedder minilm] [--cpus 2]

In one process: a local build into an empty data home, then Ray builds into empty homes (so every chunk is
embedded, none comes from a cache) with 1 and 2 actors on a local Ray instance of `--cpus` CPUs (loopback only).
Ray's own start (`ray.init`) is timed apart; each Ray build's time includes what Ray costs per build: planning
the dataset, starting the actors and loading one encoder in each, moving texts and vectors through the object
store. The overhead is stated as the Ray build's seconds minus the local build's, per build, and its share.
On one machine with few cores Ray cannot be faster than the local build (the local encoder already uses every
core through torch threads); the figures say what the engine costs, so a cluster's gain can be judged against
it. Prints and saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer.build import build  # noqa: E402
from rag.config import load_settings  # noqa: E402


def _subset(src: Path, limit: int | None, work: Path) -> Path:
    corpus = src / "corpus.jsonl" if (src / "corpus.jsonl").exists() else src
    if limit and corpus.suffix == ".jsonl":
        out = work / "corpus.jsonl"
        with open(corpus, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as w:
            for i, line in enumerate(f):
                if i >= limit:
                    break
                w.write(line)
        return out
    return corpus


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="BEIR folder (its corpus.jsonl is indexed) or any source folder/file")
    ap.add_argument("--limit", type=int, default=600, help="index only the first N documents")
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ray_build.json"))
    args = ap.parse_args()
    models = os.environ.get("RAG_MODEL_CACHE", "")

    with tempfile.TemporaryDirectory(prefix="rag-ray-bench-") as tmp:
        work = Path(tmp)
        corpus = _subset(Path(args.dataset), args.limit, work)

        def settings(name: str):
            return load_settings(environ={}, home=str(work / name), model_cache=models, embedder=args.embedder)

        local = build(settings("local"), [corpus], show_progress=False)
        print(f"local    {local.chunks} chunks  {local.seconds:7.2f} s  {local.chunks_per_s:7.1f} chunks/s")

        import ray

        t = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 object_store_memory=300 * 2**20,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
        ray_init_s = time.perf_counter() - t
        print(f"ray.init {ray_init_s:7.2f} s (once per driver)")
        runs = {}
        try:
            for actors in (1, 2):
                r = build(settings(f"ray-{actors}"), [corpus], show_progress=False, engine="ray", ray_actors=actors)
                assert r.chunks == local.chunks and r.vectors_embedded == r.chunks
                runs[actors] = r
                print(f"ray x{actors}   {r.chunks} chunks  {r.seconds:7.2f} s  {r.chunks_per_s:7.1f} chunks/s  "
                      f"({r.chunks_per_s / local.chunks_per_s:.2f}x local; embed stage "
                      f"{r.stage_seconds.get('embed', 0):.2f} s vs {local.stage_seconds.get('embed', 0):.2f} s)")
        finally:
            ray.shutdown()

    result = {
        "dataset": str(args.dataset), "limit": args.limit, "embedder": args.embedder, "ray_cpus": args.cpus,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "chunks": local.chunks,
        "local": {"seconds": round(local.seconds, 3), "chunks_per_s": round(local.chunks_per_s, 1),
                  "embed_s": round(local.stage_seconds.get("embed", 0), 3)},
        "ray_init_s": round(ray_init_s, 3),
        "ray": {str(a): {"seconds": round(r.seconds, 3), "chunks_per_s": round(r.chunks_per_s, 1),
                         "embed_s": round(r.stage_seconds.get("embed", 0), 3),
                         "vs_local": round(r.chunks_per_s / local.chunks_per_s, 3),
                         "overhead_s": round(r.seconds - local.seconds, 3),
                         "overhead_share": round((r.seconds - local.seconds) / r.seconds, 3)}
                for a, r in runs.items()},
    }
    for a, r in result["ray"].items():
        print(f"overhead with {a} actor(s): {r['overhead_s']:+.2f} s per build ({r['overhead_share']:.0%} of it), "
              f"plus ray.init {ray_init_s:.2f} s once")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
