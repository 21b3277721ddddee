"""rag: the library. Reads published index generations and thinks: retrieval, answers, summaries,
recommendations. It never speaks HTTP and never orchestrates batch builds (see indexer/ and service/)."""

__version__ = "0.1.0"
