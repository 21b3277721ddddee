"""`rag eval answers`: answer quality on a question set (evaluation.answer_sets), through the real Answerer.

The set's corpus is indexed with the production indexer into an eval data home (reused while the corpus and the
embedder are unchanged); every question then goes through `Answerer.answer` with the chosen backend.

Reported, per set and per group (answer_from, language, present/absent):
- answered when answerable, abstained when unanswerable (the near-miss and probe sets have both kinds);
- "holds the gold answer": the answer text (without its [n] markers) contains a gold answer, or for TAT-QA every
  gold span, with figures normalized (thousands separators, $, %, the scale word); arithmetic and count
  questions are reported apart (they need a computation: a correct computed figure counts, a refusal does not);
- PubMedQA ("question + its abstract": retrieval filtered to the question's own abstract): the answer's
  yes/no/maybe (evaluation.text_metrics.answer_decision; `maybe` when the product abstains) scored with accuracy
  and macro-F1 as the official scorer does, beside the majority-class baseline, and the ROUGE-L of the answer
  against the authors' conclusion (`long_answer`);
- SQuAD's exact match and F1 (official normalization), citation accuracy (answered questions citing a gold
  document), invalid citations in final answers (a [n] naming no passage given: must be 0), the answer's length
  in words, fallback reasons, and seconds per answer.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from evaluation.answer_sets import (
    QuestionSet,
    detect_kind,
    near_miss_set,
    probe_set,
    pubmedqa_set,
    squad_set,
    tatqa_set,
)
from evaluation.metrics import contains_answer, exact_match, f1_score, holds, percentile
from evaluation.retrieval import BeirSet
from evaluation.retrieval import ensure_generation as beir_generation
from evaluation.text_metrics import answer_decision, decision_scores, rouge
from indexer.build import build
from rag import snapshot_files
from rag.answering import Answerer
from rag.config import Settings
from rag.errors import InvalidInput
from rag.extractive import count_words
from rag.grounding import cited_numbers, strip_citations
from rag.retriever import Retriever
from rag.snapshot import Snapshot
from rag.types import Filters

KINDS = ("auto", "squad", "near-miss", "tatqa", "probe", "pubmedqa")


def load_set(path: Path, kind: str = "auto", *, limit: int | None = None, seed: int = 0, split: str = "test",
             per_article: int = 15, corpus: Path | None = None, own_context: bool = False) -> QuestionSet:
    path = Path(path)
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "auto":
        kind = detect_kind(path)
    if own_context and kind != "tatqa":
        raise InvalidInput(f"--own-context applies to TAT-QA sets only, not {kind}", field="own_context")
    if kind == "squad":
        return squad_set(path, limit, seed)
    if kind == "near-miss":
        return near_miss_set(path, split=split, per_article=per_article, seed=seed)
    if kind == "tatqa":
        return tatqa_set(path, limit, seed, split=split, own_context=own_context)
    if kind == "pubmedqa":
        return pubmedqa_set(path, limit, split=split)
    return probe_set(path, corpus, split=split)


# --- the eval index -----------------------------------------------------------------------------------------

def eval_settings(settings: Settings, home: Path) -> Settings:
    return Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__},
                       "home": str(home), "model_cache": str(settings.models_dir)})


def ensure_generation(settings: Settings, qset: QuestionSet, show_progress: bool = True
                      ) -> tuple[Path, str, bool]:
    """(eval data home, generation id, reused?) for the set's corpus. Every path builds: the build notices an
    unchanged corpus (documents, embedder, settings, code version) and writes nothing."""
    if qset.source is not None and qset.source.suffix == ".jsonl":
        es, snapshot_id, reused = beir_generation(settings, BeirSet(qset.source.parent.name, qset.source, {}, {}),
                                                  settings.embedder, show_progress)
        return es.home_path, snapshot_id, reused
    if qset.source is not None:  # a folder: the build notices an unchanged corpus and writes nothing
        home = settings.home_path / "eval" / f"{_safe(qset.source.name)}-{_safe(settings.embedder)}"
        report = build(eval_settings(settings, home), [qset.source], show_progress=show_progress)
        return home, report.generation_id, report.unchanged
    h = hashlib.sha256(settings.embedder.encode())
    for d in sorted(qset.documents or [], key=lambda d: d["id"]):
        h.update(f"{d['id']}\x00{d['title']}\x00{d['text']}\n".encode())
    home = settings.home_path / "eval" / f"{_safe(qset.name.split('-nearmiss')[0])}-{h.hexdigest()[:16]}"
    with tempfile.TemporaryDirectory(prefix="rag-eval-") as tmp:
        source = Path(tmp) / "contexts.jsonl"
        source.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in qset.documents or []),
                          encoding="utf-8")
        report = build(eval_settings(settings, home), [source], show_progress=show_progress)
    return home, report.generation_id, report.unchanged


def open_generation(settings: Settings, home: Path, snapshot_id: str) -> Snapshot:
    return Snapshot(snapshot_files.snapshot_dir(home, snapshot_id), settings.models_dir,
                    hnsw_ef_search=settings.index.hnsw_ef_search, ivf_nprobe=settings.index.ivf_nprobe)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]


# --- the run ------------------------------------------------------------------------------------------------

def evaluate(settings: Settings, path: Path, *, kind: str = "auto", backend: str | None = None,
             limit: int | None = 300, seed: int = 0, split: str = "test", per_article: int = 15,
             corpus: Path | None = None, own_context: bool = False, show_progress: bool = True) -> dict:
    qset = load_set(path, kind, limit=limit, seed=seed, split=split, per_article=per_article, corpus=corpus,
                    own_context=own_context)
    home, snapshot_id, reused = ensure_generation(settings, qset, show_progress)
    snapshot = open_generation(settings, home, snapshot_id)
    answerer = Answerer(settings, Retriever(settings.retrieval))
    backend_name = answerer.generators.resolve_name(backend)
    answerer.generators.get(backend_name)  # load the models now, so seconds per answer exclude loading them
    answerer.selector(snapshot)  # with answers.qa_model set, this loads the QA model
    _ = snapshot.embedder

    per_question = []
    for q in tqdm(qset.questions, desc=f"answers ({backend_name})", unit="q", file=sys.stderr,
                  disable=not show_progress):
        t = time.perf_counter()
        ans = answerer.answer(snapshot, q.question, filters=Filters(doc_ids=q.scope) if q.scope else None,
                              backend=backend_name)
        per_question.append(score_answer(q, ans, time.perf_counter() - t, qset.match))
    m = snapshot.manifest
    snapshot.close()
    report = {"dataset": qset.name, "path": str(path), "kind": kind if kind != "auto" else detect_kind(Path(path)),
            "backend": backend_name, "seed": seed, "split": split, "own_context": own_context,
            "questions": len(qset.questions),
            "generation_id": snapshot_id, "generation_reused": reused, "documents": m.counts.documents,
            "chunks": m.counts.chunks, "embedder": m.embedder.name, "qa_model": settings.answers.qa_model,
            "metrics": summarize_metrics(per_question),
            "groups": {g: summarize_metrics([r for r in per_question if r["group"] == g])
                       for g in sorted({r["group"] for r in per_question if r["group"]})},
            "kinds": {k: summarize_metrics([r for r in per_question if r["kind"] == k])
                      for k in sorted({r["kind"] for r in per_question if r["kind"]})},
            "languages": {lang: summarize_metrics([r for r in per_question if r["language"] == lang])
                          for lang in sorted({r["language"] for r in per_question})},
            "per_question": per_question}
    if any(q.decision for q in qset.questions):
        report["decisions"] = decisions_report(per_question)
    return report


def decisions_report(rows: list[dict]) -> dict:
    """PubMedQA: the product's yes/no/maybe against the gold, beside always answering the majority class."""
    gold = [r["decision_gold"] for r in rows]
    majority = collections.Counter(gold).most_common(1)[0][0] if gold else "yes"
    return {"product": decision_scores(gold, [r["decision"] for r in rows]),
            "majority_baseline": {"decision": majority, **decision_scores(gold, [majority] * len(gold))},
            "rougeL_vs_long_answer": round(100 * sum(r["rougeL"] for r in rows) / max(1, len(rows)), 2)}


