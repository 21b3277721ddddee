"""The `rag` command line: subcommands are registered by small modules, one per resource. A command parses its
arguments, makes one call into `rag.application.Application` (or an evaluation), and prints the result.

Errors map to exit codes here, once: the library's error tree (rag.errors) by kind, anything else 1 (with the
traceback under -v), 130 for Ctrl-C.

    InvalidInput, NotFound   2 (as argparse's own usage errors)    Busy          4
    Conflict                 3                                     Unavailable   5
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from rag.errors import Busy, Conflict, InvalidInput, NotFound, RagError, Unavailable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXIT_CODES: tuple[tuple[type[RagError], int], ...] = (
    (InvalidInput, 2), (NotFound, 2), (Conflict, 3), (Busy, 4), (Unavailable, 5))


def exit_code(e: RagError) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(e, kind)), 1)


def _modules():
    from service.cli import config_cmd, eval_cmd, index_cmd, query_cmd, serve_cmd, users_cmd

    return [config_cmd, index_cmd, query_cmd, eval_cmd, users_cmd, serve_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Grounded answers, search, summaries and "
                                     "recommendations over domain documents.")
    parser.add_argument("--config", help="TOML settings file (default: $RAG_CONFIG or ./rag.toml)")
    parser.add_argument("--home", help="data home (default: $RAG_HOME or ~/.local/share/rag-service)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130
    except RagError as e:
        print(f"rag: error: {_one_line(str(e))}", file=sys.stderr)
        return exit_code(e)
    except Exception as e:  # noqa: BLE001 - one readable line instead of a traceback, unless -v
        if args.verbose:
            raise
        print(f"rag: error: {type(e).__name__}: {_one_line(str(e)) or type(e).__name__} (run with -v for details)",
              file=sys.stderr)
        return 1


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text[:497] + "..." if len(text) > 500 else text


if __name__ == "__main__":
    sys.exit(main())
