"""`rag eval recommend` on a catalogue of ~9k items: wall time per phase, first run and rerun.

MovieLens' "latest-small" release (9,125 movies, 671 users, 100,004 half-star ratings) is the shape this
measures. It is not shipped here, so by default the script writes a synthetic RecBole folder of the same size
(titles and genres made from word lists, users with two or three favourite genres, Zipf item popularity,
half-star ratings 0.5-5 plus a few broken rows) and runs the full evaluation twice in one data home:

- run 1 builds the item generation (the embedder over every item: the one slow phase, once);
- run 2 finds it by fingerprint (index phase well under a second) and only tunes, fits and scores.

    .venv/bin/python bench/recommend_scale.py                  # synthetic, 9,125 items
    .venv/bin/python bench/recommend_scale.py --folder DIR     # a real RecBole folder instead

Quality figures on synthetic data mean nothing; the phase times and the bounded tuning (validation users
sampled above evaluation.recommend.MAX_TUNE_USERS, smaller grids above LARGE_ITEMS) are the point.
Saves bench/results/recommend_eval_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
WORDS = ("night city river last first dark summer winter king queen lost return secret road house island love "
         "war star fire stone glass silver golden blue red wild quiet long short little big great young old "
         "storm ghost dream heart wolf bird garden ocean mountain desert train letter song dance game shadow "
         "empire journey promise mirror").split()


def synthesize(folder: Path, items: int, users: int, ratings: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    item_genres = [rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False) for _ in range(items)]
    with open(folder / "synthetic.item", "w", encoding="utf-8") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i in range(items):
            title = " ".join(rng.choice(WORDS, size=rng.integers(1, 4))).title()
            f.write(f"{i + 1}\t{title} {i + 1}\t{rng.integers(1920, 2017)}\t"
                    f"{' '.join(GENRES[g] for g in item_genres[i])}\n")
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    rng.shuffle(popularity)
    by_genre = [np.asarray([i for i in range(items) if g in item_genres[i]]) for g in range(len(GENRES))]
    per_user = rng.multinomial(ratings - 20 * users, np.ones(users) / users) + 20
    with open(folder / "synthetic.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for u in range(users):
            favourite = rng.choice(len(GENRES), size=rng.integers(2, 4), replace=False)
            pool = np.unique(np.concatenate([by_genre[g] for g in favourite]))
            n = min(int(per_user[u]), len(pool))
            p = popularity[pool] / popularity[pool].sum()
            picked = rng.choice(pool, size=n, replace=False, p=p)
            t = 1_100_000_000 + int(rng.integers(0, 300_000_000))
            for i in picked:
                t += int(rng.integers(1, 3600))
                stars = np.clip(np.round(rng.normal(3.6, 1.0) * 2) / 2, 0.5, 5.0)
                f.write(f"{u + 1}\t{i + 1}\t{stars:.1f}\t{t}\n")
        f.write("1\t1\tfive\t1100000000\n1\t999999\t4.0\t1100000000\n")  # two broken rows, skipped and counted
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", help="a RecBole folder (default: synthesize one)")
    ap.add_argument("--items", type=int, default=9125)
    ap.add_argument("--users", type=int, default=671)
    ap.add_argument("--ratings", type=int, default=100_004)
    ap.add_argument("--home", help="data home for the item generation cache (default: a temporary one)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "recommend_eval_scale.json"))
    args = ap.parse_args()

    from rag.config import load_settings
    from evaluation.recommend import evaluate, format_table

    with tempfile.TemporaryDirectory(prefix="rag-recscale-") as tmp:
        folder = Path(args.folder) if args.folder else synthesize(Path(tmp) / "synthetic", args.items, args.users,
                                                                  args.ratings)
        home = args.home or str(Path(tmp) / "home")
        settings = load_settings(home=home, model_cache=os.environ.get("RAG_MODEL_CACHE") or str(
            load_settings().models_dir))
        runs = []
        for n in (1, 2):
            t = time.perf_counter()
            report = evaluate(folder, settings, show_progress=False)
            print(f"--- run {n} ({time.perf_counter() - t:.0f}s)")
            print(format_table(report))
            runs.append({k: report[k] for k in ("dataset", "data", "protocol", "systems", "chosen", "tuning",
                                                 "phases_s", "seconds", "generation")})
    result = {"source": args.folder or f"synthetic: {args.items} items, {args.users} users, {args.ratings} ratings",
              "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"saved {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
