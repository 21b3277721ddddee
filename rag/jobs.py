"""Rebuild jobs: an index rebuild runs in a thread of the process that owns the state DB, one at a time.

Every job is a row of the ``jobs`` table in the state DB (``settings.state_db``), so a job is read back from the
table: state (queued -> running -> succeeded | failed), the current build stage with its done/total counts, the
parameters, the build report and the error. A job left ``running`` by a process that died (crash, kill,
restart) is marked failed when the service starts again (`recover`). A second rebuild while one runs is a
`Conflict` (code ``job_running``, the running job in its details); so is one while a build in another process
(`rag index build`) holds the build lock, and, with the state on PostgreSQL, one while another replica runs a
rebuild (`StateDB.try_exclusive`: an advisory lock held by the running job, freed when its process dies). The
build itself is the injected builder's (`rag.builds.Builder`).

Sources of a rebuild: the documents store (``settings.documents_dir``, first, so a document replaced through
the API overrides a same-id document of a read-only source) plus the published generation's manifest
``sources`` (or ``settings.source_dirs`` before the first build). Documents added through the API are thus
indexed, and deleted ones disappear.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from rag import snapshot_files
from rag.builds import Builder, BuildLock
from rag.config import Settings
from rag.errors import Conflict, InvalidInput
from rag.state import ExclusiveHold, StateDB

log = logging.getLogger(__name__)

JOBS_DDL = """CREATE TABLE IF NOT EXISTS jobs (
    id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    state VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP,
    stage VARCHAR,
    done BIGINT DEFAULT 0,
    total BIGINT DEFAULT 0,
    params VARCHAR,
    result VARCHAR,
    error VARCHAR,
    pid INTEGER,
    host VARCHAR)"""

ACTIVE = ("queued", "running")
REBUILD_LOCK = "rebuild"  # StateDB.try_exclusive name: one rebuild at a time across processes
_COLUMNS = ("id", "kind", "state", "created_at", "started_at", "finished_at", "stage", "done", "total", "params",
            "result", "error")
# Job ids whose thread is alive in this process: startup recovery never fails a job another app of the same
# process (tests run several) is still running.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


@dataclass
class Job:
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed"]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _iso(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.replace(tzinfo=timezone.utc).isoformat(timespec="seconds")
    return str(v)


def _published_sources(settings: Settings) -> list[str] | None:
    snapshot_id = snapshot_files.read_pointer(settings.home_path)
    if not snapshot_id:
        return None
    return list(snapshot_files.read_manifest(snapshot_files.snapshot_dir(settings.home_path, snapshot_id)).sources)


def allowed_sources(settings: Settings) -> list[str]:
    """What a rebuild request may name: the configured source folders, the published generation's sources and
    the documents store. Never an arbitrary server path: whatever is indexed becomes readable through search."""
    out = [str(settings.documents_dir.resolve())]
    try:
        published = _published_sources(settings) or []
    except (OSError, ValueError):
        published = []
    for s in [*settings.source_dirs, *published]:
        try:
            r = str(Path(s).expanduser().resolve())
        except (OSError, ValueError):
            continue
        if r not in out:
            out.append(r)
    return out


def allowed_embedders(settings: Settings) -> list[str]:
    """Named defaults, the configured one and the published generation's: never an arbitrary model folder (a
    checkpoint from an unknown path could run code when loaded)."""
    from rag.models.embedders import NAMED

    out = list(NAMED)
    for spec in (settings.embedder, _published_embedder(settings)):
        if spec and spec not in out:
            out.append(spec)
    return out


def _published_embedder(settings: Settings) -> str | None:
    snapshot_id = snapshot_files.read_pointer(settings.home_path)
    if not snapshot_id:
        return None
    try:
        return snapshot_files.read_manifest(snapshot_files.snapshot_dir(settings.home_path, snapshot_id)).embedder.spec
    except (OSError, ValueError):
        return None


def rebuild_sources(settings: Settings, requested: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(sources, warnings) for a rebuild; InvalidInput for a requested source that is not an allowed one."""
    docs_dir = settings.documents_dir.resolve()
    warnings: list[str] = []
    if requested:
        allowed = allowed_sources(settings)
        base = []
        for i, s in enumerate(requested):
            try:
                r = str(Path(s).expanduser().resolve())
            except (OSError, ValueError):  # a NUL byte, a name too long for the file system
                r = None
            if r not in allowed:
                raise InvalidInput(f"{s[:200]!r} is not one of the sources this service indexes: "
                                   f"{', '.join(allowed)}", field=f"sources[{i}]")
            base.append(r)
    else:
        try:
            published = _published_sources(settings)
        except (OSError, ValueError) as e:
            warnings.append(f"cannot read the published manifest ({e}); using settings.source_dirs")
            published = None
        base = list(settings.source_dirs) if published is None else published
    out: list[str] = []
    if docs_dir.is_dir() and any(docs_dir.rglob("*.md")):
        out.append(str(docs_dir))
    for s in base:
        p = Path(s).expanduser()
        if not p.exists():
            warnings.append(f"source {s} no longer exists; left out")
            continue
        r = str(p.resolve())
        if r != str(docs_dir) and r not in out:
            out.append(r)
    if not out:
        raise Conflict("nothing to index: the sources hold no documents (no published generation to take sources "
                       "from, no settings.source_dirs, an empty documents store)", code="nothing_to_index",
                       field="sources")
    return out, warnings


