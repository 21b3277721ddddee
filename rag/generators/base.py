"""The generator interface every backend implements, and the pool that hands backends out.

A backend turns chat messages into text. Everything about grounding (prompts, citations, support checks,
fallbacks) lives above this layer in `rag.answering` / `rag.summarize` / `rag.recommend.blurbs`, so a backend
stays a thin adapter. The pool carries the process's one limit and clock on generation (`pool.slots`,
rag.generators.slots); `fallback_reason` is the one wording of why an extractive result replaced a generated one.
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

from rag.config import Backend, GeneratorSettings
from rag.errors import InvalidInput
from rag.generators.slots import GeneratorBusy, GeneratorError, GeneratorSlots, GeneratorTimeout
from rag.hardware import cuda_available

EXTRACTIVE = "extractive"
AUTO = "auto"  # transformers on a GPU, extractive on a CPU
BACKENDS: tuple[str, ...] = typing.get_args(Backend)

__all__ = ["AUTO", "BACKENDS", "EXTRACTIVE", "Generator", "GeneratorBusy", "GeneratorError", "GeneratorPool",
           "GeneratorSlots", "GeneratorTimeout", "concurrency_limit", "count_tokens", "fallback_reason",
           "resolve_auto"]


def resolve_auto() -> str:
    return "transformers" if cuda_available() else EXTRACTIVE


def concurrency_limit(settings: GeneratorSettings, cuda: bool | None = None) -> int:
    """`max_concurrent`, or when 0 its value by hardware: on CUDA the local backend's batch width, so the slots
    let through as many generations as it decodes together; 2 elsewhere (a CPU decodes one at a time)."""
    if settings.max_concurrent > 0:
        return settings.max_concurrent
    if cuda is None:
        cuda = cuda_available()
    if not cuda:
        return 2
    from rag.generators.transformers_backend import default_max_batch

    return settings.max_batch or default_max_batch("cuda")


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> str: ...

    def stream(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]: ...

    def generate_batch(self, batch: list[list[dict]], *, max_new_tokens: int) -> list[str]: ...


def fallback_reason(e: GeneratorError) -> str:
    """Why the extractive result replaced the generator's: for answers, summaries and blurbs alike."""
    return str(e) if isinstance(e, GeneratorTimeout) else f"generator error: {e}"


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
    """Backends by name, built on first use and kept; `slots` bound and time every generation.

    `get(None)` means the configured default backend. `get("extractive")` is None: the extractive answerer
    needs no model, and callers branch on that.
    """

    def __init__(self, settings: GeneratorSettings, models_dir: Path | str, *, queue_timeout_s: float = 10.0,
                 factory: Callable[[str, GeneratorSettings, Path], Generator] = _build):
        self.settings = settings
        self.models_dir = Path(models_dir)
        self._factory = factory
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self.slots = GeneratorSlots(concurrency_limit(settings), queue_timeout_s, settings.timeout_s)

    def resolve_name(self, backend: str | None) -> str:
        """The backend that will answer: `backend`, else the configured one; "auto" by the hardware."""
        name = (backend or self.settings.backend).strip().lower()
        if name == AUTO:
            return resolve_auto()
        with self._lock:
            registered = name in self._generators
        if name not in BACKENDS and not registered:
            raise InvalidInput(f"unknown generator backend {name!r}; expected one of {', '.join(BACKENDS)}",
                               field="backend")
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
    def slot(self) -> Iterator[None]:
        """Hold one of the generator slots in this thread; GeneratorBusy when none frees up in time."""
        with self.slots.hold():
            yield

    def uses_model(self, backend: str | None) -> bool:
        """Whether `backend` (None: the configured one) generates with a model, and so needs a slot."""
        return self.resolve_name(backend) != EXTRACTIVE
