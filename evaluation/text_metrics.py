"""Text-overlap metrics for summaries and free-text answers: ROUGE-1/2/L (F-measure) from Google's `rouge-score`,
corpus BLEU from `sacrebleu`, and PubMedQA's yes/no/maybe scores (accuracy and macro-F1, as its official
evaluation.py computes them with scikit-learn).

Chinese text, and what each library does with it:
- `rouge-score`'s default tokenizer lowercases, replaces every character outside [a-z0-9] with a space and
  (with `use_stemmer`) Porter-stems words longer than three letters. Chinese characters are dropped, so any
  Chinese summary scores 0 against any Chinese reference. `RougeTokenizer` below gives every CJK character its own
  token (the character-level convention of Chinese ROUGE, e.g. LCSTS) and leaves every other run of text to the
  library's default tokenizer, so English text tokenizes exactly as the library's documented default.
- `sacrebleu`'s default `13a` tokenizer splits on spaces and punctuation: an unspaced Chinese sentence is one
  token, and BLEU is ~0. Its `zh` tokenizer splits Chinese characters apart and applies `13a` to the rest; it is
  used whenever a reference holds Chinese text, otherwise `13a` (the library's default). The report keeps the
  signature sacrebleu prints, which names the tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rouge_score import rouge_scorer, tokenizers

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_chinese(text: str) -> bool:
    return bool(_HAN.search(text))


class RougeTokenizer(tokenizers.Tokenizer):
    """rouge-score's default tokenizer (lowercase, [a-z0-9] words, Porter stemmer) plus one token per Chinese
    character; full-width punctuation is dropped as the default drops ASCII punctuation."""

    def __init__(self, use_stemmer: bool = True):
        self._default = tokenizers.DefaultTokenizer(use_stemmer=use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        last = 0
        for m in _CJK.finditer(text):
            tokens += self._default.tokenize(text[last:m.start()])
            tokens += [ch for ch in m.group(0) if _HAN.match(ch)]
            last = m.end()
        tokens += self._default.tokenize(text[last:])
        return tokens


_SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokenizer())


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of one prediction against one reference (0..1)."""
    scores = _SCORER.score(reference, prediction)  # rouge-score takes (target, prediction)
    return {k: float(scores[k].fmeasure) for k in ROUGE_TYPES}


def rouge_scores(prediction: str, reference: str) -> dict[str, dict[str, float]]:
    """Precision, recall and F of each ROUGE type (the long-document report needs the precision too)."""
    scores = _SCORER.score(reference, prediction)
    return {k: {"p": float(s.precision), "r": float(s.recall), "f": float(s.fmeasure)} for k, s in scores.items()}


def bleu_tokenizer(references: Sequence[str]) -> str:
    return "zh" if any(has_chinese(r) for r in references) else "13a"


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], tokenize: str | None = None,
                more_references: Sequence[Sequence[str]] = ()) -> dict[str, object]:
    """sacrebleu's corpus BLEU (0..100) of one prediction per reference, with its signature. `more_references`:
    further reference streams (each one reference per prediction), as sacrebleu takes several."""
    from sacrebleu.metrics import BLEU

    streams = [list(references), *(list(r) for r in more_references)]
    if any(len(r) != len(predictions) for r in streams):
        raise ValueError(f"{len(predictions)} predictions for {[len(r) for r in streams]} references")
    metric = BLEU(tokenize=tokenize or bleu_tokenizer([t for r in streams for t in r]))
    result = metric.corpus_score(list(predictions), streams)
    return {"bleu": round(float(result.score), 2), "signature": str(metric.get_signature()),
            "precisions": [round(p, 1) for p in result.precisions], "brevity_penalty": round(result.bp, 3)}


# --- PubMedQA decisions -------------------------------------------------------------------------------------

DECISIONS = ("yes", "no", "maybe")


def decision_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, object]:
    """Accuracy and macro-F1 over yes/no/maybe, as PubMedQA's evaluation.py computes them (scikit-learn's
    accuracy_score and f1_score(average="macro")), plus the per-class F1 and the confusion counts."""
    from sklearn.metrics import accuracy_score, f1_score

    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels")
    if not gold:
        return {"accuracy": 0.0, "macro_f1": 0.0, "f1": {}, "confusion": {}, "n": 0}
    per_class = f1_score(gold, predicted, labels=list(DECISIONS), average=None, zero_division=0)
    confusion = {g: {p: sum(1 for a, b in zip(gold, predicted) if a == g and b == p) for p in DECISIONS}
                 for g in DECISIONS}
    return {"accuracy": round(float(accuracy_score(gold, predicted)), 4),
            "macro_f1": round(float(f1_score(gold, predicted, average="macro", zero_division=0)), 4),
            "f1": {c: round(float(v), 4) for c, v in zip(DECISIONS, per_class)},
            "confusion": confusion, "n": len(gold)}


# The answer's stance, read as a reader of the answer would: an explicit leading yes/no first (generative answers
# often open with one), then hedging (the authors' "may", "unclear", "further studies are needed" conclusions are
# PubMedQA's maybe), then negation of the finding ("no significant difference", "did not"), else yes. A lexical
# reading, not a model: it is what turns the product's free-text answer into the dataset's label.
_LEADING = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_HEDGE = re.compile(r"\b(may|might|could|unclear|not clear|inconclusive|uncertain|remains? to be|further (?:studies|"
                    r"research|trials|investigation)|(?:more|larger) (?:studies|research|trials)|insufficient|"
                    r"cannot be (?:determined|concluded)|controversial|conflicting)\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(no|not|none|neither|nor|without|cannot|failed|fails|unrelated|did not|does not|"
                       r"do not|was not|were not|is not|are not|neither|lack of|absence of)\b|n't\b", re.IGNORECASE)


def answer_decision(answer: str, abstained: bool = False) -> str:
    """yes / no / maybe from an answer's text; `maybe` when the product abstained or said nothing."""
    text = answer.strip()
    if abstained or not text:
        return "maybe"
    lead = _LEADING.match(text)
    if lead:
        return lead.group(1).lower()
    if _HEDGE.search(text):
        return "maybe"
    return "no" if _NEGATION.search(text) else "yes"
