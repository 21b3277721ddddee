"""The `openai` backend against a real OpenAI-compatible server: `transformers serve` with the bundled SmolLM2
(dequantized into the session's model cache), started on a free loopback port, offline.

Non-streamed and streamed text come from the server (greedy decoding: the same text both ways); a generation
past `generator.timeout_s`, and a server killed mid-stream, give the extractive answer with the reason in
`fallback`; a server that is gone is tried twice (one retry on a connection error) before the error. Marked
`server` (and `slow`: a real generative model); `.ci/run` runs it. The kill test stops the module's server, so it
runs last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag.generators import GeneratorError
from tests.conftest import make_settings
from tests.engines import free_port, wait_for_port

pytestmark = [pytest.mark.server, pytest.mark.slow]

QUESTION = "How often do investors rebalance?"


def _serve_missing() -> str | None:
    from transformers.utils.import_utils import is_serve_available

    return None if is_serve_available() else ("transformers serve needs fastapi, uvicorn and openai "
                                               "(pip install -e '.[server]'; scripts/setup does it)")


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    missing = _serve_missing()
    if missing:
        pytest.skip(missing)
    from rag.config import GeneratorSettings
    from rag.generators.transformers_backend import resolve_model

    folder = resolve_model(GeneratorSettings().model, models_dir)
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", str(folder),
                             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_port(port, timeout=180, proc=proc)
        yield proc, f"http://127.0.0.1:{port}/v1", str(folder)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()


def _app(built_home, server, **generator):
    from rag.application import Application

    settings, _ = built_home
    _, url, model = server
    gen = {"backend": "openai", "openai_base_url": url, "openai_model": model, "max_new_tokens": 16,
           "max_concurrent": 1, **generator}
    return Application(make_settings(settings.home_path, settings.models_dir, embedder=settings.embedder,
                                     generator=gen))


@pytest.fixture(scope="module")
def extractive(application):
    return application.ask(QUESTION, backend="extractive")


def test_non_streamed_and_streamed_text_come_from_the_server(built_home, server):
    from rag.generators.openai_backend import OpenAIGenerator

    app = _app(built_home, server)
    try:
        gen = OpenAIGenerator(app.settings.generator)
        messages = [{"role": "user", "content": "Name one primary colour."}]
        text = gen.generate(messages, max_new_tokens=12)
        pieces = list(gen.stream(messages, max_new_tokens=12))
        assert text
        assert len(pieces) >= 2  # streamed piece by piece, not in one block
        assert "".join(pieces).strip() == text
        answer = app.ask(QUESTION)
        assert answer.backend == "openai"
        assert not (answer.fallback or "").startswith(("generator error", "generator unavailable", "the generator "
                                                                                                  "timed out"))
    finally:
        app.close()


def test_a_generation_past_the_timeout_falls_back_to_extractive(built_home, server, extractive):
    app = _app(built_home, server, timeout_s=0.05, max_new_tokens=64)
    try:
        answer = app.ask(QUESTION)
    finally:
        app.close()
    assert answer.backend == "openai"
    assert answer.fallback == "the generator timed out after 0.05 s"
    assert answer.answer == extractive.answer


def test_a_server_killed_mid_stream_gives_the_extractive_answer_with_the_reason(built_home, server, extractive):
    proc, _, _ = server
    app = _app(built_home, server, max_new_tokens=200)
    try:
        events = iter(app.ask_stream(QUESTION))
        kinds = []
        for ev in events:
            kinds.append(ev.type)
            if ev.type == "token":
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
                break
        rest = list(events)
    finally:
        app.close()
    assert kinds[-1] == "token"
    done = rest[-1]
    assert done.type == "done"
    final = done.data
    assert final.fallback.startswith("generator error: stream from")
    assert "failed after" in final.fallback
    assert final.answer == extractive.answer
    # The server is gone now: a request is tried twice (one retry on a connection error), then fails.
    from rag.generators.openai_backend import OpenAIGenerator

    with pytest.raises(GeneratorError, match="tried 2 times"):
        OpenAIGenerator(app.settings.generator).generate([{"role": "user", "content": "hi"}], max_new_tokens=4)
