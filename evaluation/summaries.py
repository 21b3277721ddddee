"""`rag eval summaries`: summary quality against reference summaries, through the product's own summarize call.

The set: PubMedQA rows (`{"id", "contexts", "long_answer"}`, `../shared/eval/pubmedqa-medical/qa.jsonl`): the
abstract without its conclusion is the document (its paragraphs joined by blank lines, as a user would post it),
the authors' conclusion is the reference. Any JSONL of `{"id", "text", "summary"}` rows works the same way.

Every document is indexed with the production indexer into an eval data home (reused while the documents and the
embedder are unchanged; the same home `rag eval answers --kind pubmedqa` reads) and summarized with
`Application.summarize(doc_id=...)`, exactly as `rag summarize --doc ID` and `POST /v1/summarize` do, once per
backend. Baselines in the same run, under the same word budget: `lead` (the document's first sentences) and
`tail` (its last sentences).

Reported per system (rouge-score and sacrebleu; see evaluation.text_metrics for their tokenizers):
ROUGE-1/2/L F-measure (x100, mean over documents), corpus BLEU, the length ratio (summary words / reference
words), the share of summary sentences the product's own support check (rag.grounding.check_text against the
document's passages) finds supported, seconds per summary, and for generative backends how often the extractive
summary replaced the draft and why. A generative backend on a CPU is slow: `generative_limit` caps it to the first
N documents, and every system is also reported on exactly those N, so the rows compare on the same documents.
"""

from __future__ import annotations

import collections
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluation.answer_sets import QuestionSet, pubmedqa_document
from evaluation.answers import ensure_generation, eval_settings, open_generation
from evaluation.metrics import percentile
from evaluation.text_metrics import ROUGE_TYPES, bleu_tokenizer, corpus_bleu, rouge, rouge_scores
from rag.application import Application
from rag.config import Settings
from rag.errors import InvalidInput
from rag.extractive import count_words, join_sentences, summary_parts, truncate_words
from rag.generators import EXTRACTIVE
from rag.grounding import Evidence, check_text, cited_numbers, embedder_fits, split_sentences, strip_citations
from rag.summarize import document_passages
from rag.text import detect_language

BASELINES = ("lead", "tail")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([.,;:!?])")
DEFAULT_MAX_WORDS = 40  # about the references' median length (PubMedQA conclusions: median 38 words)


@dataclass
class SummaryItem:
    id: str
    text: str  # the document
    reference: str
    title: str = ""
    split: str = ""


