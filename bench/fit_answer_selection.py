"""Fit the answer-selection weights (rag/models/answer_selection.json) for one embedder, on real questions.

    .venv/bin/python bench/fit_answer_selection.py ../shared/eval [--embedder e5-small] [--passages 5]

Data: the `fit` halves of the SQuAD near-miss set (answerable and unanswerable questions, articles disjoint from
the `test` half the report uses), of TAT-QA's span questions (contexts disjoint from its `test` half) and of our
probe over data/ (bench/probes/data_answers.jsonl: tables with ranges, Chinese, near misses). Every
question runs through the production retriever; the units of its top passages get their features
(rag.answer_select.UNIT_FEATURES) and a label: does the unit hold the gold answer (TAT-QA: every gold span).

1. The unit model: a linear score trained listwise (softmax over each question's units, the gold units' share
   maximized, L2-regularized), so that the top unit is the one holding the answer.
2. The abstention model: logistic regression over QUESTION_FEATURES (computed with the fitted unit model),
   label "the question is answerable"; its threshold is the one that maximizes the worse of the two rates
   (answered when answerable, abstained when not) on the fit data.

`--answerable-only` keeps the unit models of the weights file and fits only the abstention model (after a change
of QUESTION_FEATURES, so that the picks the report measured stay as they were).

Features are cached per (set and its questions, embedder, passages, retrieval settings, generation) under the eval
home, so refitting is instant. Prints top-1 accuracy and the two rates on the fit data, writes the weights, and
saves a report to bench/results/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
from scipy.optimize import minimize
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rag.answer_select import (  # noqa: E402
    CHEAP_FEATURES,
    EMBED_TOP,
    QUESTION_FEATURES,
    UNIT_FEATURES,
    WEIGHTS_FILE,
    AnswerSelector,
    LinearModel,
    ScoredUnit,
    cheap_features,
    passage_cosines,
    question_features,
    term_weights,
    with_cosines,
)
from rag.answer_units import unit_embed_text  # noqa: E402
from rag.answering import hits_to_passages, search_for_answer  # noqa: E402
from rag.config import load_settings  # noqa: E402
from evaluation.answer_sets import near_miss_set, probe_set, tatqa_set  # noqa: E402
from evaluation.answers import ensure_generation, open_generation  # noqa: E402
from evaluation.metrics import holds  # noqa: E402
from rag.grounding import Evidence, embedder_fits  # noqa: E402
from rag.models.embedders import load_embedder, resolve_backend  # noqa: E402
from rag.questions import analyse  # noqa: E402
from rag.retriever import Retriever  # noqa: E402

L2 = 1e-2


def dump(settings, qset, passages: int, cache_dir: Path, key: str) -> list[dict]:
    """Per question: its retrieved passages, the query vector and the vectors of every unit text, so that
    features (and unit segmentation) can be recomputed by the library's own code without retrieving again.
    Cached under `key` plus the generation the questions ran over and the questions themselves: a corpus, chunking
    or question change is a new file."""
    home, snapshot_id, _ = ensure_generation(settings, qset)
    asked = hashlib.sha256(repr([(q.id, q.question, q.answers) for q in qset.questions]).encode()).hexdigest()[:8]
    cache = cache_dir / f"{key}-{snapshot_id}-q{asked}.pkl"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    snapshot = open_generation(settings, home, snapshot_id)
    retriever = Retriever(settings.retrieval)
    selector = AnswerSelector(None, max_passages=passages)  # only its inputs are used
    out = []
    for q in tqdm(qset.questions, desc=f"features {qset.name}", unit="q", file=sys.stderr):
        qa = analyse(q.question)
        res = search_for_answer(retriever, snapshot, q.question, settings.retrieval, top_k=passages)
        ps = hits_to_passages(res.hits)
        fits = embedder_fits(snapshot.embedder, qa.language)
        ev = Evidence(ps, snapshot.embedder if fits else None)
        qvec = res.query_vector if fits else None
        x = selector.inputs(ev)
        vectors = {}
        if x.units and qvec is not None:
            vecs = ev.unit_vectors([(u.n, u.index) for u in x.units], with_context=True)
            vectors = {unit_embed_text(u): v.astype(np.float16) for u, v in zip(x.units, vecs)}
        out.append({"id": q.id, "question": q.question, "answers": q.answers, "answerable": q.answerable,
                    "group": q.group, "match": qset.match, "passages": ps, "qvec": qvec,
                    "pcos": passage_cosines(snapshot, res.hits, qvec), "vectors": vectors,
                    "idf": term_weights(snapshot, qa.terms), "top_cos": res.top_dense_score})
    snapshot.close()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(out))
    return out


def featurize(rows: list[dict], passages: int, embedder=None) -> None:
    """The unit features of every dumped question, computed by the library from its passages (in place)."""
    selector = AnswerSelector(None, max_passages=passages)
    for r in rows:
        qa = analyse(r["question"])
        ev = Evidence(r["passages"], embedder if r["qvec"] is not None else None)
        x = selector.inputs(ev, r["pcos"])
        need = all if r["match"] == "all" else any
        r["y"] = np.asarray([bool(r["answers"]) and need(holds(u.text, g) for g in r["answers"]) for u in x.units],
                            bool)
        r["q_terms"] = sorted(qa.terms)
        r["passage_terms"] = set().union(*x.passages_terms) & qa.terms if x.passages_terms else set()
        r["texts"] = [u.text for u in x.units]
        if not x.units:
            r["cheap"] = np.zeros((0, len(CHEAP_FEATURES)))
            r["x"] = np.zeros((0, len(UNIT_FEATURES)))
            continue
        r["cheap"] = cheap_features(qa, x, r["idf"])
        cos = None
        if r["qvec"] is not None:
            texts = [unit_embed_text(u) for u in x.units]
            missing = [t for t in dict.fromkeys(texts) if t not in r["vectors"]]
            if missing:  # a unit the segmentation of the dump did not have
                r["vectors"].update(zip(missing, embedder.embed_passages(missing, batch_size=64)))
            cos = np.asarray([np.asarray(r["vectors"][t], np.float32) @ r["qvec"] for t in texts])
        r["x"] = with_cosines(r["cheap"], cos)


def set_weights(rows: list[dict]) -> np.ndarray:
    """Each question set weighs the same in a fit, however many questions it has: the probe over data/ is the
    product's own kind of document and must not be drowned by SQuAD's 360 questions."""
    sizes = {}
    for r in rows:
        sizes[r["set"]] = sizes.get(r["set"], 0) + 1
    w = np.asarray([1.0 / sizes[r["set"]] for r in rows])
    return w * len(rows) / w.sum()


def fit_listwise(data: list[tuple[np.ndarray, np.ndarray, float]], features: tuple[str, ...]) -> LinearModel:
    """A linear score whose softmax over each question's units puts the most weight on its gold units."""
    data = [(x, y, wq) for x, y, wq in data if len(y) and y.any()]
    allx = np.concatenate([x for x, _, _ in data])
    mean, scale = allx.mean(axis=0), allx.std(axis=0)
    scale[scale < 1e-9] = 1.0
    data = [((x - mean) / scale, y, wq) for x, y, wq in data]
    norm = sum(wq for _, _, wq in data)

    def loss(w):
        total, grad = 0.0, np.zeros_like(w)
        for x, y, wq in data:
            z = x @ w
            e = np.exp(z - z.max())
            p = e / e.sum()
            pos = p[y].sum()
            total -= wq * np.log(pos + 1e-12)
            grad += wq * (p @ x - (p[y] / (pos + 1e-12)) @ x[y])
        return total / norm + L2 * w @ w, grad / norm + 2 * L2 * w

    w = minimize(loss, np.zeros(allx.shape[1]), jac=True, method="L-BFGS-B").x
    return LinearModel(features, mean, scale, w, 0.0)


