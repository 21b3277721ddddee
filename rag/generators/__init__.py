"""Generator backends behind one interface: local transformers, an OpenAI-compatible server, or none
("extractive", handled by rag.extractive)."""

from rag.generators.base import (
    BACKENDS,
    EXTRACTIVE,
    Generator,
    GeneratorBusy,
    GeneratorError,
    GeneratorPool,
    count_tokens,
)

__all__ = ["BACKENDS", "EXTRACTIVE", "Generator", "GeneratorBusy", "GeneratorError", "GeneratorPool",
           "count_tokens"]
