"""Engagement events and users: schema, validation, batch ingest and bulk loaders.

An event is a JSON object:

    user_id          required, non-empty string (an integer is accepted and stored as its decimal string)
    doc_id           required, same rules; a doc id no index generation knows is kept (and ignored by the
                     recommender until a generation has that document)
    type             required: view | click | like | share | bookmark | dismiss | rating | dwell
    value            rating: required, a number on the configured scale (`events.rating_scale`, default 1 to 5;
                     e.g. [0.5, 5] for half stars); other types: optional number
    dwell_s          dwell: required, seconds >= 0; other types: optional (adds a dwell bonus)
    timestamp        ISO 8601 ("2025-03-01T10:00:00Z"; no zone = UTC) or Unix seconds; default now. Alias: ts
    idempotency_key  optional string; an event whose key was stored before (or earlier in the same batch)
                     is not stored again and counts as a duplicate

Unknown fields are ignored. `ingest` validates every event on its own: bad ones are reported as
`{"index", "field", "reason"}` (one entry per problem) while the good ones of the same batch are stored, in
one transaction.
"""

from __future__ import annotations

import hashlib

import json
import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa

from rag.config import EventsSettings
from rag.errors import InvalidInput
from rag.state import StateDB

EVENT_TYPES = ("view", "click", "like", "share", "bookmark", "dismiss", "rating", "dwell")
MAX_ID_CHARS = 256
MAX_FUTURE = timedelta(days=1)  # clock skew tolerated for client timestamps
MAX_DWELL_S = 7 * 24 * 3600.0
_EPOCH = datetime(1970, 1, 1)


class Rejection(TypedDict):
    """One problem with one event (or user): its index in the batch (a line number for files), the field and why."""

    index: int
    field: str | None
    reason: str


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def rejected_events(self) -> int:
        return len({r["index"] for r in self.rejected})

    def merge(self, other: "IngestReport", index_offset: int = 0) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected.extend({**r, "index": r["index"] + index_offset} for r in other.rejected)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "rejected_events": self.rejected_events, "rejected": self.rejected}


@dataclass
class UserImportReport:
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected}


class InvalidUser(InvalidInput):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}", field=field_name)
        self.reason = reason


@dataclass(frozen=True)
class RatingScale:
    """The rating scale of `rating` events: values from `low` to `high`, `neutral` = neither like nor dislike
    (the midpoint unless configured). `normalize` maps a rating to the one internal range profiles use:
    -1 at `low`, 0 at the neutral point, +1 at `high`, linear on each side (values outside are clipped)."""

    low: float = 1.0
    high: float = 5.0
    neutral: float | None = None

    @classmethod
    def of(cls, settings: "EventsSettings | RatingScale | tuple | None") -> "RatingScale":
        if settings is None:
            return DEFAULT_SCALE
        if isinstance(settings, RatingScale):
            return settings
        if isinstance(settings, EventsSettings):
            return cls(*settings.rating_scale, settings.rating_neutral)
        return cls(*settings)

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"a rating scale needs min < max, got [{self.low:g}, {self.high:g}]")
        if self.neutral is not None and not self.low < self.neutral < self.high:
            raise ValueError(f"the neutral rating must lie inside [{self.low:g}, {self.high:g}], got {self.neutral:g}")

    @property
    def mid(self) -> float:
        return (self.low + self.high) / 2.0 if self.neutral is None else self.neutral

    def describe(self) -> str:
        return f"from {self.low:g} to {self.high:g}"

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def problem(self, value: float) -> str | None:
        """Why `value` is not a rating on this scale (None when it is one)."""
        return None if self.contains(value) else f"a rating must be {self.describe()}, got {value:g}"

    def normalize(self, value):
        """A rating (or an array of them) -> [-1, 1]."""
        mid = self.mid
        if isinstance(value, (int, float)):  # the per-event path: no numpy overhead
            x = (value - mid) / (self.high - mid) if value >= mid else (value - mid) / (mid - self.low)
            return min(1.0, max(-1.0, float(x)))
        v = np.asarray(value, dtype=np.float64)
        out = np.where(v >= mid, (v - mid) / (self.high - mid), (v - mid) / (mid - self.low))
        out = np.clip(out, -1.0, 1.0)
        return float(out) if out.ndim == 0 else out


DEFAULT_SCALE = RatingScale()


# --- values ------------------------------------------------------------------------------------------------

