"""`rag index ...`: build, list, show, rollback and garbage-collect index generations."""

from __future__ import annotations

import sys

from service.cli import CLIError, print_json, settings_from


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


def default_sources(settings) -> list[str]:
    sources = list(settings.source_dirs)
    if settings.documents_dir.exists() and any(settings.documents_dir.iterdir()):
        sources.append(str(settings.documents_dir))
    return sources


def run_build(args) -> int:
    from indexer.build import BuildError, build

    settings = settings_from(args)
    sources = args.sources or default_sources(settings)
    if not sources:
        raise CLIError("nothing to index: pass SOURCE folders, or set source_dirs in the settings")
    try:
        report = build(settings, sources, embedder=args.embedder, publish=not args.no_publish, force=args.force,
                       show_progress=not args.quiet and not args.json)
    except BuildError as e:
        raise CLIError(str(e)) from e
    if args.json:
        print_json(report.as_dict())
        return 0
    if report.unchanged:
        print(f"nothing changed: generation {report.generation_id} stays published "
              f"({report.documents} documents, {report.chunks} chunks; checked in {report.seconds:.1f} s; "
              "--force builds a new one anyway)", file=sys.stderr)
        return 0
    state = "published" if report.published else "built (not published)"
    print(f"generation {report.generation_id} {state}", file=sys.stderr)
    print(f"  documents      {report.documents}  (files seen {report.files_seen}, skipped {len(report.skipped)})")
    print(f"  chunks         {report.chunks}  ({report.index_type} index, embedder {report.embedder})")
    print(f"  vectors reused {report.vectors_reused}  embedded {report.vectors_embedded}")
    print(f"  time           {report.seconds:.1f} s  ({report.chunks_per_s:.1f} chunks/s)")
    for s in report.skipped:
        print(f"  skipped        {s.path}: {s.reason}")
    return 0


def _manifests(settings):
    from rag import snapshot_files

    return snapshot_files.list_snapshots(settings.home_path), snapshot_files.read_pointer(settings.home_path)


def run_list(args) -> int:
    from rag.snapshot_files import manifest_json

    settings = settings_from(args)
    manifests, current = _manifests(settings)
    if args.json:
        print_json([{**manifest_json(m), "published": m.id == current} for m in manifests])
        return 0
    if not manifests:
        print("no generations yet: run `rag index build SOURCE`")
        return 0
    print(f"{'':2}{'id':<26}{'created':<27}{'embedder':<12}{'docs':>7}{'chunks':>8}  index")
    for m in manifests:
        mark = "* " if m.id == current else "  "
        print(f"{mark}{m.id:<26}{m.created_at:<27}{m.embedder.name:<12}{m.counts.documents:>7}"
              f"{m.counts.chunks:>8}  {m.index_type}")
    return 0


def run_show(args) -> int:
    from rag import snapshot_files

    settings = settings_from(args)
    snapshot_id = args.id or snapshot_files.read_pointer(settings.home_path)
    if not snapshot_id:
        raise CLIError("no generation is published yet")
    path = snapshot_files.snapshot_dir(settings.home_path, snapshot_id)
    if not (path / snapshot_files.MANIFEST).exists():
        raise CLIError(f"no generation {snapshot_id!r}; see `rag index list`")
    data = snapshot_files.manifest_json(snapshot_files.read_manifest(path))
    data["published"] = snapshot_id == snapshot_files.read_pointer(settings.home_path)
    print_json(data)
    return 0


def run_rollback(args) -> int:
    from rag import snapshot_files

    settings = settings_from(args)
    manifests, current = _manifests(settings)
    target = args.id
    if target is None:
        ids = [m.id for m in manifests]
        if current not in ids or ids.index(current) + 1 >= len(ids):
            raise CLIError("no older generation to roll back to")
        target = ids[ids.index(current) + 1]
    try:
        snapshot_files.publish(settings.home_path, target)
    except snapshot_files.SnapshotNotFound as e:
        raise CLIError(f"{e}; see `rag index list`") from e
    print(f"published {target} (was {current})")
    return 0


def run_gc(args) -> int:
    from rag import snapshot_files

    settings = settings_from(args)
    keep = args.keep if args.keep is not None else settings.index.keep_generations
    if keep < 1:
        raise CLIError("--keep must be at least 1")
    removed = snapshot_files.gc(settings.home_path, keep)
    print(f"removed {len(removed)} generation(s)" + (": " + ", ".join(removed) if removed else ""))
    return 0
