"""Build a new index snapshot from sources, verify it, publish it.

load -> chunk -> embed (cache first) -> write into generations/.tmp-<id>/ -> verify -> rename -> publish -> gc.
The published snapshot is never touched: a build killed at any point leaves at worst a .tmp- folder, which
the next build (holding the build lock, so it knows nobody else owns it) removes.

`Indexer` is this package's side of the build contract (`rag.builds.Builder`): the application object gets one
from the service and the CLI, so rebuild jobs and the documents store build and parse exactly like this.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from indexer.cache import EmbeddingCache
from indexer.chunking import CHUNKING_RULES, Chunker
from indexer.loaders import LoaderOptions, LoadResult, load_sources
from indexer.progress import Progress
from indexer.redaction import RedactionPolicy
from indexer.verify import verify_snapshot
from indexer.writer import choose_index_type, document_vectors, write_metadata, write_vectors
from rag import snapshot_files
from rag.builds import BuildError, BuildLock, BuildLocked, BuildReport, ProgressCallback
from rag.config import Settings
from rag.models.embedders import Embedder, identity_of, load_embedder
from rag.models.integrity import sha256_file
from rag.text import KEYWORD_TERMS
from rag.types import Chunk, Document, SkippedSource

__all__ = ["BuildError", "BuildLock", "BuildLocked", "BuildReport", "Indexer", "build"]

log = logging.getLogger(__name__)
ENGINES = ("local", "ray")  # where a build embeds its chunks


def new_snapshot_id() -> str:
    """g<date>-<time to the millisecond>-<random>: ids sort in the order the builds started (newest first in
    listings, the previous one for a rollback), also for two builds within one second."""
    now = datetime.now(timezone.utc)
    return now.strftime("g%Y%m%d-%H%M%S") + f"{now.microsecond // 1000:03d}-" + secrets.token_hex(2)


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
_RUNTIME_INDEX_SETTINGS = {"engine", "ray_address", "ray_actors",
                           "hnsw_ef_search", "ivf_nprobe", "search_threads", "keep_generations", "batch_size",
                           "verify_sample"}


def build_key(settings: Settings, docs, embedder_identity: str, loader_options: LoaderOptions | None) -> str:
    """Digest of everything a build's output depends on, computable before chunking or loading the model."""
    import msgspec

    from rag import __version__

    h = hashlib.sha256()
    index = {k: v for k, v in msgspec.structs.asdict(settings.index).items() if k not in _RUNTIME_INDEX_SETTINGS}
    h.update(repr((__version__, KEYWORD_TERMS, CHUNKING_RULES, embedder_identity, sorted(index.items()),
                   repr(loader_options))).encode())
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


def build(settings: Settings, sources: Sequence[str | Path], *, embedder: str | None = None,
          publish: bool = True, force: bool = False, show_progress: bool = True,
          on_progress: ProgressCallback | None = None, loader_options: LoaderOptions | None = None,
          engine: str | None = None, ray_address: str | None = None, ray_actors: int | None = None
          ) -> BuildReport:
    """Build (and by default publish) a new snapshot from `sources`. Raises BuildError, BuildLocked.

    `engine="ray"` encodes the chunks the cache lacks on Ray Data (`indexer.ray_embed`: the cluster at
    `ray_address`, or a local one; `ray_actors` encoders, 0 = one per GPU or per CPU); the generation written is
    the same as a local build's. Each defaults to its `settings.index` value.

    When the published snapshot was built from the same documents, embedder and settings, nothing is written
    and the report says `unchanged` (an operator's nightly rebuild costs a load and a hash); `force=True`
    builds a new snapshot anyway, reusing every cached vector."""
    engine = engine or settings.index.engine
    ray_address = ray_address or settings.index.ray_address or None
    ray_actors = settings.index.ray_actors if ray_actors is None else ray_actors
    if engine not in ENGINES:
        raise BuildError(f"unknown build engine {engine!r}; expected one of {', '.join(ENGINES)}", field="engine")
    run = _Run(settings, [str(Path(s).resolve()) for s in sources], embedder or settings.embedder,
               Progress(show=show_progress, callback=on_progress), engine, ray_address, ray_actors)
    if not run.sources:
        raise BuildError("no sources given: name at least one folder or file to index", field="sources")
    snapshot_files.snapshots_dir(run.home).mkdir(parents=True, exist_ok=True)
    with BuildLock(run.home):
        _clean_stale(run.home)
        tmp = snapshot_files.snapshots_dir(run.home) / f"{snapshot_files.TMP_PREFIX}{run.snapshot_id}"
        tmp.mkdir()
        try:
            loaded = _load(run, loader_options)
            # Before the key: a redacted document's hash is its redacted text's, so redaction settings that change
            # what a document holds make a new generation, and the original never reaches one.
            redactions = RedactionPolicy(settings.privacy).redact_documents(loaded.documents)
            key = build_key(settings, loaded.documents,
                            identity_of(run.spec, settings.models_dir, _backend(run)), loader_options)
            same = None if (force or not publish) else _unchanged(run.home, key)
            if same is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                report = _unchanged_report(run, same, loaded)
                report.redactions = redactions
                return report
            report = _write_snapshot(run, tmp, loaded, key)
            report.redactions = redactions
            os.replace(tmp, snapshot_files.snapshot_dir(run.home, run.snapshot_id))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if publish:
            snapshot_files.publish(run.home, run.snapshot_id)
            snapshot_files.gc(run.home, settings.index.keep_generations)
    report.published = publish
    report.engine = run.engine
    report.seconds = time.perf_counter() - run.started
    report.stage_seconds = run.progress.stage_seconds
    return report


