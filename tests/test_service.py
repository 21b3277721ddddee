"""The HTTP service end to end, through the real Litestar app (TestClient), on a real small index built once
for this module with the real MiniLM embedder and the extractive generator backend."""

from __future__ import annotations

import collections
import json
import logging
import os
import textwrap
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from litestar.testing import TestClient  # noqa: E402

from indexer.build import Indexer  # noqa: E402
from rag import snapshot_files  # noqa: E402
from rag.application import Application  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.generators import GeneratorBusy, GeneratorSlots, GeneratorTimeout  # noqa: E402
from service.app import create_app  # noqa: E402
from service.errors import http_headers, http_status  # noqa: E402
from service.limits import TokenBuckets  # noqa: E402

READER = {"X-API-Key": "reader-key-123"}
ADMIN = {"X-API-Key": "admin-key-456"}
KEYS = {"reader-key-123": "reader", "admin-key-456": "admin"}

DOCS = {
    "finance/etf.md": ("svc-etf", "finance", "en", ["investing", "etfs"], "2025-02-10", """
        # Exchange-traded funds
        An exchange-traded fund (ETF) holds a basket of securities and trades on a stock exchange like a share.
        Most ETFs track an index such as the S&P 500. Their expense ratios are usually below 0.2 percent a year.

        ## Rebalancing
        Rebalancing means selling assets that grew above their target weight and buying those below it.
        Many investors rebalance once a year or when an allocation drifts by more than five percentage points.
        """),
    "finance/mortgage.md": ("svc-mortgage", "finance", "en", ["mortgage", "loans"], "2024-11-01", """
        # Fixed and variable mortgages
        A fixed-rate mortgage keeps the same interest rate for the whole term, so monthly payments never change.
        A variable-rate mortgage follows a reference rate; payments rise when central banks raise rates.
        """),
    "medical/hypertension.md": ("svc-hypertension", "medical", "en", ["blood pressure"], "2025-03-01", """
        # Measuring blood pressure at home
        Hypertension is diagnosed when blood pressure stays at or above 130/80 mmHg on repeated measurements.
        Measure at the same time each morning, seated, after five minutes of rest, with the cuff at heart level.
        Avoid caffeine and exercise for 30 minutes before measuring.
        """),
    "medical/vaccines.md": ("svc-vaccines", "medical", "en", ["vaccines", "children"], "2024-09-15", """
        # Childhood vaccination schedule
        The measles, mumps and rubella (MMR) vaccine is given in two doses: at 12 to 15 months and at 4 to 6 years.
        Influenza vaccination is recommended every year for everyone older than six months.
        """),
    "education/formative.md": ("svc-formative", "education", "en", ["assessment"], "2025-04-20", """
        # Formative assessment
        Formative assessment checks understanding during learning so that teaching can adjust.
        Exit tickets, mini whiteboards and think-pair-share are quick formative techniques.
        """),
    "education/study.md": ("svc-study", "education", "en", ["study skills"], "2025-06-01", """
        # Study skills that work
        Spaced repetition spreads review sessions over days and weeks instead of cramming the night before.
        Retrieval practice, such as self-testing with flashcards, improves long-term memory more than rereading.
        """),
}


def write_docs(root: Path, docs: dict = DOCS) -> Path:
    for rel, (doc_id, domain, lang, tags, date, body) in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = textwrap.dedent(body).strip()
        title = body.splitlines()[0][2:]
        front = (f"---\nid: {doc_id}\ntitle: \"{title}\"\ndomain: {domain}\nlanguage: {lang}\n"
                 f"tags: [{', '.join(tags)}]\naudience: general\ndate: {date}\nsource: service test corpus\n---\n")
        path.write_text(front + body + "\n", encoding="utf-8")
    return root


def settings_for(home: Path, models_dir: Path, **service):
    svc = {"api_keys": KEYS, "rate_limit_per_minute": 100_000, **service}
    return load_settings(environ={}, home=str(home), model_cache=str(models_dir), generator={"backend": "extractive"},
                         service=svc)


@pytest.fixture(scope="module")
def built(tmp_path_factory, models_dir):
    from indexer.build import build

    root = tmp_path_factory.mktemp("svc")
    corpus = write_docs(root / "corpus")
    settings = settings_for(root / "home", models_dir)
    report = build(settings, [corpus], show_progress=False)
    return settings, report


@pytest.fixture(scope="module")
def application(built):
    settings, _ = built
    return Application(settings, builder=Indexer())


@pytest.fixture(scope="module")
def client(built, application):
    settings, _ = built
    with TestClient(create_app(settings, application), raise_server_exceptions=False) as c:
        yield c


def err(r) -> dict:
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in r.text
    return body["error"]


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if event:
            out.append((event, json.loads("\n".join(data)) if data else {}))
    return out


# --- health, readiness, metrics, schema ---------------------------------------------------------------------

def test_health_ready_and_generation_header(client, built):
    _, report = built
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["generation_id"] == report.generation_id
    assert body["embedder"] == "e5-small" and body["documents"] == len(DOCS)
    assert r.headers["x-generation-id"] == report.generation_id
    assert r.headers["x-request-id"]


def test_ready_is_503_without_a_generation_but_the_service_starts(tmp_path, models_dir):
    settings = settings_for(tmp_path / "empty", models_dir)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.get("/ready")
        assert r.status_code == 503
        assert r.json()["status"] == "not_ready" and "no index generation" in r.json()["reason"]
        assert c.get("/health").status_code == 200
        r = c.post("/v1/search", json={"query": "etf"}, headers=READER)
        assert r.status_code == 503
        e = err(r)
        assert e["code"] == "no_index" and "rebuild" in e["hint"]
        assert r.headers["retry-after"]


