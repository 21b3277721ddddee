"""Generator backends: the OpenAI-compatible client against a real local HTTP server, the pool, and (slow) the
real SmolLM2 through transformers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag.config import GeneratorSettings
from rag.generators import (
    GeneratorBusy,
    GeneratorError,
    GeneratorPool,
    GeneratorTimeout,
)
from rag.generators.openai_backend import OpenAIGenerator

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


class FakeOpenAI(BaseHTTPRequestHandler):
    """`/v1/chat/completions` as vLLM/TGI/llama.cpp answer it. The requested model picks the behaviour."""

    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._send(404, b'{"error": {"message": "no such route"}}')
            return
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append({"payload": payload, "auth": self.headers.get("Authorization")})
        model = payload["model"]
        if model == "broken":
            self._send(500, json.dumps({"error": {"message": "CUDA out of memory", "type": "server_error"}}).encode())
            return
        if model == "plain-error":
            self._send(503, b"upstream overloaded")
            return
        if model == "slow":  # answers after the client's read timeout
            time.sleep(1.0)
        text = f"Hello from {model}."
        if not payload.get("stream"):
            self._send(200, json.dumps({"id": "c1", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        events += [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Hello ", "from ", f"{model}.")]
        if model == "dies-midway":
            events.append({"error": {"message": "worker crashed"}})
        for ev in events:
            self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
            self.wfile.write(b": keep-alive\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _client(base_url: str, model: str = "tiny", **kw) -> OpenAIGenerator:
    return OpenAIGenerator(GeneratorSettings(backend="openai", openai_base_url=base_url, openai_model=model,
                                             timeout_s=5.0, **kw))


def test_openai_generate_sends_chat_completion(fake_server):
    FakeOpenAI.requests.clear()
    snapshot = _client(fake_server, openai_api_key="sk-test")
    assert snapshot.generate(MESSAGES, max_new_tokens=17, temperature=0.0) == "Hello from tiny."
    sent = FakeOpenAI.requests[-1]
    assert sent["payload"]["messages"] == MESSAGES
    assert sent["payload"]["max_tokens"] == 17 and sent["payload"]["stream"] is False
    assert sent["auth"] == "Bearer sk-test"


def test_openai_stream_parses_sse_until_done(fake_server):
    pieces = list(_client(fake_server).stream(MESSAGES, max_new_tokens=8))
    assert pieces == ["Hello ", "from ", "tiny."]
    assert FakeOpenAI.requests[-1]["payload"]["stream"] is True


def test_openai_batch_loops(fake_server):
    assert _client(fake_server).generate_batch([MESSAGES, MESSAGES], max_new_tokens=4) == ["Hello from tiny."] * 2


@pytest.mark.parametrize("model, message", [("broken", "CUDA out of memory"), ("plain-error", "upstream overloaded")])
def test_openai_errors_carry_the_server_message(fake_server, model, message):
    snapshot = _client(fake_server, model)
    with pytest.raises(GeneratorError, match=message):
        snapshot.generate(MESSAGES, max_new_tokens=4)
    with pytest.raises(GeneratorError, match=message):
        list(snapshot.stream(MESSAGES, max_new_tokens=4))


def test_openai_error_event_inside_a_stream(fake_server):
    with pytest.raises(GeneratorError, match="worker crashed"):
        list(_client(fake_server, "dies-midway").stream(MESSAGES, max_new_tokens=4))


def test_openai_read_timeout_is_the_generation_timeout(fake_server):
    """The client's read timeout and the policy's clock are the same bound: either way the reason is the timeout."""
    slow = OpenAIGenerator(GeneratorSettings(backend="openai", openai_base_url=fake_server, openai_model="slow",
                                             timeout_s=0.2))
    with pytest.raises(GeneratorTimeout, match="timed out after 0.2 s"):
        slow.generate(MESSAGES, max_new_tokens=4)
    with pytest.raises(GeneratorTimeout, match="timed out after 0.2 s"):
        list(slow.stream(MESSAGES, max_new_tokens=4))


def test_openai_unreachable_server_is_a_generator_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(GeneratorError, match="cannot reach"):
        _client(f"http://127.0.0.1:{port}/v1").generate(MESSAGES, max_new_tokens=4)


# --- the pool ----------------------------------------------------------------------------------------------

class _Echo:
    name = "echo"

    def generate(self, messages, *, max_new_tokens, temperature=0.0):
        return messages[-1]["content"]

    def stream(self, messages, *, max_new_tokens, temperature=0.0):
        yield self.generate(messages, max_new_tokens=max_new_tokens)

    def generate_batch(self, batch, *, max_new_tokens):
        return [self.generate(m, max_new_tokens=max_new_tokens) for m in batch]


def test_pool_is_lazy_cached_and_thread_safe(tmp_path):
    built = []

    def factory(name, settings, models_dir):
        time.sleep(0.2)  # a slow load: concurrent callers must wait for it, not start their own
        built.append(name)
        return _Echo()

    pool = GeneratorPool(GeneratorSettings(backend="openai"), tmp_path, factory=factory)
    assert built == []
    got = []
    threads = [threading.Thread(target=lambda: got.append(pool.get(None))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["openai"] and len({id(g) for g in got}) == 1
    assert pool.get("extractive") is None
    with pytest.raises(ValueError, match="unknown generator backend"):
        pool.get("gpt-17")


def test_pool_bounds_concurrency_with_a_timeout(tmp_path):
    pool = GeneratorPool(GeneratorSettings(max_concurrent=1), tmp_path, queue_timeout_s=0.2)
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with pool.slot():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    started = time.monotonic()
    with pytest.raises(GeneratorBusy, match="busy"):
        with pool.slot():
            pass
    assert time.monotonic() - started >= 0.15
    release.set()
    holder.join()
    with pool.slot():  # freed again
        pass


def test_registered_generator_is_usable_by_name(tmp_path):
    pool = GeneratorPool(GeneratorSettings(), tmp_path)
    pool.register("echo", _Echo())
    assert pool.get("echo").generate(MESSAGES, max_new_tokens=3) == "Say hello."


# --- the real local model (slow: SmolLM2-135M on CPU) -------------------------------------------------------

@pytest.fixture(scope="module")
def smollm(models_dir):
    from rag.generators.transformers_backend import TransformersGenerator

    # A CPU decodes one sequence at a time by default; three here, so the real model is batched too.
    return TransformersGenerator(GeneratorSettings(max_new_tokens=8, max_batch=3), models_dir)


@pytest.mark.slow
def test_smollm2_dequantized_once_into_a_plain_folder(smollm, models_dir):
    folder = smollm.path
    assert folder.parent == models_dir and folder.name.startswith("smollm2-")
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not [p for p in models_dir.iterdir() if p.name.startswith(".tmp-")]  # the atomic rename left nothing
    from rag.generators.transformers_backend import resolve_model

    assert resolve_model("smollm2", models_dir) == folder  # a second resolve reuses it


@pytest.mark.slow
def test_smollm2_generate_stream_and_batch(smollm):
    messages = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "What is the capital of France?"}]
    text = smollm.generate(messages, max_new_tokens=6)
    assert text and "<|im" not in text
    assert "".join(smollm.stream(messages, max_new_tokens=6)).strip() == text  # greedy: same tokens
    batch = smollm.generate_batch([messages, [{"role": "user", "content": "Name a colour."}]], max_new_tokens=4)
    assert len(batch) == 2 and all(isinstance(b, str) and b for b in batch)
    assert smollm.count_tokens("hello world") >= 2


BATCH_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer briefly."},
     {"role": "user", "content": "Name three colours of the rainbow and explain why the sky is blue."}],
    [{"role": "user", "content": "Write a haiku about rain."}],
]


@pytest.mark.slow
def test_smollm2_batched_greedy_equals_each_alone_and_transformers_generate(smollm):
    import torch

    alone = [smollm.generate(m, max_new_tokens=10) for m in BATCH_PROMPTS]  # one after another: a batch of one
    before = dict(smollm.scheduler.stats)
    batched = smollm.generate_batch(BATCH_PROMPTS, max_new_tokens=10)
    assert batched == alone
    assert len(set(batched)) == 3  # three different answers, not one repeated
    assert smollm.scheduler.stats["max_rows"] == 3
    # 10 tokens a row: one from its prefill, 9 from decode steps, all three rows in the same 9 steps
    assert smollm.scheduler.stats["steps"] - before["steps"] <= 9
    # The scheduler's own decode loop gives what transformers' generate gives.
    ids = smollm._prompt_ids(BATCH_PROMPTS[1])
    with torch.inference_mode():
        out = smollm.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                    pad_token_id=smollm.tokenizer.pad_token_id)
    assert smollm.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip() == alone[1]


@pytest.mark.slow
def test_smollm2_streams_in_a_shared_batch(smollm):
    """Two streams read side by side, each gets its own text, the same as generating it alone."""
    alone = [smollm.generate(m, max_new_tokens=12) for m in BATCH_PROMPTS[:2]]
    before = dict(smollm.scheduler.stats)
    streams = [smollm.stream(m, max_new_tokens=12) for m in BATCH_PROMPTS[:2]]
    pieces: list[list[str]] = [[], []]
    first = [next(s) for s in streams]  # the second joined while the first was decoding
    for i, s in enumerate(streams):
        pieces[i] = [first[i], *s]
    assert ["".join(p).strip() for p in pieces] == alone
    steps = smollm.scheduler.stats["steps"] - before["steps"]
    assert smollm.scheduler.stats["step_rows"] - before["step_rows"] > steps  # some steps decoded both


@pytest.mark.slow
def test_smollm2_stream_closed_early_frees_its_row(smollm):
    before = smollm.scheduler.stats["cancelled"]
    stream = smollm.stream([{"role": "user", "content": "Tell me a very long story about a dragon."}],
                           max_new_tokens=4000)
    assert next(stream)
    stream.close()  # the reader went away
    assert smollm.generate(BATCH_PROMPTS[0], max_new_tokens=6)  # the model serves the next request
    assert smollm.scheduler.stats["cancelled"] == before + 1
    deadline = time.monotonic() + 30
    while smollm.scheduler.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smollm.scheduler.active == 0


@pytest.mark.slow
def test_smollm2_policy_timeout_ends_the_generation(smollm):
    from rag.generators import GeneratorSlots, GeneratorTimeout

    slots = GeneratorSlots(1, 5.0, timeout_s=0.5)
    before = smollm.scheduler.stats["expired"]
    with pytest.raises(GeneratorTimeout):
        slots.run(lambda: smollm.generate([{"role": "user", "content": "Count from one to a million."}],
                                          max_new_tokens=4000))
    deadline = time.monotonic() + 30
    while (slots.in_use or smollm.scheduler.active) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slots.in_use == 0 and smollm.scheduler.active == 0  # the row left the batch, the slot is free
    assert smollm.scheduler.stats["expired"] == before + 1


@pytest.mark.slow
def test_token_text_pieces_join_to_the_decoded_text(smollm):
    from rag.generators.transformers_backend import TokenText

    text = "Hypertension: 130/80 mmHg.\n高血压患者应该每天测量血压。 Done — café naïve."
    ids = smollm.tokenizer(text, add_special_tokens=False)["input_ids"]
    cut = TokenText(smollm.tokenizer)
    pieces = [cut.feed(t) for t in ids]
    joined = "".join(pieces) + cut.flush()
    assert joined == smollm.tokenizer.decode(ids, skip_special_tokens=True)
    assert sum(1 for p in pieces if p) > 3  # it streamed, not all at the end