def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _ident(value: Any) -> tuple[str | None, str | None]:
    """(value, None) or (None, reason)."""
    if type(value) is str:  # the common case, first
        s = value.strip()
        if s and len(s) <= MAX_ID_CHARS:
            return s, None
    if value is None:
        return None, "required"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"expected a string, got {type(value).__name__}"
    s = str(value).strip()
    if not s:
        return None, "must not be empty"
    if len(s) > MAX_ID_CHARS:
        return None, f"longer than {MAX_ID_CHARS} characters"
    return s, None


def _number(value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                return None, f"expected a number, got {value!r}"
        else:
            return None, f"expected a number, got {type(value).__name__}"
    v = float(value)
    if not math.isfinite(v):
        return None, "must be a finite number"
    return v, None


def parse_timestamp(value: Any, now: datetime | None = None) -> tuple[datetime | None, str | None]:
    """ISO 8601 or Unix seconds -> naive UTC datetime."""
    now = now or _utcnow()
    if value is None or value == "":
        return now, None
    if isinstance(value, bool):
        return None, "expected an ISO 8601 string or Unix seconds"
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            return None, "Unix seconds must be a non-negative finite number"
        try:
            ts = _EPOCH + timedelta(seconds=float(value))
        except (OverflowError, OSError, ValueError):
            return None, f"out of range: {value}"
    elif isinstance(value, str):
        raw = value.strip()
        try:
            ts = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
        except ValueError:
            return None, f"not an ISO 8601 timestamp: {value!r}"
        if ts.tzinfo is not None:
            ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
    else:
        return None, f"expected an ISO 8601 string, got {type(value).__name__}"
    if ts > now + MAX_FUTURE:
        return None, f"in the future ({ts.isoformat()}Z)"
    if ts.year < 1970:
        return None, "before 1970"
    return ts, None


def validate_event(ev: Any, now: datetime | None = None, scale: RatingScale | None = None
                   ) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """(normalized row, []) or (None, [(field, reason), ...]). `scale`: the ratings' scale (default 1 to 5)."""
    scale = scale or DEFAULT_SCALE
    if not isinstance(ev, dict):
        return None, [("event", f"expected a JSON object, got {type(ev).__name__}")]
    problems: list[tuple[str, str]] = []
    user_id, why = _ident(ev.get("user_id"))
    if why:
        problems.append(("user_id", why))
    doc_id, why = _ident(ev.get("doc_id"))
    if why:
        problems.append(("doc_id", why))
    etype = ev.get("type")
    if etype is None:
        problems.append(("type", "required"))
        etype = None
    elif not isinstance(etype, str) or etype.strip().lower() not in EVENT_TYPES:
        problems.append(("type", f"unknown event type {etype!r}; expected one of {', '.join(EVENT_TYPES)}"))
        etype = None
    else:
        etype = etype.strip().lower()

    value = None
    if ev.get("value") is not None:
        value, why = _number(ev["value"])
        if why:
            problems.append(("value", why))
    if etype == "rating":
        if ev.get("value") is None:
            problems.append(("value", f"required for a rating (a number {scale.describe()})"))
        elif value is not None and scale.problem(value):
            problems.append(("value", scale.problem(value)))

    dwell = None
    if ev.get("dwell_s") is not None:
        dwell, why = _number(ev["dwell_s"])
        if why:
            problems.append(("dwell_s", why))
        elif dwell < 0 or dwell > MAX_DWELL_S:
            problems.append(("dwell_s", f"must be between 0 and {MAX_DWELL_S:g} seconds, got {dwell:g}"))
            dwell = None
    if etype == "dwell" and ev.get("dwell_s") is None:
        problems.append(("dwell_s", "required for a dwell event (seconds >= 0)"))

    ts_raw = ev.get("timestamp", ev.get("ts"))
    ts, why = parse_timestamp(ts_raw, now)
    if why:
        problems.append(("timestamp" if "timestamp" in ev else "ts", why))

    key = ev.get("idempotency_key")
    if key is not None:
        key, why = _ident(key)
        if why:
            problems.append(("idempotency_key", why))
    if problems:
        return None, problems
    return {"user_id": user_id, "doc_id": doc_id, "type": etype, "value": value, "dwell_s": dwell, "ts": ts,
            "idempotency_key": key}, []


# --- ingest ------------------------------------------------------------------------------------------------

_EVENT_SCHEMA = pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("doc_id", pa.string()),
                           ("type", pa.string()), ("value", pa.float64()), ("dwell_s", pa.float64()),
                           ("ts", pa.timestamp("us")), ("idempotency_key", pa.string()),
                           ("received_at", pa.timestamp("us"))])


