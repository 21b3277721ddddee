"""Settings are as strict as requests: unknown keys are named (file and environment), values parsed by type,
choices shared with the HTTP schemas."""

from __future__ import annotations

import typing

import pytest

from rag.config import ConfigError, load_settings


def test_an_unknown_key_in_the_file_fails_naming_it(tmp_path):
    toml = tmp_path / "rag.toml"
    toml.write_text("[retrieval]\ntopk = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_settings(toml, environ={})
    assert e.value.field == "retrieval.topk"
    assert "retrieval.topk: unknown field" in str(e.value) and str(toml) in str(e.value)
    toml.write_text("colour = 'blue'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="colour: unknown field"):
        load_settings(toml, environ={})


def test_an_unknown_environment_variable_fails_naming_it_and_its_key():
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"RAG_RETRIEVAL__TOPK": "5"})
    assert e.value.field == "retrieval.topk"
    assert str(e.value) == "RAG_RETRIEVAL__TOPK: retrieval.topk: unknown field"
    with pytest.raises(ConfigError, match="RAG_NOPE: nope: unknown field"):
        load_settings(environ={"RAG_NOPE": "1"})


def test_a_negative_per_document_cap_fails_naming_it():
    """A negative cap would keep no passage: every search empty, every answer an abstention."""
    with pytest.raises(ConfigError, match="retrieval.answer_max_per_doc must be 0 .no cap. or more, got -1"):
        load_settings(environ={"RAG_RETRIEVAL__ANSWER_MAX_PER_DOC": "-1"})
    with pytest.raises(ConfigError, match="retrieval.max_per_doc must be 0"):
        load_settings(environ={"RAG_RETRIEVAL__MAX_PER_DOC": "-2"})
    assert load_settings(environ={"RAG_RETRIEVAL__ANSWER_MAX_PER_DOC": "0"}).retrieval.answer_max_per_doc == 0


def test_environment_values_are_parsed_by_the_fields_type():
    s = load_settings(environ={"RAG_RETRIEVAL__TOP_K": "5", "RAG_SERVICE__OPEN_MODE": "true",
                               "RAG_GENERATOR__TIMEOUT_S": "0.5", "RAG_EMBEDDER": "123",
                               "RAG_RETRIEVAL__MMR_LAMBDA": "null", "RAG_SERVICE__API_KEYS": '{"k1": "admin"}'})
    assert s.retrieval.top_k == 5 and s.service.open_mode is True and s.generator.timeout_s == 0.5
    assert s.embedder == "123"  # a string field keeps the text, even when it looks like a number
    assert s.retrieval.mmr_lambda is None and s.service.api_keys == {"k1": "admin"}
    for env, field in [({"RAG_RETRIEVAL__TOP_K": "five"}, "retrieval.top_k"),
                       ({"RAG_INDEX__ANN": "flat"}, "index.ann"),
                       ({"RAG_GENERATOR__BACKEND": "gpt9"}, "generator.backend"),
                       ({"RAG_SERVICE__API_KEYS": '{"k1": "root"}'}, "service.api_keys.k1"),
                       ({"RAG_SERVICE__API_KEYS": "k1=admin"}, "service.api_keys")]:
        with pytest.raises(ConfigError) as e:
            load_settings(environ=env)
        assert e.value.field == field, (env, str(e.value))
        assert str(e.value).startswith(f"{next(iter(env))}: {field}")


def test_a_file_value_must_have_its_fields_type(tmp_path):
    toml = tmp_path / "rag.toml"
    toml.write_text("[retrieval]\ntop_k = '5'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_settings(toml, environ={})
    assert e.value.field == "retrieval.top_k" and "Expected `int`, got `str`" in str(e.value)
    toml.write_text("[generator]\ntimeout_s = 3\nbackend = 'extractive'\n", encoding="utf-8")
    s = load_settings(toml, environ={})
    assert s.generator.timeout_s == 3.0 and s.generator.backend == "extractive"


def test_choices_are_written_once_and_shared():
    from rag import config
    from rag.generators import BACKENDS
    from rag.retriever import MODES
    from rag.types import DOMAINS, SearchMode
    from service import schemas

    assert BACKENDS == typing.get_args(config.Backend) == ("auto", "transformers", "openai", "extractive")
    assert schemas.Backend is config.Backend and schemas.Domain is typing.get_type_hints(
        schemas.DocumentFields)["domain"]
    assert DOMAINS == ("finance", "medical", "education") and MODES == typing.get_args(SearchMode)
    hints = typing.get_type_hints(config.IndexSettings)
    assert typing.get_args(hints["ann"]) == ("hnsw", "ivf")
    assert typing.get_args(typing.get_type_hints(config.RetrievalSettings)["fusion"]) == ("zscore", "rrf")


def test_rag_config_refuses_an_unknown_variable_with_exit_2(monkeypatch, capsys, tmp_path):
    from service.cli import main

    monkeypatch.setenv("RAG_RETRIEVAL__TOPK", "5")
    assert main(["--home", str(tmp_path), "config"]) == 2
    err = capsys.readouterr().err
    assert err == "rag: error: RAG_RETRIEVAL__TOPK: retrieval.topk: unknown field\n"
    monkeypatch.delenv("RAG_RETRIEVAL__TOPK")
    assert main(["--home", str(tmp_path), "config"]) == 0
    assert '"top_k": 8' in capsys.readouterr().out
