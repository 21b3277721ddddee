"""Carry the cosine thresholds tuned on MiniLM over to another embedder, by matching quantiles on real text.

    .venv/bin/python bench/calibrate_embedders.py ../shared/eval/squad-qa/qa.jsonl [--embedder e5-small] [--n 400]

Cosines are not comparable across embedders: MiniLM scores unrelated English text around 0.0-0.1, e5 around
0.7-0.8. Each threshold in rag.models.calibration is defined on MiniLM and belongs to one kind of pair; for each
kind this script embeds the same pairs with both models (a mix of related and unrelated ones, from SQuAD
paragraphs) and maps the MiniLM threshold to the other model's cosine at the same quantile:

  support_cosine      sentence  vs sentence  (answer sentence as query vs passage sentences, as grounding does)
  reason_min_cosine   passage   vs passage   (document vectors, as recommendation reasons compare them)

Prints the mapped values and the share of related/unrelated pairs above each threshold under both models, and
saves JSON under bench/results/. The values go into rag/models/calibration.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.config import load_settings  # noqa: E402
from evaluation.answer_sets import squad_set  # noqa: E402
from rag.grounding import split_sentences  # noqa: E402
from rag.models.calibration import MINILM_THRESHOLDS  # noqa: E402
from rag.models.embedders import load_embedder  # noqa: E402


@dataclass
class Row:
    question: str
    context: str
    answers: list[str]


def pairs(path: Path, n: int, seed: int) -> dict[str, tuple[list[tuple[str, str]], list[bool]]]:
    qset = squad_set(path, None, seed)
    text = {d["id"]: d["text"] for d in qset.documents}
    rows = [Row(q.question, text[q.gold_docs[0]], q.answers) for q in qset.questions]
    rng = random.Random(seed)
    contexts = sorted({r.context for r in rows})
    rng.shuffle(rows)
    rows = rows[:n]
    ss, pp = [], []
    for r in rows:
        other = rng.choice([c for c in rng.sample(contexts, 3) if c != r.context])
        sents = [s.text for s in split_sentences(r.context)]
        answer = next((s for s in sents if any(a in s for a in r.answers)), None)
        if answer and len(sents) > 1:
            # a paraphrase stand-in: the question turned statement is unavailable, so pair the answer sentence
            # with the question (related) and with a sentence of another paragraph (unrelated)
            ss += [((r.question + " " + r.answers[0], answer), True),
                   ((r.question + " " + r.answers[0], rng.choice([s.text for s in split_sentences(other)])), False)]
        pp += [((r.context, rng.choice(contexts)), False)]
    # related passages: two halves of one paragraph
    for r in rows:
        sents = [s.text for s in split_sentences(r.context)]
        if len(sents) >= 4:
            pp.append(((" ".join(sents[: len(sents) // 2]), " ".join(sents[len(sents) // 2:])), True))
    return {k: ([p for p, _ in v], [y for _, y in v]) for k, v in
            {"support_cosine": ss, "reason_min_cosine": pp}.items()}


def cosines(emb, kind: str, items: list[tuple[str, str]]) -> np.ndarray:
    left, right = [a for a, _ in items], [b for _, b in items]
    if kind == "reason_min_cosine":
        a, b = emb.embed_passages(left), emb.embed_passages(right)
    else:
        a, b = emb.embed_queries(left), emb.embed_passages(right)
    return np.sum(a * b, axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("qa_jsonl")
    ap.add_argument("--embedder", default="e5-small")
    ap.add_argument("--n", type=int, default=400, help="SQuAD rows to draw pairs from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "calibration.json"))
    args = ap.parse_args()
    settings = load_settings()
    ref = load_embedder("minilm", settings.models_dir)
    other = load_embedder(args.embedder, settings.models_dir)
    result = {"embedder": other.name, "identity": other.identity, "thresholds": {}}
    for kind, (items, related) in pairs(Path(args.qa_jsonl), args.n, args.seed).items():
        related = np.array(related)
        c_ref, c_other = cosines(ref, kind, items), cosines(other, kind, items)
        t_ref = MINILM_THRESHOLDS[kind]
        q = float(np.mean(c_ref < t_ref))  # the quantile of the MiniLM threshold over all pairs
        t_other = float(np.quantile(c_other, q))
        row = {"minilm": t_ref, other.name: round(t_other, 4), "quantile": round(q, 4), "pairs": len(items),
               "related_above": {"minilm": round(float(np.mean(c_ref[related] >= t_ref)), 3),
                                 other.name: round(float(np.mean(c_other[related] >= t_other)), 3)},
               "unrelated_above": {"minilm": round(float(np.mean(c_ref[~related] >= t_ref)), 3),
                                   other.name: round(float(np.mean(c_other[~related] >= t_other)), 3)}}
        result["thresholds"][kind] = row
        print(f"{kind:<20} minilm {t_ref:.3f} -> {other.name} {t_other:.4f}   (quantile {q:.3f}, {len(items)} pairs; "
              f"related above: {row['related_above']['minilm']:.3f} / {row['related_above'][other.name]:.3f}, "
              f"unrelated above: {row['unrelated_above']['minilm']:.3f} / {row['unrelated_above'][other.name]:.3f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