def ingest(state: StateDB, batch: list[Any], *, now: datetime | None = None,
           rating_scale: "EventsSettings | RatingScale | None" = None) -> IngestReport:
    """Validate and store a batch of events; each bad event is rejected on its own, the rest are stored.
    `rating_scale`: the settings' `events` section (or a RatingScale); default 1 to 5."""
    now = now or _utcnow()
    scale = RatingScale.of(rating_scale)
    report = IngestReport()
    if not isinstance(batch, list):
        report.rejected.append({"index": 0, "field": "events", "reason": "expected a list of events"})
        return report
    good: list[dict[str, Any]] = []
    seen_keys: set[str] = set()
    for i, ev in enumerate(batch):
        row, problems = validate_event(ev, now, scale)
        if problems:
            report.rejected.extend({"index": i, "field": f, "reason": r} for f, r in problems)
            continue
        key = row["idempotency_key"]
        if key is not None:
            if key in seen_keys:
                report.duplicates += 1
                continue
            seen_keys.add(key)
        good.append(row)
    if not good:
        return report
    batch_id = uuid.uuid4().hex  # event ids: unique per batch, numbered within it
    table = pa.table({
        "event_id": [f"{batch_id}-{i}" for i in range(len(good))],
        "user_id": [r["user_id"] for r in good],
        "doc_id": [r["doc_id"] for r in good],
        "type": [r["type"] for r in good],
        "value": pa.array([r["value"] for r in good], pa.float64()),
        "dwell_s": pa.array([r["dwell_s"] for r in good], pa.float64()),
        "ts": pa.array([r["ts"] for r in good], pa.timestamp("us")),
        "idempotency_key": pa.array([r["idempotency_key"] for r in good], pa.string()),
        "received_at": pa.array([now] * len(good), pa.timestamp("us")),
    }, schema=_EVENT_SCHEMA)
    with state.writer() as cur:
        cur.register("events_in", table)
        try:
            if seen_keys:
                existing = {r[0] for r in cur.execute(
                    "SELECT e.idempotency_key FROM events e WHERE e.idempotency_key IN "
                    "(SELECT idempotency_key FROM events_in WHERE idempotency_key IS NOT NULL)").fetchall()}
            else:
                existing = set()
            already = sum(1 for r in good if r["idempotency_key"] in existing) if existing else 0
            if already:
                cur.execute("INSERT INTO events SELECT * FROM events_in WHERE idempotency_key IS NULL OR "
                            "idempotency_key NOT IN (SELECT unnest(?::VARCHAR[]))", [sorted(existing)])
            else:
                cur.execute("INSERT INTO events SELECT * FROM events_in")
            report.duplicates += already
            report.accepted = len(good) - already
        finally:
            cur.unregister("events_in")
    state.touch(r["user_id"] for r in good)
    return report


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed value, error) for every non-blank line."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line), None
            except json.JSONDecodeError as e:
                yield line_no, None, f"invalid JSON ({e.msg})"


