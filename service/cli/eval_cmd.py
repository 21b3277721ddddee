"""`rag eval ...`: measure retrieval, answers and recommendations on real external data sets."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from service.cli import CLIError, print_json, settings_from

# Each evaluation registers its own subcommand; a module that is not there yet is simply absent.
_SUBCOMMANDS = ("service.cli.eval_answers", "service.cli.eval_recommend")


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

    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(esub)


def run_retrieval(args) -> int:
    from rag.evaluation.retrieval import evaluate, format_table

    settings = settings_from(args)
    folder = Path(args.dataset)
    if not folder.is_dir():
        raise CLIError(f"{folder} is not a folder")
    modes = [m.strip() for m in args.modes.split(",")] if args.modes else None
    valid = {"dense", "keyword", "hybrid", "hybrid+rerank"}
    if modes and not set(modes) <= valid:
        raise CLIError(f"--modes: unknown mode(s) {sorted(set(modes) - valid)}; choose from {sorted(valid)}")
    report = evaluate(settings, folder, embedder=args.embedder, modes=modes, limit=args.limit,
                      show_progress=not args.quiet)
    print(format_table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


__all__ = ["register", "print_json"]
