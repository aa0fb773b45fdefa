import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imgret.checkpoint import load_model, save_model
from imgret.config import ModelConfig, TrainConfig
from imgret.errors import UserError
from imgret.loader import ImageDataset, make_loader, split_indices
from imgret.model import ConvAutoencoder
from imgret.sources import open_source
from imgret.train import train_autoencoder

TINY = ModelConfig(image_size=16, channels=3, embedding_dim=32, width=8)
FAST = TrainConfig(epochs=3, batch_size=8, patience=5, workers=0, seed=1)


@pytest.mark.parametrize(
    "size,channels,decoder", [(28, 1, "transpose"), (64, 3, "upsample"), (32, 3, "transpose")]
)
def test_autoencoder_shapes(size: int, channels: int, decoder: str) -> None:
    model = ConvAutoencoder(ModelConfig(image_size=size, channels=channels, decoder=decoder))
    recon, z = model(torch.rand(2, channels, size, size))
    recon = recon.detach()
    assert recon.shape == (2, channels, size, size) and z.shape == (2, 512)
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        ModelConfig(image_size=30)
    with pytest.raises(ValueError, match="decoder"):
        ModelConfig(decoder="magic")


def test_split_is_fixed_and_disjoint() -> None:
    a_train, a_val = split_indices(100, 0.1, seed=3)
    b_train, b_val = split_indices(100, 0.1, seed=3)
    assert np.array_equal(a_val, b_val) and len(a_val) == 10
    assert set(a_train) | set(a_val) == set(range(100)) and not set(a_train) & set(a_val)
    assert not np.array_equal(split_indices(100, 0.1, seed=4)[1], a_val)


def test_loader_sets_bad_files_aside(image_folder: Path) -> None:
    src = open_source(image_folder)
    assert ImageDataset(src, 16, 3)[0][1].shape == (3, 16, 16)
    batches = list(make_loader(src, size=16, channels=3, batch_size=10, workers=0))
    assert sum(len(b.indices) for b in batches) == 24
    bad = {Path(src.keys[i]).name for b in batches for i, _ in b.failures}
    assert bad == {"corrupt.jpg", "empty.png", "fake.png"}
    assert batches[0].images.dtype == torch.float32 and float(batches[0].images.max()) <= 1


def test_training_keeps_best_epoch_and_is_deterministic(image_folder: Path, tmp_path: Path) -> None:
    src = open_source(image_folder)
    logs: list[str] = []
    a = train_autoencoder(src, TINY, FAST, tmp_path / "a", progress=False, log=logs.append)
    b = train_autoencoder(src, TINY, FAST, tmp_path / "b", progress=False, log=lambda s: None)
    assert len(a.history) == 3
    assert a.best_val_loss == min(h["val_loss"] for h in a.history)
    assert {Path(k).name for k, _ in a.failures} == {"corrupt.jpg", "empty.png", "fake.png"}
    assert any("skipped" in line for line in logs)
    for (ka, va), (kb, vb) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    doc = json.loads((tmp_path / "a" / "model.json").read_text())
    assert doc["best_epoch"] == a.best_epoch and doc["model"]["embedding_dim"] == 32
    assert doc["train"]["seed"] == 1


def test_interrupted_training_resumes(image_folder: Path, tmp_path: Path) -> None:
    src = open_source(image_folder)
    full = train_autoencoder(src, TINY, FAST, tmp_path / "full", progress=False, log=print)
    # Two epochs, then a "crash": last.json says unfinished, as after a kill.
    short = TrainConfig(**{**FAST.__dict__, "epochs": 2})
    train_autoencoder(src, TINY, short, tmp_path / "r", progress=False, log=print)
    info = json.loads((tmp_path / "r" / "last.json").read_text())
    info.update(finished=False, settings={**info["settings"], "train": {**FAST.__dict__}})
    (tmp_path / "r" / "last.json").write_text(json.dumps(info))
    logs: list[str] = []
    resumed = train_autoencoder(src, TINY, FAST, tmp_path / "r", progress=False, log=logs.append)
    assert any("resuming" in line for line in logs)
    assert len(resumed.history) == 3
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-4)
    again: list[str] = []
    train_autoencoder(src, TINY, FAST, tmp_path / "r", progress=False, log=again.append)
    assert any("already trained" in line for line in again)


def test_model_file_is_safetensors_and_json(tmp_path: Path) -> None:
    model = ConvAutoencoder(TINY)
    save_model(model, tmp_path / "m", {"best_val_loss": 0.5})
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    assert not weights.startswith(b"\x80")  # not a pickle
    assert set(load_file(str(tmp_path / "m" / "model.safetensors"))) == set(model.state_dict())
    loaded, doc = load_model(tmp_path / "m" / "model.json")
    assert doc["best_val_loss"] == 0.5 and loaded.config == TINY
    x = torch.rand(2, 3, 16, 16)
    model.eval()
    assert torch.allclose(loaded.embed_batch(x), model.embed_batch(x))


def test_loading_a_non_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not an imgret model"):
        load_model(tmp_path)