def load_events_jsonl(state: StateDB, path: str | Path, *, batch_size: int = 20_000,
                      rating_scale: "EventsSettings | RatingScale | None" = None) -> IngestReport:
    """Bulk-load an events JSONL file; rejected entries carry the file's line number as `index`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"events file not found: {path}")
    total = IngestReport()
    buf: list[Any] = []
    lines: list[int] = []

    def flush() -> None:
        rep = ingest(state, buf, rating_scale=rating_scale)
        total.accepted += rep.accepted
        total.duplicates += rep.duplicates
        total.rejected.extend({**r, "index": lines[r["index"]]} for r in rep.rejected)
        buf.clear()
        lines.clear()

    for line_no, obj, err in _jsonl_rows(path):
        if err:
            total.rejected.append({"index": line_no, "field": "line", "reason": err})
            continue
        if isinstance(obj, dict) and not obj.get("idempotency_key"):
            # A file is re-imported whole (every `scripts/start` does): an event line seen before is the
            # same event, so its content is its key.
            canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False)
            obj = {**obj, "idempotency_key": "line:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]}
        buf.append(obj)
        lines.append(line_no)
        if len(buf) >= batch_size:
            flush()
    if buf:
        flush()
    return total


# --- users -------------------------------------------------------------------------------------------------

def _str_list(value: Any, field_name: str, lower: bool = False) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        items = [p for p in value.replace(";", ",").split(",")]
    elif isinstance(value, (list, tuple)):
        items = []
        for x in value:
            if not isinstance(x, str):
                raise InvalidUser(field_name, f"expected a list of strings, found {type(x).__name__}")
            items.append(x)
    else:
        raise InvalidUser(field_name, f"expected a list of strings or a comma-separated string, got "
                                      f"{type(value).__name__}")
    out: list[str] = []
    for x in items:
        x = x.strip()
        if lower:
            x = x.lower()
        if x and x not in out:
            if len(x) > MAX_ID_CHARS:
                raise InvalidUser(field_name, f"an entry is longer than {MAX_ID_CHARS} characters")
            out.append(x)
    return out


def validate_user(user: Any) -> dict[str, Any]:
    if not isinstance(user, dict):
        raise InvalidUser("user", f"expected a JSON object, got {type(user).__name__}")
    user_id, why = _ident(user.get("user_id", user.get("id")))
    if why:
        raise InvalidUser("user_id", why)
    name = user.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidUser("name", f"expected a string, got {type(name).__name__}")
    language = user.get("language")
    if language is not None and (not isinstance(language, str) or not language.strip()):
        raise InvalidUser("language", "expected a language code such as 'en' or 'zh'")
    return {"user_id": user_id, "name": name.strip() if name else None,
            "interests": _str_list(user.get("interests"), "interests"),
            "domains": _str_list(user.get("domains"), "domains", lower=True),
            "language": language.strip().lower() if language else None}


def upsert_user(state: StateDB, user_id: str, *, name: str | None = None, interests: Any = None,
                domains: Any = None, language: str | None = None) -> dict[str, Any]:
    """Create or replace a user's profile fields; returns the stored row. Raises InvalidUser."""
    row = validate_user({"user_id": user_id, "name": name, "interests": interests, "domains": domains,
                         "language": language})
    _upsert_rows(state, [row])
    return state.get_user(row["user_id"])  # type: ignore[return-value]


def _upsert_rows(state: StateDB, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    now = _utcnow()
    # Last one wins when a batch names a user twice.
    by_id = {r["user_id"]: r for r in rows}
    table = pa.table({
        "user_id": list(by_id),
        "name": pa.array([r["name"] for r in by_id.values()], pa.string()),
        "interests": pa.array([r["interests"] for r in by_id.values()], pa.list_(pa.string())),
        "domains": pa.array([r["domains"] for r in by_id.values()], pa.list_(pa.string())),
        "language": pa.array([r["language"] for r in by_id.values()], pa.string()),
        "ts": pa.array([now] * len(by_id), pa.timestamp("us")),
    })
    with state.writer() as cur:
        cur.register("users_in", table)
        try:
            cur.execute("""INSERT INTO users (user_id, name, interests, domains, language, created_at, updated_at)
                           SELECT user_id, name, interests, domains, language, ts, ts FROM users_in
                           ON CONFLICT (user_id) DO UPDATE SET name = excluded.name,
                               interests = excluded.interests, domains = excluded.domains,
                               language = excluded.language, updated_at = excluded.updated_at""")
        finally:
            cur.unregister("users_in")
    state.touch(by_id)


def upsert_users(state: StateDB, users: Iterable[Any]) -> UserImportReport:
    return _import_users(state, ((i, u, None) for i, u in enumerate(users)))


def load_users_jsonl(state: StateDB, path: str | Path) -> UserImportReport:
    """Bulk-load a users JSONL file (user_id or id, name, interests, domains, language)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"users file not found: {path}")
    return _import_users(state, _jsonl_rows(path))


def _import_users(state: StateDB, rows: Iterable[tuple[int, Any, str | None]]) -> UserImportReport:
    """Validate each (index, user, parse error) on its own, store the good ones in one upsert."""
    report = UserImportReport()
    good: list[dict[str, Any]] = []
    for index, obj, err in rows:
        if err:
            report.rejected.append({"index": index, "field": "line", "reason": err})
            continue
        try:
            good.append(validate_user(obj))
        except InvalidUser as e:
            report.rejected.append({"index": index, "field": e.field, "reason": e.reason})
    _upsert_rows(state, good)
    report.accepted = len(good)
    return report
