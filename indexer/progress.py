"""Stage progress for long builds: a tqdm bar per stage on a terminal, and/or a callback (the API's job table)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from tqdm import tqdm

from rag.builds import ProgressCallback  # (stage, done, total)


class Progress:
    def __init__(self, show: bool = True, callback: ProgressCallback | None = None):
        self.show = show
        self.callback = callback
        self.stage_seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, total: int, unit: str = "it"):
        bar = tqdm(total=total, desc=f"{name:>7}", unit=unit, file=sys.stderr, disable=not self.show,
                   dynamic_ncols=True, leave=True)
        start = time.perf_counter()
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            bar.update(n)
            if self.callback:
                self.callback(name, done, total)

        if self.callback:
            self.callback(name, 0, total)
        try:
            yield advance
        finally:
            bar.close()
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start
