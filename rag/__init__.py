"""rag: the library. `rag.application.Application` owns every use case (answers, search, summaries,
recommendations, events, users, documents, rebuild jobs, snapshots) and the generation policy; the HTTP service
and the CLI are thin layers over it. It never speaks HTTP and never builds an index itself: the builder is given
to it (`rag.builds.Builder`, implemented by `indexer.build.Indexer`). It imports neither `indexer` nor `service`."""

import os

# OpenMP threads that spin while waiting turn a busy machine (concurrent requests, a build beside the service)
# into a 10x slowdown of every torch call; passive waiting costs nothing measurable when the machine is idle.
# Must be set before torch loads its OpenMP runtime, hence here, at the package root.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
