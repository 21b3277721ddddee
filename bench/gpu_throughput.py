"""Generation and embedding throughput on a GPU: one-at-a-time `generate` vs the batched backend, and the encoder.

Models of real architectures with random weights, built from their configs directly on the device in bf16 (speed
does not depend on weight values, and no weights travel): Qwen2.5-1.5B- and Qwen2.5-7B-shaped causal LMs
(transformers' Qwen2Config) and the XLM-R small shape of multilingual-e5-small (XLMRobertaConfig).

Measured in one run, per LM and per concurrency (1, 8, 32, 64 closed-loop clients, each sending its next request
when the last one ends; prompts of 256-1024 tokens, 64-192 new tokens, the same sequence of lengths for both;
after a 2 s ramp, not counted, a 6 s window, at whose end the work in progress stops, so a run lasts 8 s):
- (a) `plain`: one request at a time through `model.generate` (the others wait their turn, first come first served),
- (b) `batched`: rag.generators.batching.BatchScheduler, the scheduler the transformers backend runs;
generated tokens/s, time to first token (TTFT, from submission, waiting included), inter-token latency and the
mean rows per decode step; then the encoder: passages/s at 256 tokens through rag's Embedder (sentence-transformers,
fp16 on CUDA, its tokenizer included) per batch size, and the bare encoder forward; peak GPU memory per model.
Token ids are random: only lengths matter. Every section is saved as soon as it ends, so a run cut short keeps
what it measured.

Targets (README, Batched generation): batched >= 8x plain tokens/s at concurrency 32; embedder >= 5,000
passages/s at 256 tokens; batched TTFT at concurrency 8 <= 2x that at concurrency 1.

CPU check (every code path with tiny configs, about a minute):
    .venv/bin/python bench/gpu_throughput.py --tiny        # -> bench/results/gpu_throughput_tiny_cpu.json

On a CUDA machine whose Python has torch, transformers and sentence-transformers (the device machine's image),
first pack here what it lacks (msgspec's wheel and e5-small's tokenizer, ~17 MB, into the git-ignored .whl/):
    .venv/bin/python bench/gpu_throughput.py --pack
then, there, with `.whl` carried (about 4 minutes: 2 LMs x 4 concurrencies x 2 modes x 8 s, the builds and the
encoder; --seconds and --ramp set each measurement's window and its uncounted start):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site \
        PYTHONUNBUFFERED=1 python3 bench/gpu_throughput.py --out $OUT
which writes $OUT/gpu_throughput.json (copy it to bench/results/).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PACK = ROOT / ".whl"  # git-ignored; carried to the device machine
E5_TOKENIZER = PACK / "e5-tokenizer"
MSGSPEC = "msgspec==0.19.0"

# Shapes from the models' published config.json files.
QWEN = {
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                         rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
                       rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
}
E5_SMALL = dict(num_hidden_layers=12, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                vocab_size=250037, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
                pad_token_id=1, bos_token_id=0, eos_token_id=2)
TINY_QWEN = {
    "tiny-qwen-a": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=1000, max_position_embeddings=4096, tie_word_embeddings=True),
    "tiny-qwen-b": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=6,
                        num_key_value_heads=2, vocab_size=1000, max_position_embeddings=4096,
                        tie_word_embeddings=False),
}
# The bundled SmolLM2-135M's shape (a Llama): what `--models smollm2-135m` measures on a CPU.
LLAMA = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
                         rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
}
# Tiny, but with e5's vocabulary: the real tokenizer's ids must fit.
TINY_E5 = dict(E5_SMALL, num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64)


# ----------------------------------------------------------------------------------------------- helpers
def now() -> float:
    return time.perf_counter()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def rnd(x, nd=4):
    return None if x is None else round(x, nd)


class Results:
    def __init__(self, path: Path, extra: list[Path]):
        self.path, self.extra = path, extra
        self.data: dict = {}

    def save(self) -> None:
        text = json.dumps(self.data, indent=2)
        for p in [self.path, *self.extra]:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(".json.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, p)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def memory_peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def build_on_device(make, device: str, dtype):
    """Weights allocated and initialised on the device in `dtype` (a 7B model initialised on a CPU first takes
    minutes)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = make()
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def build_lm(name: str, shape: dict, device: str, dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    config = (LlamaConfig if name in LLAMA else Qwen2Config)(**shape, bos_token_id=None, eos_token_id=None,
                                                             pad_token_id=None)
    model = build_on_device(lambda: AutoModelForCausalLM.from_config(config, dtype=dtype), device, dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


# ------------------------------------------------------------------------------------------- generation
class Workload:
    """Per client, a fixed sequence of (prompt ids, new tokens): both modes get the same requests."""

    def __init__(self, vocab: int, prompt_range: tuple[int, int], new_range: tuple[int, int], seed: int = 0):
        self.vocab, self.prompt_range, self.new_range, self.seed = vocab, prompt_range, new_range, seed

    def requests(self, client: int):
        rng = random.Random(self.seed * 1_000_003 + client)
        while True:
            n_prompt = rng.randint(*self.prompt_range)
            yield [rng.randrange(self.vocab) for _ in range(n_prompt)], rng.randint(*self.new_range)


class Record:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []

    def add(self, submitted: float, times: list[float]) -> None:
        with self.lock:
            self.requests.append({"submitted": submitted, "times": times})


class FifoLock:
    """A lock taken in arrival order (threading.Lock is not: the thread that just released it tends to take it
    again, and one client would be served while the others starve), as a server's request queue would be."""

    def __init__(self):
        self._cond = threading.Condition()
        self._next = self._serving = 0

    def __enter__(self):
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            while self._serving != ticket:
                self._cond.wait()

    def __exit__(self, *exc):
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


def _plain_client(model, device, lock, client, workload, end, record: Record):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:  # the first call hands over the prompt
                self.prompt_seen = True
                return
            sync(device)  # the token's real time (generate has read it back already: no extra wait)
            self.times.append(now())

        def end(self):
            pass

    class WindowEnds(StoppingCriteria):  # the request in progress stops with the window
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), now() >= end, dtype=torch.bool, device=input_ids.device)

    for ids, n_new in workload.requests(client):
        if now() >= end:
            return
        submitted = now()
        clock = Clock()
        with lock:  # one request at a time: the others wait here
            if now() < end:
                x = torch.tensor([ids], device=device)
                with torch.inference_mode():
                    model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n_new,
                                   do_sample=False, streamer=clock, pad_token_id=0,
                                   stopping_criteria=StoppingCriteriaList([WindowEnds()]))
                sync(device)
        record.add(submitted, clock.times)