def load_items(path: Path) -> tuple[str, list[SummaryItem]]:
    """(set name, items) from a PubMedQA folder / qa.jsonl or a {id, text, summary} JSONL; an item keeps the row's
    `split` (PubMedQA: `test` = the official 500 test PMIDs, `dev` = the other 500)."""
    path = Path(path)
    qa = path / "qa.jsonl" if path.is_dir() else path
    if not qa.is_file():
        raise FileNotFoundError(f"{qa}: no such JSONL file")
    items = []
    with open(qa, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            if "contexts" in r and "long_answer" in r:
                text, reference = pubmedqa_document(r)["text"], r["long_answer"]
            elif "text" in r and "summary" in r:
                text, reference = r["text"], r["summary"]
            else:
                raise InvalidInput(f"{qa}:{i}: expected PubMedQA rows (contexts, long_answer) or (text, summary)")
            items.append(SummaryItem(str(r.get("id") or i), text, reference, str(r.get("title") or ""),
                                     str(r.get("split") or "")))
    if not items:
        raise InvalidInput(f"{qa} holds no rows")
    name = path.name if path.is_dir() else f"{path.parent.name}-{path.stem}"
    return re.sub(r"[^\w.-]+", "_", name), items


def document_set(name: str, items: list[SummaryItem]) -> QuestionSet:
    """The items as the corpus of an eval index (shared with the PubMedQA answer set: same documents)."""
    return QuestionSet(name, [], documents=[{"id": it.id, "title": it.title, "text": it.text} for it in items])


# --- baselines ----------------------------------------------------------------------------------------------

def lead(text: str, max_words: int) -> str:
    """The document's first sentences within `max_words` (the first one cut to it when it alone is longer)."""
    return _within(_sentences(text), max_words)


def tail(text: str, max_words: int) -> str:
    """The document's last sentences within `max_words`, in reading order."""
    return _within(_sentences(text)[::-1], max_words, reverse=True)


def _sentences(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def _within(sentences: list[str], max_words: int, reverse: bool = False) -> str:
    kept, words = [], 0
    for s in sentences:
        size = count_words(s)
        if words + size > max_words:
            if not kept:
                kept.append(truncate_words(s, max_words))
            break
        kept.append(s)
        words += size
    return join_sentences(kept[::-1] if reverse else kept)


# --- the run ------------------------------------------------------------------------------------------------

def evaluate(settings: Settings, path: Path, *, backends: list[str] | None = None, style: str = "brief",
             max_words: int = DEFAULT_MAX_WORDS, limit: int | None = None, generative_limit: int | None = 50,
             split: str = "test", show_progress: bool = True) -> dict[str, Any]:
    """`split`: the rows scored (`all`, or a row's `split` value; rows without one are in every split). The
    index holds every row, so a split never changes the index and `rag eval answers` shares it."""
    name, every = load_items(path)
    items = [it for it in every if split == "all" or not it.split or it.split == split]
    if not items:
        raise InvalidInput(f"{path}: no rows in split {split!r}", field="split")
    if limit:
        items = items[:limit]
    qset = document_set(name, every)
    home, snapshot_id, reused = ensure_generation(settings, qset, show_progress)
    snapshot = open_generation(settings, home, snapshot_id)
    app = Application(eval_settings(settings, home))
    backends = list(dict.fromkeys(app.generators.resolve_name(b) for b in (backends or [EXTRACTIVE])))
    embedder = snapshot.embedder
    rows: dict[str, list[dict]] = {s: [] for s in (*BASELINES, *backends)}
    evidence_of: dict[str, Evidence] = {}

    def evidence(item: SummaryItem) -> Evidence:
        if item.id not in evidence_of:
            passages = document_passages(snapshot, [item.id])
            language = detect_language(item.text[:500])
            evidence_of[item.id] = Evidence(passages, embedder if embedder_fits(embedder, language) else None)
        return evidence_of[item.id]

    for item in tqdm(items, desc="summaries (baselines)", unit="doc", file=sys.stderr, disable=not show_progress):
        for system, make in (("lead", lead), ("tail", tail)):
            t = time.perf_counter()
            text = make(item.text, max_words)
            rows[system].append(_score(item, text, time.perf_counter() - t, evidence(item), None))
    for backend in backends:
        generative = backend != EXTRACTIVE
        todo = items[:generative_limit] if generative and generative_limit else items
        if generative:
            app.generators.get(backend)  # load the model first: seconds per summary exclude loading it
        for item in tqdm(todo, desc=f"summaries ({backend})", unit="doc", file=sys.stderr,
                         disable=not show_progress):
            t = time.perf_counter()
            s = app.summarize(doc_id=item.id, style=style, max_words=max_words, backend=backend, snapshot=snapshot)
            seconds = time.perf_counter() - t
            rows[backend].append(_score(item, s.summary, seconds, evidence(item), s.fallback if generative else None))
    m = snapshot.manifest
    app.close()
    snapshot.close()

    systems = {s: aggregate(r) for s, r in rows.items()}
    report: dict[str, Any] = {
        "dataset": name, "path": str(path), "split": split, "documents": len(items), "style": style,
        "max_words": max_words,
        "backends": backends, "baselines": list(BASELINES), "generation_id": snapshot_id,
        "generation_reused": reused, "chunks": m.counts.chunks, "embedder": m.embedder.name,
        "reference_words_median": percentile([count_words(it.reference) for it in items], 50),
        "bleu_tokenize": bleu_tokenizer([it.reference for it in items]),
        "systems": systems,
    }
    short = min((len(r) for r in rows.values()), default=0)
    if short < len(items):  # a generative backend ran on the first N only: every system on those N too
        report["same_documents"] = {"documents": short,
                                    "systems": {s: aggregate(r[:short]) for s, r in rows.items()}}
    report["per_document"] = [{"id": it.id, **{s: {k: r[i][k] for k in ("summary", "rougeL", "words", "seconds")}
                                              for s, r in rows.items() if i < len(r)}}
                              for i, it in enumerate(items)]
    return report


def _score(item: SummaryItem, summary: str, seconds: float, evidence: Evidence, fallback: str | None) -> dict:
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", strip_citations(summary))  # "... (1996) [3]." -> "... (1996)."
    checked = check_text(text, evidence)
    words, ref_words = count_words(text), count_words(item.reference)
    return {"id": item.id, "summary": text, "reference": item.reference, **rouge(text, item.reference),
            "words": words, "length_ratio": words / max(1, ref_words), "judged": checked.judged,
            "unsupported": checked.unsupported, "seconds": round(seconds, 4), "fallback": fallback}


def aggregate(rows: list[dict]) -> dict[str, Any]:
    if not rows:
        return {"documents": 0}
    n = len(rows)
    judged = sum(r["judged"] for r in rows)
    seconds = [r["seconds"] for r in rows]
    reasons = collections.Counter(re.sub(r"\d+", "N", r["fallback"].split(":")[0]) for r in rows if r["fallback"])
    bleu = corpus_bleu([r["summary"] for r in rows], [r["reference"] for r in rows])
    return {
        "documents": n,
        **{k: round(100 * sum(r[k] for r in rows) / n, 2) for k in ROUGE_TYPES},
        "bleu": bleu["bleu"], "bleu_signature": bleu["signature"],
        "length_ratio": round(sum(r["length_ratio"] for r in rows) / n, 3),
        "median_words": percentile([r["words"] for r in rows], 50),
        "supported_share": round((judged - sum(r["unsupported"] for r in rows)) / judged, 4) if judged else None,
        "seconds_per_summary": round(sum(seconds) / n, 4),
        "p50_s": round(percentile(seconds, 50), 4), "p95_s": round(percentile(seconds, 95), 4),
        "fallback_rate": round(sum(bool(r["fallback"]) for r in rows) / n, 4),
        "fallback_reasons": dict(reasons.most_common()),
        "seconds": seconds,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{report['dataset']} ({report.get('split', 'all')}): {report['documents']} documents, "
             f"style={report['style']}, max_words={report['max_words']} "
             f"(reference median {report['reference_words_median']} words), "
             f"embedder={report['embedder']}, generation={report['generation_id']}"
             f"{' (reused)' if report['generation_reused'] else ''}; BLEU tokenize={report['bleu_tokenize']}"]

    def table(systems: dict[str, dict]) -> list[str]:
        out = [f"{'system':<14}{'n':>5}{'ROUGE-1':>9}{'ROUGE-2':>9}{'ROUGE-L':>9}{'BLEU':>7}{'len ratio':>11}"
               f"{'words':>7}{'supported':>11}{'s/summary':>11}{'fallback':>10}"]
        for name, m in systems.items():
            if not m.get("documents"):
                continue
            sup = "-" if m["supported_share"] is None else f"{m['supported_share']:.3f}"
            out.append(f"{name:<14}{m['documents']:>5}{m['rouge1']:>9.2f}{m['rouge2']:>9.2f}{m['rougeL']:>9.2f}"
                       f"{m['bleu']:>7.2f}{m['length_ratio']:>11.2f}{m['median_words']:>7}{sup:>11}"
                       f"{m['seconds_per_summary']:>11.3f}{m['fallback_rate']:>10.3f}")
        return out

    lines += table(report["systems"])
    same = report.get("same_documents")
    if same:
        lines.append(f"on the same first {same['documents']} documents:")
        lines += table(same["systems"])
    for name, m in report["systems"].items():
        for reason, count in (m.get("fallback_reasons") or {}).items():
            lines.append(f"  {name} fallback x{count}: {reason}")
    return "\n".join(lines)


# --- long documents: section coverage -----------------------------------------------------------------------

LONG_DOCUMENT_WORDS = 3000


def section_coverage(summary, passages: list) -> dict[str, Any]:
    """How a document summary covers the document's top-level sections (rag.extractive.summary_parts: the first
    element of each chunk's heading path; "" is the text before the first heading): which sections a cited
    sentence comes from, and per section the ROUGE-L of its summary sentences against the section's own text
    (precision: how much of the sentence is the section's; recall is small by design, a section is long)."""
    parts = summary_parts(passages)
    part_of = {p.n: part for p, part in zip(passages, parts)}
    sections = list(dict.fromkeys(parts))
    text_of = {s: "\n".join(p.text for p, part in zip(passages, parts) if part == s) for s in sections}
    cited: dict[str, list[str]] = {}
    for sentence in split_sentences(summary.summary.replace("\n", " ")):
        for n in dict.fromkeys(cited_numbers(sentence.text)):
            if n in part_of:
                cited.setdefault(part_of[n], []).append(strip_citations(sentence.text).lstrip("- "))
    per_section = []
    for s in sections:
        sentences = " ".join(cited.get(s, []))
        scores = rouge_scores(sentences, text_of[s])["rougeL"] if sentences else None
        per_section.append({"section": s or "(before the first heading)", "covered": s in cited,
                            "words": count_words(text_of[s]),
                            "rougeL_precision": round(scores["p"], 4) if scores else None,
                            "rougeL_f": round(scores["f"], 4) if scores else None})
    return {"sections": len(sections), "covered": sum(s in cited for s in sections),
            "share": round(sum(s in cited for s in sections) / max(1, len(sections)), 4),
            "per_section": per_section}


def evaluate_sections(settings: Settings, folder: Path, *, min_words: int = LONG_DOCUMENT_WORDS,
                      style: str = "brief", max_words: int | None = None, backend: str = EXTRACTIVE,
                      show_progress: bool = True) -> dict[str, Any]:
    """Every document of `folder` over `min_words` words, indexed with the production indexer and summarized as
    `rag summarize --doc ID` does (default budget unless `max_words`), with its section coverage."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder of documents", field="dataset")
    home, snapshot_id, reused = ensure_generation(settings, QuestionSet(folder.name, [], source=folder),
                                                  show_progress)
    snapshot = open_generation(settings, home, snapshot_id)
    app = Application(eval_settings(settings, home))
    rows = snapshot.sql("SELECT doc_id, text FROM documents ORDER BY doc_id").fetchall()
    long_docs = [(d, len(t.split())) for d, t in rows if len(t.split()) > min_words]  # words as a reader counts
    docs = []
    for doc_id, words in tqdm(long_docs, desc="sections", unit="doc", file=sys.stderr, disable=not show_progress):
        t = time.perf_counter()
        s = app.summarize(doc_id=doc_id, style=style, max_words=max_words, backend=backend, snapshot=snapshot)
        seconds = time.perf_counter() - t
        docs.append({"doc_id": doc_id, "words": words, "summary_words": s.words, "summary": s.summary,
                     "seconds": round(seconds, 3), "fallback": s.fallback,
                     **section_coverage(s, document_passages(snapshot, [doc_id]))})
    app.close()
    snapshot.close()
    return {"dataset": folder.name, "path": str(folder), "min_words": min_words, "style": style,
            "max_words": max_words, "backend": backend, "generation_id": snapshot_id, "generation_reused": reused,
            "documents": docs,
            "min_share": min((d["share"] for d in docs), default=None)}


def format_sections(report: dict[str, Any]) -> str:
    lines = [f"{report['dataset']}: documents over {report['min_words']} words, backend {report['backend']}, "
             f"budget {report['max_words'] or 'default'}",
             f"{'document':<36}{'words':>7}{'summary':>9}{'sections':>10}{'covered':>9}{'share':>7}"
             f"{'ROUGE-L P':>11}"]
    for d in report["documents"]:
        ps = [s["rougeL_precision"] for s in d["per_section"] if s["rougeL_precision"] is not None]
        lines.append(f"{d['doc_id']:<36}{d['words']:>7}{d['summary_words']:>9}{d['sections']:>10}{d['covered']:>9}"
                     f"{d['share']:>7.2f}{(sum(ps) / len(ps) if ps else 0):>11.3f}")
        missing = [s["section"] for s in d["per_section"] if not s["covered"]]
        if missing:
            lines.append(f"  not covered: {'; '.join(missing)}")
    return "\n".join(lines)
