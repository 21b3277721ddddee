"""`rag serve` as a real process: a free localhost port, a tmp RAG_HOME with a built index, real HTTP (httpx)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from test_service import DOCS, write_docs

READER = {"X-API-Key": "proc-reader-key"}
ADMIN = {"X-API-Key": "proc-admin-key"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rag_command() -> list[str]:
    script = Path(sys.executable).parent / "rag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir):
    from indexer.build import build
    from rag.config import load_settings

    root = tmp_path_factory.mktemp("proc")
    home = root / "home"
    corpus = write_docs(root / "corpus")
    demo = root / "demo"
    demo.mkdir()
    (demo / "users.jsonl").write_text(json.dumps({"user_id": "u-demo", "name": "Demo", "interests": ["vaccines"],
                                                  "domains": ["medical"]}) + "\n")
    (demo / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
        {"user_id": "u-demo", "doc_id": "svc-vaccines", "type": "like", "ts": "2025-06-01T10:00:00Z"},
        {"user_id": "u-demo", "doc_id": "svc-hypertension", "type": "view", "ts": "2025-06-02T10:00:00Z"}]))
    report = build(load_settings(environ={}, home=str(home), model_cache=str(models_dir)), [corpus],
                   show_progress=False)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"RAG_HOME": str(home), "RAG_MODEL_CACHE": str(models_dir), "HF_HUB_OFFLINE": "1",
                "RAG_GENERATOR__BACKEND": "extractive",
                "RAG_SERVICE__API_KEYS": json.dumps({"proc-reader-key": "reader", "proc-admin-key": "admin"}),
                "RAG_SERVICE__RATE_LIMIT_PER_MINUTE": "100000"})
    log_path = root / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([*rag_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--load-demo", str(demo)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                ready = True
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    if not ready:
        proc.kill()
        proc.wait(10)
        log.close()
        pytest.fail(f"rag serve did not become ready; log:\n{log_path.read_text(errors='replace')[-4000:]}")
    yield base, report, log_path, env, corpus
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(10)
    log.close()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so the exit status says why it stopped
    assert rc in (0, -signal.SIGTERM), log_path.read_text(errors="replace")[-4000:]
    assert "Application shutdown complete" in log_path.read_text(errors="replace")


def test_ready_health_and_json_logs(server):
    base, report, log_path, _, _ = server
    r = httpx.get(f"{base}/ready")
    assert r.json()["generation_id"] == report.generation_id and r.json()["documents"] == len(DOCS)
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    r = httpx.get(f"{base}/health", headers={"X-Request-ID": "proc-req-1"})
    assert r.headers["x-request-id"] == "proc-req-1"
    time.sleep(0.3)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert any(x.get("msg", "").startswith("listening on http://127.0.0.1:") for x in lines)
    req = [x for x in lines if x.get("request_id") == "proc-req-1"]
    assert req and req[0]["route"] == "/health" and req[0]["status"] == 200 and "duration_ms" in req[0]


def test_search_over_http(server):
    base, report, _, _, _ = server
    r = httpx.post(f"{base}/v1/search", json={"query": "ETF expense ratio", "top_k": 3}, headers=READER)
    assert r.status_code == 200
    assert r.json()["hits"][0]["doc_id"] == "svc-etf"
    assert r.headers["x-generation-id"] == report.generation_id == r.json()["generation_id"]
    r = httpx.post(f"{base}/v1/search", json={"query": "vaccines", "mode": "keyword",
                                              "filters": {"domain": "medical"}}, headers=READER)
    assert {h["metadata"]["domain"] for h in r.json()["hits"]} == {"medical"}


def test_ask_and_stream_over_http(server):
    base, report, _, _, _ = server
    r = httpx.post(f"{base}/v1/ask", json={"question": "How should blood pressure be measured at home?"},
                   headers=READER, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["citations"] and body["generation_id"] == report.generation_id and not body["abstained"]

    kinds, done = [], None
    with httpx.stream("POST", f"{base}/v1/ask", json={"question": "When is the MMR vaccine given?",
                                                      "stream": True}, headers=READER, timeout=60) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in s.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                kinds.append(event)
            elif line.startswith("data:") and event == "done":
                done = json.loads(line[5:])
    assert kinds[0] == "retrieval" and kinds[-1] == "done" and "token" in kinds
    assert done["generation_id"] == report.generation_id
    assert {c["doc_id"] for c in done["citations"]} == {"svc-vaccines"}


def test_bad_input_and_auth_over_http(server):
    base, _, _, _, _ = server
    r = httpx.post(f"{base}/v1/search", json={"query": "x", "mode": "psychic"}, headers=READER)
    assert r.status_code == 400 and r.json()["error"]["field"] == "mode"
    r = httpx.post(f"{base}/v1/search", content=b"{nope", headers={**READER, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_body"
    r = httpx.post(f"{base}/v1/ask", json={"question": ""}, headers=READER)
    assert r.status_code == 400 and r.json()["error"]["field"] == "question"
    r = httpx.post(f"{base}/v1/search", json={"query": "x"})
    assert r.status_code == 401 and r.json()["error"]["request_id"] == r.headers["x-request-id"]
    r = httpx.post(f"{base}/v1/search", json={"query": "x"}, headers={"Authorization": "Bearer proc-reader-key"})
    assert r.status_code == 200
    r = httpx.get(f"{base}/v1/admin/index/generations", headers=READER)
    assert r.status_code == 403
    r = httpx.get(f"{base}/v1/admin/index/generations", headers=ADMIN)
    assert r.status_code == 200 and r.json()[0]["published"]
    r = httpx.get(f"{base}/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert "rag_http_requests_total" in httpx.get(f"{base}/metrics").text
    assert httpx.get(f"{base}/schema/openapi.json").json()["info"]["title"] == "RAG service API"


def test_demo_data_was_loaded_before_serving(server):
    base, _, log_path, _, _ = server
    r = httpx.get(f"{base}/v1/users/u-demo/recommendations", params={"k": 3}, headers=READER)
    assert r.status_code == 200 and r.json()["strategy"] == "personalized"
    assert "svc-vaccines" not in {i["doc_id"] for i in r.json()["items"]}  # seen
    assert "demo data loaded" in log_path.read_text()


def test_a_build_by_the_cli_in_another_process_is_served_without_restart(server):
    base, report, _, env, corpus = server
    done = subprocess.run([*rag_command(), "index", "build", "--quiet", "--json", "--force", str(corpus)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    new_id = json.loads(done.stdout)["generation_id"]
    assert new_id != report.generation_id
    deadline = time.monotonic() + 30
    seen = None
    while time.monotonic() < deadline:  # the service polls the published pointer (generation_poll_s)
        r = httpx.post(f"{base}/v1/search", json={"query": "vaccines"}, headers=READER)
        assert r.status_code == 200
        seen = r.headers["x-generation-id"]
        if seen == new_id:
            break
        time.sleep(0.3)
    assert seen == new_id
    assert httpx.get(f"{base}/ready").json()["generation_id"] == new_id
