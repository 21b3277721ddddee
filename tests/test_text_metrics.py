"""The summary and answer metrics against the libraries' documented examples, and the Chinese tokenization."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from evaluation.summaries import lead, tail
from evaluation.text_metrics import answer_decision, corpus_bleu, decision_scores, rouge, rouge_scores


def test_rouge_matches_the_libraries_readme_example():
    # rouge-score's README: RougeScorer(['rouge1', 'rougeL'], use_stemmer=True).score(target, prediction)
    target, prediction = "The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."
    ours = rouge_scores(prediction, target)
    assert ours["rouge1"] == pytest.approx({"p": 0.75, "r": 2 / 3, "f": 12 / 17})
    assert ours["rouge2"]["f"] == pytest.approx(4 / 15)
    assert ours["rougeL"] == pytest.approx({"p": 0.625, "r": 5 / 9, "f": 10 / 17})
    library = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(target, prediction)
    assert rouge(prediction, target) == pytest.approx({k: v.fmeasure for k, v in library.items()})


def test_rouge_scores_chinese_by_character_where_the_library_default_drops_it():
    default = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    assert default.score("我爱北京", "我爱北京")["rouge1"].fmeasure == 0.0  # non-ASCII is dropped
    assert rouge("我爱北京", "我爱北京") == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    s = rouge("我爱上海。", "我爱北京")  # 2 of 4 characters, 1 of 3 character pairs; punctuation is no token
    assert s["rouge1"] == pytest.approx(0.5) and s["rouge2"] == pytest.approx(1 / 3)
    mixed = rouge("HbA1c 目标 below 7%", "HbA1c 目标 below 7%")
    assert mixed["rouge2"] == pytest.approx(1.0)


def test_corpus_bleu_matches_the_sacrebleu_readme_example():
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    got = corpus_bleu(hyps, refs[0], more_references=refs[1:])
    assert got["bleu"] == 48.53  # README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ...)
    assert got["precisions"] == [82.4, 50.0, 45.5, 37.5] and got["brevity_penalty"] == 0.943
    assert "tok:13a" in got["signature"]
    with pytest.raises(ValueError):
        corpus_bleu(hyps, refs[0][:2])


def test_corpus_bleu_tokenizes_chinese_references_with_the_zh_tokenizer():
    ref = "二型糖尿病患者应每年检查眼底和肾功能。"
    got = corpus_bleu([ref], [ref])
    assert "tok:zh" in got["signature"] and got["bleu"] == 100.0
    assert corpus_bleu([ref], [ref], tokenize="13a")["bleu"] < 100.0  # one unspaced token: no 2-4-grams


def test_decision_scores_are_accuracy_and_macro_f1_as_scikit_learns_documented_example():
    # scikit-learn's f1_score example: y_true [0, 1, 2, 0, 1, 2], y_pred [0, 2, 1, 0, 0, 1] -> macro 0.2666...
    label = {0: "yes", 1: "no", 2: "maybe"}
    gold = [label[i] for i in (0, 1, 2, 0, 1, 2)]
    pred = [label[i] for i in (0, 2, 1, 0, 0, 1)]
    got = decision_scores(gold, pred)
    assert got["accuracy"] == pytest.approx(1 / 3, abs=1e-4) and got["macro_f1"] == pytest.approx(0.2667, abs=1e-4)
    assert got["f1"] == {"yes": 0.8, "no": 0.0, "maybe": 0.0}
    assert got["confusion"]["no"] == {"yes": 1, "no": 0, "maybe": 1} and got["n"] == 6


@pytest.mark.parametrize("answer, abstained, decision", [
    ("Yes, telephone counseling increased screening [1].", False, "yes"),
    ("No. The scores did not differ [2].", False, "no"),
    ("There was no significant difference in mortality between the groups.", False, "no"),
    ("The association remains unclear and further studies are needed.", False, "maybe"),
    ("Telephone counseling increased on-schedule mammography (71% vs 61%).", False, "yes"),
    ("", False, "maybe"),
    ("I could not find this in the documents.", True, "maybe"),
])
def test_answer_decision_reads_the_answers_stance(answer, abstained, decision):
    assert answer_decision(answer, abstained) == decision


def test_lead_and_tail_baselines_keep_whole_sentences_within_the_budget():
    text = "One two three four five. Six seven eight. Nine ten eleven twelve thirteen."
    assert lead(text, 8) == "One two three four five. Six seven eight."
    assert tail(text, 7) == "Nine ten eleven twelve thirteen."
    assert tail(text, 8) == "Six seven eight. Nine ten eleven twelve thirteen."
    assert lead(text, 3).startswith("One two three") and lead(text, 3).endswith("…")
