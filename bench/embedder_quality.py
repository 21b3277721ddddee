"""Choose the default embedder by measurement: dense-only nDCG@10 of each embedder on each retrieval set.

    .venv/bin/python bench/embedder_quality.py ../shared/eval [--embedders minilm,e5-small]

Each (dataset, embedder) generation is built once under the data home's eval/ folder and reused by later
runs and by `rag eval retrieval`. Prints a table and saves JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import load_settings  # noqa: E402
from evaluation.retrieval import evaluate  # noqa: E402

SETS = ("nfcorpus-medical", "qasc-education", "tatqa-finance")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("eval_dir", help="folder holding the BEIR sets (../shared/eval)")
    ap.add_argument("--embedders", default="minilm,e5-small")
    ap.add_argument("--modes", default="dense")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "embedder_quality.json"))
    args = ap.parse_args()
    settings = load_settings()
    embedders = args.embedders.split(",")
    modes = args.modes.split(",")
    table: dict[str, dict[str, dict]] = {}
    for name in SETS:
        for emb in embedders:
            rep = evaluate(settings, Path(args.eval_dir) / name, embedder=emb, modes=modes)
            table.setdefault(name, {})[emb] = rep["modes"]
            print(f"{name:<18}{emb:<10}" + "  ".join(f"{m} nDCG@10 {r['ndcg@10']:.4f}" for m, r in rep["modes"].items()),
                  flush=True)
    print(f"\n{'dataset':<18}" + "".join(f"{e:>12}" for e in embedders) + "   (nDCG@10, " + modes[0] + ")")
    for name in SETS:
        print(f"{name:<18}" + "".join(f"{table[name][e][modes[0]]['ndcg@10']:>12.4f}" for e in embedders))
    means = {e: sum(table[n][e][modes[0]]["ndcg@10"] for n in SETS) / len(SETS) for e in embedders}
    print(f"{'mean':<18}" + "".join(f"{means[e]:>12.4f}" for e in embedders))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"modes": modes, "results": table, "mean_ndcg@10": means}, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