def test_openapi_document_and_interactive_page(client):
    r = client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    for p in ("/v1/ask", "/v1/search", "/v1/summarize", "/v1/users/{user_id}/recommendations",
              "/v1/items/{doc_id}/similar", "/v1/trending", "/v1/events", "/v1/documents",
              "/v1/documents/{doc_id}", "/v1/admin/index/rebuild", "/v1/admin/jobs/{job_id}",
              "/v1/admin/index/generations", "/v1/admin/index/rollback", "/health", "/ready", "/metrics"):
        assert p in paths, p
    ask = doc["components"]["schemas"]["AskRequest"]
    assert ask["properties"]["question"]["maxLength"] == 2000
    assert ask["properties"]["question"]["minLength"] == 1
    assert "examples" in ask["properties"]["question"] or "example" in ask["properties"]["question"]
    assert {"ApiKey", "Bearer"} <= set(doc["components"]["securitySchemes"])
    assert "400" in paths["/v1/search"]["post"]["responses"]
    page = client.get("/schema")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert client.get("/schema/swagger").status_code == 200


def test_metrics_expose_requests_stages_and_generation(client, built):
    _, report = built
    client.post("/v1/search", json={"query": "expense ratio", "top_k": 2}, headers=READER)
    text = client.get("/metrics").text
    assert 'rag_http_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert 'rag_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/search",status="200"}' \
        in text
    assert 'rag_stage_duration_seconds_count{operation="search",stage="embed"}' in text
    assert f'rag_generation_info{{embedder="e5-small",generation_id="{report.generation_id}"}} 1.0' in text
    assert "rag_generation_swaps_total" in text


