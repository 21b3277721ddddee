"""`rag index ...`: build, list, show, rollback and garbage-collect index generations."""

from __future__ import annotations

import sys

from service.cli.common import open_application, print_json


def register(sub) -> None:
    p = sub.add_parser("index", help="build and manage index generations")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = isub.add_parser("build", help="build a new generation from source folders/files and publish it")
    b.add_argument("sources", nargs="*", help="folders or files (default: settings.source_dirs and the "
                   "documents store under the data home)")
    b.add_argument("--embedder", help="named embedder (minilm, e5-small) or a local sentence-transformers folder")
    b.add_argument("--no-publish", action="store_true", help="build and verify, but leave the pointer alone")
    b.add_argument("--force", action="store_true",
                   help="write a new generation even when nothing changed since the published one")
    b.add_argument("--engine", choices=["local", "ray"],
                   help="where chunks are embedded: this process or Ray Data (pip install -e '.[ray]'); default "
                   "settings.index.engine (local)")
    b.add_argument("--address", help="with --engine ray: the Ray cluster (auto, ray://host:10001; default: start a "
                   "local one)")
    b.add_argument("--actors", type=int,
                   help="with --engine ray: encoder actors (default: one per GPU, else one per CPU)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--json", action="store_true", help="print the build report as JSON")
    b.set_defaults(func=run_build)

    ls = isub.add_parser("list", help="list generations, newest first")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)

    sh = isub.add_parser("show", help="show one generation's manifest")
    sh.add_argument("id", nargs="?", help="generation id (default: the published one)")
    sh.set_defaults(func=run_show)

    rb = isub.add_parser("rollback", help="publish an older generation")
    rb.add_argument("id", nargs="?", help="generation id (default: the one before the published one)")
    rb.set_defaults(func=run_rollback)

    g = isub.add_parser("gc", help="remove old generations beyond settings.index.keep_generations")
    g.add_argument("--keep", type=int, help="how many to keep (default from settings)")
    g.set_defaults(func=run_gc)


def run_build(args) -> int:
    with open_application(args) as app:
        report = app.build(args.sources, embedder=args.embedder, publish=not args.no_publish, force=args.force,
                           show_progress=not args.quiet and not args.json, engine=args.engine,
                           ray_address=args.address, ray_actors=args.actors)
    if args.json:
        print_json(report.as_dict())
    elif report.unchanged:
        print(f"nothing changed: generation {report.generation_id} stays published "
              f"({report.documents} documents, {report.chunks} chunks; checked in {report.seconds:.1f} s; "
              "--force builds a new one anyway)", file=sys.stderr)
    else:
        _print_report(report)
    return 0


def _print_report(report) -> None:
    state = "published" if report.published else "built (not published)"
    print(f"generation {report.generation_id} {state}", file=sys.stderr)
    print(f"  documents      {report.documents}  (files seen {report.files_seen}, skipped {len(report.skipped)})")
    on = ", embedded on Ray" if report.engine == "ray" else ""
    print(f"  chunks         {report.chunks}  ({report.index_type} index, embedder {report.embedder}{on})")
    print(f"  vectors reused {report.vectors_reused}  embedded {report.vectors_embedded}")
    if report.redactions:
        print("  redacted       " + ", ".join(f"{n} {kind}" for kind, n in report.redactions.items()))
    print(f"  time           {report.seconds:.1f} s  ({report.chunks_per_s:.1f} chunks/s)")
    for s in report.skipped:
        print(f"  skipped        {s.path}: {s.reason}")


def run_list(args) -> int:
    with open_application(args) as app:
        snapshots = app.snapshots()
    if args.json:
        print_json([{**s.manifest, "published": s.published} for s in snapshots])
    elif not snapshots:
        print("no generations yet: run `rag index build SOURCE`")
    else:
        print(f"{'':2}{'id':<26}{'created':<27}{'embedder':<12}{'docs':>7}{'chunks':>8}  index")
        for s in snapshots:
            print(f"{'* ' if s.published else '  '}{s.id:<26}{s.created_at:<27}{s.embedder['name']:<12}"
                  f"{s.counts['documents']:>7}{s.counts['chunks']:>8}  {s.index_type}")
    return 0


def run_show(args) -> int:
    with open_application(args) as app:
        info = app.snapshot_info(args.id)
    print_json({**info.manifest, "published": info.published})
    return 0


def run_rollback(args) -> int:
    with open_application(args) as app:
        result = app.rollback(args.id)
    print(f"published {result.published} (was {result.previous})")
    return 0


def run_gc(args) -> int:
    with open_application(args) as app:
        removed = app.gc(args.keep)
    print(f"removed {len(removed)} generation(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0
