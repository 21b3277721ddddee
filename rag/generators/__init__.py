"""Generator backends behind one interface: local transformers, an OpenAI-compatible server, or none
("extractive", handled by rag.extractive); the pool that hands them out, and the one limit and clock on
generation (rag.generators.slots)."""

from rag.generators.base import (
    AUTO,
    BACKENDS,
    EXTRACTIVE,
    Generator,
    GeneratorBusy,
    GeneratorError,
    GeneratorPool,
    GeneratorSlots,
    GeneratorTimeout,
    concurrency_limit,
    count_tokens,
    fallback_reason,
)

__all__ = ["AUTO", "BACKENDS", "EXTRACTIVE", "Generator", "GeneratorBusy", "GeneratorError", "GeneratorPool",
           "GeneratorSlots", "GeneratorTimeout", "concurrency_limit", "count_tokens", "fallback_reason"]
