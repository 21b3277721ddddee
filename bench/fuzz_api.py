#!/usr/bin/env python
"""Fuzz the HTTP API from its own OpenAPI document with schemathesis.

Starts `rag serve` on a free port over a data home (built from --build-from when it has no generation), with
an admin key and the extractive generator backend as the default (requests may still ask for
`backend: transformers`, which then loads the local model), and runs

    schemathesis run http://127.0.0.1:PORT/schema/openapi.json --checks all --max-response-time 180 \\
        -H "X-API-Key: KEY" --max-examples N --seed S --phases examples,coverage,fuzzing,stateful

so every operation is exercised with schema-valid and schema-violating requests (bodies, query and path
parameters, missing/invalid auth, unsupported methods) and every response is checked: no 5xx, documented status
codes and content types, response bodies that match the response schemas, invalid input rejected with a 4xx,
valid input accepted. Prints the schemathesis summary plus the server-side count of 5xx responses and writes
bench/results/fuzz_api.json.

    .venv/bin/python bench/fuzz_api.py --home /tmp/rag-fuzz-home --build-from data/documents --max-examples 50
    .venv/bin/python bench/fuzz_api.py --url http://127.0.0.1:8000 --api-key KEY   # a server you run
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_load import ROOT, target_server  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "fuzz_api.json"


def server_5xx(log_path: Path) -> list[dict]:
    """5xx responses the server logged (its access line for a 5xx is a WARNING, kept at --log-level warning)."""
    out = []
    if not log_path.exists():
        return out
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "request" and int(rec.get("status", 0)) >= 500:
            out.append({k: rec.get(k) for k in ("method", "path", "status", "request_id")})
    return out


def parse_summary(text: str) -> dict:
    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    out: dict = {"failures": {}, "errors": {}}
    m = re.search(r"Test cases:\s*\n\s*(.+)", clean)
    if m:
        out["test_cases_line"] = m.group(1).strip()
        g = re.search(r"(\d+) generated", m.group(1))
        out["generated"] = int(g.group(1)) if g else None
        f = re.search(r"(\d+) unique failures", m.group(1))
        out["unique_failures"] = int(f.group(1)) if f else 0
        s = re.search(r"(\d+) skipped", m.group(1))
        out["skipped"] = int(s.group(1)) if s else 0
    m = re.search(r"Selected: (\d+)/(\d+)\s*\n\s*Tested: (\d+)", clean)
    if m:
        out["operations"] = {"selected": int(m.group(1)), "total": int(m.group(2)), "tested": int(m.group(3))}
    block = re.search(r"Failures:\s*\n(.*?)(?:\n\s*\n)", clean, re.S)
    if block:
        for line in block.group(1).splitlines():
            fm = re.search(r"(ST\d+) (.+): (\d+)", line)
            if fm:
                out["failures"][f"{fm.group(1)} {fm.group(2)}"] = int(fm.group(3))
    block = re.search(r"Errors:\s*\n(.*?)(?:\n\s*\n)", clean, re.S)
    if block:
        for line in block.group(1).splitlines():
            em = re.search(r"[^\w]*(.+): (\d+)", line)
            if em:
                out["errors"][em.group(1).strip()] = int(em.group(2))
    phases = re.search(r"Test Phases:\s*\n(.*?)(?:\n\s*\n)", clean, re.S)
    if phases:
        out["phases"] = [p.strip() for p in phases.group(1).splitlines() if p.strip()]
    out["failing_operations"] = sorted(set(re.findall(r"^_+ ([A-Z]+ \S+) _+$", clean, re.M)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server (default: start `rag serve` on a free port)")
    ap.add_argument("--api-key", help="admin key for --url")
    ap.add_argument("--home", help="data home for the started server (default: a temp folder, removed after)")
    ap.add_argument("--build-from", nargs="*", default=[str(ROOT / "data" / "documents")])
    ap.add_argument("--max-examples", type=int, default=30, help="test cases per operation and phase")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    ap.add_argument("--workers", default="1")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    with target_server(args, "rag-fuzz-") as (url, key, server):
        st = Path(sys.executable).parent / "schemathesis"
        cmd = [str(st) if st.exists() else "schemathesis", "run", f"{url}/schema/openapi.json", "--checks", "all",
               "--max-response-time", "180", "--request-timeout", "240", "--max-examples", str(args.max_examples),
               "--seed", str(args.seed), "--phases", args.phases, "--workers", args.workers, "--no-color",
               "--suppress-health-check", "too_slow,filter_too_much"]
        if key:
            cmd += ["-H", f"X-API-Key: {key}"]
        shown = " ".join(c if not c.startswith("X-API-Key") else "'X-API-Key: ***'" for c in cmd)
        print(f"$ {shown}", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        output = proc.stdout + proc.stderr
        print(output)
        summary = parse_summary(output)
        fivexx = None
        if server:
            server.stop()  # flushes its log before we count the 5xx lines in it
            fivexx = server_5xx(server.home / "bench-serve.log")
    result = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": shown.split(" ", 1)[1], "exit_code": proc.returncode, "seconds": round(wall, 1),
              "summary": summary, "server_5xx": fivexx,
              "output_tail": re.sub(r"\x1b\[[0-9;]*m", "", output)[-6000:]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"schemathesis exit {proc.returncode}; {summary.get('test_cases_line', '?')}; "
          f"server-side 5xx: {len(fivexx) if fivexx is not None else 'n/a (external server)'}")
    print(f"wrote {out}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
