"""PII redaction over real corpora: how fast, and what it changes where nothing should be personal data.

    .venv/bin/python bench/redaction_scan.py ../shared/eval [--sets nfcorpus-medical,pubmedqa-medical,tatqa-finance]
                                                            [--data data]

For each set's corpus.jsonl (and the bundled data/ folder) every document is redacted with the default settings'
redactor (indexer.redaction); prints documents, characters, seconds, MB/s and the placeholders written by kind,
with a few changed words as examples (on these corpora every change is a false positive: they hold no personal
data). Saves bench/results/redaction_scan.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from indexer.loaders import load_sources
from indexer.redaction import Redactor
from rag.config import PrivacySettings


def scan(name: str, texts: list[str], redactor: Redactor) -> dict:
    counts: Counter = Counter()
    changed, examples = 0, []
    t = time.perf_counter()
    for text in texts:
        out = redactor.redact(text, counts)
        if out != text:
            changed += 1
            if len(examples) < 5:
                examples.append([w for w in text.split() if w not in set(out.split())][:4])
    seconds = time.perf_counter() - t
    chars = sum(map(len, texts))
    row = {"set": name, "documents": len(texts), "chars": chars, "seconds": round(seconds, 3),
           "mb_per_s": round(chars / 1e6 / seconds, 2) if seconds else None, "placeholders": dict(counts),
           "documents_changed": changed, "examples": examples}
    print(f"{name:20s} {len(texts):6d} docs {chars / 1e6:6.2f} M chars {seconds:6.2f} s "
          f"{row['mb_per_s']} MB/s  placeholders {dict(counts) or 0}  changed {changed} {examples}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_root")
    ap.add_argument("--sets", default="nfcorpus-medical,pubmedqa-medical,tatqa-finance")
    ap.add_argument("--data", default="data")
    args = ap.parse_args()
    cfg = PrivacySettings()
    redactor = Redactor(tuple(cfg.redact_kinds), tuple(cfg.phone_regions))
    rows = []
    for name in args.sets.split(","):
        path = Path(args.eval_root) / name / "corpus.jsonl"
        texts = [json.loads(line).get("text") or "" for line in path.open(encoding="utf-8") if line.strip()]
        rows.append(scan(name, texts, redactor))
    if args.data:
        rows.append(scan(args.data, [d.text for d in load_sources([args.data]).documents], redactor))
    out = Path(__file__).parent / "results" / "redaction_scan.json"
    out.write_text(json.dumps({"settings": {"kinds": list(cfg.redact_kinds), "phone_regions": list(cfg.phone_regions)},
                               "rows": rows}, indent=2, ensure_ascii=False) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
