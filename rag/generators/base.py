"""The generator interface every backend implements, and the pool that hands backends out.

A backend turns chat messages into text. Everything about grounding (prompts, citations, support checks,
fallbacks) lives above this layer in `rag.answering` / `rag.summarize`, so a backend stays a thin adapter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

from rag.config import GeneratorSettings

EXTRACTIVE = "extractive"
AUTO = "auto"  # transformers on a GPU, extractive on a CPU
BACKENDS = (AUTO, "transformers", "openai", EXTRACTIVE)


def resolve_auto() -> str:
    import torch

    return "transformers" if torch.cuda.is_available() else EXTRACTIVE


class GeneratorError(RuntimeError):
    """A backend could not produce text (model failed to load, server error, timeout)."""


class GeneratorBusy(GeneratorError):
    """Every generation slot stayed taken for the whole queue timeout; the service answers 503."""


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> str: ...

    def stream(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]: ...

    def generate_batch(self, batch: list[list[dict]], *, max_new_tokens: int) -> list[str]: ...


def count_tokens(generator: Generator | None, text: str) -> int:
    """Tokens of `text` for this generator: its own tokenizer where it has one, else ~4 characters a token."""
    counter = getattr(generator, "count_tokens", None)
    if counter is not None:
        return int(counter(text))
    return max(1, len(text) // 4)


def _build(backend: str, settings: GeneratorSettings, models_dir: Path) -> Generator:
    if backend == "transformers":
        from rag.generators.transformers_backend import TransformersGenerator

        return TransformersGenerator(settings, models_dir)
    if backend == "openai":
        from rag.generators.openai_backend import OpenAIGenerator

        return OpenAIGenerator(settings)
    raise ValueError(f"unknown generator backend {backend!r}; expected one of {', '.join(BACKENDS)}")


class GeneratorPool:
    """Backends by name, built on first use and kept; a semaphore bounds concurrent generations.

    `get(None)` means the configured default backend. `get("extractive")` is None: the extractive answerer
    needs no model, and callers branch on that.
    """

    def __init__(self, settings: GeneratorSettings, models_dir: Path | str, *, queue_timeout_s: float = 10.0,
                 factory: Callable[[str, GeneratorSettings, Path], Generator] = _build):
        self.settings = settings
        self.models_dir = Path(models_dir)
        self.queue_timeout_s = queue_timeout_s
        self._factory = factory
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._slots = threading.BoundedSemaphore(max(1, settings.max_concurrent))

    def resolve_name(self, backend: str | None) -> str:
        """The backend that will answer: `backend`, else the configured one; "auto" by the hardware."""
        name = (backend or self.settings.backend).strip().lower()
        if name == AUTO:
            return resolve_auto()
        with self._lock:
            registered = name in self._generators
        if name not in BACKENDS and not registered:
            raise ValueError(f"unknown generator backend {name!r}; expected one of {', '.join(BACKENDS)}")
        return name

    def get(self, backend: str | None = None) -> Generator | None:
        name = self.resolve_name(backend)
        if name == EXTRACTIVE:
            return None
        with self._lock:
            if name in self._generators:
                return self._generators[name]
            load_lock = self._load_locks.setdefault(name, threading.Lock())
        # Loading a model takes seconds: hold only this backend's lock so other backends stay usable.
        with load_lock:
            with self._lock:
                if name in self._generators:
                    return self._generators[name]
            try:
                generator = self._factory(name, self.settings, self.models_dir)
            except GeneratorError:
                raise
            except (RuntimeError, OSError, ValueError, ImportError) as e:
                # Not cached: the next request retries (the model file may be fixed, the server may come up).
                raise GeneratorError(f"cannot load the {name} backend: {e}") from e
            with self._lock:
                self._generators[name] = generator
            return generator

    def register(self, name: str, generator: Generator) -> None:
        """Install a ready generator under `name` (a custom backend, or a stub in tests)."""
        with self._lock:
            self._generators[name] = generator

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._generators)

    @contextmanager
    def slot(self, timeout_s: float | None = None) -> Iterator[None]:
        """Hold one of `max_concurrent` generation slots; GeneratorBusy when none frees up in time."""
        wait = self.queue_timeout_s if timeout_s is None else timeout_s
        if not self._slots.acquire(timeout=wait):
            raise GeneratorBusy(f"all {self.settings.max_concurrent} generation slots are busy "
                                f"(waited {wait:.1f} s); retry later")
        try:
            yield
        finally:
            self._slots.release()
