"""`rag serve`: run the HTTP API on uvicorn (one process: it is the single writer of the state DB)."""

from __future__ import annotations

import logging
from pathlib import Path

from service.cli import CLIError, settings_from

log = logging.getLogger("service.serve")


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP API (Litestar on uvicorn)")
    p.add_argument("--host", help="interface to bind (default: settings.service.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: settings.service.port, 8000)")
    p.add_argument("--open", action="store_true",
                   help="OPEN MODE for a local demo: no API keys checked, every caller is admin")
    p.add_argument("--load-demo", metavar="PATH",
                   help="before serving, import PATH/users.jsonl and PATH/events.jsonl into the state DB "
                        "unless they are already there")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def load_demo(state, path: Path, rating_scale=None) -> dict:
    """Import a demo folder's users.jsonl / events.jsonl (skipping what the state DB already holds)."""
    from rag.events import load_events_jsonl, load_users_jsonl

    if not path.is_dir():
        raise CLIError(f"--load-demo: {path} is not a folder")
    users, events = path / "users.jsonl", path / "events.jsonl"
    if not users.exists() and not events.exists():
        raise CLIError(f"--load-demo: {path} holds neither users.jsonl nor events.jsonl")
    counts = state.counts()
    done: dict = {}
    if users.exists():
        # Upserts: loading the same users again changes nothing.
        done["users"] = load_users_jsonl(state, users).as_dict()
    if events.exists():
        if counts["events"]:
            done["events"] = f"skipped: the state DB already holds {counts['events']} events"
        else:
            rep = load_events_jsonl(state, events, rating_scale=rating_scale)
            done["events"] = {"accepted": rep.accepted, "duplicates": rep.duplicates,
                              "rejected": rep.rejected_events}
    log.info("demo data loaded from %s", path, extra={"demo": done})
    return done


def run(args) -> int:
    import uvicorn

    from rag.engine import Engine
    from service.app import create_app
    from service.request_log import configure_logging

    settings = settings_from(args)
    host = args.host or settings.service.host
    port = args.port if args.port is not None else settings.service.port
    configure_logging(args.log_level.upper())
    if args.open:
        settings.service.open_mode = True
    if settings.service.open_mode:
        banner = "!" * 78
        log.warning(banner)
        log.warning("OPEN MODE: no API key is checked and every caller is ADMIN (can rebuild, delete, roll back). "
                    "Use it for a local demo only.")
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("OPEN MODE on %s: anyone who can reach this address has full control", host)
        log.warning(banner)

    engine = Engine(settings)
    try:
        state = engine.state  # opens the state DB read-write: fails here, readably, if another process has it
    except Exception as e:  # noqa: BLE001
        raise CLIError(str(e)) from e
    if args.load_demo:
        load_demo(state, Path(args.load_demo).expanduser(), settings.events)

    app = create_app(settings, engine)
    log.info("listening on http://%s:%d (API document: http://%s:%d/schema)", host, port, host, port,
             extra={"url": f"http://{host}:{port}", "home": str(settings.home_path)})
    try:
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                    timeout_graceful_shutdown=10)
    finally:
        state.close()
    return 0
