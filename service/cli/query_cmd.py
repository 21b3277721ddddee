"""Placeholder registration; the commands arrive with their feature."""


def register(sub) -> None:
    return None
