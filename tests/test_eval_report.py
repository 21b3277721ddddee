"""`rag eval report`: the page rendered from small saved results, read back with an HTML parser."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from evaluation.answers import decisions_report
from evaluation.summaries import aggregate
from evaluation.text_metrics import answer_decision, rouge
from service.cli import main as cli


class Page(HTMLParser):
    """The page's sections (by id), each set's tables and inline charts, and every external reference."""

    def __init__(self):
        super().__init__()
        self.kinds: list[str] = []
        self.sets: dict[tuple[str, str], dict] = {}
        self.external: list[str] = []
        self.tags: list[str] = []
        self._set: dict | None = None
        self._in_caption = self._in_td = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href", "xlink:href"):
            if a.get(key) and not a[key].startswith(("#", "data:")):
                self.external.append(a[key])
        if tag == "section" and a.get("class") == "kind":
            self.kinds.append(a["id"])
        elif tag == "section" and a.get("class") == "set":
            self._set = self.sets.setdefault((a["data-kind"], a["data-set"]),
                                             {"tables": [], "svgs": 0, "figures": []})
        elif self._set is not None:
            if tag == "table":
                self._set["tables"].append({"caption": "", "cells": []})
            elif tag == "caption":
                self._in_caption = True
            elif tag == "td":
                self._in_td = True
            elif tag == "svg":
                self._set["svgs"] += 1
            elif tag == "figcaption":
                self._set["figures"].append("")

    def handle_endtag(self, tag):
        if tag == "caption":
            self._in_caption = False
        elif tag == "td":
            self._in_td = False

    def handle_data(self, data):
        if self._set is None:
            return
        if self._in_caption:
            self._set["tables"][-1]["caption"] += data
        elif self._in_td:
            self._set["tables"][-1]["cells"].append(data)
        elif self.tags and self.tags[-1] == "figcaption":
            self._set["figures"][-1] += data


def _summary_rows(system: str, pairs: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for i, (summary, reference) in enumerate(pairs):
        rows.append({"id": str(i), "summary": summary, "reference": reference, **rouge(summary, reference),
                     "words": len(summary.split()), "length_ratio": 1.0, "judged": 2, "unsupported": 0,
                     "seconds": 0.01 * (i + 1), "fallback": "N of N generated sentences are not supported"
                     if system == "transformers" and i == 0 else None})
    return rows


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved result of each kind, shaped as the eval commands write them."""
    root = tmp_path_factory.mktemp("saved")
    refs = ["Metformin lowers glucose and is the first medicine.", "Screening by telephone raised adherence."]
    systems = {"lead": _summary_rows("lead", [("Type 2 diabetes is common.", refs[0]),
                                              ("Women were randomized.", refs[1])]),
               "tail": _summary_rows("tail", [("Metformin lowers glucose.", refs[0]),
                                              ("Adherence rose.", refs[1])]),
               "extractive": _summary_rows("extractive", [("Metformin lowers glucose first.", refs[0]),
                                                          ("Telephone screening raised adherence.", refs[1])]),
               "transformers": _summary_rows("transformers", [("Metformin is first.", refs[0])])}
    summaries = {"dataset": "pubmed-mini", "path": "x", "split": "test", "documents": 2, "style": "brief",
                 "max_words": 40, "backends": ["extractive", "transformers"], "baselines": ["lead", "tail"],
                 "reference_words_median": 7, "bleu_tokenize": "13a",
                 "systems": {s: aggregate(r) for s, r in systems.items()},
                 "same_documents": {"documents": 1, "systems": {s: aggregate(r[:1]) for s, r in systems.items()}}}
    (root / "summaries.json").write_text(json.dumps(summaries))
    for backend, answers in (("extractive", ["Yes, it raised adherence [1].", "No difference was found [1]."]),
                             ("transformers", ["It may help [1].", ""])):
        per_question = [{"id": str(i), "abstained": not a, "fallback": None if a else "the generator timed out",
                         "seconds": 0.2 + i, "decision_gold": gold, "decision": answer_decision(a, not a),
                         "rougeL": rouge(a, refs[i])["rougeL"] if a else 0.0}
                        for i, (a, gold) in enumerate(zip(answers, ["yes", "no"]))]
        metrics = {"questions": 2, "holds_answer": 0.5, "answered_when_answerable": 1.0 if backend == "extractive"
                   else 0.5, "abstained_when_unanswerable": None, "f1": 10.0, "citation_accuracy": 1.0,
                   "invalid_citation_rate": 0.0, "fallback_rate": 0.0 if backend == "extractive" else 0.5,
                   "median_words": 6, "p50_s": 0.7, "p95_s": 1.2,
                   "fallback_reasons": {} if backend == "extractive" else {"the generator timed out": 1}}
        (root / f"answers-{backend}.json").write_text(json.dumps(
            {"dataset": "pubmed-mini", "kind": "pubmedqa", "backend": backend, "split": "test", "documents": 2,
             "metrics": metrics, "per_question": per_question, "decisions": decisions_report(per_question)}))
    for embedder, ndcg in (("minilm", 0.61), ("e5-small", 0.66)):
        (root / f"retrieval-{embedder}.json").write_text(json.dumps(
            {"dataset": "beir-mini", "embedder": embedder, "documents": 5,
             "modes": {m: {"ndcg@10": ndcg + d, "recall@10": 0.8, "recall@100": 1.0, "mrr@10": 0.6,
                           "p50_ms": 3.0, "p95_ms": 9.0, "queries": 4}
                       for m, d in (("dense", 0.0), ("sparse", -0.1), ("hybrid", 0.02))}}))
    (root / "recommend.json").write_text(json.dumps(
        {"dataset": "ml-mini", "protocol": {"users": 3, "items": 9, "split": "latest 1 held out"},
         "systems": {s: {"ndcg@10": v, "recall@10": 2 * v, "mrr": v, "coverage": 0.5}
                     for s, v in (("ours", 0.12), ("popularity", 0.04), ("als", 0.07))}}))
    (root / "notes.json").write_text(json.dumps({"something": "else"}))  # not a result: skipped
    return root


