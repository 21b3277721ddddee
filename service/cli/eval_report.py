"""`rag eval report`: one self-contained HTML page and a Markdown summary of the evaluations, from saved results,
running (and saving) the ones asked for that are not saved yet."""

from __future__ import annotations

from pathlib import Path

from rag.errors import InvalidInput, NotFound
from rag.generators import BACKENDS
from service.cli.common import settings_from


def register(esub) -> None:
    p = esub.add_parser(
        "report", help="one HTML page (inline charts) + Markdown from saved evaluation results",
        description="Reads every evaluation result (*.json written by rag eval ... --json) under OUT/results and "
                    "the --from paths; each --retrieval/--answers/--summaries/--recommend set whose result is not "
                    "saved under OUT/results yet is evaluated first and saved there (an interrupted run resumes). "
                    "Writes OUT/report.html (self-contained: charts inlined as SVG) and OUT/report.md.")
    p.add_argument("--out", default="eval-report", help="output folder (default ./eval-report)")
    p.add_argument("--from", dest="sources", action="append", default=[], metavar="PATH",
                   help="a saved result file or a folder of them (repeatable), e.g. bench/results")
    p.add_argument("--retrieval", action="append", default=[], metavar="SET", help="a BEIR folder to evaluate")
    p.add_argument("--answers", action="append", default=[], metavar="SET", help="a question set to evaluate")
    p.add_argument("--summaries", action="append", default=[], metavar="SET", help="a summary set to evaluate")
    p.add_argument("--recommend", action="append", default=[], metavar="SET", help="a RecBole folder to evaluate")
    p.add_argument("--backend", action="append", choices=BACKENDS, dest="backends",
                   help="answers and summaries backends (repeatable; default: the configured backend)")
    p.add_argument("--title", default="Evaluation report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from evaluation.reports import Planned, load_results, render, run_missing

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out} is a file, not a folder", field="out")
    for s in (*args.sources, *args.retrieval, *args.answers, *args.summaries, *args.recommend):
        if not Path(s).exists():
            raise NotFound(f"{s} does not exist", field="path")
    backends = tuple(args.backends or ())
    plan = ([Planned("retrieval", Path(s)) for s in args.retrieval]
            + [Planned("answers", Path(s), (b,) if b else ()) for s in args.answers for b in (backends or ("",))]
            + [Planned("summaries", Path(s), backends) for s in args.summaries]
            + [Planned("recommend", Path(s)) for s in args.recommend])
    results_dir = out / "results"
    if plan:
        run_missing(settings_from(args), plan, results_dir, progress=not args.quiet)
    results, skipped = load_results([*(Path(s) for s in args.sources), *([results_dir] if results_dir.is_dir()
                                                                         else [])])
    if not results:
        raise NotFound("no evaluation results to report: give --from PATH (saved rag eval ... --json files) or a "
                       "set to evaluate (--retrieval, --answers, --summaries, --recommend)", field="from")
    html_path, md_path = render(results, out, title=args.title, progress=not args.quiet)
    print(f"{len(results)} results -> {html_path} and {md_path}" + (f" ({len(skipped)} files skipped)"
                                                                    if skipped else ""))
    return 0
