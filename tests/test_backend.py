"""Inference backends: ONNX Runtime gives the PyTorch embeddings, falls back when it cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_model

from imgret.core.errors import UserError
from imgret.core.threads import apply_threads, inference_threads
from imgret.data.sources import open_source
from imgret.models import backend, registry
from imgret.models.autoencoder import ConvAutoencoder, save_model
from imgret.models.backend import InferenceSettings, load_for_inference
from imgret.models.config import ModelConfig
from imgret.models.embed import embed_source
from imgret.models.head import ProjectionHead, save_head
from imgret.models.whitening import Whitening, save_whitening

ONNX = InferenceSettings(backend="onnx", threads=1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _derived(tmp_path: Path) -> dict[str, Path]:
    """A tiny autoencoder, a fine-tuned head on it, a whitening of it, and an autoencoder that
    ends with a cluster head."""
    base = make_tiny_model(tmp_path / "base")
    torch.manual_seed(0)
    head = ProjectionHead(16, 32)
    torch.nn.init.normal_(head.mlp[2].weight, std=0.5)  # not the identity it starts as
    base_doc = registry.describe(base, registry.load(base))
    save_head(head, tmp_path / "head", {"base": base_doc, "dim": 16, "finetune": {"hidden": 32}})
    rng = np.random.default_rng(0)
    whitening = Whitening(8).fit(rng.normal(size=(50, 16)))
    save_whitening(whitening, tmp_path / "white", {"base": base_doc, "dim": 8})
    torch.manual_seed(1)
    clustered = ConvAutoencoder(ModelConfig(image_size=16, channels=3, embedding_dim=16, width=4,
                                            whiten_dim=8, cluster_head=4))  # fmt: skip
    torch.nn.init.normal_(clustered.cluster_head.mlp[2].weight, std=0.5)
    save_model(clustered, tmp_path / "clustered")
    return {"autoencoder": base, "head": tmp_path / "head", "whitened": tmp_path / "white",
            "cluster head": tmp_path / "clustered"}  # fmt: skip


def test_onnx_embeddings_equal_pytorch_for_every_model_kind(
    image_folder: Path, tmp_path: Path
) -> None:
    source = open_source(image_folder)
    refs: dict[str, Path | str] = {
        **_derived(tmp_path), "pretrained": "efficientnet-lite0@128",
        "side by side": "efficientnet-lite0@128+efficientnet-lite0@160:avg",
    }  # fmt: skip
    for kind, ref in refs.items():
        fast = load_for_inference(ref, ONNX)
        assert isinstance(fast, backend.OnnxBacked), kind
        slow = load_for_inference(ref, InferenceSettings(backend="torch"))
        a = embed_source(fast, source, workers=0, progress=False)
        b = embed_source(slow, source, workers=0, progress=False)
        assert a.positions.tolist() == b.positions.tolist() and len(a.positions) == 24
        assert _cosines(a.embeddings, b.embeddings).min() >= 0.9999, kind
        assert registry.describe(ref, fast) == registry.describe(ref, slow)  # same model facts


def test_the_export_is_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = make_tiny_model(tmp_path / "m")
    load_for_inference(ref, ONNX)
    files = sorted((backend.cache_dir() / "onnx").glob("*.onnx"))

    def no_export(*args: object, **kw: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr("imgret.models.onnx_export.export_onnx", no_export)
    assert isinstance(load_for_inference(ref, ONNX), backend.OnnxBacked)
    assert sorted((backend.cache_dir() / "onnx").glob("*.onnx")) == files
    make_tiny_model(ref, seed=3)  # trained again: other weights, another graph
    warned: list[str] = []
    assert not isinstance(load_for_inference(ref, ONNX, warn=warned.append), backend.OnnxBacked)
    assert "exported again" in warned[0]


def test_a_failed_export_falls_back_to_pytorch_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr("imgret.models.onnx_export.export_onnx", broken)
    warned: list[str] = []
    model = load_for_inference(make_tiny_model(tmp_path / "m", seed=5),
                               InferenceSettings(backend="auto"), warn=warned.append)  # fmt: skip
    assert not isinstance(model, backend.OnnxBacked)
    assert len(warned) == 1 and "unsupported operator" in warned[0] and "PyTorch" in warned[0]


def test_without_onnxruntime_auto_is_pytorch_and_onnx_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "_onnx_available", lambda: False)
    ref = make_tiny_model(tmp_path / "m")
    assert not isinstance(load_for_inference(ref, InferenceSettings(backend="auto")),
                          backend.OnnxBacked)  # fmt: skip
    with pytest.raises(UserError, match="onnxruntime"):
        load_for_inference(ref, ONNX)
    with pytest.raises(UserError, match="backend must be"):
        InferenceSettings(backend="tpu")


def test_inference_gets_every_core_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgret.core import threads

    monkeypatch.setattr(threads, "cpu_count", lambda: 8)
    assert inference_threads() == 8
    assert inference_threads(3) == 3
    monkeypatch.setattr(threads, "cpu_count", lambda: 1)
    assert inference_threads() == 1
    assert inference_threads(0) == 1  # never 0
    before = torch.get_num_threads()
    try:
        apply_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_onnx_sessions_get_the_planned_threads(tmp_path: Path) -> None:
    model = load_for_inference(make_tiny_model(tmp_path / "m"),
                               InferenceSettings(backend="onnx", threads=1))  # fmt: skip
    assert isinstance(model, backend.OnnxBacked) and model.session.threads == 1


def test_quantize_runs_an_int8_graph_calibrated_on_the_images(
    image_folder: Path, tmp_path: Path
) -> None:
    from imgret.data.loader import sample_batches

    ref = make_tiny_model(tmp_path / "m")
    source = open_source(image_folder)
    asked: list[tuple[int, int]] = []

    def calibration(size: int, channels: int) -> list[np.ndarray]:
        asked.append((size, channels))
        return sample_batches(source, size, channels, n=16)

    settings = InferenceSettings(backend="onnx", threads=1, quantize=True)
    int8 = load_for_inference(ref, settings, calibration=calibration)
    exact = load_for_inference(ref, ONNX)
    assert isinstance(int8, backend.OnnxBacked) and asked == [(16, 3)]
    assert int8.session.path != exact.session.path
    meta = int8.session.session.get_modelmeta().custom_metadata_map
    assert meta["imgret.quantization"] == "static-qdq-int8" and meta["imgret.name"] == int8.name
    a = embed_source(int8, source, workers=0, progress=False).embeddings
    b = embed_source(exact, source, workers=0, progress=False).embeddings
    assert 0.9 < _cosines(a, b).mean() < 1.0  # close, not equal
    with pytest.raises(UserError, match="calibrate"):  # a new model: nothing to calibrate on
        load_for_inference(make_tiny_model(tmp_path / "n", seed=9), settings, warn=_raise)


def _raise(message: str) -> None:
    raise UserError(message)
