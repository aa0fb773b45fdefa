import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imgret.core.errors import UserError
from imgret.data.loader import ImageDataset, make_loader, split_indices
from imgret.data.sources import open_source
from imgret.models.autoencoder import ConvAutoencoder, load_model, save_model
from imgret.models.config import ModelConfig
from imgret.training.config import TrainConfig
from imgret.training.trainer import train_autoencoder

TINY = ModelConfig(image_size=16, channels=3, embedding_dim=32, width=8)
FAST = TrainConfig(
    objective="reconstruction", epochs=3, batch_size=8, patience=5, workers=0, seed=1
)


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
    assert batches[0].images.dtype == torch.uint8


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
    assert doc["train_images"] == 24  # the decoded images, the 3 broken files left out


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


# ---------------------------------------------------------------- label-free objectives

CONTRASTIVE = ModelConfig(
    image_size=16, channels=3, embedding_dim=32, width=8, decoder="none", pool="avg",
    projection_dim=16,
)  # fmt: skip


def test_nt_xent_by_hand() -> None:
    from imgret.training.losses import nt_xent

    # Two images, both views equal and orthogonal: each row sees its positive at cosine 1 and
    # the two others at 0, so the loss is -log(e / (e + 2)) with temperature 1.
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(nt_xent(p, p.clone(), 1.0)) == pytest.approx(float(np.log(1 + 2 / np.e)))


def test_augment_is_seeded_and_keeps_range() -> None:
    from imgret.training.augment import AUGMENT_PRESETS, augment, corrupt

    x = torch.rand(6, 3, 16, 16)
    a = augment(x, AUGMENT_PRESETS["crop-color"], torch.Generator().manual_seed(3))
    b = augment(x, AUGMENT_PRESETS["crop-color"], torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= float(a.min()) <= float(a.max()) <= 1
    flipped = augment(x, AUGMENT_PRESETS["flip"], torch.Generator().manual_seed(0))
    pairs = zip(flipped, x, strict=True)
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in pairs)
    masked = corrupt(torch.ones(1, 1, 8, 8), 0.5, torch.Generator().manual_seed(0))
    assert set(masked.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("objective", ["contrastive", "denoising"])
def test_label_free_objectives_train_and_reload(
    objective: str, image_folder: Path, tmp_path: Path
) -> None:
    from imgret.models.registry import load as load_embedder

    src = open_source(image_folder)
    mc = CONTRASTIVE if objective == "contrastive" else TINY
    tc = TrainConfig(**{**FAST.__dict__, "epochs": 2, "objective": objective,
                        "schedule": "cosine"})  # fmt: skip
    a = train_autoencoder(src, mc, tc, tmp_path / "a", progress=False, log=lambda s: None)
    b = train_autoencoder(src, mc, tc, tmp_path / "b", progress=False, log=lambda s: None)
    assert all(np.isfinite(h["train_loss"]) for h in a.history)
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(a.model.embed_batch(x), b.model.embed_batch(x))  # same seed, same model
    loaded = load_embedder(tmp_path / "a")
    assert torch.allclose(loaded.embed_batch(x), a.model.embed_batch(x), atol=1e-6)
    doc = json.loads((tmp_path / "a" / "model.json").read_text())
    assert doc["train"]["objective"] == objective
    if objective == "contrastive":
        assert not a.model.has_decoder and "decoder" not in doc["model"].values()


def test_whitening_is_stored_with_the_model(image_folder: Path, tmp_path: Path) -> None:
    from imgret.data.loader import decode_all
    from imgret.models.registry import load as load_embedder

    src = open_source(image_folder)
    mc = ModelConfig(**{**CONTRASTIVE.__dict__, "whiten_dim": 8})
    tc = TrainConfig(**{**FAST.__dict__, "epochs": 1, "objective": "contrastive"})
    res = train_autoencoder(src, mc, tc, tmp_path / "w", progress=False, log=lambda s: None)
    images, _, _ = decode_all(src, 16, 3, workers=0, progress=False)
    z = load_embedder(tmp_path / "w").embed_batch(images.float() / 255).numpy()
    assert z.shape == (24, 8) and res.model.embedding_dim == 8
    # Whitened on the same images: zero mean, uncorrelated, unit variance (a little less in
    # near-empty directions, which the regularisation of fit_whitening keeps from blowing up).
    cov = np.cov(z, rowvar=False, bias=True)
    assert np.allclose(z.mean(0), 0, atol=1e-3)
    assert np.allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-3)
    assert np.all((np.diag(cov) > 0.8) & (np.diag(cov) < 1.001))


