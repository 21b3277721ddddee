"""rag: the library. Reads published index generations and thinks: retrieval, answers, summaries,
recommendations. It never speaks HTTP and never orchestrates batch builds (see indexer/ and service/)."""

import os

# OpenMP threads that spin while waiting turn a busy machine (concurrent requests, a build beside the service)
# into a 10x slowdown of every torch call; passive waiting costs nothing measurable when the machine is idle.
# Must be set before torch loads its OpenMP runtime, hence here, at the package root.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
