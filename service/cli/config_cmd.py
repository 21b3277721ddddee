"""`rag config`: print the effective settings."""

from __future__ import annotations

from service.cli.common import print_json, settings_from


def register(sub) -> None:
    p = sub.add_parser("config", help="print the effective settings (defaults < TOML < environment)")
    p.set_defaults(func=run)


def run(args) -> int:
    print_json(settings_from(args).redacted())
    return 0
