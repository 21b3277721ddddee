"""`rag eval answers PATH`: answer quality on SQuAD, SQuAD near-miss, TAT-QA or probe question sets."""

from __future__ import annotations

from pathlib import Path

from rag.generators import BACKENDS
from evaluation.reports import write_report
from rag.errors import InvalidInput, NotFound
from service.cli.common import settings_from

KINDS = ("auto", "squad", "near-miss", "tatqa", "probe", "pubmedqa")


def register(esub) -> None:
    """Add `answers` to the `rag eval` group (`esub` is that group's subparsers object)."""
    p = esub.add_parser(
        "answers", help="answer quality: holds-the-answer, abstention, EM/F1, citations, s/answer",
        description="SQuAD rows {id, title, context, question, answers}; --kind near-miss: SQuAD articles with a "
                    "third of their paragraphs left out (questions about those must abstain); a TAT-QA folder "
                    "(qa.jsonl with answer_type, gold_doc_ids, and corpus.jsonl); a probe JSONL {question, "
                    "answerable, answers, doc_id} over a corpus folder (default: data/documents beside it); a PubMedQA folder "
                    "(qa.jsonl with contexts, long_answer, final_decision): each question over its own abstract, "
                    "yes/no/maybe accuracy and macro-F1, ROUGE-L against long_answer.")
    p.add_argument("path", help="a QA JSONL file or a folder holding qa.jsonl")
    p.add_argument("--kind", choices=KINDS, default="auto", help="question set kind (default: from the rows)")
    p.add_argument("--backend", choices=BACKENDS, help="generator backend (default: settings.generator.backend)")
    p.add_argument("--split", choices=("test", "fit", "all"), default="test",
                   help="near-miss / TAT-QA / PubMedQA half to score: test (default; never used to fit answer "
                        "selection; PubMedQA: the official test split), fit (PubMedQA: dev)")
    p.add_argument("--per-article", type=int, default=15,
                   help="near-miss: answerable and unanswerable questions per article (default 15 each)")
    p.add_argument("--corpus", help="probe: the folder its questions are asked over")
    p.add_argument("--own-context", action="store_true",
                   help="TAT-QA: ask each question over its own table and paragraphs (the task as its authors pose "
                        "it) instead of the whole corpus: reading apart from finding the filing")
    p.add_argument("--limit", type=int, default=300, help="SQuAD / TAT-QA questions to sample, PubMedQA the first N (default 300; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", dest="json_out", help="write the report (with every answer) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from evaluation.answers import evaluate, format_table

    if args.limit < 0:
        raise InvalidInput("--limit must be 0 (all) or more", field="limit")
    if args.per_article < 1:
        raise InvalidInput("--per-article must be at least 1", field="per_article")
    path = Path(args.path)
    if not path.exists():
        raise NotFound(f"{path} does not exist", field="path")
    if args.corpus and not Path(args.corpus).is_dir():
        raise NotFound(f"--corpus {args.corpus} is not a folder", field="corpus")
    report = evaluate(settings_from(args), path, kind=args.kind, backend=args.backend, limit=args.limit or None,
                      seed=args.seed, split=args.split, per_article=args.per_article,
                      corpus=Path(args.corpus) if args.corpus else None, own_context=args.own_context,
                      show_progress=not args.quiet)
    print(format_table(report))
    if args.json_out:
        write_report(args.json_out, report)
    return 0
