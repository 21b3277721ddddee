"""What every `rag` command shares: the settings from the global flags, the application, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from indexer.build import Indexer
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


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")
