"""The `rag` command line: subcommands are registered by small modules, one per resource."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from rag.config import ConfigError, Settings, load_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


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


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, home=args.home)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


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
    except (CLIError, ConfigError, FileNotFoundError) as e:
        print(f"rag: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one readable line instead of a traceback, unless -v
        if args.verbose:
            raise
        print(f"rag: error: {error_line(e)}", file=sys.stderr)
        return 1


def error_line(e: BaseException) -> str:
    """One line for the user: our own errors by their message, anything else also by its type (a bare
    "KeyError: 'x'" says little), with the hint that -v shows the traceback."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > 500:
        text = text[:497] + "..."
    if type(e).__module__.split(".")[0] in ("rag", "indexer", "service"):
        return text
    return f"{type(e).__name__}: {text} (run with -v for details)"


if __name__ == "__main__":
    sys.exit(main())