def test_cluster_head_is_fitted_after_training_and_stored(
    image_folder: Path, tmp_path: Path
) -> None:
    from imgret.data.loader import decode_all
    from imgret.models.registry import load as load_embedder

    src = open_source(image_folder)
    mc = ModelConfig(**{**CONTRASTIVE.__dict__, "whiten_dim": 8, "cluster_head": 3})
    tc = TrainConfig(**{**FAST.__dict__, "epochs": 1, "objective": "contrastive"})
    res = train_autoencoder(src, mc, tc, tmp_path / "c", progress=False, log=lambda s: None)
    doc = json.loads((tmp_path / "c" / "model.json").read_text())
    assert doc["version"] == 2 and doc["model"]["cluster_head"] == 3
    images, _, _ = decode_all(src, 16, 3, workers=0, progress=False)
    x = images.float() / 255
    loaded = load_embedder(tmp_path / "c")
    z = loaded.embed_batch(x)
    assert z.shape == (24, 8) and torch.allclose(z, res.model.embed_batch(x), atol=1e-6)
    assert torch.allclose(z.norm(dim=1), torch.ones(24), atol=1e-5)
    # the head was trained: no longer the identity (after normalisation) it starts as
    assert float(loaded.cluster_head.mlp[2].weight.detach().abs().max()) > 0
    with torch.inference_mode():
        plain = torch.nn.functional.normalize(loaded.whiten(loaded.encode(x)), dim=1)
    assert not torch.allclose(z, plain, atol=1e-3)
    # a newer format is refused rather than read without its new parts (as imgret before the
    # cluster head refuses version 2)
    (tmp_path / "c" / "model.json").write_text(json.dumps({**doc, "version": 3}))
    with pytest.raises(UserError, match="newer imgret"):
        load_model(tmp_path / "c")


def test_cluster_epochs_train_the_encoder_on_its_clusters_once(
    image_folder: Path, tmp_path: Path
) -> None:
    from imgret.data.loader import decode_all
    from imgret.training.deepcluster import cluster_epochs

    src = open_source(image_folder)
    mc = ModelConfig(**{**CONTRASTIVE.__dict__, "whiten_dim": 8, "cluster_head": 3})
    runs = {}
    for n in (0, 2):
        tc = TrainConfig(**{**FAST.__dict__, "epochs": 1, "objective": "contrastive",
                            "cluster_epochs": n})  # fmt: skip
        train_autoencoder(src, mc, tc, tmp_path / f"e{n}", progress=False, log=lambda s: None)
        runs[n] = load_model(tmp_path / f"e{n}")
    # same seed, same contrastive epoch: only the cluster epochs moved the encoder
    before, after = runs[0][0].state_dict(), runs[2][0].state_dict()
    assert not torch.equal(before["to_embedding.weight"], after["to_embedding.weight"])
    assert runs[2][1]["refined"] and runs[2][1]["train"]["cluster_epochs"] == 2
    # stopped after the refined model was saved but before the run was marked finished: a
    # re-run keeps that model rather than training it on its clusters a second time
    last = tmp_path / "e2" / "last.json"
    last.write_text(json.dumps({**json.loads(last.read_text()), "finished": False}))
    train_autoencoder(src, mc, tc, tmp_path / "e2", progress=False, log=lambda s: None)
    again = load_model(tmp_path / "e2")[0].state_dict()
    assert all(torch.equal(again[k], after[k]) for k in after)

    # the epochs themselves: one mean loss each, finite, the model left in eval mode
    model = runs[0][0]
    images, _, _ = decode_all(src, 16, 3, workers=0, progress=False)
    labels = np.arange(len(images)) % 3
    losses = cluster_epochs(model, images, labels, tc, epochs=2, progress=False,
                            log=lambda s: None)  # fmt: skip
    assert len(losses) == 2 and all(np.isfinite(losses)) and not model.training