class Indexer:
    """`rag.builds.Builder` for the application object: builds with `build`, parses with the loaders."""

    def build(self, settings: Settings, sources: Sequence[str | Path], **options) -> BuildReport:
        return build(settings, sources, **options)

    def load_documents(self, settings: Settings, paths: Sequence[str | Path]) -> list[Document]:
        # Redacted as a build redacts: a stored medical document's hash must match its indexed (redacted) one, or
        # it would show a pending update forever, and its raw text would be served before its first build.
        docs = load_sources(paths).documents
        RedactionPolicy(settings.privacy).redact_documents(docs)
        return docs


@dataclass
class _Run:
    """One build's fixed facts."""

    settings: Settings
    sources: list[str]
    spec: str  # the embedder asked for
    progress: Progress
    engine: str = "local"  # where chunks are embedded: this process, or "ray"
    ray_address: str | None = None
    ray_actors: int = 0

    def __post_init__(self):
        self.home = self.settings.home_path
        self.started = time.perf_counter()
        self.snapshot_id = new_snapshot_id()


def _load(run: _Run, loader_options: LoaderOptions | None) -> LoadResult:
    with run.progress.stage("load", total=1, unit="pass") as advance:
        loaded = load_sources(run.sources, loader_options, progress=False)
        advance()
    for s in loaded.skipped:
        log.warning("skipped %s: %s", s.path, s.reason)
    if not loaded.documents:
        raise BuildError(f"no documents found in {', '.join(run.sources)} "
                         f"({loaded.files_seen} files seen, {len(loaded.skipped)} skipped)", field="sources")
    return loaded


def _unchanged_report(run: _Run, same: snapshot_files.Manifest, loaded: LoadResult) -> BuildReport:
    return BuildReport(generation_id=same.id, published=False, documents=same.counts.documents,
                       chunks=same.counts.chunks, vectors_reused=same.counts.chunks, vectors_embedded=0,
                       skipped=loaded.skipped, files_seen=loaded.files_seen,
                       seconds=time.perf_counter() - run.started, stage_seconds=run.progress.stage_seconds,
                       index_type=same.index_type, embedder=same.embedder.name, unchanged=True)


def _write_snapshot(run: _Run, tmp: Path, loaded: LoadResult, key: str) -> BuildReport:
    """Chunk, embed, write and verify the snapshot in `tmp`; the report (published and times set by the caller)."""
    settings = run.settings
    emb = load_embedder(run.spec, settings.models_dir, _backend(run))
    chunker = _chunker(settings, emb)
    docs, per_doc = _chunk(run, chunker, loaded)
    texts = [ch.embed_text(doc.title) for doc, chunks in zip(docs, per_doc) for ch in chunks]
    hashes = [ch.content_hash(doc.title) for doc, chunks in zip(docs, per_doc) for ch in chunks]
    vectors = _embed_with_cache(settings, emb, texts, hashes, run.progress, _encoder(run, emb))
    kind, kw = _write_files(run, tmp, docs, per_doc, hashes, vectors.array)
    chunking = {"max_tokens": chunker.max_tokens, "overlap": chunker.overlap, "rules": CHUNKING_RULES}
    manifest = snapshot_files.Manifest(
        id=run.snapshot_id,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        embedder=snapshot_files.EmbedderInfo(spec=run.spec, name=emb.name, identity=emb.identity, dim=emb.dim,
                                             query_prefix=emb.query_prefix, passage_prefix=emb.passage_prefix,
                                             backend=emb.backend),
        counts=snapshot_files.Counts(documents=len(docs), chunks=len(texts), vectors=len(texts),
                                     terms=kw["terms"], postings=kw["postings"],
                                     skipped_sources=len(loaded.skipped), vectors_reused=vectors.reused),
        index_type=kind,
        checksums={f: sha256_file(tmp / f) for f in snapshot_files.CHECKSUMMED},
        source_fingerprint=source_fingerprint([(d.doc_id, d.content_hash) for d in docs], emb.identity, chunking),
        sources=run.sources,
        chunking=chunking,
        build_seconds=0.0,
        parent=snapshot_files.read_pointer(run.home),
        build_key=key,
        keyword_terms=KEYWORD_TERMS,
    )
    manifest.build_seconds = round(time.perf_counter() - run.started, 3)
    snapshot_files.write_manifest(tmp, manifest)
    with run.progress.stage("verify", total=1, unit="check") as advance:
        verify_snapshot(tmp, settings, emb, sample=settings.index.verify_sample)
        advance()
    return BuildReport(generation_id=run.snapshot_id, published=False, documents=len(docs), chunks=len(texts),
                       vectors_reused=vectors.reused, vectors_embedded=len(texts) - vectors.reused,
                       skipped=loaded.skipped, files_seen=loaded.files_seen, seconds=0.0, index_type=kind,
                       embedder=emb.name)


