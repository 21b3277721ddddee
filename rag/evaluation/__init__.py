"""Evaluation on real, external data sets (BEIR retrieval, SQuAD answers, MovieLens recommendations)."""