def test_a_lone_last_image_of_an_epoch_does_not_stop_training(
    image_folder: Path, tmp_path: Path
) -> None:
    """BatchNorm cannot train on a batch of one: a last batch of one image is left for the
    next epoch's shuffle, in the contrastive epochs and in the cluster epochs."""
    from imgret.data.loader import split_indices

    src = open_source(image_folder)
    n_train = len(split_indices(len(src), FAST.val_fraction, FAST.seed)[0])
    mc = ModelConfig(**{**CONTRASTIVE.__dict__, "whiten_dim": 8, "cluster_head": 3})
    for batch, name in ((n_train - 1, "train"), (len(src) - 1, "cluster")):  # remainder 1
        tc = TrainConfig(**{**FAST.__dict__, "epochs": 1, "objective": "contrastive",
                            "batch_size": batch, "cluster_epochs": 1})  # fmt: skip
        res = train_autoencoder(src, mc, tc, tmp_path / name, progress=False, log=lambda s: None)
        assert res.best_epoch == 1 and np.isfinite(res.history[0]["train_loss"])


def test_a_reconstruction_model_gets_a_cluster_head_without_cluster_epochs(
    image_folder: Path, tmp_path: Path
) -> None:
    """The cluster epochs keep the contrastive loss (a projection head): a reconstruction
    model with a cluster head skips them and is still fitted its head (was an AttributeError)."""
    src = open_source(image_folder)
    mc = ModelConfig(**{**TINY.__dict__, "cluster_head": 3})
    tc = TrainConfig(**{**FAST.__dict__, "epochs": 1, "cluster_epochs": 2})
    assert tc.objective == "reconstruction" and tc.epochs_on_clusters(3) == 0
    res = train_autoencoder(src, mc, tc, tmp_path / "m", progress=False, log=lambda s: None)
    loaded, _ = load_model(res.model_dir)
    assert float(loaded.cluster_head.mlp[2].weight.detach().abs().max()) > 0


def test_objective_and_model_must_match(image_folder: Path, tmp_path: Path) -> None:
    src = open_source(image_folder)
    with pytest.raises(UserError, match="projection head"):
        train_autoencoder(src, TINY, TrainConfig(objective="contrastive"), tmp_path / "x",
                          progress=False, log=lambda s: None)  # fmt: skip
    with pytest.raises(UserError, match="needs a decoder"):
        train_autoencoder(src, CONTRASTIVE, FAST, tmp_path / "y", progress=False,
                          log=lambda s: None)  # fmt: skip
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(objective="magic")


def test_cli_trains_a_contrastive_whitened_model_on_a_sample(
    image_folder: Path, tmp_path: Path
) -> None:
    from imgret.cli import main
    from imgret.evaluation.evaluate import evaluate

    out = tmp_path / "m"
    args = ["train", str(image_folder), "--out", str(out), "--objective", "contrastive",
            "--epochs", "1", "--image-size", "16", "--embedding-dim", "32", "--width", "8",
            "--batch-size", "8", "--workers", "0", "--limit", "12", "--whiten", "4"]  # fmt: skip
    assert main(args) == 0
    doc = json.loads((out / "model.json").read_text())
    assert doc["train"]["objective"] == "contrastive" and doc["model"]["whiten_dim"] == 4
    assert doc["source"].endswith("(sample of 12)")
    assert not (out / "reconstructions.png").exists()
    ev = evaluate(out, image_folder, progress=False, log=lambda s: None)
    assert ev.n_queries == 24 and 0 <= ev.overall["mAP@all"] <= 1
