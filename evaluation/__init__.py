"""Evaluation on real, external data sets (BEIR retrieval, SQuAD / TAT-QA answers, MovieLens recommendations).

Beside `rag` and `indexer`, not inside either: an evaluation builds its own index generations (the indexer) and
reads them with the library. Used by `rag eval ...` and the scripts in bench/.
"""
