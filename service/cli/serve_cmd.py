"""`rag serve`: run the HTTP API on uvicorn (one process: it is the single writer of the state DB)."""

from __future__ import annotations

import logging

from service.cli.common import open_application

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


def run(args) -> int:
    import uvicorn

    from service.app import create_app
    from service.request_log import configure_logging

    configure_logging(args.log_level.upper())
    with open_application(args) as application:
        settings = application.settings
        host = args.host or settings.service.host
        port = args.port if args.port is not None else settings.service.port
        settings.service.open_mode = settings.service.open_mode or args.open
        if settings.service.open_mode:
            _warn_open(host)
        _ = application.state  # opens the state DB read-write: fails here, readably, if another process has it
        if args.load_demo:
            log.info("demo data loaded from %s", args.load_demo,
                     extra={"demo": application.import_demo(args.load_demo)})
        log.info("listening on http://%s:%d (API document: http://%s:%d/schema)", host, port, host, port,
                 extra={"url": f"http://{host}:{port}", "home": str(settings.home_path)})
        uvicorn.run(create_app(settings, application), host=host, port=port, log_config=None, access_log=False,
                    lifespan="on", timeout_graceful_shutdown=10)
    return 0


def _warn_open(host: str) -> None:
    banner = "!" * 78
    log.warning(banner)
    log.warning("OPEN MODE: no API key is checked and every caller is ADMIN (can rebuild, delete, roll back). "
                "Use it for a local demo only.")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("OPEN MODE on %s: anyone who can reach this address has full control", host)
    log.warning(banner)
