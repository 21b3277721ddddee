"""Writes the files of one generation into its (temporary) folder: DuckDB metadata + keyword postings, FAISS."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pyarrow as pa

from rag import text as textmod
from rag.config import IndexSettings
from rag.snapshot_files import DOC_VECTORS_FILE, FAISS_FILE, META_DB, VECTORS_FILE
from rag.types import Chunk, Document

SCHEMA = """
CREATE TABLE documents (
    doc_id VARCHAR PRIMARY KEY, doc_row INTEGER, title VARCHAR, domain VARCHAR, tags VARCHAR[], audience VARCHAR,
    language VARCHAR, date DATE, source VARCHAR, format VARCHAR, metadata VARCHAR, content_hash VARCHAR,
    n_chunks INTEGER, n_chars INTEGER, text VARCHAR,
    access VARCHAR[]);  -- rag.access: group names, empty = public
CREATE TABLE chunks (
    row INTEGER PRIMARY KEY, chunk_id VARCHAR, doc_id VARCHAR, ordinal INTEGER, text VARCHAR,
    heading_path VARCHAR[], kind VARCHAR, n_tokens INTEGER, n_terms INTEGER, content_hash VARCHAR,
    start_char INTEGER, end_char INTEGER,
    -- denormalized from documents so both retrieval legs filter without a join
    domain VARCHAR, language VARCHAR, audience VARCHAR, date DATE, tags VARCHAR[], access VARCHAR[]);
"""


def _iso_or_none(d: str | None) -> str | None:
    return d if d else None


def write_metadata(path: Path, docs: list[Document], chunks: list[list[Chunk]], hashes: list[str]) -> dict[str, int]:
    """documents, chunks and the BM25 tables. `chunks[i]` are docs[i]'s chunks; rows follow that order."""
    con = duckdb.connect(str(path / META_DB))
    try:
        con.execute(SCHEMA)
        con.register("docs_in", pa.table({
            "doc_id": [d.doc_id for d in docs],
            "doc_row": pa.array(range(len(docs)), pa.int32()),
            "title": [d.title for d in docs],
            "domain": [d.domain for d in docs],
            "tags": pa.array([list(d.tags) for d in docs], pa.list_(pa.string())),
            "audience": [d.audience for d in docs],
            "language": [d.language for d in docs],
            "date": [_iso_or_none(d.date) for d in docs],
            "source": [d.source for d in docs],
            "format": [d.format for d in docs],
            "metadata": [json.dumps(d.metadata, ensure_ascii=False, default=str) for d in docs],
            "content_hash": [d.content_hash for d in docs],
            "n_chunks": pa.array([len(c) for c in chunks], pa.int32()),
            "n_chars": pa.array([len(d.text) for d in docs], pa.int32()),
            "text": [d.text for d in docs],
            "access": pa.array([list(d.access) for d in docs], pa.list_(pa.string())),
        }))
        con.execute("INSERT INTO documents SELECT doc_id, doc_row, title, domain, tags, audience, language, "
                    "TRY_CAST(date AS DATE), source, format, metadata, content_hash, n_chunks, n_chars, text, access "
                    "FROM docs_in")
        con.unregister("docs_in")

        cols: dict[str, list] = {k: [] for k in ("row", "chunk_id", "doc_id", "ordinal", "text", "heading_path",
                                                 "kind", "n_tokens", "n_terms", "content_hash", "start_char",
                                                 "end_char", "domain", "language", "audience", "date", "tags", "access")}
        post_term: list[str] = []
        post_row: list[int] = []
        post_tf: list[int] = []
        row = 0
        for doc, doc_chunks in zip(docs, chunks):
            for ch in doc_chunks:
                # Title and heading path are searchable words of every chunk, as they are for the embedder; the
                # terms' adjacent pairs are terms too (rag.text.KEYWORD_TERMS).
                terms = Counter(textmod.keyword_terms(ch.embed_text(doc.title)))
                for t, tf in terms.items():
                    post_term.append(t)
                    post_row.append(row)
                    post_tf.append(tf)
                for k, v in (("row", row), ("chunk_id", ch.chunk_id), ("doc_id", doc.doc_id),
                             ("ordinal", ch.ordinal), ("text", ch.text), ("heading_path", list(ch.heading_path)),
                             ("kind", ch.kind), ("n_tokens", ch.n_tokens),
                             ("n_terms", sum(tf for t, tf in terms.items() if textmod.PAIR_JOIN not in t)),
                             ("content_hash", hashes[row]), ("start_char", ch.start_char),
                             ("end_char", ch.end_char), ("domain", doc.domain), ("language", doc.language),
                             ("audience", doc.audience), ("date", _iso_or_none(doc.date)),
                             ("tags", list(doc.tags)), ("access", list(doc.access))):
                    cols[k].append(v)
                row += 1
        schema = {"row": pa.int32(), "ordinal": pa.int32(), "n_tokens": pa.int32(), "n_terms": pa.int32(),
                  "start_char": pa.int32(), "end_char": pa.int32(), "heading_path": pa.list_(pa.string()),
                  "tags": pa.list_(pa.string()), "access": pa.list_(pa.string())}
        con.register("chunks_in", pa.table({k: pa.array(v, schema.get(k, pa.string())) for k, v in cols.items()}))
        con.execute("INSERT INTO chunks SELECT row, chunk_id, doc_id, ordinal, text, heading_path, kind, n_tokens, "
                    "n_terms, content_hash, start_char, end_char, domain, language, audience, "
                    "TRY_CAST(date AS DATE), tags, access FROM chunks_in")
        con.unregister("chunks_in")

        con.register("post_in", pa.table({"term": pa.array(post_term, pa.string()),
                                          "row": pa.array(post_row, pa.int32()),
                                          "tf": pa.array(post_tf, pa.int16())}))
        # Sorted by term so DuckDB's zone maps skip most row groups for `term = ?` lookups.
        con.execute("CREATE TABLE postings AS SELECT term, row, tf FROM post_in ORDER BY term, row")
        con.unregister("post_in")
        n = row
        con.execute(f"""CREATE TABLE terms AS
            SELECT term, count(*)::INTEGER AS df,
                   ln(1 + ({n} - count(*) + 0.5) / (count(*) + 0.5)) AS idf
            FROM postings GROUP BY term ORDER BY term""")
        con.execute("CREATE TABLE kw_stats AS SELECT count(*)::INTEGER AS n, "
                    "coalesce(avg(n_terms), 1)::DOUBLE AS avgdl FROM chunks")
        n_terms = con.execute("SELECT count(*) FROM terms").fetchone()[0]
        con.execute("CHECKPOINT")
        return {"terms": int(n_terms), "postings": len(post_term)}
    finally:
        con.close()


