"""Checks a generation must pass before it is published."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rag import snapshot_files
from rag.config import Settings
from rag.snapshot import Snapshot
from rag.text import tokenize
from rag.models.integrity import sha256_file
from rag.types import Filters


class VerificationError(RuntimeError):
    pass


def verify_snapshot(path: Path, settings: Settings, embedder, sample: int = 32) -> None:
    manifest = snapshot_files.read_manifest(path)
    for name, digest in manifest.checksums.items():
        if sha256_file(path / name) != digest:
            raise VerificationError(f"{name}: checksum differs from the manifest")
    snapshot = Snapshot(path, settings.models_dir, embedder=embedder)
    try:
        n_chunks = snapshot.sql("SELECT count(*) FROM chunks").fetchone()[0]
        n_docs, sum_chunks = snapshot.sql("SELECT count(*), coalesce(sum(n_chunks), 0) FROM documents").fetchone()
        counts = manifest.counts
        problems = []
        if not (n_chunks == counts.chunks == snapshot.faiss_index.ntotal == len(snapshot.vectors) == sum_chunks):
            problems.append(f"chunk counts disagree: table {n_chunks}, manifest {counts.chunks}, "
                            f"faiss {snapshot.faiss_index.ntotal}, vectors {len(snapshot.vectors)}, "
                            f"documents say {sum_chunks}")
        if not (n_docs == counts.documents == len(snapshot.doc_vectors)):
            problems.append(f"document counts disagree: table {n_docs}, manifest {counts.documents}")
        if problems:
            raise VerificationError("; ".join(problems))

        rng = np.random.default_rng(0)
        rows = rng.choice(n_chunks, size=min(sample, n_chunks), replace=False) if n_chunks else []
        info = snapshot.chunks([int(r) for r in rows])
        for r in rows:
            r = int(r)
            # Dense: a chunk's own vector finds it (or an identical twin) at cosine ~1.
            hits = snapshot.dense(snapshot.chunk_vector(r), 5)
            twins = {h for h, s in hits if s > 0.999}
            if r not in twins and not any(snapshot.chunks([h])[h]["text"] == info[r]["text"] for h in twins):
                raise VerificationError(f"chunk row {r} does not retrieve itself from the vector index")
            # Keyword: its own words find it inside its document (postings and filters are wired up).
            words = info[r]["text"][:300]
            if tokenize(words):
                found = {row for row, _ in snapshot.keyword(words, 100_000, Filters(doc_ids=[info[r]["doc_id"]]))}
                if r not in found:
                    raise VerificationError(f"chunk row {r} is missing from the keyword index")
    finally:
        snapshot.close()