def score_answer(q, ans, seconds: float, match: str = "any") -> dict:
    prediction = "" if ans.abstained else strip_citations(ans.answer)
    decided = {"decision_gold": q.decision, "decision": answer_decision(prediction, ans.abstained),
               "rougeL": rouge(prediction, q.reference)["rougeL"] if prediction else 0.0} if q.decision else {}
    given = {p.n for p in ans.passages}
    if not q.answers or not prediction:
        held = 0.0
    elif match == "all":
        held = float(all(holds(prediction, g) for g in q.answers))
    else:
        held = float(any(holds(prediction, g) for g in q.answers) or contains_answer(prediction, q.answers))
    return {
        "id": q.id, "question": q.question, "gold": q.answers, "answerable": q.answerable, "group": q.group,
        "kind": q.kind, "language": q.language, "answer": ans.answer, "abstained": ans.abstained,
        "fallback": ans.fallback,
        "em": exact_match(prediction, q.answers) if prediction and q.answers else 0.0,
        "f1": f1_score(prediction, q.answers) if prediction and q.answers else 0.0,
        "holds_answer": held,
        "cited_gold": any(c.doc_id in q.gold_docs for c in ans.citations),
        "has_citations": bool(ans.citations),
        "invalid_citation": any(n not in given for n in cited_numbers(ans.answer)),
        "gold_in_passages": any(p.doc_id in q.gold_docs for p in ans.passages),
        "invalid_citations_removed": ans.invalid_citations_removed,
        "words": 0 if ans.abstained else count_words(prediction),
        "seconds": round(seconds, 3),
        **decided,
    }