def cascade(rows: list[dict], prescore: LinearModel, top: int, keywords_only: bool) -> list[dict]:
    """Each question's units as the service sees them: the `top` best by the cheap score, with cosines (zeros
    for the keyword-only variant, and the gap recomputed over the kept units)."""
    out = []
    for r in rows:
        if not len(r["y"]):
            out.append({**r, "keep": [], "xk": np.zeros((0, len(UNIT_FEATURES)))})
            continue
        keep = sorted(np.argsort(-prescore.logits(r["cheap"]), kind="stable")[:top].tolist()) \
            if len(r["y"]) > top else list(range(len(r["y"])))
        cheap = r["cheap"]
        if keywords_only:  # no query vector: the passage cosine is missing too
            cheap = cheap.copy()
            cheap[:, CHEAP_FEATURES.index("passage_cos")] = 0.0
        cos = None if keywords_only else r["x"][keep, UNIT_FEATURES.index("cos")]
        out.append({**r, "keep": keep, "xk": with_cosines(cheap[keep], cos)})
    return out


def question_matrix(rows: list[dict], units: LinearModel) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    xs, ys, kept = [], [], []
    for r in rows:
        if not r["keep"]:
            continue
        z = units.logits(r["xk"])
        order = np.argsort(-z, kind="stable")
        ranked = [ScoredUnit(None, dict(zip(UNIT_FEATURES, r["xk"][i])), float(z[i])) for i in order[:2]]
        xs.append(question_features(set(r["q_terms"]), ranked, r["passage_terms"], r["idf"], r["top_cos"]))
        ys.append(r["answerable"])
        kept.append({**r, "best_correct": bool(r["y"][r["keep"][order[0]]])})
    return np.asarray(xs), np.asarray(ys, bool), kept


