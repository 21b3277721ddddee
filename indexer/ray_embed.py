"""Embedding on Ray Data: the chunks the embedding cache lacks, encoded by `map_batches` over an actor pool.

`rag index build SOURCE --engine ray [--address auto|ray://...]`. Loading, chunking, the cache, writing,
verifying and publishing stay the local build's (`indexer.build`), so a Ray build makes the same immutable
generation; only the encoder calls move to the cluster. Each actor loads the generation's embedder once (from the
same local path or package on every node) and encodes whole batches; on a cluster with GPUs each actor takes one
(`num_gpus=1`), otherwise it takes `cpus_per_actor` CPUs and as many torch threads. Results stream back to the
driver batch by batch, which writes them to the cache as they come (a killed build keeps what it finished). An
actor that dies (its process killed, its node lost) is recreated and its batch retried by Ray Data's actor pool
(its defaults: `max_restarts=-1`, `max_task_retries=-1`); an exception in the encoder fails the build, which then
leaves the published generation serving.

Ray is an optional extra (`pip install -e '.[ray]'`): only this module imports it, and only a build with
`engine="ray"` imports this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# What every Ray worker needs in its environment: no model hub, ever (DESIGN decision 3).
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class PassageEncoder:
    """One Ray Data actor: the embedder loaded once, then `__call__` per batch of {"key", "text"}."""

    def __init__(self, spec: str, models_dir: str, batch_size: int, backend: str = "torch"):
        os.environ.update(WORKER_ENV)
        import ray
        import torch

        from rag.models.embedders import load_embedder

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        # The build's own variant, never this worker's default: a generation's vectors all come from one.
        self.embedder = load_embedder(spec, Path(models_dir), backend)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.embedder.embed_passages([str(t) for t in batch["text"]], batch_size=self.batch_size)
        return {"key": batch["key"], "vector": np.asarray(vectors, dtype=np.float32)}


def connect(address: str | None) -> bool:
    """Join the cluster at `address` ("auto", "ray://host:port"), or start a local one; True when this call
    started Ray (so the build shuts it down again). A caller that already ran `ray.init` is left as it is."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"runtime_env": {"env_vars": WORKER_ENV}, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(include_dashboard=False, **kwargs)
    return True


def encode(spec: str, models_dir: Path, keys: list[str], texts: list[str], *, batch_size: int,
           address: str | None = None, actors: int = 0, cpus_per_actor: float = 1.0, backend: str = "torch"
           ) -> Iterator[tuple[list[str], np.ndarray]]:
    """(keys, vectors) batches for `texts`, in whatever order the actors finish them; `backend`: the concrete
    encoder variant every actor runs (rag.models.encoder_variants)."""
    import ray
    import ray.data

    if not keys:
        return
    started = connect(address)
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if actors <= 0:
            actors = gpus or max(1, int(resources.get("CPU", 1) // max(cpus_per_actor, 1e-6)))
        ray_args = {"num_gpus": 1} if gpus else {"num_cpus": cpus_per_actor}
        log.info("embedding %d chunks on Ray: %d %s actors", len(keys), actors, "GPU" if gpus else "CPU")
        block = batch_size * 8  # one actor call = 8 encoder batches, as the local build writes the cache
        # At least one block per actor (each gets work), at most 4 (so the pool stays busy while results stream).
        blocks = min(len(keys), max(actors, min(len(keys) // block + 1, actors * 4)))
        ds = ray.data.from_items([{"key": k, "text": t} for k, t in zip(keys, texts)], override_num_blocks=blocks)
        out = ds.map_batches(PassageEncoder, batch_size=block, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=actors),
                             fn_constructor_kwargs={"spec": spec, "models_dir": str(models_dir),
                                                    "batch_size": batch_size, "backend": backend},
                             **ray_args)
        for b in out.iter_batches(batch_size=None, batch_format="numpy"):
            yield [str(k) for k in b["key"]], np.asarray(b["vector"], dtype=np.float32)
    finally:
        if started:
            ray.shutdown()
