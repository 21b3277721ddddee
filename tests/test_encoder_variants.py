"""Exported CPU encoder variants (ONNX Runtime int8, OpenVINO int8) of the real MiniLM, and the generations
built with them: exported once and reproducibly, recorded in the manifest, and queried with the same variant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.models import encoder_variants
from rag.models.embedders import load_embedder
from tests.conftest import make_settings

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

PASSAGES = ["Insulin lowers blood sugar in people with diabetes.",
            "The company's revenue grew 12% in 2019 on higher sales.",
            "Photosynthesis turns light into chemical energy in plants."]
QUERIES = ["what lowers blood sugar", "how much did revenue grow", "how do plants use light"]


@pytest.fixture(scope="module")
def variant_models(tmp_path_factory):
    return tmp_path_factory.mktemp("variant-models")


@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8"])
def test_variant_is_exported_once_reproducibly_and_ranks_like_pytorch(backend, variant_models, tmp_path, capfd):
    emb = load_embedder("minilm", variant_models, backend)
    # The exporters' own tables and progress go to stderr: a command's stdout (`rag ask --json`) stays JSON.
    assert capfd.readouterr().out == ""
    torch_emb = load_embedder("minilm", variant_models)
    assert emb.backend == backend
    assert emb.identity.startswith(torch_emb.identity + f"+{backend}:")
    # Named by the source identity and the export settings; export.json records the files' hashes.
    (folder,) = [p for p in variant_models.iterdir() if p.name.endswith(
        f"-{backend}-{encoder_variants.variant_key(torch_emb.identity, backend)}")]
    record = json.loads((folder / "export.json").read_text())
    assert record["source_identity"] == torch_emb.identity and record["export"] == encoder_variants.EXPORTS[backend]

    # A second export of the same source and settings, elsewhere, gives byte-identical files.
    again = encoder_variants.ensure_variant(torch_emb.path, folder.name.split(f"-{backend}-")[0],
                                            torch_emb.identity, backend, tmp_path)
    assert json.loads((again / "export.json").read_text())["files"] == record["files"]

    p, q = emb.embed_passages(PASSAGES), emb.embed_queries(QUERIES)
    tp = torch_emb.embed_passages(PASSAGES)
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-4)
    assert (p * tp).sum(1).min() > 0.98  # int8 moves each vector by little
    assert list((q @ p.T).argmax(1)) == [0, 1, 2]


def test_generation_records_its_variant_and_queries_use_it(tmp_path, small_corpus, variant_models):
    from indexer.build import build
    from rag.snapshot import Snapshot
    from rag.snapshot_files import read_manifest, snapshot_dir

    settings = make_settings(tmp_path / "home", variant_models, embedder="minilm", embedder_backend="onnx-int8")
    report = build(settings, [small_corpus], show_progress=False)
    manifest = read_manifest(snapshot_dir(settings.home_path, report.generation_id))
    assert manifest.embedder.backend == "onnx-int8"
    assert manifest.embedder.identity == load_embedder("minilm", variant_models, "onnx-int8").identity

    # Whatever the settings now say, the generation is queried with the variant that made its vectors.
    snapshot = Snapshot(snapshot_dir(settings.home_path, report.generation_id), variant_models)
    try:
        assert snapshot.embedder.backend == "onnx-int8"
        assert snapshot.embedder.identity == manifest.embedder.identity
        row, _ = snapshot.dense(snapshot.embed_query("does a fixed-rate mortgage payment change"), k=1)[0]
        assert snapshot.chunks([row])[row]["doc_id"] == "fin-mortgage"
    finally:
        snapshot.close()

    # The same documents under PyTorch are another generation (another identity), not an unchanged rebuild.
    torch_report = build(make_settings(tmp_path / "home", variant_models, embedder="minilm",
                                       embedder_backend="torch"), [small_corpus], show_progress=False)
    assert not torch_report.unchanged
    assert read_manifest(snapshot_dir(settings.home_path, torch_report.generation_id)).embedder.backend == "torch"


def test_exported_variant_embeds_without_torch_and_as_through_transformers(variant_models):
    # Without transformers' tokenizer, and so without importing transformers or torch: a CPU process that only
    # embeds (a build, a search service on a variant) starts seconds sooner.
    code = ("import sys; from rag.models.embedders import load_embedder; "
            f"e = load_embedder('minilm', {str(variant_models)!r}, 'openvino-int8'); e.embed_passages(['x']); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
    emb = load_embedder("minilm", variant_models, "openvino-int8")
    texts = PASSAGES + ["a longer passage " * 200, "短文本"]
    bare = emb.embed_passages(texts)
    emb.model._batch_tokenizer, rust = None, emb.model._batch_tokenizer  # the transformers path it replaced
    try:
        assert np.array_equal(emb.embed_passages(texts), bare)
    finally:
        emb.model._batch_tokenizer = rust
