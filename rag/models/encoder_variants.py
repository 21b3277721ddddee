"""CPU encoder variants of a sentence-transformers folder: ONNX Runtime (fp32, int8) and OpenVINO (int8).

Each variant is exported once, by this module and without any network, into the models cache:

    <models_dir>/<source>-<variant>-<key>/   model.onnx (or model.xml + model.bin), export.json

`key` hashes the source weights' identity (for the named defaults it carries their pinned sha256) together
with the export settings below and EXPORT_VERSION, so the folder name, and with it the embedder identity a
generation records, changes whenever what the vectors depend on changes. The export is deterministic: the same
source and settings give byte-identical files (export.json records their sha256 to check it).

The graph holds the transformer, the pooling and the L2 normalization, so a variant returns final vectors and
needs no PyTorch at query time. Texts are tokenized with the folder's own tokenizer, truncated at the folder's
max_seq_length, in length-sorted batches, as sentence-transformers does.

Why not sentence-transformers' own ``backend="onnx"``/``"openvino"``: both go through optimum, whose releases
that know ONNX Runtime pin transformers < 4.58 (we run 5.x) and whose OpenVINO release pulls another torch
build. The export here uses torch's own ONNX exporter, ONNX Runtime's dynamic quantizer and NNCF's data-free
weight compression, which need nothing beyond the packages in the ``quantized`` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rag.durable import fsync_path
from rag.models import tokenization
from rag.models.integrity import ModelNotFoundError, sha256_file

log = logging.getLogger(__name__)

TORCH = "torch"
# Bump whenever the export code's output changes for the same settings: it is part of every variant's key.
EXPORT_VERSION = 1
_OPSET = 17

# What each variant is made with. Part of the key: change a value and the variant lands in a new folder.
EXPORTS: dict[str, dict[str, Any]] = {
    "onnx": {"runtime": "onnxruntime", "opset": _OPSET},
    # Dynamic (data-free) int8: weights of every MatMul quantized per output channel, activations per call.
    # The 250k-row word embedding stays fp32: a lookup, not a matmul, and int8 there costs quality for no speed.
    "onnx-int8": {"runtime": "onnxruntime", "opset": _OPSET,
                  "quantize": {"method": "onnxruntime.quantize_dynamic", "weight_type": "QInt8",
                               "per_channel": True, "reduce_range": False, "op_types": ["MatMul"]}},
    # Data-free int8 weights (per channel, asymmetric) on the OpenVINO CPU plugin. Static int8 (NNCF post-training
    # quantization of activations too) needs calibration text that no package here ships; a one-off probe ran
    # e5-small's passages ~1.4x faster than these weights with it, which makes it the next variant to add.
    "openvino-int8": {"runtime": "openvino", "opset": _OPSET,
                      "quantize": {"method": "nncf.compress_weights", "mode": "INT8_ASYM"}},
}
BACKENDS = (TORCH, *EXPORTS)


class VariantUnavailable(ModelNotFoundError):
    """The variant cannot be made or run here (a runtime package is missing, or the folder is unsupported)."""


def variant_key(source_identity: str, backend: str) -> str:
    spec = {"source": source_identity, "backend": backend, "export": EXPORTS[backend], "version": EXPORT_VERSION}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def variant_identity(source_identity: str, backend: str) -> str:
    """The embedder identity of `backend` over the source: the torch identity is the source's own."""
    if backend == TORCH:
        return source_identity
    return f"{source_identity}+{backend}:{variant_key(source_identity, backend)}"