def _batched_client(scheduler, client, workload, end, record: Record):
    for ids, n_new in workload.requests(client):
        if now() >= end:
            return
        submitted = now()
        times = []
        tokens = scheduler.submit(ids, max_new_tokens=n_new, stop_ids=()).tokens()
        for _ in tokens:
            times.append(now())
            if times[-1] >= end:
                tokens.close()  # the window is over: the row leaves the batch at the next step
                break
        record.add(submitted, times)


def run_clients(target, concurrency: int, ramp: float, seconds: float, workload: Workload,
                *args) -> tuple[Record, float, float]:
    """`concurrency` closed-loop clients calling `target(*args, client, workload, end, record)` for `ramp`
    seconds (not counted: the first requests arrive all at once) and then the `seconds` measured; work still in
    progress at the end stops there. Returns the record and the measured window."""
    record = Record()
    start = now()
    end = start + ramp + seconds
    threads = [threading.Thread(target=target, args=(*args, c, workload, end, record), daemon=True)
               for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return record, start + ramp, end


def summarize(record: Record, t0: float, t1: float) -> dict:
    """Tokens made inside [t0, t1); TTFT (from submission, waiting included) of the requests submitted inside it
    that got their first token before t1; `unserved`: those submitted inside it that did not (their TTFT is longer
    than what remained of the window, so the TTFT figures leave out the longest waits)."""
    reqs = record.requests
    tokens = sum(1 for r in reqs for t in r["times"] if t0 <= t < t1)
    inside = [r for r in reqs if t0 <= r["submitted"] < t1]
    served = [r for r in inside if r["times"] and r["times"][0] < t1]
    ttft = [r["times"][0] - r["submitted"] for r in served]
    # With the unserved counted as waiting until t1 (they waited at least that): a lower bound on the median.
    ttft_floor = ttft + [t1 - r["submitted"] for r in inside if not (r["times"] and r["times"][0] < t1)]
    itl = [(r["times"][-1] - r["times"][0]) / (len(r["times"]) - 1) for r in reqs if len(r["times"]) > 1]
    return {"requests_started": len(served), "unserved": len(inside) - len(served), "tokens": tokens,
            "seconds": rnd(t1 - t0, 3), "tokens_per_s": rnd(tokens / (t1 - t0), 1),
            "ttft_s_mean": rnd(statistics.fmean(ttft) if ttft else None), "ttft_s_p50": rnd(pct(ttft, 0.5)),
            "ttft_s_p90": rnd(pct(ttft, 0.9)), "ttft_s_p50_at_least": rnd(pct(ttft_floor, 0.5)), "itl_ms_p50": rnd(None if not itl else 1000 * pct(itl, 0.5), 2)}


def _drained(scheduler, seconds: float = 60.0) -> None:
    """Wait until the rows cancelled at a window's end have left the batch."""
    end = now() + seconds
    while (scheduler.active or scheduler.waiting) and now() < end:
        time.sleep(0.005)


def measure_lm(name: str, shape: dict, args, device: str, dtype, results: Results) -> None:
    import torch

    from rag.generators.batching import BatchScheduler

    out = results.data.setdefault("generation", {}).setdefault(name, {"shape": shape})
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = now()
    model = build_lm(name, shape, device, dtype)
    sync(device)
    out["build_s"] = rnd(now() - t, 2)
    out["parameters_b"] = rnd(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    print(f"\n{name}: {out['parameters_b']}B parameters built on {device} in {out['build_s']} s", flush=True)
    workload = Workload(shape["vocab_size"], args.prompt_tokens, args.new_tokens)
    scheduler = BatchScheduler(model, max_batch=args.max_batch, max_tokens_in_flight=args.max_tokens_in_flight,
                               name=f"bench-{name}")
    out["scheduler"] = {"max_batch": scheduler.max_batch, "max_tokens_in_flight": scheduler.max_tokens_in_flight}
    lock = FifoLock()
    # Warm-up (kernels, allocator, cuBLAS handles), excluded.
    warm_ids = list(range(1, args.prompt_tokens[0] + 1))
    with torch.inference_mode():
        x = torch.tensor([warm_ids], device=device)
        model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=4, do_sample=False,
                       pad_token_id=0)
    for d in scheduler.submit_many([warm_ids] * 4, max_new_tokens=4, stop_ids=()):
        d.result()
    sync(device)
    out["runs"] = {"plain": {}, "batched": {}}
    for c in args.concurrency:
        for mode in ("plain", "batched"):
            before = dict(scheduler.stats)
            if mode == "plain":
                record, t0, t1 = run_clients(_plain_client, c, args.ramp, args.seconds, workload, model, device,
                                             lock)
            else:
                record, t0, t1 = run_clients(_batched_client, c, args.ramp, args.seconds, workload, scheduler)
                _drained(scheduler)
            row = summarize(record, t0, t1)
            if mode == "batched":
                steps = scheduler.stats["steps"] - before["steps"]
                row["mean_rows_per_step"] = rnd((scheduler.stats["step_rows"] - before["step_rows"]) / max(steps, 1),
                                                2)
            out["runs"][mode][str(c)] = row
            print(f"  {mode:8s} c={c:<3d} {row['tokens_per_s']:>9} tok/s  TTFT p50 {row['ttft_s_p50']} s "
                  f"(>= {row['ttft_s_p50_at_least']} s with the unserved) "
                  f"mean {row['ttft_s_mean']} s  ITL p50 {row['itl_ms_p50']} ms  requests {row['requests_started']}"
                  + (f"  rows/step {row['mean_rows_per_step']}" if mode == "batched" else "")
                  + (f"  unserved {row['unserved']}" if row["unserved"] else ""), flush=True)
            gc.collect()
        out["memory_peak_gib"] = rnd(memory_peak_gib(device), 2)
        results.save()
    plain, batched = out["runs"]["plain"], out["runs"]["batched"]
    out["speedup_tokens_per_s"] = {c: rnd(batched[c]["tokens_per_s"] / max(plain[c]["tokens_per_s"], 1e-9), 2)
                                   for c in plain}
    out["memory_peak_gib"] = rnd(memory_peak_gib(device), 2)
    results.save()
    scheduler.close()
    del model, scheduler
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------------- embedding
def passages(n: int) -> list[str]:
    """`n` different texts well over 256 tokens each (from data/), truncated by the encoder to 256."""
    words = []
    for p in sorted((ROOT / "data" / "documents").rglob("*.md")):
        words.extend(p.read_text(encoding="utf-8").split())
    rng = random.Random(0)
    out = []
    for _ in range(n):
        i = rng.randrange(max(1, len(words) - 400))
        out.append(" ".join(words[i:i + 400]))
    return out


def random_e5_folder(shape: dict, tokenizer_dir: Path, device: str, dtype, folder: Path) -> None:
    """A sentence-transformers folder like e5-small's, with random weights of `shape`."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(**shape)
    model = build_on_device(lambda: XLMRobertaModel(config, add_pooling_layer=False), device, dtype)
    model.save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, folder / name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": 256, "do_lower_case": False, "model_args": {"add_pooling_layer": False}}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": shape["hidden_size"], "pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir()


def measure_embedder(shape: dict, args, device: str, results: Results) -> None:
    import torch

    from rag.models.embedders import load_embedder

    out = results.data.setdefault("embedding", {"shape": shape})
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "random-e5-small"  # "e5" in the name: rag adds e5's passage prefix, as for e5-small
        random_e5_folder(shape, args.e5_tokenizer, device, torch.float16 if device == "cuda" else torch.float32,
                         folder)
        emb = load_embedder(str(folder), Path(tmp) / "models")  # what the service loads: fp16 on CUDA
        emb.model.max_seq_length = 256
        texts = passages(args.passages)
        lengths = [len(ids) for ids in emb.tokenizer(texts[:64], truncation=True, max_length=256)["input_ids"]]
        out.update(device=emb.device, dtype=str(next(emb.model.parameters()).dtype).removeprefix("torch."),
                   tokens_per_passage=statistics.median(lengths), passages=len(texts), default_batch=emb.batch_size)
        print(f"\nembedder {out['dtype']} on {out['device']}: {len(texts)} passages of {out['tokens_per_passage']} "
              "tokens", flush=True)
        emb.embed_passages(texts[:max(args.batch_sizes)], batch_size=max(args.batch_sizes))  # warm-up
        rates = {}
        for bs in args.batch_sizes:
            sync(device)
            t = now()
            emb.embed_passages(texts, batch_size=bs)
            sync(device)
            rates[str(bs)] = rnd(len(texts) / (now() - t), 1)
            print(f"  batch {bs:4d}: {rates[str(bs)]:>9} passages/s (tokenizer included)", flush=True)
        out["passages_per_s_by_batch"] = rates
        best = max(rates, key=rates.get)
        out["best_batch"], out["best_passages_per_s"] = int(best), rates[best]
        # The bare encoder on pre-made ids at the best batch size: what tokenizing and pooling cost beside it.
        encoder = emb.model[0].auto_model
        ids = torch.randint(5, shape["vocab_size"], (int(best), 256), device=device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            encoder(input_ids=ids, attention_mask=mask)
            sync(device)
            t, n = now(), 0
            while n < len(texts):
                encoder(input_ids=ids, attention_mask=mask)
                n += ids.shape[0]
            sync(device)
        out["encoder_only_passages_per_s"] = rnd(n / (now() - t), 1)
        out["memory_peak_gib"] = rnd(memory_peak_gib(device), 2)
        print(f"  encoder alone at batch {best}: {out['encoder_only_passages_per_s']} passages/s", flush=True)
        results.save()


# -------------------------------------------------------------------------------------------------- main
def targets(data: dict, big: str) -> dict:
    out = {}
    gen = data.get("generation", {}).get(big)
    if gen and "32" in gen.get("runs", {}).get("batched", {}) and "32" in gen["runs"]["plain"]:
        ratio = gen["speedup_tokens_per_s"]["32"]
        out["batched_vs_plain_tokens_per_s_at_32"] = {"model": big, "value": ratio, "target": ">= 8",
                                                      "met": ratio >= 8}
    if gen and {"1", "8"} <= set(gen.get("runs", {}).get("batched", {})):
        b = gen["runs"]["batched"]
        ratio = rnd(b["8"]["ttft_s_p50"] / max(b["1"]["ttft_s_p50"], 1e-9), 2)
        ratio_mean = rnd(b["8"]["ttft_s_mean"] / max(b["1"]["ttft_s_mean"], 1e-9), 2)
        out["batched_ttft_8_over_1"] = {"model": big, "value_p50": ratio, "value_mean": ratio_mean,
                                        "target": "<= 2", "met": ratio <= 2}
    emb = data.get("embedding", {})
    if "best_passages_per_s" in emb:
        out["embedder_passages_per_s_256_tokens"] = {"value": emb["best_passages_per_s"], "target": ">= 5000",
                                                     "met": emb["best_passages_per_s"] >= 5000}
    return out


def pack() -> None:
    """Put what the device machine's Python lacks into .whl/: msgspec's wheel and e5-small's tokenizer."""
    from rag.config import load_settings
    from rag.models.e5 import ensure_e5_model

    PACK.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "--platform",
                    "manylinux2014_x86_64", "-d", str(PACK), MSGSPEC], check=True)
    folder = ensure_e5_model(load_settings().models_dir)
    E5_TOKENIZER.mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, E5_TOKENIZER / name)
    size = sum(p.stat().st_size for p in PACK.rglob("*") if p.is_file())
    print(f"packed {PACK} ({size / 2**20:.1f} MiB): carry '.whl' to the device machine")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs: every code path in about a minute on a CPU")
    ap.add_argument("--pack", action="store_true", help="put msgspec's wheel and e5's tokenizer into .whl/, then stop")
    ap.add_argument("--models", default=None, help="comma-separated LM shapes (default: all of the mode's)")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--seconds", type=float, default=None, help="each measurement's window (6 s; tiny: 1 s)")
    ap.add_argument("--ramp", type=float, default=None,
                    help="seconds before each window, not counted: the clients' first requests arrive at once "
                         "(2 s; tiny: 0.25 s)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-tokens-in-flight", type=int, default=0)
    ap.add_argument("--passages", type=int, default=None, help="passages per batch-size run (8192; tiny: 256)")
    ap.add_argument("--batch-sizes", default=None, help="encoder batch sizes (32,64,128,256,512; tiny: 32,128)")
    ap.add_argument("--e5-tokenizer", type=Path, default=None,
                    help="folder with e5-small's tokenizer.json (default: .whl/e5-tokenizer, else the models cache)")
    ap.add_argument("--skip-embedder", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON into this folder")
    args = ap.parse_args()
    if args.pack:
        pack()
        return

    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else (
        torch.float16 if device == "cuda" else torch.float32)
    shapes = {**QWEN, **LLAMA, **TINY_QWEN}
    names = args.models.split(",") if args.models else list(reversed(TINY_QWEN if args.tiny else QWEN))
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.seconds = args.seconds or (1.0 if args.tiny else 6.0)
    args.ramp = (0.25 if args.tiny else 2.0) if args.ramp is None else args.ramp
    args.passages = args.passages or (256 if args.tiny else 8192)
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("32,128" if args.tiny else "32,64,128,256,512")).split(",")]
    args.prompt_tokens = (16, 64) if args.tiny else (256, 1024)
    args.new_tokens = (8, 24) if args.tiny else (64, 192)
    if args.e5_tokenizer is None:
        if E5_TOKENIZER.is_dir():
            args.e5_tokenizer = E5_TOKENIZER
        else:
            from rag.config import load_settings
            from rag.models.e5 import ensure_e5_model

            args.e5_tokenizer = ensure_e5_model(load_settings().models_dir)

    stem = "gpu_throughput" + ("_tiny" if args.tiny else "") + ("_cpu" if device == "cpu" else "")
    results = Results(ROOT / "bench" / "results" / f"{stem}.json",
                      [args.out / f"{stem}.json"] if args.out else [])
    results.data["setup"] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(), "tiny": args.tiny,
        "concurrency": args.concurrency, "seconds_per_run": args.seconds, "ramp_s": args.ramp,
        "prompt_tokens": list(args.prompt_tokens), "new_tokens": list(args.new_tokens),
        "command": " ".join(sys.argv)}
    results.save()
    print(json.dumps(results.data["setup"]), flush=True)
    t0 = now()
    # The targets' model first and the embedder second: every section is saved as it ends, so a run cut short
    # keeps the figures that matter most.
    for name in names[:1]:
        measure_lm(name, shapes[name], args, device, dtype, results)
    if not args.skip_embedder:
        measure_embedder(TINY_E5 if args.tiny else E5_SMALL, args, device, results)
    for name in names[1:]:
        measure_lm(name, shapes[name], args, device, dtype, results)
    results.data["targets"] = targets(results.data, names[0])
    results.data["total_s"] = rnd(now() - t0, 1)
    if device == "cpu":
        results.data["peak_rss_gib"] = rnd(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    results.save()
    print("\ntargets:", json.dumps(results.data["targets"], indent=2))
    print(f"saved {results.path}" + "".join(f" and {p}" for p in results.extra), f"({results.data['total_s']} s)")


if __name__ == "__main__":
    main()
