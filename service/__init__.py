"""service: the outer layer. The Litestar HTTP API and the `rag` command line, both thin over rag/ and indexer/."""
