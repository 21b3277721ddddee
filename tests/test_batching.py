"""The batch scheduler (rag.generators.batching) on a small Llama of random weights built from its config (CPU,
milliseconds a step): batched greedy decoding equals decoding alone, requests join a running batch, the caps hold,
cancellation and deadlines free a row, a failing request fails alone. The same with the real SmolLM2 (slow) is in
tests/test_generators.py."""

from __future__ import annotations

import threading
import time

import pytest

from rag.config import GeneratorSettings
from rag.generators import GeneratorError, GeneratorSlots, GeneratorTimeout, concurrency_limit
from rag.generators.batching import BatchScheduler
from rag.generators.slots import current_deadline

VOCAB = 256
PROMPTS = [[5, 17, 99, 3, 42], [7] * 3 + list(range(30, 41)), [200, 1, 2, 3, 4, 5, 6, 7]]


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         initializer_range=0.3)  # sharp attention: a wrong position or mask changes tokens
    return LlamaForCausalLM(config).eval()


def _alone(model, prompts, n):
    """Each prompt decoded by itself, one after another."""
    scheduler = BatchScheduler(model, max_batch=1)
    try:
        return [scheduler.submit(p, max_new_tokens=n).result() for p in prompts]
    finally:
        scheduler.close()


def _wait_until(predicate, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_batched_greedy_equals_decoding_alone(model):
    alone = _alone(model, PROMPTS, 12)
    scheduler = BatchScheduler(model, max_batch=8)
    batched = [d.result() for d in scheduler.submit_many(PROMPTS, max_new_tokens=12)]
    scheduler.close()
    assert batched == alone
    assert [len(t) for t in batched] == [12, 12, 12]  # no stop ids: every request runs to max_new_tokens
    assert scheduler.stats["max_rows"] == 3  # they really shared the decode steps
    assert scheduler.stats["steps"] == 11  # the first token comes from each prefill, the other 11 from shared steps


def test_a_request_joins_a_running_batch(model):
    """B arrives while A decodes; B's longer prompt left-pads A's cache. Both match their solo tokens."""
    a_prompt, b_prompt = [9, 8, 7], list(range(100, 120))
    solo_a, solo_b = _alone(model, [a_prompt], 30)[0], _alone(model, [b_prompt], 10)[0]
    scheduler = BatchScheduler(model, max_batch=4)
    a = scheduler.submit(a_prompt, max_new_tokens=100_000)  # runs until cancelled below
    a_tokens = a.tokens()
    got_a = [next(a_tokens) for _ in range(3)]
    got_b = scheduler.submit(b_prompt, max_new_tokens=10).result()
    got_a += [next(a_tokens) for _ in range(27)]
    a_tokens.close()  # the consumer stops: A leaves the batch
    assert _wait_until(lambda: scheduler.active == 0)
    scheduler.close()
    assert got_b == solo_b and got_a == solo_a
    assert scheduler.stats["max_rows"] == 2 and scheduler.stats["cancelled"] == 1


def test_max_batch_caps_the_rows_decoded_together(model):
    prompts = [[i + 1, i + 2, i + 3] for i in range(5)]
    alone = _alone(model, prompts, 6)
    scheduler = BatchScheduler(model, max_batch=2)
    out = [d.result() for d in scheduler.submit_many(prompts, max_new_tokens=6)]
    scheduler.close()
    assert out == alone
    assert scheduler.stats["max_rows"] == 2 and scheduler.stats["done"] == 5


def test_max_tokens_in_flight_caps_the_batch_but_a_large_request_still_runs(model):
    prompts = [[i + 1] * 4 for i in range(4)]  # each may grow to 4 + 6 = 10 tokens
    scheduler = BatchScheduler(model, max_batch=8, max_tokens_in_flight=25)
    out = [d.result() for d in scheduler.submit_many(prompts, max_new_tokens=6)]
    assert [len(t) for t in out] == [6] * 4 and scheduler.stats["max_rows"] == 2  # 2 x 10 fit in 25, 3 do not
    big = scheduler.submit(list(range(1, 40)), max_new_tokens=5).result()  # 44 tokens > 25: alone, but it runs
    scheduler.close()
    assert len(big) == 5


def test_cancelled_request_frees_its_place(model):
    scheduler = BatchScheduler(model, max_batch=1)
    a = scheduler.submit([1, 2, 3], max_new_tokens=100_000)
    a_tokens = a.tokens()
    next(a_tokens)
    a_tokens.close()  # as a stream whose reader went away
    b = scheduler.submit([4, 5, 6], max_new_tokens=5, deadline=time.monotonic() + 60).result()
    scheduler.close()
    assert len(b) == 5
    assert a.outcome == "cancelled" and scheduler.stats["cancelled"] == 1 and a.generated < 100_000


def test_deadline_ends_the_request_and_frees_its_row(model):
    scheduler = BatchScheduler(model, max_batch=1)
    late = scheduler.submit([1, 2, 3], max_new_tokens=10**7, deadline=time.monotonic() + 0.3, timeout_s=0.3)
    with pytest.raises(GeneratorTimeout, match="timed out after 0.3 s"):
        late.result()
    assert _wait_until(lambda: scheduler.active == 0)
    assert late.outcome == "expired" and scheduler.stats["expired"] == 1
    assert len(scheduler.submit([4, 5], max_new_tokens=3).result()) == 3  # the place is free again
    scheduler.close()


def test_a_failing_request_fails_alone(model):
    scheduler = BatchScheduler(model, max_batch=4)
    bad, good = scheduler.submit_many([[VOCAB + 5, 1], [1, 2]], max_new_tokens=4)  # an id past the vocabulary
    with pytest.raises(GeneratorError, match="generation failed"):
        bad.result()
    assert len(good.result()) == 4
    scheduler.close()
    assert scheduler.stats["failed"] == 1 and scheduler.stats["done"] == 1


def test_stop_ids_end_a_request_and_are_not_returned(model):
    solo = _alone(model, [PROMPTS[0]], 8)[0]
    stop = solo[3]
    scheduler = BatchScheduler(model, max_batch=2, stop_ids=[stop])
    out = scheduler.submit(PROMPTS[0], max_new_tokens=8).result()
    scheduler.close()
    assert out == solo[:solo.index(stop)]


def test_sampling_rows_and_greedy_rows_share_a_batch(model):
    greedy_alone = _alone(model, [PROMPTS[0]], 10)[0]
    scheduler = BatchScheduler(model, max_batch=4)
    sampled = scheduler.submit(PROMPTS[1], max_new_tokens=10, temperature=1.0)
    greedy = scheduler.submit(PROMPTS[0], max_new_tokens=10)
    s, g = sampled.result(), greedy.result()
    scheduler.close()
    assert g == greedy_alone
    assert len(s) == 10 and all(0 <= t < VOCAB for t in s)


def test_close_fails_waiting_requests(model):
    scheduler = BatchScheduler(model, max_batch=1)
    running = scheduler.submit([1, 2], max_new_tokens=10**7)
    waiting = scheduler.submit([3, 4], max_new_tokens=3)
    tokens = running.tokens()
    next(tokens)
    scheduler.close()
    with pytest.raises(GeneratorError, match="closed"):
        waiting.result()
    with pytest.raises(GeneratorError, match="closed"):
        list(tokens)
    with pytest.raises(GeneratorError, match="closed"):
        scheduler.submit([1], max_new_tokens=1)


# --- the policy's side -----------------------------------------------------------------------------------

def test_slots_hand_their_deadline_to_the_work():
    slots = GeneratorSlots(1, 1.0, timeout_s=30.0)
    before = time.monotonic()
    seen = slots.run(current_deadline)
    assert before + 29.0 < seen <= time.monotonic() + 30.0
    streamed = list(slots.stream(lambda: iter([current_deadline()])))
    assert streamed[0] is not None and before + 29.0 < streamed[0]
    assert current_deadline() is None  # outside the slots: none
    assert GeneratorSlots(1, 1.0, timeout_s=None).run(current_deadline) is None


def test_slot_timeout_ends_the_decoding_and_releases_the_slot(model):
    scheduler = BatchScheduler(model, max_batch=1)
    slots = GeneratorSlots(1, 5.0, timeout_s=0.3)
    decodings = []

    def generate():
        d = scheduler.submit([1, 2, 3], max_new_tokens=10**7, deadline=current_deadline(), timeout_s=0.3)
        decodings.append(d)
        return d.result()

    with pytest.raises(GeneratorTimeout):
        slots.run(generate)
    assert _wait_until(lambda: slots.in_use == 0 and scheduler.active == 0)
    scheduler.close()
    assert decodings[0].outcome == "expired"


@pytest.mark.parametrize("settings, cuda, limit", [
    (GeneratorSettings(), False, 2),
    (GeneratorSettings(), True, 32),
    (GeneratorSettings(max_batch=8), True, 8),
    (GeneratorSettings(max_concurrent=5), True, 5),
    (GeneratorSettings(max_concurrent=5), False, 5),
])
def test_max_concurrent_by_hardware(settings, cuda, limit):
    assert concurrency_limit(settings, cuda=cuda) == limit


def test_scheduler_thread_starts_on_first_request(model):
    scheduler = BatchScheduler(model, max_batch=1, name="generate-batch-test")
    assert not any(t.name == "generate-batch-test" for t in threading.enumerate())
    scheduler.submit([1], max_new_tokens=1).result()
    assert any(t.name == "generate-batch-test" for t in threading.enumerate())
    scheduler.close()
    assert not any(t.name == "generate-batch-test" for t in threading.enumerate())
