"""Embedding cache keyed by (embedder identity, chunk hash), so a rebuild embeds only new or changed chunks.

A DuckDB file apart from the generations: generations are immutable, the cache only grows. Vectors are written
batch by batch as they are computed, so a killed build keeps the work it finished.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa


class EmbeddingCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(path))
        self.con.execute("CREATE TABLE IF NOT EXISTS vectors (embedder VARCHAR, hash VARCHAR, vec BLOB)")

    def get(self, embedder: str, hashes: list[str], dim: int) -> dict[str, np.ndarray]:
        if not hashes:
            return {}
        wanted = pa.table({"hash": pa.array(list(set(hashes)), pa.string())})
        self.con.register("wanted", wanted)
        try:
            # fetchall, not .arrow(): DuckDB's arrow result is a lazy reader that would see `wanted` gone.
            rows = self.con.execute(
                "SELECT v.hash, any_value(v.vec) AS vec FROM vectors v JOIN wanted w USING (hash) "
                "WHERE v.embedder = ? GROUP BY v.hash", [embedder]).fetchall()
        finally:
            self.con.unregister("wanted")
        out: dict[str, np.ndarray] = {}
        for h, blob in rows:
            vec = np.frombuffer(blob, dtype=np.float32)
            if vec.shape[0] == dim:
                out[h] = vec
        return out

    def put(self, embedder: str, hashes: list[str], vectors: np.ndarray) -> None:
        if not hashes:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        batch = pa.table({
            "embedder": pa.array([embedder] * len(hashes), pa.string()),
            "hash": pa.array(hashes, pa.string()),
            "vec": pa.array([v.tobytes() for v in vectors], pa.binary()),
        })
        self.con.register("batch", batch)
        try:
            self.con.execute("INSERT INTO vectors SELECT embedder, hash, vec FROM batch")
        finally:
            self.con.unregister("batch")

    def count(self, embedder: str | None = None) -> int:
        if embedder is None:
            return self.con.execute("SELECT count(*) FROM vectors").fetchone()[0]
        return self.con.execute("SELECT count(*) FROM vectors WHERE embedder = ?", [embedder]).fetchone()[0]

    def close(self) -> None:
        self.con.close()
