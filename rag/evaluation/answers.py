"""`rag eval answers`: answer quality on SQuAD-style QA rows ({"id", "title", "context", "question", "answers"}).

A deterministic sample of questions is drawn; the union of their contexts (one document per distinct context)
is indexed with the production indexer into an eval data home keyed by the dataset and the sample, so a second
run reuses that generation. Every question then goes through the real Answerer.

Reported: exact match and F1 with the official SQuAD v1.1 normalization (on the answer text without its [n]
markers; an abstention scores 0), citation accuracy (answered questions whose citations include the gold
context's document), the invalid-citation rate of the final answers (a [n] naming no passage given: must be 0),
abstention and fallback rates, whether the gold context was among the passages, and seconds per answer.
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import re
import string
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from rag import store
from rag.answering import Answerer
from rag.config import Settings
from rag.evaluation.metrics import percentile
from rag.generation import Generation
from rag.grounding import cited_numbers, strip_citations
from rag.retriever import Retriever


@dataclass
class QARow:
    id: str
    title: str
    context: str
    question: str
    answers: list[str]


def load_qa(path: Path) -> list[QARow]:
    """Rows of a QA JSONL file (or of `qa.jsonl` inside a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "qa.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such QA JSONL file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                rows.append(QARow(str(r["id"]), str(r.get("title") or ""), r["context"], r["question"],
                                  [str(a) for a in r["answers"]]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{line_no}: expected id, context, question, answers ({e})") from e
    if not rows:
        raise ValueError(f"{path} holds no QA rows")
    return rows


def sample_rows(rows: list[QARow], limit: int | None, seed: int) -> list[QARow]:
    """A seeded random sample, in file order; the same (file, limit, seed) always gives the same questions."""
    if not limit or limit >= len(rows):
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def context_doc_id(context: str) -> str:
    return "ctx-" + hashlib.sha1(context.encode("utf-8")).hexdigest()[:12]


# --- SQuAD v1.1 metrics (the official evaluate-v1.1.py normalization) ---------------------------------------

def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def contains_answer(prediction: str, golds: list[str]) -> float:
    """Whether a gold answer occurs in the prediction, word-aligned after normalization. EM and F1 punish the
    whole-sentence answers of the extractive backend however right they are; this says whether the answer is
    in what the reader gets."""
    pred = f" {normalize_answer(prediction)} "
    return float(any(f" {g} " in pred for g in (normalize_answer(x) for x in golds) if g))


def f1_score(prediction: str, golds: list[str]) -> float:
    def f1(pred: str, gold: str) -> float:
        p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
        common = sum((collections.Counter(p) & collections.Counter(g)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(g)
        return 2 * precision * recall / (precision + recall)

    return max(f1(prediction, g) for g in golds)


# --- the eval index -----------------------------------------------------------------------------------------

def ensure_generation(settings: Settings, dataset: str, rows: list[QARow], show_progress: bool = True
                      ) -> tuple[Path, str, bool]:
    """(eval data home, generation id, reused?) for the sample's contexts."""
    from indexer.build import build

    h = hashlib.sha256(f"{dataset}\x00{settings.embedder}\x00".encode())
    for r in rows:
        h.update(f"{r.id}\x00{context_doc_id(r.context)}\n".encode())
    home = settings.home_path / "eval" / f"{_safe(dataset)}-{h.hexdigest()[:16]}"
    current = store.read_pointer(home)
    if current and (store.generation_dir(home, current) / store.MANIFEST).exists():
        return home, current, True
    eval_settings = Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__},
                                "home": str(home), "model_cache": str(settings.models_dir)})
    docs = {}
    for r in rows:
        docs.setdefault(context_doc_id(r.context), {"id": context_doc_id(r.context),
                                                    "title": r.title.replace("_", " "), "text": r.context})
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        source = Path(tmp) / "contexts.jsonl"
        source.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs.values()), encoding="utf-8")
        report = build(eval_settings, [source], publish=True, show_progress=show_progress)
    return home, report.generation_id, False


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]


# --- the run ------------------------------------------------------------------------------------------------

