"""Batch building of index generations: load sources, chunk, embed, write, verify, publish."""
