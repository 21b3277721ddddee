"""Build a new index generation from sources, verify it, publish it.

load -> chunk -> embed (cache first) -> write into generations/.tmp-<id>/ -> verify -> rename -> publish -> gc.
The published generation is never touched: a build killed at any point leaves at worst a .tmp- folder, which
the next build (holding the build lock, so it knows nobody else owns it) removes.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from indexer.cache import EmbeddingCache
from indexer.chunking import Chunker
from indexer.loaders import LoaderOptions, load_sources
from indexer.progress import Progress, ProgressCallback
from indexer.verify import verify_snapshot
from indexer.writer import choose_index_type, document_vectors, write_metadata, write_vectors
from rag import snapshot_files
from rag.config import Settings
from rag.models.embedders import load_embedder, resolve
from rag.models.integrity import sha256_file
from rag.types import SkippedSource

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    pass


class BuildLocked(BuildError):
    pass


@dataclass
class BuildReport:
    generation_id: str
    published: bool
    documents: int
    chunks: int
    vectors_reused: int
    vectors_embedded: int
    skipped: list[SkippedSource]
    files_seen: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    index_type: str = "flat"
    embedder: str = ""
    unchanged: bool = False  # nothing changed since the published generation: no new generation was written

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"generation_id": self.generation_id, "published": self.published, "documents": self.documents,
                "chunks": self.chunks, "vectors_reused": self.vectors_reused,
                "vectors_embedded": self.vectors_embedded, "files_seen": self.files_seen,
                "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
                "seconds": round(self.seconds, 3), "chunks_per_s": round(self.chunks_per_s, 1),
                "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
                "index_type": self.index_type, "embedder": self.embedder, "unchanged": self.unchanged}


class BuildLock:
    """One build per data home at a time. flock is released by the kernel when a killed build dies."""

    def __init__(self, home: Path):
        self.path = Path(home) / "build.lock"
        self.fd: int | None = None

    def __enter__(self) -> "BuildLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            os.close(self.fd)
            self.fd = None
            raise BuildLocked(f"another index build is running on {self.path.parent} (pid {holder or '?'})")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def is_held(home: Path) -> bool:
        path = Path(home) / "build.lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)


def new_snapshot_id() -> str:
    return datetime.now(timezone.utc).strftime("g%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def _clean_stale(home: Path) -> None:
    root = snapshot_files.snapshots_dir(home)
    if root.exists():
        for d in root.iterdir():
            if d.name.startswith(snapshot_files.TMP_PREFIX):
                log.info("removing leftover of an interrupted build: %s", d)
                shutil.rmtree(d, ignore_errors=True)


def source_fingerprint(content_hashes: list[tuple[str, str]], embedder_identity: str, chunking: dict) -> str:
    h = hashlib.sha256()
    h.update(embedder_identity.encode())
    h.update(repr(sorted(chunking.items())).encode())
    for doc_id, ch in sorted(content_hashes):
        h.update(f"{doc_id}\x00{ch}\n".encode())
    return h.hexdigest()


# Index settings that only change how a generation is searched or how the build runs, not what it holds.
_RUNTIME_INDEX_SETTINGS = {"hnsw_ef_search", "ivf_nprobe", "search_threads", "keep_generations", "batch_size",
                           "verify_sample"}


def build_key(settings: Settings, docs, embedder_identity: str, loader_options: LoaderOptions | None) -> str:
    """Digest of everything a build's output depends on, computable before chunking or loading the model."""
    import msgspec

    from rag import __version__

    h = hashlib.sha256()
    index = {k: v for k, v in msgspec.structs.asdict(settings.index).items() if k not in _RUNTIME_INDEX_SETTINGS}
    h.update(repr((__version__, embedder_identity, sorted(index.items()), repr(loader_options))).encode())
    for d in sorted(docs, key=lambda d: d.doc_id):
        h.update(f"{d.doc_id}\x00{d.content_hash}\x00".encode())
        h.update(msgspec.json.encode(d.metadata, order="sorted"))
    return h.hexdigest()