def fit_answerable(x: np.ndarray, y: np.ndarray, sets: np.ndarray) -> LinearModel:
    """Logistic regression on the sets that hold both kinds of question, each set weighing the same and its two
    classes balanced; the threshold maximizes the worst of the per-set answered / abstained rates."""
    from sklearn.linear_model import LogisticRegression

    both = [s for s in dict.fromkeys(sets) if y[sets == s].any() and (~y[sets == s]).any()]
    mask = np.isin(sets, both)
    x, y, sets = x[mask], y[mask], sets[mask]
    w = np.zeros(len(y))
    for s in both:
        for cls in (True, False):
            sel = (sets == s) & (y == cls)
            w[sel] = 1.0 / sel.sum()
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    lr = LogisticRegression(C=1.0, max_iter=2000).fit((x - mean) / scale, y, sample_weight=w * len(y) / w.sum())
    model = LinearModel(QUESTION_FEATURES, mean, scale, lr.coef_[0], float(lr.intercept_[0]))
    p = model.probability(x)
    best_t, best_v = 0.5, -1.0
    for t in np.unique(np.round(p, 3)):
        worst = min(min((p[(sets == s) & y] >= t).mean(), (p[(sets == s) & ~y] < t).mean()) for s in both)
        if worst > best_v:
            best_t, best_v = float(t), worst
    model.threshold = best_t
    return model


