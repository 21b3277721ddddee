#!/usr/bin/env python3
"""Regenerate data/events.jsonl for the recommendation demo.

Deterministic: a seeded RNG, documents read from data/documents/ (Markdown front
matter, HTML <meta> tags, .txt.meta.json sidecars and faq/faq.csv rows) and users
from data/users.jsonl. Behaviour follows each user's interests (tag/title matches),
domains and language, with a little noise and some dismissals.

Usage (from the repository root):
    .venv/bin/python data/make_events.py            # writes data/events.jsonl
    .venv/bin/python data/make_events.py --out x.jsonl --seed 7
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import random
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parent
DOCS = DATA / "documents"
SEED = 20261120
END = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)  # events fall in the ~8 weeks before this
WINDOW_DAYS = 56
USERS_WITHOUT_EVENTS = {"u-priya"}  # cold-start user: interests but no history


class _MetaParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self._in_title = False
        self.title = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta" and "name" in a:
            self.meta[a["name"]] = a.get("content", "")
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _split_tags(value) -> list[str]:
    if isinstance(value, list):
        return [str(t).strip() for t in value if str(t).strip()]
    return [t.strip() for t in str(value).replace(";", ",").split(",") if t.strip()]


def load_documents() -> list[dict]:
    docs: list[dict] = []
    for path in sorted(DOCS.rglob("*")):
        if not path.is_file():
            continue
        name = path.name
        if name.endswith(".md"):
            text = path.read_text(encoding="utf-8")
            _, fm, body = text.split("---", 2)
            meta = yaml.safe_load(fm)
            words = len(body.split())
        elif name.endswith(".html"):
            p = _MetaParser()
            p.feed(path.read_text(encoding="utf-8"))
            meta = dict(p.meta, title=p.title.strip())
            words = len(path.read_text(encoding="utf-8").split())
        elif name.endswith(".txt"):
            meta = json.loads(Path(str(path) + ".meta.json").read_text(encoding="utf-8"))
            words = len(path.read_text(encoding="utf-8").split())
        elif name.endswith(".csv"):
            with path.open(encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    docs.append({
                        "id": row["id"], "title": row["title"], "domain": row["domain"],
                        "tags": _split_tags(row["tags"]), "language": row["language"],
                        "words": len((row["question"] + " " + row["answer"]).split()),
                    })
            continue
        else:
            continue
        docs.append({
            "id": meta["id"], "title": meta["title"], "domain": meta["domain"],
            "tags": _split_tags(meta.get("tags", [])), "language": meta["language"],
            "words": words,
        })
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)), "duplicate document ids"
    return docs


def match_score(user: dict, doc: dict) -> float:
    """How well a document fits a user's stated interests (0 = no match)."""
    tags = [t.lower().replace("-", " ") for t in doc["tags"]]
    title = doc["title"].lower()
    score = 0.0
    for interest in user["interests"]:
        i = interest.lower()
        if any(i == t or i in t or (len(t) > 3 and t in i) for t in tags):
            score += 2.0
        elif i in title:
            score += 1.5
    return score


def doc_weight(user: dict, doc: dict, score: float) -> float:
    if score > 0:
        w = 1.0 + 3.0 * min(score, 4.0)
    elif doc["domain"] in user["domains"]:
        w = 0.5
    else:
        w = 0.06  # occasional off-topic reads (noise)
    if doc["language"] != user["language"]:
        w *= 0.35 if user["language"] == "zh" else 0.03
    return w


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    docs = load_documents()
    users = [json.loads(l) for l in (DATA / "users.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    start = END - timedelta(days=WINDOW_DAYS)
    events: list[dict] = []

    for user in users:
        uid = user["user_id"]
        if uid in USERS_WITHOUT_EVENTS:
            continue
        scored = [(d, match_score(user, d)) for d in docs]
        weights = [doc_weight(user, d, s) for d, s in scored]
        n_sessions = rng.randint(16, 30)
        for _ in range(n_sessions):
            idx = rng.choices(range(len(scored)), weights=weights, k=1)[0]
            doc, score = scored[idx]
            weights[idx] *= 0.3  # once seen, less likely to be picked again (explore more)
            relevant = score > 0
            day = rng.randrange(WINDOW_DAYS)
            hour = rng.choices(range(24), weights=[1, 1, 1, 1, 1, 2, 4, 7, 8, 7, 6, 6, 7, 6, 5, 5, 6, 7, 8, 9, 9, 7, 4, 2])[0]
            ts = start + timedelta(days=day, hours=hour, minutes=rng.randrange(60), seconds=rng.randrange(60))

            def emit(kind: str, when: datetime, **extra) -> None:
                events.append({"user_id": uid, "doc_id": doc["id"], "type": kind, "ts": iso(when), **extra})

            # Off-topic suggestion: usually dismissed, sometimes skimmed.
            if not relevant and rng.random() < 0.55:
                emit("dismiss", ts)
                continue
            if rng.random() < 0.6:
                emit("click", ts)
                ts += timedelta(seconds=rng.randint(2, 20))
            # Dwell grows with document length and relevance (capped at 30 min).
            base = min(doc["words"], 4000) / 200 * 60  # ~200 words per minute
            frac = rng.uniform(0.35, 1.0) if relevant else rng.uniform(0.03, 0.25)
            dwell = max(5, min(1800, int(base * frac * rng.uniform(0.8, 1.2))))
            emit("view", ts, dwell_s=dwell)
            t = ts + timedelta(seconds=dwell)
            if relevant:
                if rng.random() < 0.30:
                    t += timedelta(seconds=rng.randint(1, 30)); emit("like", t)
                if rng.random() < 0.18 or (doc["words"] > 2500 and rng.random() < 0.5):
                    t += timedelta(seconds=rng.randint(1, 30)); emit("bookmark", t)
                if rng.random() < 0.07:
                    t += timedelta(seconds=rng.randint(5, 60)); emit("share", t)
                if rng.random() < 0.22:
                    t += timedelta(seconds=rng.randint(1, 40)); emit("rating", t, value=rng.choice([4, 4, 5, 5, 5, 3]))
                # Occasionally come back and re-read it a few days later.
                if rng.random() < 0.12:
                    later = t + timedelta(days=rng.randint(1, 10), hours=rng.randint(0, 12))
                    if later < END:
                        emit("view", later, dwell_s=max(10, int(dwell * rng.uniform(0.2, 0.6))))
            else:
                if rng.random() < 0.3:
                    t += timedelta(seconds=rng.randint(1, 20)); emit("rating", t, value=rng.choice([1, 2, 2, 3]))
                elif rng.random() < 0.3:
                    t += timedelta(seconds=rng.randint(1, 20)); emit("dismiss", t)

    events.sort(key=lambda e: (e["ts"], e["user_id"], e["doc_id"], e["type"]))
    return events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=DATA / "events.jsonl")
    args = ap.parse_args()
    events = generate(args.seed)
    with args.out.open("w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    print(f"wrote {len(events)} events to {args.out}")


if __name__ == "__main__":
    main()