def _unchanged(home: Path, key: str) -> snapshot_files.Manifest | None:
    """The published generation's manifest when it was built from exactly this input."""
    current = snapshot_files.read_pointer(home)
    if not current:
        return None
    try:
        manifest = snapshot_files.read_manifest(snapshot_files.snapshot_dir(home, current))
    except (OSError, ValueError):
        return None
    return manifest if manifest.build_key == key else None


def build(settings: Settings, sources: list[str | Path], *, embedder: str | None = None,
          publish: bool = True, force: bool = False, show_progress: bool = True,
          on_progress: ProgressCallback | None = None, loader_options: LoaderOptions | None = None) -> BuildReport:
    """Build (and by default publish) a new generation from `sources`. Raises BuildError on failure.

    When the published generation was built from the same documents, embedder and settings, nothing is written
    and the report says `unchanged` (an operator's nightly rebuild costs a load and a hash); `force=True`
    builds a new generation anyway, reusing every cached vector."""
    home = settings.home_path
    home.mkdir(parents=True, exist_ok=True)
    snapshot_files.snapshots_dir(home).mkdir(parents=True, exist_ok=True)
    spec = embedder or settings.embedder
    started = time.perf_counter()
    progress = Progress(show=show_progress, callback=on_progress)
    sources = [str(Path(s).resolve()) for s in sources]
    if not sources:
        raise BuildError("no sources given: name at least one folder or file to index")

    with BuildLock(home):
        _clean_stale(home)
        snapshot_id = new_snapshot_id()
        tmp = snapshot_files.snapshots_dir(home) / f"{snapshot_files.TMP_PREFIX}{snapshot_id}"
        tmp.mkdir()
        try:
            with progress.stage("load", total=1, unit="pass") as advance:
                loaded = load_sources(sources, loader_options, progress=False)
                advance()
            for s in loaded.skipped:
                log.warning("skipped %s: %s", s.path, s.reason)
            docs = loaded.documents
            if not docs:
                raise BuildError(f"no documents found in {', '.join(sources)} "
                                 f"({loaded.files_seen} files seen, {len(loaded.skipped)} skipped)")

            key = build_key(settings, docs, resolve(spec, settings.models_dir)[2], loader_options)
            same = None if (force or not publish) else _unchanged(home, key)
            if same is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                return BuildReport(
                    generation_id=same.id, published=False, documents=same.counts.documents,
                    chunks=same.counts.chunks, vectors_reused=same.counts.chunks, vectors_embedded=0,
                    skipped=loaded.skipped, files_seen=loaded.files_seen, seconds=time.perf_counter() - started,
                    stage_seconds=progress.stage_seconds, index_type=same.index_type, embedder=same.embedder.name,
                    unchanged=True)

            emb = load_embedder(spec, settings.models_dir)
            max_tokens = min(settings.index.chunk_tokens, emb.max_tokens - 32)
            chunker = Chunker(emb.tokenizer, max_tokens=max_tokens,
                              overlap=min(settings.index.chunk_overlap, max_tokens // 3))
            per_doc = []
            with progress.stage("chunk", total=len(docs), unit="doc") as advance:
                for _doc, chunks in chunker.chunk_many(docs):
                    per_doc.append(chunks)
                    advance()
            # Documents that produce no chunk (e.g. only whitespace after cleaning) are not searchable.
            keep = [i for i, c in enumerate(per_doc) if c]
            for i in set(range(len(docs))) - set(keep):
                loaded.skipped.append(SkippedSource(docs[i].source, f"document {docs[i].doc_id} has no text"))
            docs = [docs[i] for i in keep]
            per_doc = [per_doc[i] for i in keep]
            texts: list[str] = []
            hashes: list[str] = []
            for doc, chunks in zip(docs, per_doc):
                for ch in chunks:
                    texts.append(ch.embed_text(doc.title))
                    hashes.append(ch.content_hash(doc.title))

            vectors = _embed_with_cache(settings, emb, texts, hashes, progress)
            reused = vectors.reused

            with progress.stage("write", total=2, unit="file") as advance:
                kw = write_metadata(tmp, docs, per_doc, hashes)
                advance()
                kind = choose_index_type(len(texts), settings.index)
                write_vectors(tmp, vectors.array, document_vectors(vectors.array, [len(c) for c in per_doc]),
                              kind, settings.index)
                advance()

            chunking = {"max_tokens": max_tokens, "overlap": chunker.overlap}
            manifest = snapshot_files.Manifest(
                id=snapshot_id,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                embedder=snapshot_files.EmbedderInfo(spec=spec, name=emb.name, identity=emb.identity, dim=emb.dim,
                                                     query_prefix=emb.query_prefix,
                                                     passage_prefix=emb.passage_prefix),
                counts=snapshot_files.Counts(documents=len(docs), chunks=len(texts), vectors=len(texts),
                                             terms=kw["terms"], postings=kw["postings"],
                                             skipped_sources=len(loaded.skipped), vectors_reused=reused),
                index_type=kind,
                checksums={f: sha256_file(tmp / f) for f in snapshot_files.CHECKSUMMED},
                source_fingerprint=source_fingerprint([(d.doc_id, d.content_hash) for d in docs], emb.identity,
                                                      chunking),
                sources=sources,
                chunking=chunking,
                build_seconds=0.0,
                parent=snapshot_files.read_pointer(home),
                build_key=key,
            )
            manifest.build_seconds = round(time.perf_counter() - started, 3)
            snapshot_files.write_manifest(tmp, manifest)

            with progress.stage("verify", total=1, unit="check") as advance:
                verify_snapshot(tmp, settings, emb, sample=settings.index.verify_sample)
                advance()

            final = snapshot_files.snapshot_dir(home, snapshot_id)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

        if publish:
            snapshot_files.publish(home, snapshot_id)
            snapshot_files.gc(home, settings.index.keep_generations)

    return BuildReport(
        generation_id=snapshot_id, published=publish, documents=len(docs), chunks=len(texts), vectors_reused=reused,
        vectors_embedded=len(texts) - reused, skipped=loaded.skipped, files_seen=loaded.files_seen,
        seconds=time.perf_counter() - started, stage_seconds=progress.stage_seconds, index_type=kind,
        embedder=emb.name)


@dataclass
class _Embedded:
    array: np.ndarray
    reused: int


def _embed_with_cache(settings: Settings, emb, texts: list[str], hashes: list[str], progress: Progress) -> _Embedded:
    cache = EmbeddingCache(settings.cache_dir / "embeddings.duckdb")
    try:
        found = cache.get(emb.identity, hashes, emb.dim)
        out = np.zeros((len(texts), emb.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, h in enumerate(hashes):
            v = found.get(h)
            if v is None:
                missing.setdefault(h, []).append(i)  # identical chunks are embedded once
            else:
                out[i] = v
        # Length-sorted, as the encoder itself sorts within a call: batches of similar length pad least.
        todo = sorted(missing, key=lambda h: len(texts[missing[h][0]]))
        batch = max(1, settings.index.batch_size)
        # Larger write batches than encode batches: one cache insert per ~8 encoder batches.
        step = batch * 8
        with progress.stage("embed", total=len(todo), unit="chunk") as advance:
            for start in range(0, len(todo), step):
                keys = todo[start:start + step]
                vecs = emb.embed_passages([texts[missing[h][0]] for h in keys], batch_size=batch)
                cache.put(emb.identity, keys, vecs)
                for h, v in zip(keys, vecs):
                    out[missing[h]] = v
                advance(len(keys))
        reused = sum(1 for h in hashes if h in found)
        return _Embedded(out, reused)
    finally:
        cache.close()
