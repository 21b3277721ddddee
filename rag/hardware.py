"""Whether this process can run on a CUDA GPU, asked without importing torch where the answer is plainly no.

Importing torch costs ~3 s on two cores. A CPU process that runs an exported encoder variant and the extractive
answerer (a build, a search service) never needs torch, yet "auto" settings must know whether a GPU is there.
"""

from __future__ import annotations

import ctypes
import functools
import sys

# The CUDA driver library per platform; torch cannot see a GPU when none of these loads.
_DRIVER_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


def _driver_present() -> bool:
    for name in _DRIVER_LIBRARIES:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


@functools.cache
def cuda_available() -> bool:
    """torch.cuda.is_available(), answered without torch when no CUDA driver loads (and torch is not already
    imported, in which case its own answer costs nothing)."""
    if "torch" not in sys.modules and not _driver_present():
        return False
    import torch

    return torch.cuda.is_available()


def torch_device(requested: str = "auto") -> str:
    """The torch device a `Device` setting names: "auto" is CUDA when this process can run on it, else the CPU;
    "cuda" with no GPU behind it is a ValueError (a clear message, not torch's at the first tensor)."""
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
    return requested
