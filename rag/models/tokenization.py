"""A model folder's tokenizer as a bare `tokenizers.Tokenizer`, without transformers.

The exported encoder variants and the build's chunker only need the Rust tokenizer that a folder's
``tokenizer.json`` describes. Loading it through transformers costs an import of transformers and torch (~6 s on
two cores) before the first vector, for nothing those callers use. What transformers adds on top for the
folders we run (BERT and XLM-R style) is read here from ``tokenizer_config.json``: the padding token and whether
special tokens written in the text stay plain text (``split_special_tokens``). tests/test_tokenization.py
checks the ids and masks against transformers' for both named embedders.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer


def has_tokenizer_file(folder: Path) -> bool:
    return (Path(folder) / "tokenizer.json").is_file()


def _config(folder: Path) -> dict:
    path = Path(folder) / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token(value) -> str | None:
    # tokenizer_config.json writes a special token either as its text or as an AddedToken object.
    return value.get("content") if isinstance(value, dict) else value


def counting_tokenizer(folder: Path) -> Tokenizer:
    """The folder's tokenizer with truncation and padding off: token counts and offsets of any text."""
    tok = _counting(Tokenizer.from_file(str(Path(folder) / "tokenizer.json")))
    tok.encode_special_tokens = bool(_config(folder).get("split_special_tokens", False))
    return tok


def counting_copy(hf_tokenizer) -> Tokenizer:
    """A private copy of a transformers fast tokenizer's Rust core with truncation and padding off (never the core
    itself: transformers sets both on it at every encode call)."""
    return _counting(Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str()))


def _counting(tok: Tokenizer) -> Tokenizer:
    tok.no_truncation()
    tok.no_padding()
    return tok


def batch_tokenizer(folder: Path, max_length: int) -> Tokenizer:
    """The folder's tokenizer as sentence-transformers calls it: special tokens added, truncated at
    `max_length`, each batch padded on the right to its longest text."""
    config = _config(folder)
    tok = counting_tokenizer(folder)
    tok.enable_truncation(max_length)
    pad = _token(config.get("pad_token"))
    pad_id = tok.token_to_id(pad) if pad else None
    if pad_id is None:
        raise ValueError(f"{folder}: tokenizer_config.json names no padding token in the vocabulary ({pad!r})")
    tok.enable_padding(direction=config.get("padding_side", "right"), pad_id=pad_id, pad_token=pad)
    return tok


def model_max_length(folder: Path, default: int = 512) -> int:
    value = _config(folder).get("model_max_length")
    return int(value) if isinstance(value, (int, float)) and value < 10**6 else default