def _pooling(folder: Path) -> str:
    """mean or cls, from the folder's sentence-transformers modules (the only poolings exported here)."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or modules[0]["path"] not in ("", ".") \
            or set(kinds[2:]) - {"Normalize"}:
        raise VariantUnavailable(f"{folder}: only Transformer + Pooling (+ Normalize) folders are exported, "
                                 f"not {kinds}")
    pool = json.loads((folder / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
    on = [k for k, v in pool.items() if k.startswith("pooling_mode_") and v is True]
    if on == ["pooling_mode_mean_tokens"]:
        return "mean"
    if on == ["pooling_mode_cls_token"]:
        return "cls"
    raise VariantUnavailable(f"{folder}: pooling {on} is not exported (mean or cls only)")


def max_seq_length(folder: Path) -> int:
    cfg = folder / "sentence_bert_config.json"
    if cfg.exists():
        value = json.loads(cfg.read_text(encoding="utf-8")).get("max_seq_length")
        if value:
            return int(value)
    return min(tokenization.model_max_length(folder), 512)


def _export_onnx(folder: Path, out: Path, pooling: str) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    # Eager attention: the one the ONNX exporter turns into plain MatMul/Softmax nodes, which the quantizers know.
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    class Encoder(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    sample = tokenizer(["a short text", "a somewhat longer text to give the sequence axis two sizes"],
                       padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "embedding": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(Encoder(model).eval(), (sample["input_ids"], sample["attention_mask"]), str(out),
                          dynamo=False, opset_version=_OPSET, input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, do_constant_folding=True)


def _export(folder: Path, backend: str, tmp: Path) -> list[str]:
    """Write the variant's files into `tmp`; their names."""
    settings = EXPORTS[backend]
    pooling = _pooling(folder)
    fp32 = tmp / ("model.onnx" if backend == "onnx" else "fp32.onnx")
    _export_onnx(folder, fp32, pooling)
    if backend == "onnx":
        return [fp32.name]
    q = settings["quantize"]
    if backend == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(tmp / "model.onnx"), weight_type=getattr(QuantType, q["weight_type"]),
                         per_channel=q["per_channel"], reduce_range=q["reduce_range"],
                         op_types_to_quantize=q["op_types"])
        fp32.unlink()
        return ["model.onnx"]
    import nncf
    import openvino as ov

    compressed = nncf.compress_weights(ov.Core().read_model(str(fp32)), mode=getattr(nncf.CompressWeightsMode,
                                                                                    q["mode"]))
    ov.save_model(compressed, str(tmp / "model.xml"), compress_to_fp16=False)
    fp32.unlink()
    return ["model.xml", "model.bin"]


def _runtime_versions(backend: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "transformers", "onnx"] + (["onnxruntime"] if EXPORTS[backend]["runtime"] == "onnxruntime"
                                                 else ["openvino", "nncf"])
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "missing"
    return out


def _require(backend: str) -> None:
    needed = ["onnx", "onnxruntime"] if EXPORTS[backend]["runtime"] == "onnxruntime" else ["onnx", "openvino",
                                                                                           "nncf"]
    import importlib.util

    missing = [n for n in needed if importlib.util.find_spec(n) is None]
    if missing:
        raise VariantUnavailable(f"embedder backend {backend!r} needs {', '.join(missing)}: "
                                 "pip install -e '.[quantized]' (or use embedder_backend = \"torch\")")


# OpenVINO numbers the nodes it creates (Convert_6404) from a counter per process: the same graph saved twice in one
# process differs in those names only.
_OV_AUTO_NAME = re.compile(rb'name="([A-Za-z]+)_[0-9]+(?:_[0-9]+)*"')


def content_sha256(path: Path) -> str:
    """sha256 of an exported file; for OpenVINO's XML with its generated node names numbered in order."""
    if path.suffix != ".xml":
        return sha256_file(path)
    counter: dict[bytes, int] = {}

    def renumber(m: re.Match) -> bytes:
        n = counter[m.group(1)] = counter.get(m.group(1), 0) + 1
        return b'name="' + m.group(1) + b"_#" + str(n).encode() + b'"'
    return hashlib.sha256(_OV_AUTO_NAME.sub(renumber, path.read_bytes())).hexdigest()


_export_lock = threading.Lock()


