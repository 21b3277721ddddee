"""The build contract: what the application asks of a builder, and what a build reports.

`rag` never builds an index itself (that is batch work, in `indexer/`), but rebuild jobs, `rag index build` and
the documents store need one. So the application takes a `Builder` (dependency inversion): the service and the
CLI pass `indexer.build.Indexer()`, tests may pass anything with the same two methods. The lock that keeps one
build per data home is here too, because a rebuild job must see a build that another process holds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from rag.config import Settings
from rag.errors import Conflict, InvalidInput
from rag.types import Document, SkippedSource

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
LOCK_FILE = "build.lock"


class BuildError(InvalidInput):
    """The sources give nothing to build from (none named, no documents in them)."""


class BuildLocked(Conflict):
    """Another build holds the data home's build lock."""

    code = "build_locked"


@dataclass
class BuildReport:
    generation_id: str
    published: bool
    documents: int
    chunks: int
    vectors_reused: int
    vectors_embedded: int
    skipped: list[SkippedSource]
    files_seen: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    index_type: str = "flat"
    embedder: str = ""
    unchanged: bool = False  # nothing changed since the published generation: no new generation was written
    engine: str = "local"  # where the chunks were embedded: this process, or "ray" (Ray Data)
    redactions: dict[str, int] = field(default_factory=dict)  # PII placeholders written, by kind (indexer.redaction)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        out = msgspec.to_builtins(self)
        out.update(seconds=round(self.seconds, 3), chunks_per_s=round(self.chunks_per_s, 1),
                   stage_seconds={k: round(v, 3) for k, v in self.stage_seconds.items()})
        return out


class Builder(Protocol):
    def build(self, settings: Settings, sources: Sequence[str | Path], *, embedder: str | None = None,
              publish: bool = True, force: bool = False, show_progress: bool = True,
              on_progress: ProgressCallback | None = None) -> BuildReport:
        """Build (and publish) a snapshot from `sources`; BuildError, BuildLocked."""

    def load_documents(self, settings: Settings, paths: Sequence[str | Path]) -> list[Document]:
        """The documents of these files, parsed (and redacted) exactly as a build under `settings` would, so their
        content hashes compare with the snapshot's."""


class BuildLock:
    """One build per data home at a time. flock is released by the kernel when a killed build dies."""

    def __init__(self, home: Path):
        self.path = Path(home) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> "BuildLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            os.close(self.fd)
            self.fd = None
            raise BuildLocked(f"another index build is running on {self.path.parent} (pid {holder or '?'})")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def is_held(home: Path) -> bool:
        path = Path(home) / LOCK_FILE
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
