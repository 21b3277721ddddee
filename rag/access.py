"""Who may see what: document access labels, the principals API keys map to, and what each may see.

A document may carry `access`, a list of group names (front matter, sidecar, a JSONL/CSV column, the documents
API); a document without one is public. A principal sees the public documents and those sharing at least one
group with it; the group `*` sees every document. Group names are compared exactly as written (an unknown group
is simply one no key belongs to).

The rule is enforced where data is read (DESIGN decision 9): the visibility travels inside `Filters.access`, so
both retrieval legs apply it with the metadata filters, before fusion, rerank and truncation; document
lookups, listings, summaries and recommendations ask `Visibility.sees` or work on the visible subset only. A
document the caller may not see answers exactly as one that does not exist (NotFound, never a 403).

    vis = Visibility.of(["clinicians"])        # public + clinicians
    vis.sees(["clinicians", "billing"])        # True
    Visibility.public().sees(["staff"])        # False
    Visibility.everything().sees(["staff"])    # True

`Principal` is what an API key (service.api_keys) or the CLI's `--as` stands for; `KeyUse` remembers when each
key was last used (persisted in the state database, at most every `flush_s`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rag.types import Filters

ALL_GROUPS = "*"
MAX_GROUP_CHARS = 64
MAX_GROUPS = 32


class MalformedAccess(ValueError):
    """An `access` value that is not a group name or a list of group names."""


def parse_access(value: Any) -> list[str]:
    """A document's `access` metadata as a list of group names ([] = public). A string may list several groups
    separated by commas or semicolons (a CSV cell, a sidecar); a list holds one name per item. Names are kept as
    written (stripped). Anything else (a number, a mapping, a nested list, a blank or over-long name, a `*`) is
    MalformedAccess: a document whose readers cannot be told must not be indexed as public."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[Any] = [p for p in value.replace(";", ",").split(",")]
        if not value.strip():
            raise MalformedAccess("access is blank: give group names, or leave access out for a public document")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise MalformedAccess(f"access must be a group name or a list of group names, not {type(value).__name__}")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise MalformedAccess(f"access must list group names (strings), found {type(item).__name__} {item!r}")
        name = item.strip()
        if not name:
            raise MalformedAccess("access lists a blank group name")
        if len(name) > MAX_GROUP_CHARS or any(ord(ch) < 32 for ch in name):
            raise MalformedAccess(f"access group {name[:MAX_GROUP_CHARS]!r}… is not a group name "
                                  f"(at most {MAX_GROUP_CHARS} printable characters)")
        if name == ALL_GROUPS:
            raise MalformedAccess("access cannot be '*': '*' is a key's group for 'sees everything'")
        if name not in out:
            out.append(name)
    if len(out) > MAX_GROUPS:
        raise MalformedAccess(f"access lists {len(out)} groups; at most {MAX_GROUPS}")
    return out


@dataclass(frozen=True)
class Visibility:
    """The documents one caller may see: the public ones, those labelled with one of `groups`, or all."""

    groups: frozenset[str] = frozenset()
    all: bool = False

    @classmethod
    def of(cls, groups: Iterable[str] | None) -> "Visibility":
        gs = frozenset(g.strip() for g in (groups or ()) if g and g.strip())
        return cls(all=True) if ALL_GROUPS in gs else cls(groups=gs)

    @classmethod
    def public(cls) -> "Visibility":
        return cls()

    @classmethod
    def everything(cls) -> "Visibility":
        return cls(all=True)

    def sees(self, access: Sequence[str] | None) -> bool:
        return self.all or not access or not self.groups.isdisjoint(access)

    def key(self) -> tuple[str, ...]:
        """Hashable and stable: cache keys, `Filters.access`."""
        return (ALL_GROUPS,) if self.all else tuple(sorted(self.groups))

    def describe(self) -> str:
        return "every document" if self.all else ("public documents" + (
            f" and those of {', '.join(sorted(self.groups))}" if self.groups else " only"))


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a key id (never the key), its role and its groups."""

    key_id: str | None
    role: str
    groups: tuple[str, ...] = ()

    @property
    def visibility(self) -> Visibility:
        return Visibility.of(self.groups)


def restrict(filters: Filters | None, visibility: Visibility | None) -> Filters | None:
    """`filters` that also let through only what `visibility` sees (None: no restriction), for both legs."""
    if visibility is None or visibility.all:
        return filters
    return dataclasses.replace(filters or Filters(), access=visibility.key())


def groups_of(visibility: Visibility | None) -> tuple[str, ...] | None:
    """What snapshot lookups take (`Filters.access`): None sees everything."""
    return None if visibility is None or visibility.all else visibility.key()


def key_id(key: str) -> str:
    """What logs, metrics and the admin's key list call a key: a short hash, never the key itself."""
    return "k:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:10]


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


def key_principals(api_keys: dict[str, Any]) -> list[tuple[bytes, Principal]]:
    """(digest of the key, principal) per configured key. A value is a role ("reader" | "admin": an admin sees
    every document, a reader the public ones) or a table {role, groups, id}; `id` names the key in logs instead
    of its hash. Settings validation has already refused a table without a role."""
    out = []
    for key, spec in api_keys.items():
        if isinstance(spec, str):
            role, groups, name = spec, ((ALL_GROUPS,) if spec == "admin" else ()), None
        else:
            role, groups, name = spec.role, tuple(spec.groups), spec.id
        out.append((key_digest(key), Principal(name or key_id(key), role, groups)))
    return out


def query_log_fields(text: str | None, *, log_text: bool = False) -> dict[str, Any]:
    """What a log line may say about a query: its length and a hash (equal queries correlate, their words stay
    out of the logs), or the text itself when `privacy.log_queries` says so."""
    if text is None:
        return {}
    out: dict[str, Any] = {"query_chars": len(text),
                           "query_sha256": hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]}
    if log_text:
        out["query"] = text
    return out


@dataclass
class KeyActivity:
    """One configured key as the admin sees it (GET /v1/admin/keys)."""

    key_id: str
    role: str
    groups: list[str]
    last_used_at: str | None = None  # ISO 8601 UTC
    requests: int = 0


@dataclass
class KeyUse:
    """Last use per key id, counted in memory and written to the state database at most every `flush_s`
    (a write per request would serialize every request on the state database's one writer)."""

    flush_s: float = 30.0
    _pending: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    _last_flush: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, key: str) -> bool:
        """Count one use now; True when a flush is due."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with self._lock:
            _, n = self._pending.get(key, (now, 0))
            self._pending[key] = (now, n + 1)
            return time.monotonic() - self._last_flush >= self.flush_s

    def take(self) -> dict[str, tuple[datetime, int]]:
        """The uses counted since the last flush (and forget them)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
            return pending

    def put_back(self, pending: dict[str, tuple[datetime, int]]) -> None:
        """A failed flush: keep its counts for the next one."""
        with self._lock:
            for key, (at, n) in pending.items():
                later, m = self._pending.get(key, (at, 0))
                self._pending[key] = (max(at, later), n + m)