def ensure_variant(folder: Path, source_name: str, source_identity: str, backend: str, models_dir: Path) -> Path:
    """The folder of `backend`'s export of the sentence-transformers `folder`, exporting it once."""
    from rag.models.e5 import _finish_tree, _remove_stale_temps

    _require(backend)
    key = variant_key(source_identity, backend)
    models_dir = Path(models_dir)
    final = models_dir / f"{source_name}-{backend}-{key}"
    if (final / "export.json").exists():
        return final
    with _export_lock:
        if (final / "export.json").exists():
            return final
        models_dir.mkdir(parents=True, exist_ok=True)
        prefix = f".{final.name}.tmp-"
        _remove_stale_temps(models_dir, prefix)
        # Built beside the destination and renamed in one step, as the e5 conversion: the final name only ever
        # names a complete export, whether this process is killed or another one exports concurrently.
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=models_dir))
        try:
            log.info("exporting %s as %s -> %s (once)", source_name, backend, final)
            # The exporters print tables and progress to stdout (transformers' load report, NNCF's bit widths):
            # on stderr, so a command's stdout (`rag ask --json`) stays what it says it is.
            with contextlib.redirect_stdout(sys.stderr):
                files = _export(folder, backend, tmp)
            record = {"source": str(folder), "source_identity": source_identity, "backend": backend,
                      "export": EXPORTS[backend], "export_version": EXPORT_VERSION, "key": key,
                      "files": {f: content_sha256(tmp / f) for f in files}, "packages": _runtime_versions(backend)}
            (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            _finish_tree(tmp)
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / "export.json").exists():
                    raise
            else:
                fsync_path(models_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


class ExportedEncoder:
    """A variant behind the part of SentenceTransformer's interface that rag.models.embedders uses."""

    device = "cpu"

    def __init__(self, source: Path, export_dir: Path, backend: str, threads: int = 0):
        self.backend = backend
        self.source = source
        self.max_seq_length = max_seq_length(source)
        self._hf_tokenizer = None
        # The bare Rust tokenizer when the folder has its tokenizer.json: loading needs no transformers (nor the
        # torch it imports), so a CPU process that only embeds never pays for either.
        self._batch_tokenizer = (tokenization.batch_tokenizer(source, self.max_seq_length)
                                 if tokenization.has_tokenizer_file(source) else None)
        if EXPORTS[backend]["runtime"] == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(export_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
            self._run = lambda feed: session.run(None, feed)[0]
            self._dim = int(session.get_outputs()[0].shape[-1])
        else:
            import openvino as ov

            core = ov.Core()
            config = {"PERFORMANCE_HINT": "LATENCY"} | ({"INFERENCE_NUM_THREADS": threads} if threads else {})
            compiled = core.compile_model(str(export_dir / "model.xml"), "CPU", config)
            self._dim = int(compiled.output(0).get_partial_shape()[-1].get_length())
            # An infer request per thread: one compiled model serves concurrent callers, a request does not.
            local = threading.local()

            def run(feed):
                req = getattr(local, "req", None)
                if req is None:
                    req = local.req = compiled.create_infer_request()
                return req.infer(feed)[compiled.output(0)].copy()
            self._run = run

    @property
    def tokenizer(self):
        """The folder's transformers tokenizer, loaded on first use (encoding does not need it)."""
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            self._hf_tokenizer = AutoTokenizer.from_pretrained(str(self.source), local_files_only=True)
        return self._hf_tokenizer

    def get_sentence_embedding_dimension(self) -> int:
        return self._dim

    def _tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self._batch_tokenizer is None:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                                 return_tensors="np")
            return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        encodings = self._batch_tokenizer.encode_batch(texts)
        return (np.array([e.ids for e in encodings], dtype=np.int64),
                np.array([e.attention_mask for e in encodings], dtype=np.int64))

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False, **_ignored
               ) -> np.ndarray:
        """Normalized vectors in the order of `texts` (the graph normalizes; sentence-transformers' flags for
        normalization and numpy output are always what this returns)."""
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first, as sentence-transformers
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = self._tokenize([texts[i] for i in idx])
            out[idx] = self._run({"input_ids": ids, "attention_mask": mask})
        return out
