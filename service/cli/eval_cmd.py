"""`rag eval ...`: measure retrieval, answers and recommendations on real external data sets."""

from __future__ import annotations

from pathlib import Path

from evaluation.reports import write_report
from rag.errors import InvalidInput
from rag.types import SEARCH_MODES
from service.cli import eval_answers, eval_recommend, eval_report, eval_summaries
from service.cli.common import settings_from


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate on real data sets (BEIR folders, SQuAD JSONL, MovieLens)")
    esub = p.add_subparsers(dest="eval_command", metavar="WHAT", required=True)

    r = esub.add_parser("retrieval", help="nDCG@10, recall@10/100, MRR@10, latency per mode on a BEIR folder")
    r.add_argument("dataset", help="BEIR folder with corpus.jsonl, queries.jsonl, qrels/test.tsv")
    r.add_argument("--embedder", help="named embedder or a local folder (default: settings.embedder)")
    r.add_argument("--modes", help="comma-separated subset of dense,keyword,hybrid,hybrid+rerank")
    r.add_argument("--limit", type=int, help="evaluate only the first N queries (sorted by id)")
    r.add_argument("--json", dest="json_out", help="write the report to this file")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=run_retrieval)

    eval_answers.register(esub)
    eval_recommend.register(esub)
    eval_summaries.register(esub)
    eval_report.register(esub)


def run_retrieval(args) -> int:
    from evaluation.retrieval import evaluate, format_table

    settings = settings_from(args)
    folder = Path(args.dataset)
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder", field="dataset")
    modes = [m.strip() for m in args.modes.split(",")] if args.modes else None
    valid = {*SEARCH_MODES, "hybrid+rerank"}
    if modes and not set(modes) <= valid:
        raise InvalidInput(f"--modes: unknown mode(s) {sorted(set(modes) - valid)}; choose from {sorted(valid)}",
                           field="modes")
    report = evaluate(settings, folder, embedder=args.embedder, modes=modes, limit=args.limit,
                      show_progress=not args.quiet)
    print(format_table(report))
    if args.json_out:
        write_report(args.json_out, report)
    return 0

