"""Writes that survive a crash: a file is written to a temp name, flushed, renamed into place and its folder
synced, so a reader sees the old content or the new, never a part (the published pointer, the documents store,
converted models)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (a folder: the names in it, e.g. after a rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(target: Path, data: bytes, *, prefix: str = ".tmp-", suffix: str = "") -> None:
    """Replace `target` by `data` in one step. The temp file starts with a dot: a build that runs meanwhile
    skips it (loaders ignore hidden files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
