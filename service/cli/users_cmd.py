"""`rag users import|forget`, `rag events import`, `rag recommend USER_ID`, `rag similar DOC_ID`.

These open the state database read-write: DuckDB allows one such process per file, so while the service runs,
send users and events through its HTTP API instead (the commands say so when the file is locked).
"""

from __future__ import annotations

import sys

from rag.generators import BACKENDS
from service.cli.common import add_as, open_application, print_json, visibility_from


def register(sub) -> None:
    _import_command(sub, "users", "manage users of the recommender", "USERS_JSONL",
                    "create or update users from a JSONL file (user_id, name, interests, domains, language)",
                    run_users_import)
    _import_command(sub, "events", "engagement events (views, likes, ratings, ...)", "EVENTS_JSONL",
                    "validate and store events from a JSONL file; bad lines are reported and skipped, good ones "
                    "kept; repeated idempotency keys are stored once", run_events_import)

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
    r.add_argument("--backend", choices=BACKENDS,
                   help="generator backend for --explain (default: settings.generator.backend)")
    r.add_argument("--json", action="store_true")
    add_as(r)
    r.set_defaults(func=run_recommend)

    s = sub.add_parser("similar", help="documents like DOC_ID (\"more like this\")")
    s.add_argument("doc_id", metavar="DOC_ID")
    s.add_argument("--k", type=int, default=10, help="how many (default 10)")
    s.add_argument("--json", action="store_true")
    add_as(s)
    s.set_defaults(func=run_similar)


def _import_command(sub, name: str, help_: str, metavar: str, import_help: str, run) -> None:
    group = sub.add_parser(name, help=help_)
    actions = group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
    p = actions.add_parser("import", help=import_help)
    p.add_argument("path", metavar=metavar)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
    if name == "users":
        f = actions.add_parser("forget", help="remove a user, their events and cached profile (right to erasure)")
        f.add_argument("user_id", metavar="USER_ID")
        f.add_argument("--json", action="store_true")
        f.set_defaults(func=run_users_forget)


def run_users_forget(args) -> int:
    with open_application(args) as app:
        result = app.forget_user(args.user_id)
    if args.json:
        print_json(result)
    else:
        print(f"forgot {args.user_id}: {result['events_removed']} events removed"
              + ("" if result["user_removed"] else " (no user row was stored)"))
    return 0


def _print_rejections(rejected: list[dict], what: str) -> None:
    shown = rejected[:50]
    for r in shown:
        print(f"  line {r['index']}: {r['field']}: {r['reason']}", file=sys.stderr)
    if len(rejected) > len(shown):
        print(f"  ... and {len(rejected) - len(shown)} more problems in other {what}", file=sys.stderr)


def run_users_import(args) -> int:
    with open_application(args) as app:
        report = app.import_users(args.path)
    _print_import(args, report, f"users: {report.accepted} imported, {len(report.rejected)} rejected")
    return 0


def run_events_import(args) -> int:
    with open_application(args) as app:
        report = app.import_events(args.path)
    _print_import(args, report, f"events: {report.accepted} accepted, {report.duplicates} duplicates, "
                                f"{report.rejected_events} rejected")
    return 0


def _print_import(args, report, line: str) -> None:
    if args.json:
        print_json(report.as_dict())
        return
    print(line)
    _print_rejections(report.rejected, "lines")


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
    if result.fallback:
        print(f"blurbs: backend {result.backend}, fallback: {result.fallback}", file=sys.stderr)


def run_recommend(args) -> int:
    with open_application(args) as app:
        result = app.recommend(args.user_id, k=args.k, domain=args.domain, language=args.language,
                               audience=args.audience, exclude_seen=not args.include_seen, explain=args.explain,
                               backend=args.backend, visibility=visibility_from(args))
    if args.json:
        print_json(result.as_dict())
    else:
        _print_list(result, f"recommendations for {args.user_id}")
    return 0


def run_similar(args) -> int:
    with open_application(args) as app:
        result = app.similar(args.doc_id, k=args.k, visibility=visibility_from(args))
    if args.json:
        print_json(result.as_dict())
    else:
        _print_list(result, f"more like {args.doc_id}")
    return 0