def check_embedder(settings: Settings, spec: str) -> None:
    allowed = allowed_embedders(settings)
    if spec not in allowed:
        raise InvalidInput(f"embedder {spec[:200]!r} is not one of {', '.join(allowed)} (configure others with "
                           "settings.embedder)", field="embedder")


class RebuildJobs:
    """`builder` builds (None: jobs are only listed and recovered); `on_published` runs after a job published a
    snapshot (the application loads it at once)."""

    def __init__(self, settings: Settings, state: StateDB, builder: Builder | None,
                 on_published: Callable[[], Any] | None = None):
        self.settings = settings
        self.state = state
        self.builder = builder
        self.on_published = on_published
        self.finished: Counter[tuple[str, str]] = Counter()  # (kind, state) -> jobs this process finished
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running_id: str | None = None
        self._progress_at = 0.0
        self.state.ensure_schema(JOBS_DDL)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Mark jobs that a dead process left queued/running as failed. Returns their ids."""
        with _LIVE_LOCK:
            live = list(_LIVE)
        hold = self.state.try_exclusive(REBUILD_LOCK)
        if hold is None:  # a process sharing this state (a replica) runs a rebuild now: its jobs are alive
            return []
        try:
            dead = self._fail_dead(live)
        finally:
            hold.release()
        for job_id in dead:
            log.warning("job %s was left running by a dead process; marked failed", job_id)
        return dead

    def _fail_dead(self, live: list[str]) -> list[str]:
        with self.state.writer() as cur:
            rows = cur.execute("SELECT id, pid FROM jobs WHERE state IN ('queued', 'running')").fetchall()
            dead = [r[0] for r in rows if r[0] not in live]
            for job_id in dead:
                cur.execute("UPDATE jobs SET state = 'failed', finished_at = ?, updated_at = ?, error = ? "
                            "WHERE id = ?", [_now(), _now(),
                                             "interrupted: the service process running it stopped before it "
                                             "finished; start a new rebuild", job_id])
        return dead

    def wait(self, timeout: float | None = None) -> bool:
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()

    # -- queries --------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        cur = self.state.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", [job_id])
        rec = cur.fetchone()
        return self._row(rec) if rec else None

    def list(self, limit: int = 20) -> list[Job]:
        cur = self.state.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY created_at DESC LIMIT ?",
                                 [limit])
        return [self._row(r) for r in cur.fetchall()]

    def _active(self) -> Job | None:
        """The newest queued or running job in the jobs table (whichever process runs it)."""
        cur = self.state.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE state IN ('queued', 'running') "
                                 "ORDER BY created_at DESC LIMIT 1")
        rec = cur.fetchone()
        return self._row(rec) if rec else None

    def running(self) -> Job | None:
        with self._lock:
            job_id = self._running_id if self._thread is not None and self._thread.is_alive() else None
        return self.get(job_id) if job_id else None

    @staticmethod
    def _row(rec) -> Job:
        d = dict(zip(_COLUMNS, rec))
        for k in ("created_at", "started_at", "finished_at"):
            d[k] = _iso(d[k])
        d["params"] = json.loads(d["params"]) if d["params"] else {}
        d["result"] = json.loads(d["result"]) if d["result"] else None
        d["done"] = int(d["done"] or 0)
        d["total"] = int(d["total"] or 0)
        return Job(**d)

    # -- rebuild --------------------------------------------------------------------------------------------
    def start_rebuild(self, sources: list[str] | None = None, embedder: str | None = None,
                      force: bool = False) -> Job:
        if embedder is not None:
            check_embedder(self.settings, embedder)
        resolved, warnings = rebuild_sources(self.settings, sources)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                running = self.get(self._running_id)
                raise Conflict("an index rebuild is already running", code="job_running",
                               details={"job": running} if running else None)
            # One rebuild among every process sharing the state (replicas on PostgreSQL: an advisory lock),
            # held by the job's thread until it finishes. Asked first: a replica's running job is named.
            hold = self.state.try_exclusive(REBUILD_LOCK)
            if hold is None:
                running = self._active()
                raise Conflict("an index rebuild is already running in another service process", code="job_running",
                               details={"job": running} if running else None)
            if BuildLock.is_held(self.settings.home_path):
                hold.release()
                raise Conflict("another index build (e.g. `rag index build` in another process) holds the "
                               "build lock of this data home; retry when it finishes", code="job_running")
            job_id = "job-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            params = {"sources": resolved, "embedder": embedder or self.settings.embedder, "force": force}
            if warnings:
                params["warnings"] = warnings
            now = _now()
            try:
                with self.state.writer() as cur:
                    cur.execute("INSERT INTO jobs (id, kind, state, created_at, updated_at, stage, done, total, "
                                "params, pid, host) VALUES (?, 'rebuild', 'queued', ?, ?, NULL, 0, 0, ?, ?, ?)",
                                [job_id, now, now, json.dumps(params), os.getpid(), socket.gethostname()])
                with _LIVE_LOCK:
                    _LIVE.add(job_id)
                self._running_id = job_id
                self._thread = threading.Thread(target=self._run_rebuild,
                                                args=(job_id, resolved, embedder, force, hold),
                                                name=f"rebuild-{job_id}", daemon=True)
                self._thread.start()
            except BaseException:
                hold.release()
                raise
        log.info("rebuild job %s started", job_id, extra={"job_id": job_id, "sources": resolved})
        return self.get(job_id)

    def _update(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = _now()
        cols = ", ".join(f"{k} = ?" for k in fields)
        try:
            with self.state.writer() as cur:
                cur.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*fields.values(), job_id])
        except Exception:  # noqa: BLE001 - progress bookkeeping must not kill the build
            log.exception("could not update job %s", job_id)

    def _run_rebuild(self, job_id: str, sources: list[str], embedder: str | None, force: bool = False,
                     hold: ExclusiveHold | None = None) -> None:
        state = "failed"
        last = {"stage": None}

        def on_progress(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            # Persist stage changes at once, counts at most every half second (DuckDB writes are not free).
            if stage != last["stage"] or done >= total or now - self._progress_at > 0.5:
                last["stage"] = stage
                self._progress_at = now
                self._update(job_id, stage=stage, done=int(done), total=int(total))

        try:
            self._update(job_id, state="running", started_at=_now())
            report = self.builder.build(self.settings, sources, embedder=embedder, publish=True, force=force,
                                        show_progress=False, on_progress=on_progress)
            result = report.as_dict()
            try:  # serve the new snapshot from the next request on, not one poll interval later
                if self.on_published is not None:
                    self.on_published()
            except Exception as e:  # noqa: BLE001
                result["warning"] = f"published, but this process could not load it yet: {e}"
            self._update(job_id, state="succeeded", finished_at=_now(), stage="done",
                         result=json.dumps(result, default=str))
            state = "succeeded"
            log.info("rebuild job %s published generation %s", job_id, report.generation_id,
                     extra={"job_id": job_id, "generation_id": report.generation_id})
        except BaseException as e:  # noqa: BLE001 - a job records every failure
            msg = f"{type(e).__name__}: {e}" if not str(e).startswith(type(e).__name__) else str(e)
            self._update(job_id, state="failed", finished_at=_now(), error=msg[:4000])
            log.error("rebuild job %s failed: %s", job_id, msg, extra={"job_id": job_id})
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(job_id)
            if hold is not None:
                try:
                    hold.release()
                except Exception:  # noqa: BLE001 - a lost connection released it already
                    log.exception("releasing the rebuild lock of job %s", job_id)
            self.finished["rebuild", state] += 1
