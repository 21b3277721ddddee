"""`rag search`, `rag ask`, `rag summarize`: the library's read paths from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import date

from rag.generators import BACKENDS
from service.cli import CLIError, print_json, settings_from

SNIPPET_CHARS = 200


def _iso_date(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an ISO date YYYY-MM-DD, got {value!r}") from e


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _add_filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (repeat a flag to allow several values)")
    g.add_argument("--domain", action="append", help="finance, medical, education, ...")
    g.add_argument("--tag", action="append", help="documents with ANY of these tags")
    g.add_argument("--language", action="append", help="ISO 639-1 code: en, zh")
    g.add_argument("--audience", action="append")
    g.add_argument("--date-from", type=_iso_date, help="inclusive, YYYY-MM-DD")
    g.add_argument("--date-to", type=_iso_date, help="inclusive, YYYY-MM-DD")
    p.add_argument("--top-k", type=_positive, help="passages to retrieve (default: settings.retrieval.top_k)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")


def register(sub) -> None:
    s = sub.add_parser("search", help="hybrid search over the published index")
    s.add_argument("query")
    s.add_argument("--mode", choices=("hybrid", "dense", "keyword"), default="hybrid")
    _add_filters(s)
    s.set_defaults(func=run_search)

    a = sub.add_parser("ask", help="a grounded answer with checked citations")
    a.add_argument("question")
    a.add_argument("--mode", choices=("hybrid", "dense", "keyword"), default="hybrid")
    a.add_argument("--backend", choices=BACKENDS,
                   help="generator backend (default: settings.generator.backend)")
    _add_filters(a)
    a.set_defaults(func=run_ask)

    m = sub.add_parser("summarize", help="summarize documents by id, or the top passages for a query")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--doc", action="append", dest="docs", metavar="ID", help="document id (repeatable)")
    src.add_argument("--query", help="summarize the top passages for this query")
    m.add_argument("--style", choices=("brief", "bullets"), default="brief")
    m.add_argument("--max-words", type=_positive, default=120)
    m.add_argument("--backend", choices=BACKENDS,
                   help="generator backend (default: settings.generator.backend)")
    _add_filters(m)
    m.set_defaults(func=run_summarize)


def _filters(args):
    from rag.types import Filters

    f = Filters.of(domain=args.domain, tags=args.tag, language=args.language, audience=args.audience,
                   date_from=args.date_from, date_to=args.date_to)
    return None if f.is_empty() else f


def _engine_and_generation(args):
    from rag.engine import Engine
    from rag.published import NoSnapshot

    engine = Engine(settings_from(args))
    try:
        return engine, engine.snapshot()
    except NoSnapshot as e:
        raise CLIError(str(e)) from e


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[:SNIPPET_CHARS - 1].rstrip() + "…"


def run_search(args) -> int:
    engine, snapshot = _engine_and_generation(args)
    result = engine.search(args.query, mode=args.mode, filters=_filters(args), top_k=args.top_k, snapshot=snapshot)
    if args.json:
        print_json(dataclasses.asdict(result))
        return 0
    if not result.hits:
        print("no passages match")
        return 0
    for i, h in enumerate(result.hits, 1):
        print(f"[{i}] {h.title or '(untitled)'}  ({h.doc_id}, score {h.score:.4f})")
        print(f"    {_snippet(h.text)}")
    print(f"generation {result.generation_id}, {result.mode}", file=sys.stderr)
    return 0


def _print_citations(citations) -> None:
    if not citations:
        return
    print("\nSources:")
    for c in citations:
        print(f"  [{c.n}] {c.title or '(untitled)'} ({c.doc_id}, {c.chunk_id})")
        print(f"      \u201c{_snippet(c.span)}\u201d")


def run_ask(args) -> int:
    engine, snapshot = _engine_and_generation(args)
    try:
        answer = engine.answerer.answer(snapshot, args.question, filters=_filters(args), top_k=args.top_k,
                                        backend=args.backend, mode=args.mode)
    except ValueError as e:
        raise CLIError(str(e)) from e
    if args.json:
        print_json(dataclasses.asdict(answer))
        return 0
    print(answer.answer)
    if answer.disclaimer:
        print(f"\n{answer.disclaimer}")
    if answer.abstained and answer.passages:
        print("\nClosest passages:")
        for p in answer.passages:
            print(f"  [{p.n}] {p.title or '(untitled)'} ({p.doc_id}): {_snippet(p.text)}")
    _print_citations(answer.citations)
    note = f"backend {answer.backend}" + (f", extractive fallback: {answer.fallback}" if answer.fallback else "")
    print(f"{note}; {answer.timings_ms.get('total_ms', 0):.0f} ms", file=sys.stderr)
    return 0


def run_summarize(args) -> int:
    from rag.summarize import UnknownDocument

    engine, snapshot = _engine_and_generation(args)
    try:
        summary = engine.summarizer.summarize(snapshot, doc_ids=args.docs, query=args.query, filters=_filters(args),
                                              style=args.style, max_words=args.max_words, backend=args.backend,
                                              top_k=args.top_k)
    except (UnknownDocument, ValueError) as e:
        raise CLIError(str(e)) from e
    if args.json:
        print_json(dataclasses.asdict(summary))
        return 0
    print(summary.summary)
    if summary.disclaimer:
        print(f"\n{summary.disclaimer}")
    _print_citations(summary.citations)
    note = f"backend {summary.backend}" + (f", extractive fallback: {summary.fallback}" if summary.fallback else "")
    print(f"{note}; {summary.words} words from {len(summary.doc_ids)} document(s); "
          f"{summary.timings_ms.get('total_ms', 0):.0f} ms", file=sys.stderr)
    return 0