def evaluate(settings: Settings, path: Path, *, backend: str | None = None, limit: int | None = 300, seed: int = 0,
             show_progress: bool = True) -> dict:
    path = Path(path)
    rows = load_qa(path)
    sample = sample_rows(rows, limit, seed)
    dataset = f"{path.parent.name}-{path.stem}" if path.is_file() else path.name
    home, gen_id, reused = ensure_generation(settings, dataset, sample, show_progress)
    gen = Generation(store.generation_dir(home, gen_id), settings.models_dir,
                     hnsw_ef_search=settings.index.hnsw_ef_search, ivf_nprobe=settings.index.ivf_nprobe)
    answerer = Answerer(settings, Retriever(settings.retrieval))
    backend_name = answerer.generators.resolve_name(backend)
    answerer.generators.get(backend_name)  # load the model now, so seconds per answer exclude loading it
    _ = gen.embedder

    per_question = []
    for row in tqdm(sample, desc=f"answers ({backend_name})", unit="q", file=sys.stderr, disable=not show_progress):
        t = time.perf_counter()
        ans = answerer.answer(gen, row.question, backend=backend_name)
        seconds = time.perf_counter() - t
        prediction = "" if ans.abstained else strip_citations(ans.answer)
        gold_doc = context_doc_id(row.context)
        given = {p.n for p in ans.passages}
        per_question.append({
            "id": row.id, "question": row.question, "gold": row.answers, "answer": ans.answer,
            "abstained": ans.abstained, "fallback": ans.fallback,
            "em": exact_match(prediction, row.answers) if prediction else 0.0,
            "f1": f1_score(prediction, row.answers) if prediction else 0.0,
            "contains_answer": contains_answer(prediction, row.answers) if prediction else 0.0,
            "cited_gold": any(c.doc_id == gold_doc for c in ans.citations),
            "has_citations": bool(ans.citations),
            "invalid_citation": any(n not in given for n in cited_numbers(ans.answer)),
            "gold_in_passages": any(p.doc_id == gold_doc for p in ans.passages),
            "invalid_citations_removed": ans.invalid_citations_removed,
            "citations_added": ans.citations_added,
            "seconds": round(seconds, 3),
        })
    m = gen.manifest
    gen.close()
    return {"dataset": dataset, "path": str(path), "backend": backend_name, "seed": seed, "questions": len(sample),
            "generation_id": gen_id, "generation_reused": reused, "documents": m.counts.documents,
            "chunks": m.counts.chunks, "embedder": m.embedder.name, "metrics": summarize_metrics(per_question),
            "per_question": per_question}


def summarize_metrics(per_question: list[dict]) -> dict:
    n = max(1, len(per_question))
    answered = [q for q in per_question if not q["abstained"]]
    seconds = [q["seconds"] for q in per_question]
    reasons = collections.Counter(_reason_kind(q["fallback"]) for q in per_question if q["fallback"])
    return {
        "exact_match": round(100 * sum(q["em"] for q in per_question) / n, 2),
        "f1": round(100 * sum(q["f1"] for q in per_question) / n, 2),
        "contains_answer": round(sum(q.get("contains_answer", 0.0) for q in per_question) / n, 4),
        "citation_accuracy": round(sum(q["cited_gold"] for q in answered) / max(1, len(answered)), 4),
        "invalid_citation_rate": round(sum(q["invalid_citation"] for q in per_question) / n, 4),
        "abstention_rate": round(sum(q["abstained"] for q in per_question) / n, 4),
        "fallback_rate": round(sum(bool(q["fallback"]) for q in per_question) / n, 4),
        "gold_context_retrieved": round(sum(q["gold_in_passages"] for q in per_question) / n, 4),
        "generator_invalid_citations_removed": sum(q["invalid_citations_removed"] for q in per_question),
        "seconds_per_answer": round(sum(seconds) / n, 3),
        "p50_s": round(percentile(seconds, 50), 3),
        "p95_s": round(percentile(seconds, 95), 3),
        "fallback_reasons": dict(reasons.most_common()),
    }


def _reason_kind(reason: str) -> str:
    """Group fallback reasons that differ only in numbers ("3 of 4 sentences ...")."""
    return re.sub(r"\d+", "N", reason.split(":")[0])


def format_table(report: dict) -> str:
    m = report["metrics"]
    lines = [
        f"{report['dataset']}  backend={report['backend']}  questions={report['questions']}  seed={report['seed']}  "
        f"docs={report['documents']}  generation={report['generation_id']}"
        f"{' (reused)' if report['generation_reused'] else ''}",
        f"{'EM':>7}{'F1':>7}{'has ans':>9}{'cite acc':>10}{'invalid':>9}{'abstain':>9}{'fallback':>10}{'gold ctx':>10}"
        f"{'s/answer':>10}{'p95 s':>8}",
        f"{m['exact_match']:>7.2f}{m['f1']:>7.2f}{m['contains_answer']:>9.3f}{m['citation_accuracy']:>10.3f}"
        f"{m['invalid_citation_rate']:>9.3f}"
        f"{m['abstention_rate']:>9.3f}{m['fallback_rate']:>10.3f}{m['gold_context_retrieved']:>10.3f}"
        f"{m['seconds_per_answer']:>10.3f}{m['p95_s']:>8.2f}",
    ]
    for reason, count in m["fallback_reasons"].items():
        lines.append(f"  fallback x{count}: {reason}")
    return "\n".join(lines)
