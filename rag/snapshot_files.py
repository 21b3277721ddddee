"""The files of index snapshots: their on-disk layout, the manifest, and the pointer that says which one is
published (written by the indexer, read by `rag.snapshot`; on disk a snapshot is a "generation").

    $RAG_HOME/
      CURRENT                 one line: the published generation id (replaced atomically)
      generations/<id>/       immutable once renamed into place
        manifest.json         embedder, dimension, counts, checksums, source fingerprint, build time
        meta.duckdb           documents, chunks (FAISS row ids), keyword postings
        vectors.faiss         chunk vectors (row i = chunks.row i)
        vectors.npy           the same vectors, memory-mapped for exact search on filtered subsets and MMR
        doc_vectors.npy       one normalized mean vector per document (documents.doc_row)
      generations/.tmp-<id>/  a build in progress; never read, removed by the next build
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import msgspec

from rag.durable import atomic_write
from rag.errors import Conflict, NotFound

POINTER = "CURRENT"
MANIFEST = "manifest.json"
META_DB = "meta.duckdb"
FAISS_FILE = "vectors.faiss"
VECTORS_FILE = "vectors.npy"
DOC_VECTORS_FILE = "doc_vectors.npy"
TMP_PREFIX = ".tmp-"
CHECKSUMMED = (META_DB, FAISS_FILE, VECTORS_FILE, DOC_VECTORS_FILE)  # the manifest's checksums


class EmbedderInfo(msgspec.Struct):
    spec: str  # what the build was asked for: a name or a path; queries are embedded with the same
    name: str
    identity: str
    dim: int
    query_prefix: str = ""
    passage_prefix: str = ""
    backend: str = "torch"  # the encoder variant (rag.models.encoder_variants); older manifests are PyTorch's


class Counts(msgspec.Struct):
    documents: int
    chunks: int
    vectors: int
    terms: int
    postings: int
    skipped_sources: int = 0
    vectors_reused: int = 0


class Manifest(msgspec.Struct, kw_only=True):
    id: str
    created_at: str
    embedder: EmbedderInfo
    counts: Counts
    index_type: str  # flat | hnsw | ivf
    checksums: dict[str, str]  # file name -> sha256
    source_fingerprint: str
    sources: list[str]
    chunking: dict[str, int]
    build_seconds: float
    parent: str | None = None  # the generation that was published when this one was built
    # Everything a build's output depends on (documents with metadata, embedder weights, chunking and index
    # settings, code version), known before chunking: an unchanged rebuild compares it and stops early.
    build_key: str = ""
    format_version: int = 1
    # What the keyword index holds (rag.text.KEYWORD_TERMS); generations written before pairs were indexed say
    # "terms", and their keyword leg looks up single terms only.
    keyword_terms: str = "terms"


class SnapshotNotFound(NotFound):
    pass


def snapshots_dir(home: Path) -> Path:
    return Path(home) / "generations"


def snapshot_dir(home: Path, snapshot_id: str) -> Path:
    return snapshots_dir(home) / snapshot_id


def read_manifest(gen_dir: Path) -> Manifest:
    return msgspec.json.decode((gen_dir / MANIFEST).read_bytes(), type=Manifest)


def write_manifest(gen_dir: Path, manifest: Manifest) -> None:
    (gen_dir / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2))


def read_pointer(home: Path) -> str | None:
    try:
        value = (Path(home) / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None


def publish(home: Path, snapshot_id: str) -> None:
    """Point CURRENT at `snapshot_id`. Readers see the old id or the new one, never a partial file."""
    home = Path(home)
    if not (snapshot_dir(home, snapshot_id) / MANIFEST).exists():
        raise SnapshotNotFound(f"generation {snapshot_id!r} does not exist under {snapshots_dir(home)}",
                               field="generation_id")
    atomic_write(home / POINTER, (snapshot_id + "\n").encode("utf-8"), prefix=".CURRENT-")


def list_snapshots(home: Path) -> list[Manifest]:
    """Complete generations, newest first. Folders without a readable manifest are not generations."""
    out = []
    root = snapshots_dir(home)
    if not root.exists():
        return out
    for d in root.iterdir():
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            out.append(read_manifest(d))
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            continue
    return sorted(out, key=lambda m: m.id, reverse=True)


def remove_snapshot(home: Path, snapshot_id: str) -> None:
    if snapshot_id == read_pointer(home):
        raise Conflict(f"generation {snapshot_id} is published; roll back to another one before removing it",
                       field="generation_id")
    # Rename first so a reader never sees a half-deleted folder under a valid name.
    src = snapshot_dir(home, snapshot_id)
    trash = snapshots_dir(home) / f"{TMP_PREFIX}rm-{snapshot_id}"
    os.replace(src, trash)
    shutil.rmtree(trash, ignore_errors=True)


def gc(home: Path, keep: int) -> list[str]:
    """Remove all but the newest `keep` generations; the published one is always kept."""
    current = read_pointer(home)
    removed = []
    for i, m in enumerate(list_snapshots(home)):
        if i >= keep and m.id != current:
            remove_snapshot(home, m.id)
            removed.append(m.id)
    return removed


def manifest_json(manifest: Manifest) -> dict:
    return json.loads(msgspec.json.encode(manifest))
