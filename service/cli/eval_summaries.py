"""`rag eval summaries DATASET`: ROUGE-1/2/L, BLEU, support and speed of summaries against reference summaries."""

from __future__ import annotations

from pathlib import Path

from evaluation.reports import write_report
from rag.errors import InvalidInput, NotFound
from rag.generators import BACKENDS
from rag.summarize import STYLES
from service.cli.common import settings_from

DEFAULT_BACKENDS = ("extractive", "transformers")


def register(esub) -> None:
    p = esub.add_parser(
        "summaries", help="summary quality: ROUGE-1/2/L, BLEU, support, s/summary per backend, lead/tail baselines",
        description="PubMedQA rows {id, contexts, long_answer} (the abstract without its conclusion is summarized, "
                    "the conclusion is the reference) or rows {id, text, summary}. Every backend in the same run, "
                    "with the lead and tail baselines under the same word budget.")
    p.add_argument("dataset", help="a folder holding qa.jsonl, or a JSONL file")
    p.add_argument("--backend", action="append", choices=BACKENDS, dest="backends",
                   help=f"backend to measure (repeatable; default: {', '.join(DEFAULT_BACKENDS)})")
    p.add_argument("--style", choices=STYLES, default="brief")
    p.add_argument("--max-words", type=int, default=40,
                   help="word budget of every summary and baseline (default 40: the references' median length)")
    p.add_argument("--split", default="test",
                   help="rows to score by their split field (PubMedQA: test = the official 500, dev; all)")
    p.add_argument("--limit", type=int, default=0, help="only the first N documents (default 0: all)")
    p.add_argument("--generative-limit", type=int, default=50,
                   help="a generative backend summarizes only the first N documents (default 50; 0 = all): "
                        "SmolLM2 takes seconds per summary on a CPU")
    p.add_argument("--json", dest="json_out", help="write the report (with every summary) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from evaluation.summaries import evaluate, format_table

    if args.limit < 0 or args.generative_limit < 0:
        raise InvalidInput("--limit and --generative-limit must be 0 (all) or more", field="limit")
    path = Path(args.dataset)
    if not path.exists():
        raise NotFound(f"{path} does not exist", field="dataset")
    report = evaluate(settings_from(args), path, backends=args.backends or list(DEFAULT_BACKENDS), style=args.style,
                      max_words=args.max_words, limit=args.limit or None,
                      generative_limit=args.generative_limit or None, split=args.split, show_progress=not args.quiet)
    print(format_table(report))
    if args.json_out:
        write_report(args.json_out, report)
    return 0
