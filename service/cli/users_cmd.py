"""`rag users import`, `rag events import`, `rag recommend USER_ID`, `rag similar DOC_ID`.

These open the state database read-write: DuckDB allows one such process per file, so while the service runs,
send users and events through its HTTP API instead (the commands say so when the file is locked).
"""

from __future__ import annotations

import sys

from service.cli import CLIError, print_json, settings_from


def register(sub) -> None:
    u = sub.add_parser("users", help="manage users of the recommender")
    usub = u.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    ui = usub.add_parser("import", help="create or update users from a JSONL file "
                         "(user_id, name, interests, domains, language)")
    ui.add_argument("path", metavar="USERS_JSONL")
    ui.add_argument("--json", action="store_true", help="print the report as JSON")
    ui.set_defaults(func=run_users_import)

    e = sub.add_parser("events", help="engagement events (views, likes, ratings, ...)")
    esub = e.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    ei = esub.add_parser("import", help="validate and store events from a JSONL file; bad lines are reported "
                         "and skipped, good ones kept; repeated idempotency keys are stored once")
    ei.add_argument("path", metavar="EVENTS_JSONL")
    ei.add_argument("--json", action="store_true", help="print the report as JSON")
    ei.set_defaults(func=run_events_import)

    r = sub.add_parser("recommend", help="recommendations for a user (new and unknown users get trending "
                       "items or items near their declared interests)")
    r.add_argument("user_id", metavar="USER_ID")
    r.add_argument("--domain", action="append", help="only this domain (repeatable)")
    r.add_argument("--language", action="append", help="only this language (repeatable)")
    r.add_argument("--audience", action="append", help="only this audience (repeatable)")
    r.add_argument("--k", type=int, default=10, help="how many (default 10)")
    r.add_argument("--include-seen", action="store_true", help="allow documents the user already engaged with")
    r.add_argument("--explain", action="store_true",
                   help="a one-sentence blurb per item from the generator, checked against the document")
    r.add_argument("--backend", choices=("transformers", "openai", "extractive"),
                   help="generator backend for --explain (default: settings.generator.backend)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=run_recommend)

    s = sub.add_parser("similar", help="documents like DOC_ID (\"more like this\")")
    s.add_argument("doc_id", metavar="DOC_ID")
    s.add_argument("--k", type=int, default=10, help="how many (default 10)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_similar)


def _state(settings):
    from rag.state import StateLocked, StateDB

    try:
        return StateDB(settings.state_db)
    except StateLocked as e:
        raise CLIError(str(e)) from e


def _print_rejections(rejected: list[dict], what: str) -> None:
    shown = rejected[:50]
    for r in shown:
        print(f"  line {r['index']}: {r['field']}: {r['reason']}", file=sys.stderr)
    if len(rejected) > len(shown):
        print(f"  ... and {len(rejected) - len(shown)} more problems in other {what}", file=sys.stderr)


def run_users_import(args) -> int:
    from rag.events import load_users_jsonl

    settings = settings_from(args)
    with _state(settings) as state:
        report = load_users_jsonl(state, args.path)
    if args.json:
        print_json(report.as_dict())
        return 0
    print(f"users: {report.accepted} imported, {len(report.rejected)} rejected")
    _print_rejections(report.rejected, "lines")
    return 0


def run_events_import(args) -> int:
    from rag.events import load_events_jsonl

    settings = settings_from(args)
    with _state(settings) as state:
        report = load_events_jsonl(state, args.path, rating_scale=settings.events)
    if args.json:
        print_json(report.as_dict())
        return 0
    print(f"events: {report.accepted} accepted, {report.duplicates} duplicates, "
          f"{report.rejected_events} rejected")
    _print_rejections(report.rejected, "lines")
    return 0


def _engine(settings):
    from rag.engine import Engine
    from rag.published import NoSnapshot

    engine = Engine(settings)
    try:
        snapshot = engine.snapshot()
    except NoSnapshot as e:
        raise CLIError(str(e)) from e
    from rag.state import StateLocked

    try:
        engine.state
    except StateLocked as e:
        raise CLIError(str(e)) from e
    return engine, snapshot


def _print_list(result, header: str) -> None:
    print(f"{header} ({result.strategy}; generation {result.generation_id}; "
          f"{result.timings_ms.get('total', 0):.1f} ms)")
    if not result.items:
        print("  nothing to recommend with these filters")
    for n, it in enumerate(result.items, 1):
        domain = f"  [{it.domain}]" if it.domain else ""
        print(f"{n:>3}. {it.title}{domain}  ({it.doc_id}, score {it.score:.3f})")
        print(f"     {it.reason}")
        if it.blurb:
            print(f"     {it.blurb}")


def run_recommend(args) -> int:
    if args.k < 1:
        raise CLIError("--k must be at least 1")
    engine, snapshot = _engine(settings_from(args))
    try:
        result = engine.recommend(args.user_id, snapshot=snapshot, k=args.k, domain=args.domain, language=args.language,
                                  audience=args.audience, exclude_seen=not args.include_seen,
                                  explain=args.explain, explain_backend=args.backend)
    finally:
        engine.state.close()
    if args.json:
        print_json(result.as_dict())
    else:
        _print_list(result, f"recommendations for {args.user_id}")
    return 0


def run_similar(args) -> int:
    if args.k < 1:
        raise CLIError("--k must be at least 1")
    engine, snapshot = _engine(settings_from(args))
    try:
        result = engine.recommender.similar(snapshot, args.doc_id, k=args.k)
    except KeyError as e:
        raise CLIError(e.args[0] if e.args else f"unknown document {args.doc_id!r}") from e
    finally:
        engine.state.close()
    if args.json:
        print_json(result.as_dict())
    else:
        _print_list(result, f"more like {args.doc_id}")
    return 0
