"""The question sets `rag eval answers` runs on, each with the corpus its questions are asked over.

- **SQuAD** (`{"id", "title", "context", "question", "answers"}` rows): the sample's own contexts form the corpus.
- **SQuAD near miss**: every article keeps two thirds of its paragraphs in the corpus (a seeded draw); a question
  about a kept paragraph is answerable, one about a left-out paragraph is unanswerable when none of its gold
  answers occurs anywhere in the kept corpus. The topic is there, the fact is not: the hard case for abstention.
  Articles are split in two halves by the seed: `test` is what the report shows, `fit` is what the answer
  selector's weights were fitted on (bench/fit_answer_selection.py), so a reported figure never saw its data.
- **TAT-QA** (a BEIR folder whose `qa.jsonl` has `answer_type`, `answer_from`, `gold_doc_ids`): the whole
  `corpus.jsonl` (tables and paragraphs of annual reports), retrieval over all of it.
- **Probe** (`{"question", "answerable", "doc_id", "answers", "answer_from", "language"}` rows, with the corpus
  folder beside it or given): our own questions over `data/` (bench/probes/data_answers.jsonl).
- **PubMedQA** (`{"id", "question", "contexts", "long_answer", "final_decision", "split"}` rows): each question is
  asked over its own abstract ("question + its abstract": retrieval filtered to that document); the answer's
  yes/no/maybe is scored against `final_decision` and its text against `long_answer`. The abstracts are indexed
  exactly as `rag eval summaries` indexes them, so both share one eval index.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.metrics import normalize_answer
from rag.errors import InvalidInput


@dataclass
class Question:
    id: str
    question: str
    answers: list[str]  # gold answers; empty when the corpus does not hold the answer
    answerable: bool = True
    gold_docs: list[str] = field(default_factory=list)
    group: str = ""  # what the report breaks figures down by (answer_from, language, ...)
    kind: str = ""  # span | multi-span | arithmetic | count (TAT-QA)
    language: str = "en"
    scale: str = ""
    decision: str = ""  # PubMedQA: the gold yes / no / maybe
    reference: str = ""  # PubMedQA: the authors' conclusion (long_answer)
    scope: list[str] = field(default_factory=list)  # the documents it is asked over; empty: the whole corpus


@dataclass
class QuestionSet:
    name: str
    questions: list[Question]
    documents: list[dict] | None = None  # {"id", "title", "text"} to index, or None when `source` is a path
    source: Path | None = None  # a corpus file or folder the production indexer reads
    match: str = "any"  # "any": one gold answer must occur; "all": every gold span (TAT-QA multi-span)


def context_doc_id(context: str) -> str:
    import hashlib

    return "ctx-" + hashlib.sha1(context.encode("utf-8")).hexdigest()[:12]


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise InvalidInput(f"{path}:{line_no}: not JSON ({e})") from e
    if not rows:
        raise InvalidInput(f"{path} holds no rows")
    return rows


def detect_kind(path: Path) -> str:
    """squad | tatqa | probe, from the first row of the QA file."""
    path = Path(path)
    qa = path / "qa.jsonl" if path.is_dir() else path
    if not qa.is_file():
        raise FileNotFoundError(f"{qa}: no such QA JSONL file")
    with open(qa, encoding="utf-8") as f:
        first = json.loads(next(line for line in f if line.strip()))
    if "answer_type" in first and "gold_doc_ids" in first:
        return "tatqa"
    if "final_decision" in first and "contexts" in first:
        return "pubmedqa"
    if "answerable" in first:
        return "probe"
    if "context" in first:
        return "squad"
    raise InvalidInput(f"{qa}: rows are neither SQuAD ({{context, question, answers}}), TAT-QA ({{answer_type, "
                     "gold_doc_ids}}), PubMedQA ({contexts, final_decision}) nor probe ({answerable, answers}) rows")


def _squad_rows(path: Path) -> list[dict]:
    qa = path / "qa.jsonl" if path.is_dir() else path
    rows = _jsonl(qa)
    for i, r in enumerate(rows, 1):
        if not all(k in r for k in ("id", "context", "question", "answers")):
            raise InvalidInput(f"{qa}:{i}: expected id, context, question, answers")
    return rows


def squad_set(path: Path, limit: int | None, seed: int) -> QuestionSet:
    """A seeded sample of questions; the corpus is the union of their contexts."""
    rows = _squad_rows(Path(path))
    if limit and limit < len(rows):
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]
    docs: dict[str, dict] = {}
    questions = []
    for r in rows:
        doc_id = context_doc_id(r["context"])
        docs.setdefault(doc_id, {"id": doc_id, "title": str(r.get("title") or "").replace("_", " "),
                                 "text": r["context"]})
        questions.append(Question(str(r["id"]), r["question"], [str(a) for a in r["answers"]], True, [doc_id]))
    return QuestionSet(_name(path, "squad"), questions, documents=list(docs.values()))


def near_miss_set(path: Path, *, split: str = "test", per_article: int = 15, seed: int = 0,
                  held_out: float = 1 / 3) -> QuestionSet:
    """Answerable and unanswerable questions over articles with a third of their paragraphs left out."""
    if split not in ("test", "fit", "all"):
        raise InvalidInput(f"split must be test, fit or all, not {split!r}")
    rows = _squad_rows(Path(path))
    rng = random.Random(seed)
    articles: dict[str, list[str]] = {}
    for r in rows:
        ctxs = articles.setdefault(str(r.get("title") or ""), [])
        if r["context"] not in ctxs:
            ctxs.append(r["context"])
    left_out: set[str] = set()
    for title in sorted(articles):
        ctxs = articles[title]
        left_out.update(rng.sample(ctxs, max(1, round(len(ctxs) * held_out))))
    kept_text = " " + " ".join(normalize_answer(c) for cs in articles.values() for c in cs if c not in left_out) + " "
    titles = sorted(articles)
    random.Random(seed + 1).shuffle(titles)
    chosen = set(titles if split == "all" else titles[: len(titles) // 2] if split == "test"
                 else titles[len(titles) // 2:])
    docs = [{"id": context_doc_id(c), "title": t.replace("_", " "), "text": c}
            for t in sorted(articles) for c in articles[t] if c not in left_out]
    questions: list[Question] = []
    for title in sorted(chosen):
        present = [r for r in rows if r.get("title") == title and r["context"] not in left_out]
        absent = [r for r in rows if r.get("title") == title and r["context"] in left_out
                  and not any(f" {normalize_answer(a)} " in kept_text for a in r["answers"] if normalize_answer(a))]
        pick = random.Random(f"{seed}:{title}")
        for group, pool, answerable in (("present", present, True), ("absent", absent, False)):
            for r in pick.sample(pool, min(per_article, len(pool))):
                questions.append(Question(str(r["id"]), r["question"], [str(a) for a in r["answers"]] if answerable
                                          else [], answerable, [context_doc_id(r["context"])], group))
    # The index key covers the whole kept corpus (both splits share it); the name says which split is asked.
    return QuestionSet(f"{_name(path, 'squad')}-nearmiss-{split}-s{seed}", questions, documents=docs)


def tatqa_set(folder: Path, limit: int | None, seed: int, *, split: str = "test",
              kinds: tuple[str, ...] | None = None, own_context: bool = False) -> QuestionSet:
    """TAT-QA questions over the whole corpus. Reports (contexts) are split in halves by the seed: `test` is
    scored, `fit` is what answer selection was fitted on; `all` takes both.

    With `own_context` each question is asked over its own context only (the table and paragraphs it was written
    on), as TAT-QA's authors pose the task: that measures reading apart from finding the filing, which a question
    naming no company ("What was the total revenue in 2019?") cannot say over a corpus of many filings."""
    if split not in ("test", "fit", "all"):
        raise InvalidInput(f"split must be test, fit or all, not {split!r}")
    folder = Path(folder)
    rows = _jsonl(folder / "qa.jsonl")
    report_of = lambda r: re.sub(r"-(table|p\d+)$", "", (r.get("gold_doc_ids") or [r["id"]])[0])  # noqa: E731
    reports = sorted({report_of(r) for r in rows})
    random.Random(seed + 1).shuffle(reports)
    half = set(reports[: len(reports) // 2] if split == "test" else reports[len(reports) // 2:])
    rows = [r for r in rows if (split == "all" or report_of(r) in half)
            and (kinds is None or r.get("answer_type") in kinds)]
    if limit and limit < len(rows):
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]
    passages_of: dict[str, list[str]] = {}
    if own_context:
        for d in _jsonl(folder / "corpus.jsonl"):
            context = (d.get("metadata") or {}).get("context") or report_of({"gold_doc_ids": [d["_id"]]})
            passages_of.setdefault(context, []).append(str(d["_id"]))
    questions = []
    for r in rows:
        answers = r["answers"] if isinstance(r["answers"], list) else [r["answers"]]
        kind, source = r.get("answer_type") or "", r.get("answer_from") or ""
        # Span answers by where they sit; arithmetic and count need a computation and are reported apart.
        group = f"{kind}:{source}" if kind in ("span", "multi-span") else kind
        scope = passages_of.get(report_of(r), []) if own_context else []
        if own_context and not scope:
            raise InvalidInput(f"TAT-QA question {r['id']}: no passage of its context in corpus.jsonl")
        questions.append(Question(str(r["id"]), r["question"], [str(a) for a in answers], True,
                                  list(r.get("gold_doc_ids") or []), group, kind, "en", r.get("scale") or "",
                                  scope=scope))
    name = _name(folder, "tatqa") + ("" if split == "all" else f"-{split}") + ("-own-context" if own_context else "")
    return QuestionSet(name, questions, source=folder / "corpus.jsonl", match="all")


def probe_set(path: Path, corpus: Path | None = None, *, split: str = "all") -> QuestionSet:
    """Our probe: `corpus` defaults to the repository's data/ folder above the file. Questions are split in two
    halves, alternating within each (answerable, language, answer_from) group in file order: `test` is what the
    README reports, `fit` helps fit answer selection on the kind of documents the product serves."""
    if split not in ("test", "fit", "all"):
        raise InvalidInput(f"split must be test, fit or all, not {split!r}")
    path = Path(path)
    rows = _jsonl(path)
    if corpus is None:
        corpus = next((p / "data" / "documents" for p in path.resolve().parents if (p / "data" / "documents").is_dir()),
                      None)
        if corpus is None:
            raise FileNotFoundError(f"{path}: no data/documents folder above it; pass the corpus folder")
    questions = []
    seen: dict[tuple, int] = {}
    for i, r in enumerate(rows, 1):
        if "question" not in r or "answerable" not in r:
            raise InvalidInput(f"{path}:{i}: expected question, answerable, answers")
        answerable = bool(r["answerable"])
        group = (r.get("answer_from") or "text") if answerable else "none"
        language = r.get("language") or "en"
        stratum = (answerable, language, group)
        seen[stratum] = seen.get(stratum, -1) + 1
        half = "test" if seen[stratum] % 2 == 0 else "fit"
        if split != "all" and half != split:
            continue
        questions.append(Question(str(r.get("id") or i), r["question"], [str(a) for a in r.get("answers") or []],
                                  answerable, [r["doc_id"]] if r.get("doc_id") else [], group, "", language))
    name = path.stem + ("" if split == "all" else f"-{split}")
    return QuestionSet(name, questions, source=Path(corpus))


def pubmedqa_document(row: dict) -> dict:
    """A PubMedQA abstract (without its conclusion) as a document: its paragraphs joined by blank lines, as a
    user would post it."""
    return {"id": str(row["id"]), "title": str(row.get("title") or ""),
            "text": "\n\n".join(c.strip() for c in row["contexts"])}


def pubmedqa_set(path: Path, limit: int | None, *, split: str = "test") -> QuestionSet:
    """PubMedQA questions, each over its own abstract. `test` is the official 500-question test split, `fit` the
    other labelled 500 (`dev`), `all` both; the index always holds every abstract."""
    if split not in ("test", "fit", "all"):
        raise InvalidInput(f"split must be test, fit or all, not {split!r}")
    path = Path(path)
    qa = path / "qa.jsonl" if path.is_dir() else path
    rows = _jsonl(qa)
    for i, r in enumerate(rows, 1):
        if not all(k in r for k in ("id", "question", "contexts", "long_answer", "final_decision")):
            raise InvalidInput(f"{qa}:{i}: expected id, question, contexts, long_answer, final_decision")
    wanted = {"test": "test", "fit": "dev"}.get(split)
    asked = [r for r in rows if wanted is None or r.get("split", wanted) == wanted]
    if limit:
        asked = asked[:limit]
    questions = [Question(str(r["id"]), r["question"], [], True, [str(r["id"])], r["final_decision"],
                          decision=r["final_decision"], reference=r["long_answer"], scope=[str(r["id"])])
                 for r in asked]
    return QuestionSet(_name(path, "pubmedqa"), questions, documents=[pubmedqa_document(r) for r in rows])


def _name(path: Path, default: str) -> str:
    path = Path(path)
    name = path.name if path.is_dir() else f"{path.parent.name}-{path.stem}"
    return re.sub(r"[^\w.-]+", "_", name) or default
