#!/usr/bin/env python
"""HTTP load on a running `rag serve`: throughput and latency percentiles, and a hot swap under load.

Phases (bounded request counts, not durations, so runs are comparable):

  search c=1, 8, 32     POST /v1/search (hybrid, top_k 8) with a rotating set of finance/medical/education
                        queries (English and Chinese, some with domain filters)
  ask    c=1, 8         POST /v1/ask with the default backend ("auto": extractive on a CPU, the retrieval +
                        answer selection + citation-checking path)
  cold   c=1            POST /v1/ask with questions asked once each (the probe's, bench/probes): no unit vector
                        is cached, so answer selection embeds its candidates (the first-time cost)
  stream c=1            POST /v1/ask with "stream": true: time to the first event (retrieval) and to done
  ask    c=1            POST /v1/ask with --ask-backends (default transformers: SmolLM2 on this machine),
                        fewer requests (--slow-ask-requests): the generative path beside the default
  swap   c=8            the search load again while POST /v1/admin/index/rebuild builds and publishes a new
                        generation: every response must be 200 and name the generation it ran on
                        (X-Generation-Id); both generation ids are reported with their request counts

Latency is client-side (request sent -> last byte), percentiles over all requests of a phase; throughput is
completed requests / phase wall time. A failed request is any non-200 or transport error.

    # start a server on a free port over an existing data home (built if it has no generation yet)
    .venv/bin/python bench/service_load.py --home /tmp/rag-bench-home --build-from data/documents
    # or against a server you run yourself (an admin key is needed for the swap phase)
    .venv/bin/python bench/service_load.py --url http://127.0.0.1:8000 --api-key KEY

Prints a table and writes bench/results/service_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "service_load.json"

QUERIES = [
    ("how often should I rebalance an index fund portfolio", None),
    ("what is an expense ratio", "finance"),
    ("difference between ETF and mutual fund", None),
    ("how does a fixed rate mortgage work", "finance"),
    ("credit score factors", None),
    ("symptoms of type 2 diabetes", "medical"),
    ("how to measure blood pressure at home", None),
    ("when should children get the MMR vaccine", "medical"),
    ("formative assessment techniques", "education"),
    ("spaced repetition and retrieval practice", None),
    ("how to teach fractions", "education"),
    ("个人所得税专项附加扣除", None),
    ("高血压 家庭测量", None),
    ("529 plan tax benefits", "finance"),
    ("inflation and the consumer price index", None),
    ("differentiated instruction strategies", "education"),
]
QUESTIONS = [
    "How often should I rebalance my portfolio?",
    "What is the 50/30/20 budgeting rule?",
    "How is type 2 diabetes diagnosed?",
    "What are quick formative assessment techniques?",
    "How do bonds react when interest rates rise?",
    "What is retrieval practice?",
    "When is the MMR vaccine given?",
    "How does a 529 plan work?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# --- server --------------------------------------------------------------------------------------------------

class Server:
    """`rag serve` of this checkout in a subprocess over HOME, with a fresh admin key and the default backend."""

    def __init__(self, home: Path, build_from: list[str], rate_limit: int, extra_env: dict | None = None):
        self.home = home
        self.extra_env = extra_env or {}
        self.build_from = build_from
        self.key = "bench-" + secrets.token_hex(8)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rate_limit = rate_limit
        self.proc: subprocess.Popen | None = None
        self.log = None

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        env.update({"RAG_HOME": str(self.home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "RAG_SERVICE__API_KEYS": json.dumps({self.key: "admin"}),
                    "RAG_SERVICE__RATE_LIMIT_PER_MINUTE": str(self.rate_limit)})
        env.update(self.extra_env)
        return env

    def rag(self) -> list[str]:
        # The code of the checkout this script lives in (run from ROOT), not whatever `rag` is installed.
        return [sys.executable, "-m", "service.cli"]

    def ensure_index(self) -> None:
        if (self.home / "CURRENT").exists():
            return
        if not self.build_from:
            sys.exit(f"{self.home} has no published generation; pass --build-from SOURCE")
        print(f"building an index in {self.home} from {', '.join(self.build_from)} ...", flush=True)
        t = time.perf_counter()
        subprocess.run([*self.rag(), "index", "build", "--quiet", *self.build_from], env=self.env(), check=True,
                       cwd=ROOT)
        print(f"built in {time.perf_counter() - t:.0f} s", flush=True)

    def start(self, timeout: float = 300) -> None:
        self.ensure_index()
        self.log = open(self.home / "bench-serve.log", "wb")
        self.proc = subprocess.Popen([*self.rag(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--log-level", "warning"], env=self.env(), stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"rag serve exited ({self.proc.returncode}); see {self.home / 'bench-serve.log'}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        sys.exit("rag serve did not become ready in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.log:
            self.log.close()


# --- load ----------------------------------------------------------------------------------------------------

@contextmanager
def target_server(args, prefix: str):
    """The server a bench talks to: `--url` (with `--api-key`), or `rag serve` started over `--home` (default: a
    temporary data home, removed afterwards). Yields (url, api key, the started Server or None)."""
    if args.url:
        yield args.url.rstrip("/"), args.api_key, None
        return
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix=prefix))
    server = Server(home, args.build_from, rate_limit=10_000_000)
    try:
        server.start()
        yield server.url, server.key, server
    finally:
        server.stop()
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)


class Phase:
    def __init__(self, name: str, concurrency: int):
        self.name = name
        self.concurrency = concurrency
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.generations: Counter = Counter()
        self.unnamed = 0  # 200s without a generation id
        self.wall = 0.0
        self.stages: dict[str, list[float]] = {}  # /v1/search: the server's timings_ms, plus what is left over

    def summary(self) -> dict:
        n = len(self.latencies) + len(self.failures)
        ok = len(self.latencies)
        return {"phase": self.name, "concurrency": self.concurrency, "requests": n, "ok": ok,
                "failed": len(self.failures), "failures_sample": self.failures[:5],
                "throughput_rps": round(ok / self.wall, 2) if self.wall else 0.0,
                "p50_ms": round(pct(self.latencies, 50), 2), "p95_ms": round(pct(self.latencies, 95), 2),
                "p99_ms": round(pct(self.latencies, 99), 2),
                "max_ms": round(max(self.latencies), 2) if self.latencies else None,
                "wall_s": round(self.wall, 3), "generations": dict(self.generations),
                "responses_without_generation_id": self.unnamed,
                **({"stages_p50_ms": {k: round(pct(v, 50), 2) for k, v in self.stages.items()}} if self.stages
                   else {})}


def search_body(i: int) -> dict:
    q, domain = QUERIES[i % len(QUERIES)]
    body: dict = {"query": q, "mode": "hybrid", "top_k": 8}
    if domain and i % 2 == 0:
        body["filters"] = {"domain": domain}
    return body


def cold_questions() -> list[str]:
    probe = ROOT / "bench" / "probes" / "data_answers.jsonl"
    rows = [json.loads(line) for line in probe.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["question"] for r in rows]


def ask_body(i: int, backend: str | None = None) -> dict:
    body = {"question": QUESTIONS[i % len(QUESTIONS)]}
    if backend:
        body["backend"] = backend
    return body


async def one_stream(client: httpx.AsyncClient, phase: Phase, first: list[float], body: dict) -> None:
    """A streamed answer: latency to the last byte, and (in `first`) to the first complete event."""
    t = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/ask", json={**body, "stream": True}) as r:
            if r.status_code != 200:
                phase.failures.append(f"{r.status_code}: {(await r.aread())[:200]!r}")
                return
            kinds = []
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    if not kinds:
                        first.append((time.perf_counter() - t) * 1000)
                    kinds.append(line.split(":", 1)[1].strip())
            if not kinds or kinds[0] != "retrieval" or kinds[-1] != "done":
                phase.failures.append(f"event order {kinds[:3]}...{kinds[-2:]}")
                return
            snapshot = r.headers.get("x-generation-id")
            if snapshot:
                phase.generations[snapshot] += 1
            else:
                phase.unnamed += 1
        phase.latencies.append((time.perf_counter() - t) * 1000)
    except httpx.HTTPError as e:
        phase.failures.append(f"{type(e).__name__}: {e}")


async def run_stream(client: httpx.AsyncClient, n: int) -> tuple[Phase, list[float]]:
    phase, first = Phase("ask stream (default)", 1), []
    t = time.perf_counter()
    for i in range(n):
        await one_stream(client, phase, first, ask_body(i))
    phase.wall = time.perf_counter() - t
    return phase, first


async def one(client: httpx.AsyncClient, phase: Phase, path: str, body: dict) -> None:
    t = time.perf_counter()
    try:
        r = await client.post(path, json=body)
        dt = (time.perf_counter() - t) * 1000
        if r.status_code != 200:
            phase.failures.append(f"{r.status_code}: {r.text[:200]}")
            return
        snapshot = r.headers.get("x-generation-id") or r.json().get("generation_id")
        if snapshot:
            phase.generations[snapshot] += 1
        else:
            phase.unnamed += 1
        phase.latencies.append(dt)
        if path == "/v1/search":
            timings = r.json().get("timings_ms") or {}
            for k, v in timings.items():
                phase.stages.setdefault(k, []).append(v)
            # The rest of the client's latency: HTTP, auth, validation, fusion, JSON, logging, the client itself.
            phase.stages.setdefault("rest_ms", []).append(dt - sum(timings.values()))
    except httpx.HTTPError as e:
        phase.failures.append(f"{type(e).__name__}: {e}")


async def run_count(client: httpx.AsyncClient, phase: Phase, path: str, make_body, n: int) -> Phase:
    counter = iter(range(n))

    async def worker():
        for i in counter:
            await one(client, phase, path, make_body(i))

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
    phase.wall = time.perf_counter() - t
    return phase


async def run_swap(client: httpx.AsyncClient, concurrency: int, min_requests: int, max_s: float,
                   after_swap: int) -> tuple[Phase, dict]:
    """Search load while a rebuild runs; stops `after_swap` requests after the job finished (bounded)."""
    phase = Phase("search during rebuild+swap", concurrency)
    stop = asyncio.Event()
    job_info: dict = {}
    count = 0

    async def worker():
        nonlocal count
        while not stop.is_set():
            i = count
            count += 1
            await one(client, phase, "/v1/search", search_body(i))

    async def driver():
        await asyncio.sleep(0.5)  # load is flowing before the rebuild starts
        before = (await client.get("/ready")).json().get("generation_id")
        r = await client.post("/v1/admin/index/rebuild", json={"force": True})
        if r.status_code != 202:
            job_info["error"] = f"rebuild not started: {r.status_code} {r.text[:300]}"
            stop.set()
            return
        job = r.json()
        started = time.perf_counter()
        while time.perf_counter() - started < max_s:
            await asyncio.sleep(0.5)
            job = (await client.get(f"/v1/admin/jobs/{job['id']}")).json()
            if job["state"] in ("succeeded", "failed"):
                break
        job_info.update({"job_id": job["id"], "state": job["state"], "generation_before": before,
                         "generation_after": (job.get("result") or {}).get("generation_id"),
                         "build_s": (job.get("result") or {}).get("seconds"), "error": job.get("error")})
        target = count + after_swap
        while count < max(target, min_requests) and time.perf_counter() - started < max_s:
            await asyncio.sleep(0.05)
        stop.set()

    t = time.perf_counter()
    await asyncio.gather(driver(), *(worker() for _ in range(concurrency)))
    phase.wall = time.perf_counter() - t
    return phase, job_info


async def main_async(args, url: str, key: str | None) -> dict:
    headers = {"X-API-Key": key} if key else {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        ready = (await client.get("/ready")).json()
        print(f"server {url}: generation {ready.get('generation_id')}, {ready.get('documents')} documents, "
              f"{ready.get('chunks')} chunks", flush=True)
        await run_count(client, Phase("warmup", 2), "/v1/search", search_body, 20)
        await run_count(client, Phase("warmup", 2), "/v1/ask", ask_body, 2 * len(QUESTIONS))
        phases = []
        for c in args.concurrency:
            phases.append(await run_count(client, Phase("search", c), "/v1/search", search_body, args.requests))
            print(fmt(phases[-1].summary()), flush=True)
        for c in args.ask_concurrency:
            phases.append(await run_count(client, Phase("ask (default)", c), "/v1/ask", ask_body,
                                          args.ask_requests))
            print(fmt(phases[-1].summary()), flush=True)
        cold = cold_questions()
        phases.append(await run_count(client, Phase("ask cold (default)", 1), "/v1/ask",
                                      lambda i: {"question": cold[i % len(cold)]}, min(len(cold), args.ask_requests)))
        print(fmt(phases[-1].summary()), flush=True)
        stream, first = await run_stream(client, args.ask_requests)
        phases.append(stream)
        print(fmt(stream.summary()), flush=True)
        first_event = {"p50_ms": round(pct(first, 50), 2), "p95_ms": round(pct(first, 95), 2), "n": len(first)}
        print(f"  first streamed event: p50 {first_event['p50_ms']:.1f} ms, p95 {first_event['p95_ms']:.1f} ms")
        for backend in args.ask_backends:
            await run_count(client, Phase("warmup", 1), "/v1/ask", lambda i: ask_body(i, backend), 1)
            phases.append(await run_count(client, Phase(f"ask ({backend})", 1), "/v1/ask",
                                          lambda i: ask_body(i, backend), args.slow_ask_requests))
            print(fmt(phases[-1].summary()), flush=True)
        swap, job = None, {}
        if not args.no_swap:
            swap, job = await run_swap(client, args.swap_concurrency, args.requests, args.swap_max_s,
                                       after_swap=args.after_swap)
            phases.append(swap)
            print(fmt(swap.summary()), flush=True)
        return {"server": ready, "phases": [p.summary() for p in phases], "swap_job": job,
                "first_stream_event": first_event}


def fmt(s: dict) -> str:
    gens = ", ".join(f"{g}: {n}" for g, n in s["generations"].items())
    return (f"{s['phase']:<28}{s['concurrency']:>4}{s['requests']:>7}{s['failed']:>6}{s['throughput_rps']:>9.1f}"
            f"{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['p99_ms']:>9.1f}   {gens}")


HEADER = f"{'phase':<28}{'c':>4}{'reqs':>7}{'fail':>6}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}   generations"


# --compare: the search phases once per server configuration, one after the other in one run.
# "today": PyTorch, every query embedded alone and nothing remembered (the path before query batching);
# "default": this checkout's defaults; any other name is an embedder_backend with the defaults otherwise.
TODAY_ENV = {"RAG_RETRIEVAL__QUERY_BATCH_MAX": "1", "RAG_RETRIEVAL__QUERY_CACHE_SIZE": "0",
             "RAG_RETRIEVAL__QUERY_BATCH_WINDOW_MS": "0"}


def compare_config(name: str) -> tuple[str | None, dict]:
    if name == "today":
        return "torch", dict(TODAY_ENV)
    if name == "default":
        return None, {}
    return name, {}


def unique_search_body(i: int) -> dict:
    """search_body with a query text no earlier request used: every request embeds (no query vector cached)."""
    body = search_body(i)
    body["query"] = f"{body['query']} ({i})"
    return body


async def compare_phases(args, url: str, key: str | None) -> list[dict]:
    headers = {"X-API-Key": key} if key else {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    make = search_body if args.repeat_queries else unique_search_body
    out = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        await run_count(client, Phase("warmup", 2), "/v1/search", lambda i: unique_search_body(10_000 + i), 20)
        for c in args.concurrency:
            p = await run_count(client, Phase("search", c), "/v1/search", lambda i, c=c: make(100_000 * c + i),
                                args.requests)
            out.append(p.summary())
            print(fmt(out[-1]) + "   stages p50: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                               out[-1]["stages_p50_ms"].items()), flush=True)
    return out


def run_compare(args) -> int:
    base = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="rag-bench-compare-"))
    results: dict[str, dict] = {}
    try:
        for name in args.compare:
            backend, env = compare_config(name)
            if backend:
                env["RAG_EMBEDDER_BACKEND"] = backend
            home = base / (backend or "default")  # one generation per encoder variant, reused by later runs
            server = Server(home, args.build_from, rate_limit=10_000_000, extra_env=env)
            print(f"\n== {name} (embedder_backend {backend or 'default'}; {env or 'defaults'})", flush=True)
            server.start()
            try:
                ready = httpx.get(f"{server.url}/ready", timeout=10).json()
                print(HEADER)
                results[name] = {"env": env, "server": ready,
                                 "phases": asyncio.run(compare_phases(args, server.url, server.key))}
            finally:
                server.stop()
    finally:
        if not args.home:
            shutil.rmtree(base, ignore_errors=True)
    first = args.compare[0]
    print(f"\n{'config':<14}{'c':>4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'fail':>6}   vs {first}: req/s, p50")
    for name, r in results.items():
        for p, b in zip(r["phases"], results[first]["phases"]):
            print(f"{name:<14}{p['concurrency']:>4}{p['throughput_rps']:>9.1f}{p['p50_ms']:>9.1f}{p['p99_ms']:>9.1f}"
                  f"{p['failed']:>6}   {p['throughput_rps'] / max(b['throughput_rps'], 1e-9):.2f}x, "
                  f"{p['p50_ms'] / max(b['p50_ms'], 1e-9):.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                               "settings": {"requests": args.requests, "concurrency": args.concurrency,
                                            "repeat_queries": args.repeat_queries, "compare": args.compare},
                               "configs": results}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0 if all(p["failed"] == 0 for r in results.values() for p in r["phases"]) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server (default: start `rag serve` on a free port)")
    ap.add_argument("--api-key", help="admin key for --url (needed for the swap phase)")
    ap.add_argument("--home", help="data home for the started server (default: a temp folder, removed after)")
    ap.add_argument("--build-from", nargs="*", default=[str(ROOT / "data" / "documents")],
                    help="sources to build when the home has no generation (default: data/documents)")
    ap.add_argument("--requests", type=int, default=300, help="search requests per concurrency level")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    ap.add_argument("--ask-requests", type=int, default=60)
    ap.add_argument("--ask-concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--ask-backends", type=lambda s: [x for x in s.split(",") if x], default=["transformers"],
                    help="backends measured beside the default, one request at a time (comma list; '' for none)")
    ap.add_argument("--slow-ask-requests", type=int, default=16)
    ap.add_argument("--swap-concurrency", type=int, default=8)
    ap.add_argument("--after-swap", type=int, default=100, help="requests to keep sending after the publish")
    ap.add_argument("--swap-max-s", type=float, default=900)
    ap.add_argument("--no-swap", action="store_true")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--compare", type=lambda s: [x for x in s.split(",") if x],
                    help="only the search phases, once per server configuration in this order: today (PyTorch, "
                         "each query embedded alone, no query cache), default (this checkout's defaults), or an "
                         "embedder_backend name; --home is then a folder of one data home per backend")
    ap.add_argument("--repeat-queries", action="store_true",
                    help="with --compare: rotate the fixed query list (query vectors cached) instead of a text no "
                         "earlier request used")
    args = ap.parse_args()
    if args.compare:
        return run_compare(args)

    with target_server(args, "rag-bench-") as (url, key, _server):
        print(HEADER)
        result = asyncio.run(main_async(args, url, key))

    swap = next((p for p in result["phases"] if p["phase"].startswith("search during")), None)
    result.update({
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"requests": args.requests, "concurrency": args.concurrency, "ask_requests": args.ask_requests,
                     "ask_concurrency": args.ask_concurrency, "ask_backends": args.ask_backends,
                     "slow_ask_requests": args.slow_ask_requests, "swap_concurrency": args.swap_concurrency,
                     "started_server": not args.url},
    })
    print()
    print(HEADER)
    for p in result["phases"]:
        print(fmt(p))
    ok = True
    if swap is not None:
        job = result["swap_job"]
        gens = list(swap["generations"])
        print(f"\nswap: job {job.get('job_id')} {job.get('state')}, generation {job.get('generation_before')} -> "
              f"{job.get('generation_after')}; generations seen under load: {gens}; failed requests: "
              f"{swap['failed']}; responses without a generation id: {swap['responses_without_generation_id']}")
        ok = (swap["failed"] == 0 and swap["responses_without_generation_id"] == 0 and len(gens) >= 2
              and job.get("state") == "succeeded")
        result["swap_ok"] = ok
    failed = sum(p["failed"] for p in result["phases"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0 if ok and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
