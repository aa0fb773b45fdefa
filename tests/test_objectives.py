"""Label-free objectives: NNCLR's neighbour positives, and how `imgret train` picks one (and,
without --epochs, how long it trains)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from imgret.cli import build_parser, main
from imgret.training.config import TrainConfig
from imgret.training.trainer import Support


def test_support_keeps_the_last_rows_and_finds_nearest_neighbours() -> None:
    support = Support(4)
    rows = torch.eye(4)
    support.add(rows[:2])
    assert support.nearest(rows[:1]) is None  # not full yet: no neighbour positives
    support.add(rows[2:])
    query = torch.tensor([[0.1, 0.0, 0.9, 0.0], [0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(support.nearest(query), rows[[2, 1]])
    support.add(torch.full((1, 4), 0.5))  # the oldest row (e0) leaves
    assert support.rows is not None and len(support.rows) == 4
    assert torch.equal(support.rows[0], rows[1])


def test_neighbor_positives_is_off_by_default() -> None:
    assert TrainConfig().neighbor_positives == 0.0


def test_contrastive_whitens_only_with_enough_images_per_dimension() -> None:
    from imgret.training.config import IMAGES_PER_WHITENED_DIM, objective_model_defaults

    enough = IMAGES_PER_WHITENED_DIM * 128
    assert objective_model_defaults("contrastive", 3, 512)["whiten_dim"] == 128
    assert objective_model_defaults("contrastive", 3, 512, n_images=enough)["whiten_dim"] == 128
    assert objective_model_defaults("contrastive", 3, 512, n_images=enough - 1)["whiten_dim"] == 0
    assert objective_model_defaults("contrastive", 1, 64, n_images=20 * 64)["whiten_dim"] == 64
    assert objective_model_defaults("reconstruction", 3, 512, n_images=10) == {}


def test_contrastive_ends_with_a_cluster_head_only_on_large_collections() -> None:
    from imgret.training.config import (
        CLUSTER_HEAD_MIN_IMAGES,
        cluster_head_clusters,
        objective_model_defaults,
    )  # fmt: skip

    assert cluster_head_clusters(CLUSTER_HEAD_MIN_IMAGES - 1) == 0
    assert cluster_head_clusters(CLUSTER_HEAD_MIN_IMAGES) == CLUSTER_HEAD_MIN_IMAGES // 200
    assert cluster_head_clusters(60_000) == 300  # one cluster per 200 images
    assert objective_model_defaults("contrastive", 1, 512, n_images=60_000)["cluster_head"] == 300
    assert objective_model_defaults("contrastive", 3, 512, n_images=1_000)["cluster_head"] == 0
    assert "cluster_head" not in objective_model_defaults("reconstruction", 1, 512, n_images=60_000)


def _tiny_train(folder: Path, out: Path) -> list[str]:
    """`imgret train` arguments for a tiny one-epoch model of `folder` in `out`."""
    return ["train", str(folder), "--out", str(out), "--epochs", "1", "--image-size", "16",
            "--embedding-dim", "16", "--width", "4", "--batch-size", "8",
            "--workers", "0"]  # fmt: skip


def test_imgret_train_fits_a_cluster_head_when_asked(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    args = [*_tiny_train(image_folder, out), "--cluster-epochs", "1", "--cluster-head", "4"]
    assert main(args) == 0
    assert "then 1 epoch on its own clusters and a cluster head on 4 clusters" in (
        capsys.readouterr().out
    )
    doc = json.loads((out / "model.json").read_text())
    assert doc["model"]["cluster_head"] == 4 and doc["train"]["cluster_epochs"] == 1
    assert main([*args[:-1], "1"]) == 2  # one cluster labels nothing
    assert main([*args[:-1], "13"]) == 2  # 24 images make at most 12 clusters of 2
    assert "at most 12 clusters" in capsys.readouterr().err


def test_imgret_train_on_a_small_folder_trains_contrastive_without_whitening(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    args = _tiny_train(image_folder, out)
    assert main(args) == 0  # 27 files: far fewer than 20 per whitened dimension
    assert "not whitened (fewer than 20 images per dimension" in capsys.readouterr().out
    doc = json.loads((out / "model.json").read_text())
    assert doc["train"]["objective"] == "contrastive" and doc["model"]["whiten_dim"] == 0
    explicit = tmp_path / "w"
    assert main([*args[:3], str(explicit), *args[4:], "--whiten", "8"]) == 0  # asked: kept
    assert json.loads((explicit / "model.json").read_text())["model"]["whiten_dim"] == 8


def test_the_objective_is_chosen_by_colour_and_size() -> None:
    from imgret.training.config import choose_objective

    assert choose_objective(1, 2559) == "reconstruction"  # too few to whiten: the autoencoder
    assert choose_objective(1, 2560) == "contrastive"
    assert choose_objective(3, 100) == "contrastive"
    with pytest.raises(ValueError, match="auto"):  # resolved by imgret.jobs.train, not here
        from imgret.training.trainer import train_autoencoder

        train_autoencoder(None, None, TrainConfig(objective="auto"), "unused")  # type: ignore[arg-type]


def test_imgret_train_on_small_grayscale_images_trains_the_autoencoder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    args = ["train", "digits", "--limit", "60", "--out", str(out), "--epochs", "1",
            "--embedding-dim", "16", "--width", "4", "--workers", "0"]  # fmt: skip
    assert main(args) == 0
    assert "objective: reconstruction (chosen by the size and colour" in capsys.readouterr().out
    doc = json.loads((out / "model.json").read_text())
    assert doc["train"]["objective"] == "reconstruction" and doc["model"]["decoder"] != "none"
    given = tmp_path / "c"  # --objective wins over the rule
    assert main([*args[:4], "--out", str(given), *args[6:], "--objective", "contrastive"]) == 0
    assert json.loads((given / "model.json").read_text())["train"]["objective"] == "contrastive"


def test_contrastive_training_runs_more_epochs_on_small_collections() -> None:
    from imgret.training.config import (
        CONTRASTIVE_MIN_IMAGES,
        SMALL_COLLECTION_EPOCHS,
        default_epochs,
    )

    assert default_epochs("contrastive", 1_000) == 30  # what the :val:small sets measured
    assert default_epochs("contrastive", 2_000) == 15
    assert default_epochs("contrastive", 3_000) == default_epochs("contrastive", 60_000) == 10
    assert default_epochs("contrastive", 12) == SMALL_COLLECTION_EPOCHS  # capped
    assert default_epochs("reconstruction", 100) == default_epochs("denoising", 100) == 20
    assert TrainConfig(objective="contrastive").epochs is None  # left to the collection's size
    assert TrainConfig(objective="contrastive").n_epochs == 10
    assert TrainConfig(objective="contrastive", epochs=3).n_epochs == 3
    # the CLI's help (it does not import the training modules to start) spells the same figures
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["train"].format_help().split())
    large = CONTRASTIVE_MIN_IMAGES // default_epochs("contrastive", 10**9)
    assert f"up to {SMALL_COLLECTION_EPOCHS} on collections of fewer than {large:,}" in text


def test_imgret_train_without_epochs_picks_them_by_the_collection_size(
    image_folder: Path, tmp_path: Path
) -> None:
    out, given = tmp_path / "m", tmp_path / "g"
    args = ["train", str(image_folder), "--image-size", "16", "--embedding-dim", "8",
            "--width", "4", "--batch-size", "8", "--workers", "0", "--limit", "12",
            "--patience", "2"]  # fmt: skip
    assert main([*args, "--out", str(out)]) == 0  # 12 images: contrastive, 30 epochs at most
    doc = json.loads((out / "model.json").read_text())
    assert doc["train"]["objective"] == "contrastive" and doc["train"]["epochs"] == 30
    assert main([*args, "--out", str(given), "--epochs", "2"]) == 0  # asked: kept
    assert json.loads((given / "model.json").read_text())["train"]["epochs"] == 2
