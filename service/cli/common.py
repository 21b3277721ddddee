"""What every `rag` command shares: the settings from the global flags, the application, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from indexer.build import Indexer
from rag.access import Visibility
from rag.application import Application
from rag.config import Settings, load_settings


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, home=args.home)


@contextmanager
def open_application(args: argparse.Namespace) -> Iterator[Application]:
    """The application for one command, with the indexer as its builder; its state database closed after."""
    application = Application(settings_from(args), builder=Indexer())
    try:
        yield application
    finally:
        application.close()


def add_as(p: argparse.ArgumentParser) -> None:
    p.add_argument("--as", dest="as_groups", metavar="GROUP,...",
                   help="see only what a principal of these groups sees: public documents and those labelled with "
                        "one of them ('' = public only). Default: every document (an operator on the data home)")


def visibility_from(args: argparse.Namespace) -> Visibility | None:
    """`--as`'s visibility; None (every document) without it."""
    groups = getattr(args, "as_groups", None)
    return None if groups is None else Visibility.of(g for g in groups.split(",") if g.strip())


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")