def _backend(run: _Run) -> str:
    """The encoder variant of this build's vectors. On Ray, "auto" is PyTorch (a cluster is where the GPUs are,
    and the driver cannot tell what its actors run on); a variant named in the settings runs on every actor."""
    backend = run.settings.embedder_backend
    return "torch" if run.engine == "ray" and backend == "auto" else backend


def _chunker(settings: Settings, emb: Embedder) -> Chunker:
    max_tokens = min(settings.index.chunk_tokens, emb.max_tokens - 32)
    return Chunker(emb.token_counter, max_tokens=max_tokens, overlap=min(settings.index.chunk_overlap, max_tokens // 3))


def _chunk(run: _Run, chunker: Chunker, loaded: LoadResult) -> tuple[list[Document], list[list[Chunk]]]:
    """The documents that have chunks, with their chunks; the others are reported as skipped."""
    docs = loaded.documents
    per_doc = []
    with run.progress.stage("chunk", total=len(docs), unit="doc") as advance:
        for _doc, chunks in chunker.chunk_many(docs):
            per_doc.append(chunks)
            advance()
    # Documents that produce no chunk (e.g. only whitespace after cleaning) are not searchable.
    keep = [i for i, c in enumerate(per_doc) if c]
    for i in set(range(len(docs))) - set(keep):
        loaded.skipped.append(SkippedSource(docs[i].source, f"document {docs[i].doc_id} has no text"))
    return [docs[i] for i in keep], [per_doc[i] for i in keep]


def _write_files(run: _Run, tmp: Path, docs: list[Document], per_doc: list[list[Chunk]], hashes: list[str],
                 vectors: np.ndarray) -> tuple[str, dict[str, int]]:
    """The metadata database and the vector files; (index type, keyword counts)."""
    with run.progress.stage("write", total=2, unit="file") as advance:
        kw = write_metadata(tmp, docs, per_doc, hashes)
        advance()
        kind = choose_index_type(len(hashes), run.settings.index)
        write_vectors(tmp, vectors, document_vectors(vectors, [len(c) for c in per_doc]), kind, run.settings.index)
        advance()
    return kind, kw


@dataclass
class _Embedded:
    array: np.ndarray
    reused: int


# An encoder takes (keys, texts, batch size) and yields (keys, vectors) batches, in any order.
Encoder = Callable[[list[str], list[str], int], Iterator[tuple[list[str], np.ndarray]]]


def _local_encoder(emb: Embedder) -> Encoder:
    def encode(keys: list[str], texts: list[str], batch: int):
        step = batch * 8  # larger write batches than encode batches: one cache insert per ~8 encoder batches
        for start in range(0, len(keys), step):
            yield keys[start:start + step], emb.embed_passages(texts[start:start + step], batch_size=batch)
    return encode


def _encoder(run: _Run, emb: Embedder) -> Encoder:
    if run.engine != "ray":
        return _local_encoder(emb)
    try:
        from indexer import ray_embed
    except ImportError as e:
        raise BuildError(f"the ray engine needs Ray Data: pip install -e '.[ray]' ({e})", field="engine") from e

    def encode(keys: list[str], texts: list[str], batch: int):
        return ray_embed.encode(run.spec, run.settings.models_dir, keys, texts, batch_size=batch,
                                address=run.ray_address, actors=run.ray_actors, backend=emb.backend)
    return encode


def _embed_with_cache(settings: Settings, emb, texts: list[str], hashes: list[str], progress: Progress,
                      encoder: Encoder | None = None) -> _Embedded:
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
        batch = settings.index.batch_size if settings.index.batch_size > 0 else emb.batch_size
        encode = encoder or _local_encoder(emb)
        with progress.stage("embed", total=len(todo), unit="chunk") as advance:
            for keys, vecs in encode(todo, [texts[missing[h][0]] for h in todo], batch):
                cache.put(emb.identity, keys, vecs)
                for h, v in zip(keys, vecs):
                    out[missing[h]] = v
                advance(len(keys))
        reused = sum(1 for h in hashes if h in found)
        return _Embedded(out, reused)
    finally:
        cache.close()