def fit_variant(rows: list[dict], keywords_only: bool, top: int, kept_models: dict | None = None
                ) -> tuple[dict, dict]:
    """The three models of one variant; with `kept_models` (a variant of the weights file) its unit models stay
    as they are and only the abstention model is fitted."""
    pc = CHEAP_FEATURES.index("passage_cos")
    weights = set_weights(rows)
    if kept_models:
        prescore = LinearModel.from_dict(kept_models["prescore"])
    else:
        prescore = fit_listwise([(np.where(np.arange(len(CHEAP_FEATURES)) == pc, 0.0, r["cheap"]) if keywords_only
                                  else r["cheap"], r["y"], wq) for r, wq in zip(rows, weights)], CHEAP_FEATURES)
    staged = cascade(rows, prescore, top, keywords_only)
    if kept_models:
        units = LinearModel.from_dict(kept_models["units"])
    else:
        units = fit_listwise([(r["xk"], r["y"][r["keep"]], wq) for r, wq in zip(staged, weights) if r["keep"]],
                             UNIT_FEATURES)
    qx, qy, kept = question_matrix(staged, units)
    answerable = fit_answerable(qx, qy, np.asarray([r["set"] for r in kept]))
    p = answerable.probability(qx)
    report = {}
    for name in dict.fromkeys(r["set"] for r in kept):
        idx = [i for i, r in enumerate(kept) if r["set"] == name]
        pos = [i for i in idx if kept[i]["answerable"]]
        neg = [i for i in idx if not kept[i]["answerable"]]
        mean = lambda v: round(float(np.mean(v)), 4) if len(v) else None  # noqa: E731
        report[name] = {
            "answerable": len(pos), "unanswerable": len(neg),
            "top1_holds_answer": mean([kept[i]["best_correct"] for i in pos]),
            "embedded_units_hold_answer": mean([kept[i]["y"][kept[i]["keep"]].any() for i in pos]),
            "any_unit_holds_answer": mean([kept[i]["y"].any() for i in pos]),
            "answered_when_answerable": mean(p[pos] >= answerable.threshold),
            "abstained_when_unanswerable": mean(p[neg] < answerable.threshold),
            "answered_and_holds": mean([(p[i] >= answerable.threshold) and kept[i]["best_correct"] for i in pos]),
        }
    weights = {"prescore": prescore.to_dict(), "units": units.to_dict(), "answerable": answerable.to_dict()}
    report["weights"] = {"units": dict(zip(UNIT_FEATURES, np.round(units.coef, 3).tolist())),
                         "answerable": dict(zip(QUESTION_FEATURES, np.round(answerable.coef, 3).tolist())),
                         "threshold": answerable.threshold}
    return weights, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("eval_dir", help="the shared eval folder (squad-qa, tatqa-finance inside)")
    ap.add_argument("--embedder", default=None)
    ap.add_argument("--passages", type=int, default=20, help="top passages whose units are candidates")
    ap.add_argument("--embed-top", type=int, default=EMBED_TOP, help="units embedded after the cheap pre-score")
    ap.add_argument("--per-article", type=int, default=15)
    ap.add_argument("--no-write", action="store_true", help="fit and report, leave the weights file alone")
    ap.add_argument("--answerable-only", action="store_true",
                    help="keep the unit models of the weights file, fit only the abstention model")
    args = ap.parse_args()
    settings = load_settings(embedder=args.embedder)
    ev = Path(args.eval_dir)
    sets = [near_miss_set(ev / "squad-qa", split="fit", per_article=args.per_article),
            tatqa_set(ev / "tatqa-finance", None, 0, split="fit", kinds=("span", "multi-span")),
            probe_set(REPO / "bench" / "probes" / "data_answers.jsonl", split="fit")]
    started = time.perf_counter()
    rows: list[dict] = []
    # The cached passages are what retrieval returned: a change of retrieval settings or BM25 parameters is a new key.
    from rag import snapshot as snapshot_mod

    retrieval = hashlib.sha256(msgspec.json.encode(settings.retrieval) + repr(
        (snapshot_mod.BM25_K1, snapshot_mod.BM25_B)).encode()).hexdigest()[:8]
    # The encoder variant the builds and queries use (a CPU default may be a quantized export): features,
    # cosines included, come from the vectors the product will score with.
    backend = resolve_backend(settings.embedder_backend)
    for qs in sets:
        part = dump(settings, qs, args.passages, settings.home_path / "eval" / "answer-features",
                    f"{qs.name}-{settings.embedder}-{backend}-p{args.passages}-r{retrieval}")
        for r in part:
            r["set"] = qs.name
        rows += part
    featurize(rows, args.passages, load_embedder(settings.embedder, settings.models_dir, backend))
    weights, reports = {}, {}
    current = json.loads(WEIGHTS_FILE.read_text()).get(settings.embedder, {}) if WEIGHTS_FILE.exists() else {}
    for variant, keywords_only in (("embedder", False), ("keywords", True)):
        kept = current.get(variant) if args.answerable_only else None
        if args.answerable_only and not kept:
            sys.exit(f"--answerable-only: {WEIGHTS_FILE} holds no {variant} fit for {settings.embedder}")
        weights[variant], reports[variant] = fit_variant(rows, keywords_only, args.embed_top, kept)
    report = {"embedder": settings.embedder, "passages": args.passages, "embed_top": args.embed_top,
              "questions": len(rows), "seconds": round(time.perf_counter() - started, 1), **reports}
    print(json.dumps(report, indent=2))
    if not args.no_write:
        fits = json.loads(WEIGHTS_FILE.read_text()) if WEIGHTS_FILE.exists() else {}
        fits[settings.embedder] = {**weights, "passages": args.passages, "embed_top": args.embed_top,
                                   "fitted_on": [qs.name for qs in sets]}
        WEIGHTS_FILE.write_text(json.dumps(fits, indent=1) + "\n", encoding="utf-8")
        out = REPO / "bench" / "results" / f"answer_selection_fit_{settings.embedder}.json"
        out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {WEIGHTS_FILE} and {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