def test_request_id_is_echoed_and_logged(client, caplog):
    with caplog.at_level(logging.INFO, logger="service.access"):
        r = client.post("/v1/search", json={"query": "mortgage rates"}, headers={**READER, "X-Request-ID": "abc-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    rec = next(x for x in caplog.records if getattr(x, "request_id", None) == "abc-123")
    assert rec.route == "/v1/search" and rec.status == 200 and rec.duration_ms > 0
    assert rec.generation_id == r.json()["generation_id"]
    from service.request_log import JsonFormatter

    line = json.loads(JsonFormatter().format(rec))
    assert line["request_id"] == "abc-123" and line["msg"] == "request"
    # an unusable id is replaced, not echoed
    r = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 32


# --- errors ------------------------------------------------------------------------------------------------

def test_unknown_route_bad_json_and_unknown_fields(client):
    r = client.get("/v1/nope", headers=READER)
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = client.get("/definitely/not/here")
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = client.post("/v1/search", content=b'{"query": ', headers={**READER, "Content-Type": "application/json"})
    assert r.status_code == 400 and err(r)["code"] == "malformed_body"
    r = client.post("/v1/search", json={"query": "x", "topk": 3}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "topk"
    r = client.post("/v1/search", json=["not", "an", "object"], headers=READER)
    assert r.status_code == 400
    r = client.delete("/v1/search", headers=READER)
    assert r.status_code == 405 and err(r)["code"] == "method_not_allowed"


# --- auth and limits ---------------------------------------------------------------------------------------

def test_auth_missing_invalid_reader_admin_and_bearer(client):
    r = client.post("/v1/search", json={"query": "etf"})
    assert r.status_code == 401 and err(r)["code"] == "unauthorized"
    assert "Bearer" in r.headers["www-authenticate"]
    r = client.post("/v1/search", json={"query": "etf"}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and "invalid" in err(r)["message"]
    assert client.post("/v1/search", json={"query": "etf"},
                       headers={"Authorization": "Bearer reader-key-123"}).status_code == 200
    r = client.get("/v1/admin/index/generations", headers=READER)
    assert r.status_code == 403 and err(r)["code"] == "forbidden"
    assert client.get("/v1/admin/index/generations", headers=ADMIN).status_code == 200
    r = client.post("/v1/documents", json={"id": "x1", "title": "t", "text": "b", "domain": "finance"},
                    headers=READER)
    assert r.status_code == 403
    # open endpoints need no key
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200


def test_no_keys_refuses_everything_and_open_mode_lets_everyone_in(built, application):
    settings, _ = built
    closed = settings_for(settings.home_path, settings.models_dir, api_keys={})
    with TestClient(create_app(closed, application), raise_server_exceptions=False) as c:
        r = c.post("/v1/search", json={"query": "etf"}, headers=ADMIN)
        assert r.status_code == 401 and "no API keys are configured" in err(r)["message"]
    opened = settings_for(settings.home_path, settings.models_dir, api_keys={}, open_mode=True)
    with TestClient(create_app(opened, application), raise_server_exceptions=False) as c:
        assert c.post("/v1/search", json={"query": "etf"}).status_code == 200
        assert c.get("/v1/admin/index/generations").status_code == 200


def test_rate_limit_is_per_key_with_retry_after(built, application):
    settings, _ = built
    limited = settings_for(settings.home_path, settings.models_dir, rate_limit_per_minute=3)
    with TestClient(create_app(limited, application), raise_server_exceptions=False) as c:
        codes = [c.get("/v1/trending", headers=READER).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/v1/trending", headers=READER)
        assert r.status_code == 429 and err(r)["code"] == "rate_limited"
        assert 1 <= int(r.headers["retry-after"]) <= 20
        # another key has its own bucket; health is never limited
        assert c.get("/v1/trending", headers=ADMIN).status_code == 200
        assert all(c.get("/health").status_code == 200 for _ in range(5))
        assert "rag_rate_limited_total 2.0" in c.get("/metrics").text


def test_token_bucket_refills():
    now = [0.0]
    b = TokenBuckets(60, clock=lambda: now[0])  # one a second, burst 60
    assert all(b.take("k")[0] for _ in range(60))
    ok, _, wait = b.take("k")
    assert not ok and 0.9 < wait <= 1.0
    now[0] += 1.0
    assert b.take("k")[0]


def test_body_limit_document_limit_and_cors(built):
    settings, _ = built
    tight = settings_for(settings.home_path, settings.models_dir, max_body_bytes=4000, max_document_bytes=1000,
                         cors_origins=["http://frontend.example"])
    # The body limit is the HTTP layer's, the document limit the documents store's: both from `tight`.
    with TestClient(create_app(tight, Application(tight, builder=Indexer())), raise_server_exceptions=False) as c:
        r = c.post("/v1/search", json={"query": "x" * 5000}, headers=READER)
        assert r.status_code == 413 and err(r)["code"] == "payload_too_large"
        doc = {"id": "too-big", "title": "Big", "text": "word " * 500, "domain": "finance"}
        r = c.post("/v1/documents", json=doc, headers=ADMIN)
        assert r.status_code == 413 and err(r)["field"] == "text"
        r = c.options("/v1/search", headers={"Origin": "http://frontend.example",
                                             "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "http://frontend.example"
        r = c.post("/v1/search", json={"query": "etf"}, headers={**READER, "Origin": "http://frontend.example"})
        assert r.headers["access-control-allow-origin"] == "http://frontend.example"
        assert "x-generation-id" in r.headers["access-control-expose-headers"].lower()


def test_generator_slots_bound_concurrency_then_503_with_retry_after():
    slots = GeneratorSlots(1, queue_timeout_s=0.2, timeout_s=5)
    lease = slots.reserve()
    assert slots.in_use == 1
    with pytest.raises(GeneratorBusy) as e:
        slots.reserve()
    assert http_status(e.value) == 503 and http_headers(e.value)["Retry-After"] == "1"  # the library's Busy
    lease.release()
    assert slots.in_use == 0
    assert slots.run(lambda: 42) == 42 and slots.in_use == 0
    quick = GeneratorSlots(1, queue_timeout_s=0.2, timeout_s=0.1)
    with pytest.raises(GeneratorTimeout):
        quick.run(lambda: time.sleep(1.0))
    assert quick.in_use == 1  # the abandoned thread still holds its slot until it finishes
    time.sleep(1.2)
    assert quick.in_use == 0


class SlowGenerator:
    """Stands in for a generative backend: slow enough to hit timeouts and fill generation slots."""

    name = "slow"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def generate(self, messages, *, max_new_tokens, temperature=0.0):
        time.sleep(self.seconds)
        return "Rebalance once a year [1]."

    def stream(self, messages, *, max_new_tokens, temperature=0.0):
        time.sleep(self.seconds)
        yield "Rebalance once a year [1]."

    def generate_batch(self, batch, *, max_new_tokens):
        return [self.generate(m, max_new_tokens=max_new_tokens) for m in batch]


def with_slow_transformers(settings) -> Application:
    """An application over the module's index whose `transformers` backend is a 1.5 s stub."""
    application = Application(settings, builder=Indexer())
    application.generators.register("transformers", SlowGenerator(1.5))
    return application


def test_generation_timeout_falls_back_to_the_extractive_answer(built):
    settings, _ = built
    quick = settings_for(settings.home_path, settings.models_dir)
    quick.generator.timeout_s = 0.3
    with TestClient(create_app(quick, with_slow_transformers(quick)), raise_server_exceptions=False) as c:
        r = c.post("/v1/ask", json={"question": "How often should I rebalance?", "backend": "transformers"},
                   headers=READER)
        assert r.status_code == 200, r.text
        body = r.json()
        assert "timed out" in body["fallback"] and body["backend"] == "transformers"
        assert body["citations"] and not body["abstained"]


def test_generation_slots_full_is_503_with_retry_after(built):
    from concurrent.futures import ThreadPoolExecutor

    settings, _ = built
    one = settings_for(settings.home_path, settings.models_dir, queue_timeout_s=0.2)
    one.generator.max_concurrent = 1
    with TestClient(create_app(one, with_slow_transformers(one)), raise_server_exceptions=False) as c:
        def ask(_):
            return c.post("/v1/ask", json={"question": "How often should I rebalance?", "backend": "transformers"},
                          headers=READER)

        with ThreadPoolExecutor(3) as ex:
            rs = list(ex.map(ask, range(3)))
        codes = sorted(r.status_code for r in rs)
        assert codes[0] == 200 and 503 in codes, [r.text for r in rs]
        busy = next(r for r in rs if r.status_code == 503)
        assert err(busy)["code"] == "busy" and busy.headers["retry-after"] == "1"
        # extractive answers need no slot: they are not held up by the slow generation
        assert c.post("/v1/ask", json={"question": "What is an ETF?", "backend": "extractive"},
                      headers=READER).status_code == 200


# --- search ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_search_modes(client, built, mode):
    _, report = built
    r = client.post("/v1/search", json={"query": "ETF expense ratio", "mode": mode, "top_k": 3}, headers=READER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == mode and body["generation_id"] == report.generation_id
    assert r.headers["x-generation-id"] == report.generation_id
    assert 1 <= len(body["hits"]) <= 3
    top = body["hits"][0]
    assert top["doc_id"] == "svc-etf" and top["chunk_id"].startswith("svc-etf#")
    assert top["title"] and top["text"] and top["metadata"]["domain"] == "finance"
    legs = top["legs"]
    if mode in ("dense", "hybrid"):
        assert legs["dense_rank"] >= 1 and "embed_ms" in body["timings_ms"]
    if mode in ("keyword", "hybrid"):
        assert legs["keyword_rank"] >= 1 and "keyword_ms" in body["timings_ms"]


def test_search_returns_documents_ranked_by_their_best_passage(client, built, monkeypatch, capsys):
    """`results: "documents"`: one hit per document, its best passage, in the order of the documents' first passages
    among the chunk results; the CLI's --results gives the same."""
    from service.cli import main

    query = "vaccination schedule for children"
    chunks = client.post("/v1/search", json={"query": query, "top_k": 30}, headers=READER).json()
    docs = client.post("/v1/search", json={"query": query, "top_k": 4, "results": "documents"}, headers=READER).json()
    assert chunks["results"] == "chunks" and docs["results"] == "documents"
    ids = [h["doc_id"] for h in docs["hits"]]
    assert len(ids) == 4 and len(set(ids)) == 4
    firsts = {}
    for h in chunks["hits"]:
        firsts.setdefault(h["doc_id"], h["chunk_id"])
    assert list(firsts)[:4] == ids  # documents in the order of their best passage
    assert [h["chunk_id"] for h in docs["hits"]] == [firsts[d] for d in ids]  # each by that passage
    assert any(n > 1 for n in collections.Counter(h["doc_id"] for h in chunks["hits"]).values())  # chunks repeat
    settings, _ = built
    monkeypatch.setenv("RAG_MODEL_CACHE", str(settings.models_dir))
    assert main(["--home", str(settings.home_path), "search", query, "--top-k", "4", "--results", "documents",
                 "--json"]) == 0
    assert [h["doc_id"] for h in json.loads(capsys.readouterr().out)["hits"]] == ids
    r = client.post("/v1/search", json={"query": query, "results": "pages"}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "results"


def test_search_filters_are_respected(client):
    body = client.post("/v1/search", json={"query": "ETF expense ratio", "filters": {"domain": "medical"},
                                           "top_k": 5}, headers=READER).json()
    assert body["hits"] and {h["metadata"]["domain"] for h in body["hits"]} == {"medical"}
    body = client.post("/v1/search", json={"query": "vaccines", "domain": "education"}, headers=READER).json()
    assert {h["metadata"]["domain"] for h in body["hits"]} == {"education"}
    body = client.post("/v1/search", json={"query": "schedule", "filters": {"tags": ["children"],
                                                                           "date_to": "2024-12-31"}},
                       headers=READER).json()
    assert {h["doc_id"] for h in body["hits"]} == {"svc-vaccines"}
    body = client.post("/v1/search", json={"query": "rates", "filters": {"doc_ids": ["svc-mortgage"]}},
                       headers=READER).json()
    assert {h["doc_id"] for h in body["hits"]} == {"svc-mortgage"}


def test_domain_shortcut_and_filters_both_apply(client):
    body = client.post("/v1/search", json={"query": "vaccines", "domain": "medical",
                                           "filters": {"domain": ["medical", "finance"]}}, headers=READER).json()
    assert body["hits"] and {h["metadata"]["domain"] for h in body["hits"]} == {"medical"}
    r = client.post("/v1/search", json={"query": "vaccines", "domain": "finance", "filters": {"domain": "medical"}},
                    headers=READER)
    assert r.status_code == 200 and r.json()["hits"] == []
    r = client.post("/v1/search", json={"query": "vaccines", "filters": {"date_from": "2025-02-01",
                                                                         "date_to": "2025-01-01"}}, headers=READER)
    assert r.status_code == 200 and r.json()["hits"] == []


def test_search_bad_input_names_the_field(client):
    cases = [({"query": "x", "mode": "fuzzy"}, "mode"), ({"query": ""}, "query"), ({"query": "   "}, "query"),
             ({"query": "x", "top_k": 0}, "top_k"), ({"query": "x", "top_k": 51}, "top_k"),
             ({"query": "x", "rerank": True}, "rerank"), ({"mode": "dense"}, "query"),
             ({"query": "x", "filters": {"domain": "sports"}}, "filters.domain"),
             ({"query": "x", "filters": {"date_from": "2025-13-01"}}, "filters.date_from"),
             ({"query": "q" * 2001}, "query"), ({"query": "x", "rerank": 0}, "rerank"),
             ({"query": "x", "top_k": "5"}, "top_k"), ({"query": "x", "filters": {"tags": [""]}}, "filters.tags[0]")]
    for body, field in cases:
        r = client.post("/v1/search", json=body, headers=READER)
        assert r.status_code == 400, (body, r.text)
        e = err(r)
        assert e["field"] == field, (body, e)
        assert e["code"] == "validation_error"


# --- ask ---------------------------------------------------------------------------------------------------

def test_ask_plain(client, built):
    _, report = built
    r = client.post("/v1/ask", json={"question": "How often should I rebalance my portfolio?", "top_k": 4,
                                     "user_id": "u-ask"}, headers=READER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generation_id"] == report.generation_id == r.headers["x-generation-id"]
    assert body["abstained"] is False and body["answer"]
    assert body["backend"] == "extractive"
    assert body["citations"] and body["citations"][0]["doc_id"] == "svc-etf"
    c = body["citations"][0]
    assert {"n", "doc_id", "chunk_id", "title", "span"} <= set(c)
    assert f"[{c['n']}]" in body["answer"]
    assert body["passages"] and body["timings_ms"]
    assert body["disclaimer"]  # finance


def test_ask_abstains_when_the_documents_do_not_say(client):
    r = client.post("/v1/ask", json={"question": "Who won the 1998 football world cup final?"}, headers=READER)
    assert r.status_code == 200
    body = r.json()
    assert body["abstained"] is True and body["citations"] == []


def test_ask_stream_event_order_and_done_payload(client, built):
    _, report = built
    r = client.post("/v1/ask", json={"question": "How is hypertension measured at home?", "stream": True},
                    headers=READER)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-generation-id"] == report.generation_id
    events = sse_events(r.text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "retrieval" and kinds[-1] == "done", kinds
    assert "error" not in kinds and "token" in kinds
    first_token, last_token = kinds.index("token"), len(kinds) - 1 - kinds[::-1].index("token")
    assert all(k == "token" for k in kinds[first_token:last_token + 1])
    assert all(k == "citation" for k in kinds[last_token + 1:-1])
    retrieval = events[0][1]
    assert retrieval["passages"] and retrieval["generation_id"] == report.generation_id
    done = events[-1][1]
    assert done["generation_id"] == report.generation_id
    assert done["abstained"] is False and done["citations"]
    assert {c["doc_id"] for c in done["citations"]} == {"svc-hypertension"}
    assert "timings_ms" in done
    streamed = "".join(d.get("text", "") for k, d in events if k == "token")
    assert streamed.strip() == done["answer"].strip()
    cited = [d for k, d in events if k == "citation"]
    assert [c["n"] for c in cited] == [c["n"] for c in done["citations"]]


def test_ask_validation(client):
    for body, field in [({}, "question"), ({"question": ""}, "question"), ({"question": "x" * 2001}, "question"),
                        ({"question": "  \n "}, "question"), ({"question": "q", "top_k": 99}, "top_k"),
                        ({"question": "q", "backend": "gpt9"}, "backend"),
                        ({"question": "q", "history": [{"role": "wizard", "content": "x"}]}, "history[0].role"),
                        ({"question": "q", "filters": {"language": "english"}}, "filters.language")]:
        r = client.post("/v1/ask", json=body, headers=READER)
        assert r.status_code == 400, (body, r.text)
        assert err(r)["field"] == field, (body, r.json())


# --- summarize ---------------------------------------------------------------------------------------------

def test_summarize(client, built):
    _, report = built
    r = client.post("/v1/summarize", json={"doc_id": "svc-study", "style": "bullets", "max_words": 60},
                    headers=READER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] and body["generation_id"] == report.generation_id
    assert body["doc_ids"] == ["svc-study"]
    r = client.post("/v1/summarize", json={"query": "blood pressure", "filters": {"domain": "medical"}},
                    headers=READER)
    assert r.status_code == 200 and r.json()["summary"]
    r = client.post("/v1/summarize", json={"doc_ids": ["svc-etf", "svc-mortgage"]}, headers=READER)
    assert r.status_code == 200 and r.json()["summary"]


def test_summarize_bad_input(client):
    r = client.post("/v1/summarize", json={"doc_id": "svc-etf", "query": "x"}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "query"
    r = client.post("/v1/summarize", json={"style": "brief"}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "doc_id"
    r = client.post("/v1/summarize", json={"doc_id": "svc-etf", "style": "haiku"}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "style"
    r = client.post("/v1/summarize", json={"doc_id": "no-such-doc"}, headers=READER)
    assert r.status_code == 404 and "no-such-doc" in err(r)["message"]
    r = client.post("/v1/summarize", json={"doc_ids": ["svc-etf", "nope-2"]}, headers=READER)
    assert r.status_code == 404 and "nope-2" in err(r)["message"]


# --- recommendations and events ----------------------------------------------------------------------------

def test_events_partial_acceptance_and_recommendations(client, built):
    _, report = built
    events = [
        {"user_id": "u-rec", "doc_id": "svc-etf", "type": "like", "timestamp": "2025-06-01T10:00:00Z"},
        {"user_id": "u-rec", "doc_id": "svc-mortgage", "type": "click", "idempotency_key": "k-1"},
        {"user_id": "u-rec", "doc_id": "svc-mortgage", "type": "click", "idempotency_key": "k-1"},
        {"user_id": "u-rec", "doc_id": "svc-etf", "type": "teleport"},
        {"doc_id": "svc-etf", "type": "view"},
        {"user_id": "u-other", "doc_id": "svc-etf", "type": "view"},
        {"user_id": "u-other", "doc_id": "svc-mortgage", "type": "view"},
        {"user_id": "u-other", "doc_id": "svc-hypertension", "type": "like"},
    ]
    r = client.post("/v1/events", json={"events": events}, headers=READER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 5 and body["duplicates"] == 1
    rejected = {(x["index"], x["field"]) for x in body["rejected"]}
    assert rejected == {(3, "type"), (4, "user_id")}
    assert all(x["reason"] for x in body["rejected"])

    for bad in ({"events": []}, {"events": "nope"}, {"events": [1, 2]}, {"evnts": []},
                {"events": [{"user_id": "u"}] * 1001}):
        r = client.post("/v1/events", json=bad, headers=READER)
        assert r.status_code == 400, bad
        assert err(r)["field"].startswith("ev"), r.json()

    r = client.get("/v1/users/u-rec/recommendations", params={"k": 3}, headers=READER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generation_id"] == report.generation_id and body["strategy"] == "personalized"
    assert 1 <= len(body["items"]) <= 3
    assert not {"svc-etf", "svc-mortgage"} & {i["doc_id"] for i in body["items"]}  # seen ones excluded
    assert all(i["reason"] for i in body["items"])
    r = client.get("/v1/users/u-rec/recommendations", params={"k": 2, "explain": "true"}, headers=READER)
    assert r.status_code == 200 and all(i["blurb"] for i in r.json()["items"]), r.text
    r = client.get("/v1/users/u-rec/recommendations", params={"domain": "medical", "k": 5}, headers=READER)
    assert {i["domain"] for i in r.json()["items"]} <= {"medical"}
    r = client.get("/v1/users/nobody-yet/recommendations", headers=READER)
    assert r.status_code == 200 and r.json()["strategy"] in ("trending", "interests")
    r = client.get("/v1/users/u-rec/recommendations", params={"domain": "sports"}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "domain"
    r = client.get("/v1/users/u-rec/recommendations", params={"k": 0}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "k"


def test_out_of_range_ratings_are_rejected_with_the_configured_scale_and_the_rest_kept(client, tmp_path):
    # The default scale: 1 to 5 stars.
    r = client.post("/v1/events", headers=READER, json={"events": [
        {"user_id": "u-stars", "doc_id": "svc-etf", "type": "rating", "value": 4},
        {"user_id": "u-stars", "doc_id": "svc-mortgage", "type": "rating", "value": 0.5}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert body["rejected"] == [{"index": 1, "field": "value", "reason": "a rating must be from 1 to 5, got 0.5"}]

    # A service configured for half stars (events.rating_scale = [0.5, 5]).
    settings = load_settings(environ={"RAG_EVENTS__RATING_SCALE": "[0.5, 5]"}, home=str(tmp_path / "half"),
                             generator={"backend": "extractive"},
                             service={"api_keys": KEYS, "rate_limit_per_minute": 100_000})
    application = Application(settings, builder=Indexer())
    events = [
        {"user_id": "u-half", "doc_id": "svc-etf", "type": "rating", "value": 0.5},
        {"user_id": "u-half", "doc_id": "svc-mortgage", "type": "rating", "value": 5.5},
        {"user_id": "u-half", "doc_id": "svc-vaccines", "type": "view"},
        {"user_id": "u-half", "doc_id": "svc-study", "type": "rating", "value": 0},
        {"user_id": "u-half", "doc_id": "svc-formative", "type": "rating", "value": 4.5},
    ]
    with TestClient(create_app(settings, application), raise_server_exceptions=False) as c:
        r = c.post("/v1/events", json={"events": events}, headers=READER)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["accepted"], body["duplicates"]) == (3, 0)
        assert body["rejected"] == [
            {"index": 1, "field": "value", "reason": "a rating must be from 0.5 to 5, got 5.5"},
            {"index": 3, "field": "value", "reason": "a rating must be from 0.5 to 5, got 0"}]
        kept = application.state.execute("SELECT doc_id, type, value FROM events WHERE user_id = 'u-half' "
                                    "ORDER BY doc_id").fetchall()
        assert kept == [("svc-etf", "rating", 0.5), ("svc-formative", "rating", 4.5), ("svc-vaccines", "view", None)]
    application.state.close()


class FailingGenerator(SlowGenerator):
    def __init__(self):
        super().__init__(0.0)

    def generate_batch(self, batch, *, max_new_tokens):
        from rag.generators import GeneratorError

        raise GeneratorError("server unreachable")


def test_recommendations_report_a_generator_fallback(built):
    settings, _ = built
    events = [{"user_id": "u-blurbs", "doc_id": "svc-etf", "type": "like", "idempotency_key": "blurbs-1"}]
    for generator, reason in ((FailingGenerator(), "generator error: server unreachable"),
                              (SlowGenerator(1.5), "the generator timed out after 0.3 s")):
        configured = settings_for(settings.home_path, settings.models_dir, queue_timeout_s=5)
        configured.generator.backend = "transformers"
        configured.generator.timeout_s = 0.3
        application = Application(configured, builder=Indexer())
        application.generators.register("transformers", generator)
        with TestClient(create_app(configured, application), raise_server_exceptions=False) as c:
            assert c.post("/v1/events", json={"events": events}, headers=READER).status_code == 200
            r = c.get("/v1/users/u-blurbs/recommendations", params={"k": 2, "explain": "true"}, headers=READER)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["backend"] == "transformers" and body["fallback"] == reason
            assert len(body["items"]) == 2 and all(i["blurb"] for i in body["items"])  # the opening sentences
            plain = c.get("/v1/users/u-blurbs/recommendations", params={"k": 2}, headers=READER).json()
            assert plain["backend"] is None and plain["fallback"] is None and not any(i["blurb"] for i in plain["items"])


def test_cli_and_http_give_the_same_answer(client, built, monkeypatch, capsys):
    from service.cli import main

    settings, _ = built
    monkeypatch.setenv("RAG_GENERATOR__BACKEND", "extractive")  # what the service's settings say
    monkeypatch.setenv("RAG_MODEL_CACHE", str(settings.models_dir))
    for question in ("How often should I rebalance my portfolio?", "How is hypertension measured at home?",
                     "Who won the 1998 football world cup final?"):
        http = client.post("/v1/ask", json={"question": question}, headers=READER).json()
        assert main(["--home", str(settings.home_path), "ask", question, "--json"]) == 0
        cli = json.loads(capsys.readouterr().out)
        assert set(cli) == set(http)
        for key in set(http) - {"timings_ms"}:
            assert cli[key] == http[key], (question, key)
        assert http["citations"] or http["abstained"]


def test_similar_and_trending(client):
    r = client.get("/v1/items/svc-etf/similar", params={"k": 3}, headers=READER)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items and "svc-etf" not in {i["doc_id"] for i in items}
    assert r.json()["strategy"] == "similar"
    r = client.get("/v1/items/no-such-doc/similar", headers=READER)
    assert r.status_code == 404 and err(r)["field"] == "doc_id"
    r = client.get("/v1/trending", params={"domain": "finance", "k": 2}, headers=READER)
    assert r.status_code == 200 and {i["domain"] for i in r.json()["items"]} <= {"finance"}


# --- documents ---------------------------------------------------------------------------------------------

def test_documents_list_and_get(client, built):
    _, report = built
    r = client.get("/v1/documents", params={"limit": 2}, headers=READER)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == len(DOCS) and len(body["items"]) == 2 and body["next_offset"] == 2
    assert body["generation_id"] == report.generation_id
    seen = [i["doc_id"] for i in body["items"]]
    while body["next_offset"] is not None:
        body = client.get("/v1/documents", params={"limit": 2, "offset": body["next_offset"]},
                          headers=READER).json()
        seen += [i["doc_id"] for i in body["items"]]
    assert sorted(seen) == sorted(v[0] for v in DOCS.values())
    body = client.get("/v1/documents", params={"domain": "medical"}, headers=READER).json()
    assert {i["domain"] for i in body["items"]} == {"medical"} and body["total"] == 2
    r = client.get("/v1/documents", params={"domain": "sports"}, headers=READER)
    assert r.status_code == 400 and err(r)["field"] == "domain"
    r = client.get("/v1/documents/svc-vaccines", headers=READER)
    assert r.status_code == 200
    doc = r.json()
    assert doc["indexed"] is True and doc["in_store"] is False and doc["pending_change"] is None
    assert "measles" in doc["text"] and doc["tags"] == ["vaccines", "children"] and doc["date"] == "2024-09-15"
    r = client.get("/v1/documents/not-there", headers=READER)
    assert r.status_code == 404 and err(r)["field"] == "doc_id"
    r = client.get("/v1/documents/bad%20id", headers=READER)
    assert r.status_code == 400


def test_documents_crud_and_validation(client, built):
    settings, _ = built
    new = {"id": "svc-crud", "title": "Emergency funds", "text": "Keep three to six months of expenses.",
           "domain": "finance", "tags": ["saving"], "date": "2025-07-01"}
    r = client.post("/v1/documents", json=new, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "created" and body["indexed"] is False
    assert body["rebuild"] == {"method": "POST", "path": "/v1/admin/index/rebuild"}
    assert "/v1/admin/index/rebuild" in body["message"]
    path = settings.documents_dir / "finance" / "svc-crud.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n") and "id: svc-crud" in text and "Keep three to six months" in text
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left

    r = client.post("/v1/documents", json=new, headers=ADMIN)
    assert r.status_code == 409 and err(r)["field"] == "id"
    r = client.post("/v1/documents", json={**new, "id": "svc-etf"}, headers=ADMIN)  # exists in a read-only source
    assert r.status_code == 409 and "PUT" in err(r)["message"]

    doc = client.get("/v1/documents/svc-crud", headers=READER).json()
    assert doc["indexed"] is False and doc["in_store"] is True and doc["pending_change"] == "create"
    assert doc["title"] == "Emergency funds"

    body = {k: v for k, v in new.items() if k != "id"}
    r = client.put("/v1/documents/svc-crud", json={**body, "domain": "education", "title": "Funds"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "replaced"
    assert not path.exists() and (settings.documents_dir / "education" / "svc-crud.md").exists()
    r = client.put("/v1/documents/svc-crud", json={**new, "id": "other"}, headers=ADMIN)  # the id is the path's
    assert r.status_code == 400 and err(r)["field"] == "id"
    r = client.put("/v1/documents/svc-put", json=body, headers=ADMIN)
    assert r.status_code == 201 and r.json()["status"] == "created"
    assert client.delete("/v1/documents/svc-put", headers=ADMIN).status_code == 200

    for bad, field in [({**new, "id": "../etc/passwd"}, "id"), ({**new, "id": "-x"}, "id"),
                       ({**new, "title": ""}, "title"), ({**new, "text": "   "}, "text"),
                       ({**new, "domain": "sports"}, "domain"), ({**new, "date": "yesterday"}, "date"),
                       ({**new, "language": "English"}, "language"), ({**new, "tags": "one"}, "tags"),
                       ({k: v for k, v in new.items() if k != "title"}, "title"), ({**new, "colour": 1}, "colour"),
                       ({k: v for k, v in new.items() if k != "id"}, "id"), ({**new, "tags": [" "]}, "tags[0]"),
                       ({**new, "title": None}, "title"), ({**new, "id": "README"}, "id")]:
        r = client.post("/v1/documents", json=bad, headers=ADMIN)
        assert r.status_code == 400, (bad, r.text)
        assert err(r)["field"] == field, (bad, r.json())

    r = client.delete("/v1/documents/svc-crud", headers=ADMIN)
    assert r.status_code == 200 and r.json()["status"] == "deleted"
    assert client.get("/v1/documents/svc-crud", headers=READER).status_code == 404
    r = client.delete("/v1/documents/svc-crud", headers=ADMIN)
    assert r.status_code == 404
    r = client.delete("/v1/documents/svc-etf", headers=ADMIN)  # only in the read-only corpus
    assert r.status_code == 409 and err(r)["code"] == "read_only_source"


# --- admin: rebuild job, generations, rollback -------------------------------------------------------------

def wait_job(client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_rebuild_job_publishes_new_documents_then_rollback(client, built, application):
    settings, report = built
    first = report.generation_id
    new = {"id": "svc-new", "title": "Quokka savings plan",
           "text": "The quokkaplan is a savings scheme that rounds every purchase up to the next euro.",
           "domain": "finance", "tags": ["saving"]}
    assert client.post("/v1/documents", json=new, headers=ADMIN).status_code == 201
    assert not client.post("/v1/search", json={"query": "quokkaplan", "mode": "keyword"},
                           headers=READER).json()["hits"]

    r = client.post("/v1/admin/index/rebuild", headers=ADMIN)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["kind"] == "rebuild"
    assert str(settings.documents_dir.resolve()) in job["params"]["sources"]
    r2 = client.post("/v1/admin/index/rebuild", json={}, headers=ADMIN)
    assert r2.status_code == 409, r2.text
    e = err(r2)
    assert e["code"] == "job_running" and e["job"]["id"] == job["id"]

    done = wait_job(client, job["id"])
    assert done["state"] == "succeeded", done
    second = done["result"]["generation_id"]
    assert second != first and done["result"]["documents"] == len(DOCS) + 1
    assert done["stage"] == "done" and done["finished_at"]

    r = client.post("/v1/search", json={"query": "quokkaplan", "mode": "keyword"}, headers=READER)
    assert r.json()["generation_id"] == second == r.headers["x-generation-id"]
    assert [h["doc_id"] for h in r.json()["hits"]][:1] == ["svc-new"]
    doc = client.get("/v1/documents/svc-new", headers=READER).json()
    assert doc["indexed"] is True and doc["pending_change"] is None and doc["generation_id"] == second

    gens = client.get("/v1/admin/index/generations", headers=ADMIN).json()
    by_id = {g["id"]: g for g in gens}
    assert by_id[second]["published"] and by_id[second]["loaded"] and not by_id[first]["published"]
    assert by_id[second]["parent"] == first and by_id[second]["counts"]["documents"] == len(DOCS) + 1

    r = client.post("/v1/admin/index/rollback", json={"generation_id": first}, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"published": first, "previous": second}
    assert snapshot_files.read_pointer(settings.home_path) == first
    r = client.post("/v1/search", json={"query": "quokkaplan", "mode": "keyword"}, headers=READER)
    assert r.json()["generation_id"] == first and not r.json()["hits"]
    assert client.get("/v1/documents/svc-new", headers=READER).json()["pending_change"] == "create"
    r = client.post("/v1/admin/index/rollback", json={"generation_id": "g-nope"}, headers=ADMIN)
    assert r.status_code == 404 and err(r)["field"] == "generation_id"
    r = client.post("/v1/admin/index/rebuild", json={"sources": ["/etc"]}, headers=ADMIN)  # not an indexed source
    assert r.status_code == 400 and err(r)["field"] == "sources[0]"
    r = client.post("/v1/admin/index/rebuild", json={"embedder": "no-such-model"}, headers=ADMIN)
    assert r.status_code == 400 and err(r)["field"] == "embedder"
    assert client.get("/v1/admin/jobs/job-nope", headers=ADMIN).status_code == 404
    assert "rag_generation_swaps_total" in client.get("/metrics").text
    client.delete("/v1/documents/svc-new", headers=ADMIN)


def test_rebuild_while_another_process_holds_the_build_lock_is_409(client, built):
    from indexer.build import BuildLock

    settings, _ = built
    with BuildLock(settings.home_path):  # what `rag index build` in another process holds
        r = client.post("/v1/admin/index/rebuild", headers=ADMIN)
    assert r.status_code == 409 and "build lock" in err(r)["message"]


def test_jobs_left_running_by_a_dead_process_are_marked_failed(built, application):
    settings, _ = built
    from rag.jobs import JOBS_DDL

    application.state.ensure_schema(JOBS_DDL)
    with application.state.writer() as cur:
        cur.execute("INSERT INTO jobs (id, kind, state, created_at, params, pid) VALUES "
                    "('job-ghost', 'rebuild', 'running', now(), '{}', 999999)")
    with TestClient(create_app(settings, application), raise_server_exceptions=False) as c:
        job = c.get("/v1/admin/jobs/job-ghost", headers=ADMIN).json()
        assert job["state"] == "failed" and "interrupted" in job["error"]
        assert any(j["id"] == "job-ghost" for j in c.get("/v1/admin/jobs", headers=ADMIN).json())
