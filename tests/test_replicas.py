"""Two `rag serve` processes over one data home and one real PostgreSQL (`state.url`), loopback only.

Events posted to either replica are seen by both (recommendations, idempotency keys); a rebuild started on one is
refused with 409 on the other while it runs (the advisory lock), the refusal naming the running job; after the
publish both serve the new generation without a restart; and a bounded load on both during the swap sees no
failed request. Marked `postgres` (`-m "not postgres"` skips it); `.ci/run` installs PostgreSQL and runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.engines import free_port

pytestmark = pytest.mark.postgres

ADMIN = {"X-API-Key": "replica-admin-key"}
READER = {"X-API-Key": "replica-reader-key"}


def _rag() -> list[str]:
    import sys

    script = Path(sys.executable).parent / "rag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


@pytest.fixture(scope="module")
def replicas(postgres, small_corpus, models_dir, tmp_path_factory):
    from indexer.build import build

    root = tmp_path_factory.mktemp("replicas")
    corpus = shutil.copytree(small_corpus, root / "corpus")
    home = root / "home"
    first = build(make_settings(home, models_dir, embedder="minilm"), [corpus], show_progress=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update({"RAG_HOME": str(home), "RAG_MODEL_CACHE": str(models_dir), "RAG_EMBEDDER": "minilm",
                "RAG_STATE__URL": postgres.url, "RAG_GENERATOR__BACKEND": "extractive", "HF_HUB_OFFLINE": "1",
                "RAG_SERVICE__GENERATION_POLL_S": "0.2", "RAG_SERVICE__RATE_LIMIT_PER_MINUTE": "100000",
                "RAG_SERVICE__API_KEYS": json.dumps({"replica-admin-key": "admin", "replica-reader-key": "reader"}),
                "OMP_NUM_THREADS": "1"})
    procs, bases, logs = [], [], []
    for i in range(2):
        port = free_port()
        log = (root / f"serve-{i}.log").open("wb")
        logs.append(log)
        procs.append(subprocess.Popen([*_rag(), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, cwd=root))
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for proc, base, i in zip(procs, bases, range(2)):
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"replica {i} did not become ready:\n"
                                f"{(root / f'serve-{i}.log').read_text(errors='replace')[-3000:]}")
                try:
                    if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
        yield {"bases": bases, "procs": procs, "home": home, "corpus": corpus, "first": first, "root": root}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def test_the_replicas_keep_their_state_in_postgres_not_the_data_home(replicas):
    assert not (replicas["home"] / "state.duckdb").exists()


def test_events_posted_to_either_replica_are_seen_by_both(replicas):
    a, b = replicas["bases"]
    for base in (a, b):  # nothing known yet: trending
        r = httpx.get(f"{base}/v1/users/u-rep/recommendations", headers=READER, timeout=30)
        assert r.status_code == 200 and r.json()["strategy"] == "trending"
    ev = {"user_id": "u-rep", "doc_id": "fin-etf", "type": "like", "idempotency_key": "rep-1"}
    assert httpx.post(f"{a}/v1/events", json={"events": [ev]}, headers=ADMIN, timeout=30).json()["accepted"] == 1
    for base in (a, b):
        got = httpx.get(f"{base}/v1/users/u-rep/recommendations", headers=READER, timeout=30).json()
        assert got["strategy"] == "personalized"
        assert "fin-etf" not in [item["doc_id"] for item in got["items"]]  # seen, so left out on both
    # The idempotency key is shared too: the same event posted to the other replica is a duplicate.
    again = httpx.post(f"{b}/v1/events", json={"events": [ev]}, headers=ADMIN, timeout=30).json()
    assert again["accepted"] == 0 and again["duplicates"] == 1
    ev2 = {"user_id": "u-rep2", "doc_id": "med-vaccines", "type": "like"}
    assert httpx.post(f"{b}/v1/events", json={"events": [ev2]}, headers=ADMIN, timeout=30).json()["accepted"] == 1
    got = httpx.get(f"{a}/v1/users/u-rep2/recommendations", headers=READER, timeout=30).json()
    assert got["strategy"] == "personalized"


class _Load:
    """Bounded load: `threads` clients alternating between the replicas, one search after another."""

    def __init__(self, bases: list[str], threads: int = 2):
        self.bases = bases
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.ok = 0
        self.generations: set[str] = set()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=60) as client:
            n = i
            while not self.stop.is_set():
                base = self.bases[n % len(self.bases)]
                n += 1
                try:
                    r = client.post(f"{base}/v1/search", json={"query": "rebalancing an ETF portfolio"},
                                    headers=READER)
                    good = r.status_code == 200 and r.json()["hits"]
                    with self._lock:
                        if good:
                            self.ok += 1
                            self.generations.add(r.headers["X-Generation-Id"])
                        else:
                            self.failures.append(f"{base}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    with self._lock:
                        self.failures.append(f"{base}: {type(e).__name__}: {e}")
                time.sleep(0.05)

    def __enter__(self) -> "_Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)


def _generation(base: str) -> str:
    r = httpx.post(f"{base}/v1/search", json={"query": "blood pressure"}, headers=READER, timeout=30)
    assert r.status_code == 200
    return r.headers["X-Generation-Id"]


def test_one_rebuild_across_replicas_and_both_serve_its_generation_without_failures(replicas):
    a, b = replicas["bases"]
    pids = [p.pid for p in replicas["procs"]]
    old = replicas["first"].generation_id
    assert _generation(a) == _generation(b) == old
    doc = replicas["corpus"] / "finance" / "etf-basics.md"
    doc.write_text(doc.read_text(encoding="utf-8") + "\nAn ETF's spread is the gap between its bid and ask.\n",
                   encoding="utf-8")
    with _Load([a, b]) as load:
        started = httpx.post(f"{a}/v1/admin/index/rebuild", json={}, headers=ADMIN, timeout=30)
        assert started.status_code == 202, started.text
        job = started.json()
        refused = httpx.post(f"{b}/v1/admin/index/rebuild", json={}, headers=ADMIN, timeout=30)
        assert refused.status_code == 409, refused.text
        err = refused.json()["error"]
        assert err["code"] == "job_running"
        assert err["job"]["id"] == job["id"]  # the refusal names the job the other replica runs
        # Both replicas read the one jobs table.
        deadline = time.monotonic() + 120
        while True:
            seen = httpx.get(f"{b}/v1/admin/jobs/{job['id']}", headers=ADMIN, timeout=30).json()
            if seen["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen["state"] == "succeeded", seen
        new = seen["result"]["generation_id"]
        assert new != old
        deadline = time.monotonic() + 30
        while {_generation(a), _generation(b)} != {new} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _generation(a) == _generation(b) == new
        time.sleep(0.5)  # a little load on the new generation too
    assert load.failures == []
    assert load.ok > 0 and load.generations == {old, new}
    assert [p.pid for p in replicas["procs"]] == pids and all(p.poll() is None for p in replicas["procs"])
    # The lock was released with the job: the other replica may rebuild now (nothing changed: unchanged).
    after = httpx.post(f"{b}/v1/admin/index/rebuild", json={}, headers=ADMIN, timeout=30)
    assert after.status_code == 202, after.text