def test_report_renders_every_kind_with_tables_and_inline_charts(saved, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli(["eval", "report", "--out", str(out), "--from", str(saved), "--quiet"]) == 0
    assert "6 results" in capsys.readouterr().out  # notes.json is no result
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    assert page.kinds == ["retrieval", "answers", "summaries", "recommend"]
    assert set(page.sets) == {("retrieval", "beir-mini"), ("answers", "pubmed-mini"), ("summaries", "pubmed-mini"),
                              ("recommend", "ml-mini")}
    assert page.external == [] and "script" not in page.tags and "link" not in page.tags and "img" not in page.tags

    retrieval = page.sets[("retrieval", "beir-mini")]
    assert retrieval["svgs"] == 2 and "e5-small" in retrieval["tables"][0]["cells"]
    answers = page.sets[("answers", "pubmed-mini")]
    captions = [t["caption"] for t in answers["tables"]]
    assert captions[1] == "answer checks' outcomes" and captions[2].startswith("yes/no/maybe")
    # the outcome table: extractive answered 2 abstained 0; transformers answered 1, abstained 1, its reason
    outcome = answers["tables"][1]["cells"]
    assert outcome[:4] == ["extractive", "2", "0", "0"] and outcome[5:9] == ["transformers", "1", "1", "1"]
    assert "the generator timed out x1" in outcome
    decisions = answers["tables"][2]["cells"]
    assert decisions[:4] == ["extractive", "2", "1.00", "1.00"] and "always yes" in decisions
    assert answers["svgs"] == 3 and any("seconds per answer" in f for f in answers["figures"])
    summaries = page.sets[("summaries", "pubmed-mini")]
    assert [t["caption"] for t in summaries["tables"]] == ["brief, 40 words: every system",
                                                          "brief, 40 words: on the same first 1 documents"]
    assert summaries["tables"][0]["cells"][::11] == ["lead", "tail", "extractive", "transformers"]
    assert summaries["svgs"] == 2
    assert page.sets[("recommend", "ml-mini")]["svgs"] == 1

    md = (out / "report.md").read_text(encoding="utf-8")
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## Retrieval", "## Answers", "## Summaries", "## Recommendations"]
    assert "| extractive | 2 | 1.00 | 1.00 |" in md


def test_report_without_results_is_a_clear_error(tmp_path, capsys):
    assert cli(["eval", "report", "--out", str(tmp_path / "r"), "--from", str(tmp_path)]) == 2
    assert "no evaluation results" in capsys.readouterr().err


def test_saved_results_are_not_run_again(saved, tmp_path):
    from evaluation.reports import Planned, run_missing

    results = tmp_path / "results"
    plan = [Planned("summaries", tmp_path / "pubmed-mini", ("extractive",)), Planned("recommend", tmp_path / "ml")]
    for p in plan:
        results.mkdir(exist_ok=True)
        (results / p.file_name).write_text("{}")
    # settings None: running either evaluation would fail, so nothing ran
    assert run_missing(None, plan, results, progress=False) == [results / "summaries-pubmed-mini-extractive.json",
                                                               results / "recommend-ml.json"]
