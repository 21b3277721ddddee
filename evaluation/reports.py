"""Evaluation reports: the JSON files `rag eval ... --json PATH` and the bench scripts keep, and the one page
`rag eval report` makes of them.

The page is one self-contained HTML file (charts drawn by matplotlib, inlined as SVG with their text kept as
text; no script, stylesheet, font or image is fetched) plus a Markdown summary with the same tables. A result is
recognized by its shape, whichever command wrote it:
- retrieval (`rag eval retrieval`): `modes` -> {mode: {ndcg@10, recall@10, ..., p50_ms, p95_ms}}, one embedder
  (bench/embedder_quality.py's file holds several: {set: {embedder: modes}});
- answers (`rag eval answers`): `metrics` with `holds_answer`, one backend, `per_question` with seconds, and for
  PubMedQA `decisions` (yes/no/maybe accuracy and macro-F1 beside the majority baseline);
- summaries (`rag eval summaries`): `systems` with ROUGE and BLEU per backend and baseline;
- recommendations (`rag eval recommend`): `systems` with `ndcg@10` per recommender and baseline.
Per set the page shows its tables and bar charts across modes / embedders / backends / systems, latency
distributions, and the answer checks' outcomes (answered, abstained, fallback reasons).
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("retrieval", "answers", "summaries", "recommend")
TITLES = {"retrieval": "Retrieval", "answers": "Answers", "summaries": "Summaries", "recommend": "Recommendations"}


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def result_kind(report: dict[str, Any]) -> str | None:
    """Which evaluation wrote `report` (see the module note), or None for any other JSON."""
    if isinstance(report.get("modes"), dict) and "embedder" in report:
        return "retrieval"
    if isinstance(report.get("metrics"), dict) and "holds_answer" in report["metrics"] and "backend" in report:
        return "answers"
    systems = report.get("systems")
    if isinstance(systems, dict) and "baselines" in report:
        return "summaries"
    if isinstance(systems, dict) and all(isinstance(m, dict) and "ndcg@10" in m for m in systems.values()):
        return "recommend"
    return None


@dataclass
class Result:
    kind: str
    dataset: str
    label: str  # what tells this result apart from others of its set: embedder, backend, style
    path: Path
    data: dict[str, Any]


@dataclass
class Planned:
    """One evaluation `rag eval report` runs when its saved result is missing."""
    kind: str
    path: Path
    backends: tuple[str, ...] = ()  # answers: one; summaries: every backend, compared in one run

    @property
    def file_name(self) -> str:
        name = Path(self.path).name if Path(self.path).is_dir() else Path(self.path).stem
        return f"{self.kind}-{name}" + "".join(f"-{b}" for b in self.backends) + ".json"


def run_missing(settings, plan: list[Planned], results_dir: Path, *, progress: bool = True) -> list[Path]:
    """Run each planned evaluation whose result is not saved in `results_dir` yet, saving it there as soon as it
    ends: an interrupted run resumes where it stopped. Returns the result files, saved before or now."""
    from tqdm import tqdm

    files = []
    todo = [p for p in plan if not (results_dir / p.file_name).is_file()]
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="evaluations", unit="eval", disable=not progress)
    for p in plan:
        target = results_dir / p.file_name
        files.append(target)
        if target.is_file():
            continue
        bar.set_postfix_str(p.file_name)
        write_report(target, _run_one(settings, p, progress))
        bar.update()
    bar.close()
    return files


def _run_one(settings, p: Planned, progress: bool) -> dict[str, Any]:
    if p.kind == "retrieval":
        from evaluation.retrieval import evaluate as retrieval

        return retrieval(settings, p.path, show_progress=progress)
    if p.kind == "answers":
        from evaluation.answers import evaluate as answers

        return answers(settings, p.path, backend=p.backends[0] if p.backends else None, show_progress=progress)
    if p.kind == "summaries":
        from evaluation.summaries import evaluate as summaries

        return summaries(settings, p.path, backends=list(p.backends) or None, show_progress=progress)
    from evaluation.recommend import evaluate as recommend

    return recommend(p.path, settings, show_progress=progress)


def load_results(paths: list[Path]) -> tuple[list[Result], list[str]]:
    """Every recognized result in the files and folders (searched for *.json) given; (results, skipped notes)."""
    results, skipped = [], []
    files: list[Path] = []
    for p in paths:
        files += sorted(Path(p).rglob("*.json")) if Path(p).is_dir() else [Path(p)]
    for f in dict.fromkeys(files):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            skipped.append(f"{f}: unreadable ({e})")
            continue
        if isinstance(data, dict) and isinstance(data.get("results"), dict) and "mean_ndcg@10" in data:
            # bench/embedder_quality.py: {set: {embedder: {mode: metrics}}}, several retrieval results in one
            results += [Result("retrieval", dataset, embedder, f, {"dataset": dataset, "embedder": embedder,
                                                                   "modes": modes})
                        for dataset, by_embedder in data["results"].items() for embedder, modes in by_embedder.items()]
            continue
        kind = result_kind(data) if isinstance(data, dict) else None
        if kind is None:
            skipped.append(f"{f}: not an evaluation result")
            continue
        answers = f"{data.get('backend')} + QA model" if data.get("qa_model") else data.get("backend")
        label = {"retrieval": data.get("embedder"), "answers": answers,
                 "summaries": f"{data.get('style')}, {data.get('max_words')} words"}.get(kind) or ""
        results.append(Result(kind, str(data.get("dataset") or f.stem), str(label), f, data))
    return results, skipped


# --- charts -------------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "rag-eval-report"})
    return plt


def _svg(fig) -> str:
    """The figure as an inline <svg> element (no XML prolog, no external references)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def bar_chart(title: str, groups: list[str], series: dict[str, list[float]], ylabel: str = "") -> str:
    """Grouped bars: one group per x label, one bar per series."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(groups) * max(1, len(series)) ** 0.5 + 2), 2.8))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return _svg(fig)


def latency_chart(title: str, samples: dict[str, list[float]], unit: str = "s") -> str:
    """One box per system: the distribution of its per-item latencies."""
    plt = _pyplot()
    names = [n for n, v in samples.items() if v]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 2.6))
    ax.boxplot([samples[n] for n in names], showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    if names and max(max(samples[n]) for n in names) / max(1e-9, min(min(samples[n]) for n in names)) > 50:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(unit)
    return _svg(fig)


# --- the page -----------------------------------------------------------------------------------------------

@dataclass
class Block:
    """One set of one kind: its tables (header, rows) and charts (title, inline svg)."""
    kind: str
    dataset: str
    note: str
    tables: list[tuple[str, list[str], list[list[Any]]]]
    charts: list[tuple[str, str]]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def _by_set(results: list[Result], kind: str) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = {}
    for r in results:
        if r.kind == kind:
            out.setdefault(r.dataset, []).append(r)
    return out


def retrieval_blocks(results: list[Result]) -> list[Block]:
    blocks = []
    for dataset, rs in _by_set(results, "retrieval").items():
        metrics = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "p50_ms", "p95_ms")
        rows = [[r.label, mode, *(m.get(k) for k in metrics)] for r in rs for mode, m in r.data["modes"].items()]
        modes = list(dict.fromkeys(mode for r in rs for mode in r.data["modes"]))
        ndcg = {r.label: [r.data["modes"].get(mode, {}).get("ndcg@10", 0.0) for mode in modes] for r in rs}
        p50 = {r.label: [r.data["modes"].get(mode, {}).get("p50_ms", 0.0) for mode in modes] for r in rs}
        first = rs[0].data
        docs = f"{first['documents']} documents, " if first.get("documents") else ""
        blocks.append(Block("retrieval", dataset, f"{docs}{next(iter(first['modes'].values()), {}).get('queries', '?')}"
                            " queries; embedders: " + ", ".join(r.label for r in rs),
                            [("by embedder and mode", ["embedder", "mode", *metrics], rows)],
                            [(f"{dataset}: nDCG@10 by mode", bar_chart(f"{dataset}: nDCG@10", modes, ndcg)),
                             (f"{dataset}: median latency by mode",
                              bar_chart(f"{dataset}: p50 latency", modes, p50, "ms"))]))
    return blocks


def answers_blocks(results: list[Result]) -> list[Block]:
    blocks = []
    cols = ("questions", "holds_answer", "answered_when_answerable", "abstained_when_unanswerable", "f1",
            "citation_accuracy", "invalid_citation_rate", "fallback_rate", "median_words", "p50_s", "p95_s")
    for dataset, rs in _by_set(results, "answers").items():
        backends = [r.label for r in rs]
        rows = [[r.label, *(r.data["metrics"].get(k) for k in cols)] for r in rs]
        checks = {"answered (answerable)": [r.data["metrics"]["answered_when_answerable"] for r in rs]}
        # PubMedQA's questions have no gold span to hold (their decision and conclusion are scored below)
        if not all(r.data.get("kind") == "pubmedqa" for r in rs):
            checks["holds the answer"] = [r.data["metrics"]["holds_answer"] for r in rs]
        if any(r.data["metrics"].get("abstained_when_unanswerable") is not None for r in rs):
            checks["abstained (unanswerable)"] = [r.data["metrics"].get("abstained_when_unanswerable") or 0.0
                                                  for r in rs]
        outcomes = []
        for r in rs:
            pq = r.data.get("per_question") or []
            answered = sum(not q["abstained"] for q in pq)
            outcomes.append([r.label, answered, len(pq) - answered, sum(bool(q.get("fallback")) for q in pq),
                             "; ".join(f"{why} x{n}" for why, n in r.data["metrics"].get("fallback_reasons",
                                                                                          {}).items()) or "-"])
        tables = [("by backend", ["backend", *cols], rows),
                  ("answer checks' outcomes", ["backend", "answered", "abstained", "fallback", "fallback reasons"],
                   outcomes)]
        charts = [(f"{dataset}: answer checks by backend", bar_chart(f"{dataset}: answers", backends, checks))]
        decided = [r for r in rs if r.data.get("decisions")]
        if decided:
            drows, acc, f1 = [], {}, {}
            for r in decided:
                d = r.data["decisions"]
                p, b = d["product"], d["majority_baseline"]
                drows.append([r.label, p["n"], p["accuracy"], p["macro_f1"], *(p["f1"][c] for c in
                              ("yes", "no", "maybe")), d["rougeL_vs_long_answer"]])
                acc[r.label], f1[r.label] = p["accuracy"], p["macro_f1"]
            b = decided[0].data["decisions"]["majority_baseline"]
            drows.append([f"always {b['decision']}", b["n"], b["accuracy"], b["macro_f1"],
                          *(b["f1"][c] for c in ("yes", "no", "maybe")), None])
            acc[f"always {b['decision']}"], f1[f"always {b['decision']}"] = b["accuracy"], b["macro_f1"]
            tables.append(("yes/no/maybe (PubMedQA official scorer: accuracy, macro-F1)",
                           ["backend", "n", "accuracy", "macro-F1", "F1 yes", "F1 no", "F1 maybe",
                            "ROUGE-L vs long_answer"], drows))
            charts.append((f"{dataset}: yes/no/maybe accuracy and macro-F1",
                           bar_chart(f"{dataset}: yes/no/maybe", list(acc),
                                     {"accuracy": list(acc.values()), "macro-F1": list(f1.values())})))
        seconds = {r.label: [q["seconds"] for q in r.data.get("per_question") or []] for r in rs}
        if any(seconds.values()):
            charts.append((f"{dataset}: seconds per answer", latency_chart(f"{dataset}: s/answer", seconds)))
        blocks.append(Block("answers", dataset, f"{rs[0].data.get('documents')} documents, kind "
                            f"{rs[0].data.get('kind')}, split {rs[0].data.get('split', '-')}", tables, charts))
    return blocks


def summaries_blocks(results: list[Result]) -> list[Block]:
    blocks = []
    cols = ("documents", "rouge1", "rouge2", "rougeL", "bleu", "length_ratio", "median_words", "supported_share",
            "seconds_per_summary", "fallback_rate")
    for dataset, rs in _by_set(results, "summaries").items():
        tables, charts = [], []
        for r in rs:
            systems = {n: m for n, m in r.data["systems"].items() if m.get("documents")}
            same = r.data.get("same_documents")
            tables.append((f"{r.label}: every system", ["system", *cols],
                           [[n, *(m.get(k) for k in cols)] for n, m in systems.items()]))
            if same:
                tables.append((f"{r.label}: on the same first {same['documents']} documents", ["system", *cols],
                               [[n, *(m.get(k) for k in cols)] for n, m in same["systems"].items()
                                if m.get("documents")]))
            shown = same["systems"] if same else systems
            names = [n for n in shown if shown[n].get("documents")]
            charts.append((f"{dataset} ({r.label}): ROUGE and BLEU by system",
                           bar_chart(f"{dataset}: ROUGE-1/2/L and BLEU", names,
                                     {k: [shown[n][k] for n in names] for k in ("rouge1", "rouge2", "rougeL",
                                                                                  "bleu")}, "x100")))
            timed = {n: m.get("seconds") or [] for n, m in systems.items() if n not in r.data.get("baselines", [])}
            if any(timed.values()):
                charts.append((f"{dataset} ({r.label}): seconds per summary",
                               latency_chart(f"{dataset}: s/summary", timed)))
        blocks.append(Block("summaries", dataset, f"{rs[0].data.get('documents')} documents; references' median "
                            f"{rs[0].data.get('reference_words_median')} words; BLEU tokenize "
                            f"{rs[0].data.get('bleu_tokenize')}", tables, charts))
    return blocks


def recommend_blocks(results: list[Result]) -> list[Block]:
    blocks = []
    cols = ("ndcg@10", "recall@10", "mrr", "coverage", "fit_s", "score_s")
    for dataset, rs in _by_set(results, "recommend").items():
        r = rs[-1]
        systems = r.data["systems"]
        names = list(systems)
        proto = r.data.get("protocol", {})
        blocks.append(Block("recommend", dataset, f"{proto.get('users', '?')} users, {proto.get('items', '?')} "
                            f"items; {proto.get('split', '')}",
                            [("by system", ["system", *cols], [[n, *(systems[n].get(k) for k in cols)]
                                                               for n in names])],
                            [(f"{dataset}: nDCG@10 and recall@10 by system",
                              bar_chart(f"{dataset}: recommendations", names,
                                        {k: [systems[n][k] for n in names] for k in ("ndcg@10", "recall@10")}))]))
    return blocks


BUILDERS = {"retrieval": retrieval_blocks, "answers": answers_blocks, "summaries": summaries_blocks,
            "recommend": recommend_blocks}

_STYLE = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}th,td{border:1px solid #ccc;padding:.2rem .5rem;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}figure{display:inline-block;
margin:.5rem 1rem .5rem 0;vertical-align:top}figure svg{max-width:100%;height:auto}nav a{margin-right:1rem}
.note{color:#555}.scroll{overflow-x:auto}caption{text-align:left;font-weight:600;padding:.2rem 0}"""