def choose_index_type(n: int, settings: IndexSettings) -> str:
    return "flat" if n <= settings.exact_max_vectors else settings.ann


def build_faiss(vectors: np.ndarray, kind: str, settings: IndexSettings) -> faiss.Index:
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.hnsw.efSearch = settings.hnsw_ef_search
    elif kind == "ivf":
        nlist = settings.ivf_nlist or max(1, int(4 * math.sqrt(max(n, 1))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, nlist * 64), replace=False)] if n else vectors
        index.train(np.ascontiguousarray(sample))
        index.nprobe = settings.ivf_nprobe
        index.make_direct_map()
    else:
        raise ValueError(f"unknown index type {kind!r} (flat | hnsw | ivf)")
    if n:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def write_vectors(path: Path, vectors: np.ndarray, doc_vectors: np.ndarray, kind: str,
                  settings: IndexSettings) -> None:
    np.save(path / VECTORS_FILE, vectors)
    np.save(path / DOC_VECTORS_FILE, doc_vectors)
    faiss.write_index(build_faiss(vectors, kind, settings), str(path / FAISS_FILE))


def document_vectors(vectors: np.ndarray, chunk_counts: list[int]) -> np.ndarray:
    """Normalized mean of each document's chunk vectors (for recommendations and "more like this")."""
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    out = np.zeros((len(chunk_counts), dim), dtype=np.float32)
    start = 0
    for i, c in enumerate(chunk_counts):
        if c:
            v = vectors[start:start + c].mean(axis=0)
            out[i] = v / (np.linalg.norm(v) or 1.0)
        start += c
    return out
