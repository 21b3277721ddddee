"""`rag eval recommend DATASET_DIR`: our recommender vs popularity, ALS, item-kNN and BPR on a RecBole folder."""

from __future__ import annotations

import sys
from pathlib import Path

from evaluation.reports import write_report
from rag.errors import InvalidInput, NotFound
from service.cli.common import settings_from


def register(esub) -> None:
    p = esub.add_parser("recommend", help="nDCG@10, recall@10, MRR, coverage of recommendations vs baselines "
                        "on a MovieLens folder (RecBole atomic files)")
    p.add_argument("dataset", help="folder with <name>.inter and <name>.item (e.g. movielens-100k)")
    p.add_argument("--holdout", type=int, default=1, help="latest interactions held out per user (default 1)")
    p.add_argument("--json", dest="json_out", help="write the full report (with validation trials) here")
    p.add_argument("--no-tune", action="store_true", help="skip the validation search; use configured weights "
                   "for ours and default knobs for the baselines")
    p.add_argument("--rating-scale", metavar="MIN,MAX", type=_scale,
                   help="the ratings' scale, e.g. 0.5,5 (default: the min and max of the rating column); rows "
                   "outside it are skipped and counted")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _scale(text: str) -> tuple[float, float]:
    import argparse
    import math

    try:
        lo, hi = (float(x) for x in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (e.g. 1,5 or 0.5,5), got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise argparse.ArgumentTypeError(f"MIN must be below MAX, got {text!r}")
    return lo, hi


def run(args) -> int:
    from evaluation.recommend import evaluate, format_table

    folder = Path(args.dataset)
    if not folder.is_dir():
        raise NotFound(f"{folder} is not a folder", field="dataset")
    if args.holdout < 1:
        raise InvalidInput("--holdout must be at least 1", field="holdout")
    report = evaluate(folder, settings_from(args), holdout=args.holdout, tune=not args.no_tune,
                      show_progress=not args.quiet, rating_scale=args.rating_scale)
    print(format_table(report))
    if args.json_out:
        write_report(args.json_out, report)
        print(f"report written to {args.json_out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run without the `rag eval` group: python -m service.cli.eval_recommend DATASET_DIR [...]"""
    import argparse

    parser = argparse.ArgumentParser(prog="rag-eval-recommend")
    parser.add_argument("--config")
    parser.add_argument("--home")
    sub = parser.add_subparsers(dest="eval_command", required=True)
    register(sub)
    args = parser.parse_args(["recommend", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