def render(results: list[Result], out_dir: str | Path, *, title: str = "Evaluation report",
           progress: bool = False) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md into `out_dir`; returns both paths."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds = [k for k in KINDS if any(r.kind == k for r in results)]
    blocks: dict[str, list[Block]] = {}
    for kind in tqdm(kinds, desc="report", unit="section", disable=not progress):
        blocks[kind] = BUILDERS[kind](results)
    sources = sorted({str(r.path) for r in results})
    page = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
            "<nav>" + "".join(f"<a href=\"#{k}\">{TITLES[k]}</a>" for k in kinds) + "</nav>"]
    md = [f"# {title}", ""]
    for kind in kinds:
        page.append(f"<section id=\"{kind}\" class=\"kind\"><h2>{TITLES[kind]}</h2>")
        md += [f"## {TITLES[kind]}", ""]
        for b in blocks[kind]:
            page.append(f"<section class=\"set\" data-kind=\"{kind}\" data-set=\"{html.escape(b.dataset)}\">"
                        f"<h3>{html.escape(b.dataset)}</h3><p class=\"note\">{html.escape(b.note)}</p>")
            md += [f"### {b.dataset}", "", b.note, ""]
            for caption, header, rows in b.tables:
                page.append(f"<div class=\"scroll\"><table><caption>{html.escape(caption)}</caption><thead><tr>"
                            + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"
                            + "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                                      for row in rows) + "</tbody></table></div>")
                md += [f"**{caption}**", "", "| " + " | ".join(header) + " |",
                       "|" + "---|" * len(header), *("| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows),
                       ""]
            for caption, svg in b.charts:
                page.append(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>")
            page.append("</section>")
        page.append("</section>")
    page.append("<footer class=\"note\"><p>From saved results:</p><ul>"
                + "".join(f"<li>{html.escape(s)}</li>" for s in sources) + "</ul></footer></body></html>")
    md += ["From saved results: " + ", ".join(f"`{s}`" for s in sources), ""]
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text("\n".join(page), encoding="utf-8")
    md_path.write_text("\n".join(md), encoding="utf-8")
    return html_path, md_path