def summarize_metrics(rows: list[dict]) -> dict:
    n = max(1, len(rows))
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    answered = [r for r in rows if not r["abstained"]]
    answered_ok = [r for r in answerable if not r["abstained"]]
    seconds = [r["seconds"] for r in rows]
    words = [r["words"] for r in answered]
    reasons = collections.Counter(_reason_kind(r["fallback"]) for r in rows if r["fallback"])
    na = max(1, len(answerable))
    return {
        "questions": len(rows), "answerable": len(answerable), "unanswerable": len(unanswerable),
        "holds_answer": round(sum(r["holds_answer"] for r in answerable) / na, 4),
        "holds_answer_when_answered": round(sum(r["holds_answer"] for r in answered_ok) / max(1, len(answered_ok)), 4),
        "answered_when_answerable": round(len(answered_ok) / na, 4),
        "abstained_when_unanswerable": round(sum(r["abstained"] for r in unanswerable) / max(1, len(unanswerable)), 4)
        if unanswerable else None,
        "exact_match": round(100 * sum(r["em"] for r in answerable) / na, 2),
        "f1": round(100 * sum(r["f1"] for r in answerable) / na, 2),
        "citation_accuracy": round(sum(r["cited_gold"] for r in answered_ok) / max(1, len(answered_ok)), 4),
        "invalid_citation_rate": round(sum(r["invalid_citation"] for r in rows) / n, 4),
        "fallback_rate": round(sum(bool(r["fallback"]) for r in rows) / n, 4),
        "gold_context_retrieved": round(sum(r["gold_in_passages"] for r in answerable) / na, 4),
        "median_words": percentile(words, 50) if words else 0,
        "seconds_per_answer": round(sum(seconds) / n, 3),
        "p50_s": round(percentile(seconds, 50), 3),
        "p95_s": round(percentile(seconds, 95), 3),
        "fallback_reasons": dict(reasons.most_common()),
    }


def _reason_kind(reason: str) -> str:
    """Group fallback reasons that differ only in numbers ("3 of 4 sentences ...")."""
    return re.sub(r"\d+", "N", reason.split(":")[0])


def format_table(report: dict) -> str:
    qa = f"  qa_model={report['qa_model']}" if report.get("qa_model") else ""
    head = (f"{report['dataset']}  backend={report['backend']}{qa}  questions={report['questions']}  "
            f"seed={report['seed']}  docs={report['documents']}  generation={report['generation_id']}"
            f"{' (reused)' if report['generation_reused'] else ''}")
    cols = f"{'':<16}{'n':>5}{'holds':>7}{'answered':>10}{'abstained':>11}{'EM':>7}{'F1':>7}{'cite':>7}" \
           f"{'invalid':>9}{'fallback':>10}{'words':>7}{'p50 s':>7}"

    def line(label: str, m: dict) -> str:
        abst = "-" if m["abstained_when_unanswerable"] is None else f"{m['abstained_when_unanswerable']:.3f}"
        return (f"{label:<16}{m['questions']:>5}{m['holds_answer']:>7.3f}{m['answered_when_answerable']:>10.3f}"
                f"{abst:>11}{m['exact_match']:>7.1f}{m['f1']:>7.1f}{m['citation_accuracy']:>7.3f}"
                f"{m['invalid_citation_rate']:>9.3f}{m['fallback_rate']:>10.3f}{m['median_words']:>7}"
                f"{m['p50_s']:>7.2f}")

    lines = [head, cols, line("all", report["metrics"])]
    for g, m in report.get("groups", {}).items():
        lines.append(line(f"  {g}", m))
    if len(report.get("languages", {})) > 1:
        for lang, m in report["languages"].items():
            lines.append(line(f"  lang={lang}", m))
    for reason, count in report["metrics"]["fallback_reasons"].items():
        lines.append(f"  fallback x{count}: {reason}")
    d = report.get("decisions")
    if d:
        p, b = d["product"], d["majority_baseline"]
        lines.append(f"yes/no/maybe: accuracy {p['accuracy']:.3f}, macro-F1 {p['macro_f1']:.3f} "
                     f"(F1 yes {p['f1']['yes']:.3f}, no {p['f1']['no']:.3f}, maybe {p['f1']['maybe']:.3f}); "
                     f"always {b['decision']!r}: accuracy {b['accuracy']:.3f}, macro-F1 {b['macro_f1']:.3f}; "
                     f"ROUGE-L vs long_answer {d['rougeL_vs_long_answer']:.2f}")
    return "\n".join(lines)
