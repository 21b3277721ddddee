"""Cosine thresholds per embedder.

Each threshold was tuned on MiniLM; cosines are not comparable across embedders (unrelated English text scores
~0.0-0.1 with MiniLM and ~0.7-0.8 with e5), so a named embedder carries its own values, mapped from MiniLM's by
matching quantiles over the same real text pairs (`bench/calibrate_embedders.py`, results in
bench/results/calibration.json). A local embedder folder has no calibration: MiniLM's values apply. (Whether an
answer abstains is not a cosine threshold but a fitted model: rag.answer_select.)
"""

from __future__ import annotations

# What each value decides:
#   support_cosine     answer sentence vs passage sentence: at or above it a paraphrase counts as support
#   reason_min_cosine  document vs document: below it a recommendation reason names no content link
MINILM_THRESHOLDS: dict[str, float] = {"support_cosine": 0.70, "reason_min_cosine": 0.10}

CALIBRATED: dict[str, dict[str, float]] = {
    "minilm": MINILM_THRESHOLDS,
    # bench/calibrate_embedders.py ../shared/eval/squad-qa/qa.jsonl --embedder e5-small --n 200: on 344-400
    # pairs per kind, the mapped values keep the same share of related and unrelated pairs above the line as
    # MiniLM's (support: 60.7% related / 0% unrelated; reason: 100% / 20.5%).
    "e5-small": {"support_cosine": 0.89, "reason_min_cosine": 0.77},
}


def threshold(embedder, kind: str) -> float:
    """The `kind` threshold for `embedder` (an Embedder, its name, or None for MiniLM's values)."""
    name = embedder if isinstance(embedder, str) or embedder is None else getattr(embedder, "name", None)
    return CALIBRATED.get(name or "minilm", MINILM_THRESHOLDS)[kind]
