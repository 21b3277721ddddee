"""`rag search`, `rag ask`, `rag summarize`: the library's read paths from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import date

from rag.generators import BACKENDS
from rag.summarize import STYLES
from rag.types import SEARCH_MODES, SEARCH_RESULTS, Filters
from service.cli.common import add_as, open_application, print_json, visibility_from

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
    add_as(p)


def register(sub) -> None:
    s = sub.add_parser("search", help="hybrid search over the published index")
    s.add_argument("query")
    s.add_argument("--mode", choices=SEARCH_MODES, default="hybrid")
    s.add_argument("--results", choices=SEARCH_RESULTS, default="chunks",
                   help="passages (chunks), or documents: one hit per document, its best passage")
    _add_filters(s)
    s.set_defaults(func=run_search)

    a = sub.add_parser("ask", help="a grounded answer with checked citations")
    a.add_argument("question")
    a.add_argument("--mode", choices=SEARCH_MODES, default="hybrid")
    a.add_argument("--backend", choices=BACKENDS,
                   help="generator backend (default: settings.generator.backend)")
    _add_filters(a)
    a.set_defaults(func=run_ask)

    m = sub.add_parser("summarize", help="summarize documents by id, or the top passages for a query")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--doc", action="append", dest="docs", metavar="ID", help="document id (repeatable)")
    src.add_argument("--query", help="summarize the top passages for this query")
    m.add_argument("--style", choices=STYLES, default="brief")
    m.add_argument("--max-words", type=_positive,
                   help="word budget (default 120, or 20 per top-level section of a document, up to 320)")
    m.add_argument("--backend", choices=BACKENDS,
                   help="generator backend (default: settings.generator.backend)")
    _add_filters(m)
    m.set_defaults(func=run_summarize)


def _filters(args) -> Filters | None:
    f = Filters.of(domain=args.domain, tags=args.tag, language=args.language, audience=args.audience,
                   date_from=args.date_from, date_to=args.date_to)
    return None if f.is_empty() else f


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[:SNIPPET_CHARS - 1].rstrip() + "…"


def run_search(args) -> int:
    with open_application(args) as app:
        result = app.search(args.query, mode=args.mode, filters=_filters(args), top_k=args.top_k,
                            results=args.results, visibility=visibility_from(args))
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


def run_ask(args) -> int:
    with open_application(args) as app:
        answer = app.ask(args.question, filters=_filters(args), top_k=args.top_k, backend=args.backend,
                         mode=args.mode, visibility=visibility_from(args))
    if args.json:
        print_json(dataclasses.asdict(answer))
        return 0
    closest = answer.passages if answer.abstained else []
    _print_written(answer.answer, answer, closest, f"{answer.timings_ms.get('total_ms', 0):.0f} ms")
    return 0


def run_summarize(args) -> int:
    with open_application(args) as app:
        summary = app.summarize(doc_ids=args.docs, query=args.query, filters=_filters(args), style=args.style,
                                max_words=args.max_words, backend=args.backend, top_k=args.top_k,
                                visibility=visibility_from(args))
    if args.json:
        print_json(dataclasses.asdict(summary))
        return 0
    _print_written(summary.summary, summary, [], f"{summary.words} words from {len(summary.doc_ids)} document(s); "
                   f"{summary.timings_ms.get('total_ms', 0):.0f} ms")
    return 0


def _print_written(text: str, result, closest: list, how: str) -> None:
    """An answer or a summary: the text, its disclaimer, the closest passages (an abstention), the sources, and
    on stderr the backend with its fallback."""
    print(text)
    if result.disclaimer:
        print(f"\n{result.disclaimer}")
    if closest:
        print("\nClosest passages:")
        for p in closest:
            print(f"  [{p.n}] {p.title or '(untitled)'} ({p.doc_id}): {_snippet(p.text)}")
    if result.citations:
        print("\nSources:")
        for c in result.citations:
            print(f"  [{c.n}] {c.title or '(untitled)'} ({c.doc_id}, {c.chunk_id})")
            print(f"      \u201c{_snippet(c.span)}\u201d")
    note = f"backend {result.backend}" + (f", extractive fallback: {result.fallback}" if result.fallback else "")
    print(f"{note}; {how}", file=sys.stderr)
