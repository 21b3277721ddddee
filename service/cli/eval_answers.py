"""`rag eval answers QA_JSONL`: EM/F1, citation accuracy, abstention and speed of the answerer."""

from __future__ import annotations

import json
from pathlib import Path

from service.cli import CLIError, settings_from


def register(esub) -> None:
    """Add `answers` to the `rag eval` group (`esub` is that group's subparsers object)."""
    p = esub.add_parser("answers", help="EM/F1, citation accuracy, abstention, s/answer on SQuAD-style QA JSONL")
    p.add_argument("qa_jsonl", help="JSONL rows {id, title, context, question, answers} (or a folder with qa.jsonl)")
    p.add_argument("--backend", choices=("transformers", "openai", "extractive"),
                   help="generator backend (default: settings.generator.backend)")
    p.add_argument("--limit", type=int, default=300, help="questions to sample (default 300; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", dest="json_out", help="write the report (with every answer) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from rag.evaluation.answers import evaluate, format_table

    if args.limit < 0:
        raise CLIError("--limit must be 0 (all) or more")
    path = Path(args.qa_jsonl)
    if not path.exists():
        raise CLIError(f"{path} does not exist")
    try:
        report = evaluate(settings_from(args), path, backend=args.backend, limit=args.limit or None, seed=args.seed,
                          show_progress=not args.quiet)
    except ValueError as e:
        raise CLIError(str(e)) from e
    print(format_table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0
