"""End to end through the command line, as a user would run it."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from imgret.cli import main


def run(*args: str) -> int:
    return main([str(a) for a in args])


def test_help_is_instant() -> None:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "imgret", "--help"], capture_output=True, text=True, check=True
    )
    assert "search" in out.stdout and time.perf_counter() - t0 < 5
    mods = subprocess.run(
        [sys.executable, "-c", "import imgret.cli, sys; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert mods.stdout.strip() == "False"


def test_train_embed_cluster_search(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, coll, grid = tmp_path / "model", tmp_path / "coll", tmp_path / "grid"
    assert (
        run(
            "train",
            image_folder,
            "--out",
            model,
            "--objective",
            "reconstruction",
            "--epochs",
            "4",
            "--image-size",
            "16",
            "--embedding-dim",
            "32",
            "--width",
            "8",
            "--batch-size",
            "8",
            "--workers",
            "0",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "skipped 3 unreadable file(s)" in out
    for name in (
        "model.safetensors",
        "model.json",
        "history.json",
        "loss.png",
        "reconstructions.png",
    ):
        assert (model / name).exists()
    assert run("embed", model, image_folder, "--out", coll, "--workers", "0") == 0
    assert "embedded 24 images" in capsys.readouterr().out
    assert run("cluster", coll, "--k-max", "8") == 0
    assert "K = " in capsys.readouterr().out
    assert (coll / "elbow.png").exists() and (coll / "clusters.png").exists()

    query = image_folder / "more" / "disc" / "03.png"
    assert run("search", coll, query, "-k", "5", "--json", "--grid", grid) == 0
    results = json.loads(capsys.readouterr().out)
    top = results[0]["hits"][0]
    assert top["key"] == str(query) and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert Image.open(grid / "query0.png").size[0] > 100
    assert run("search", coll, query, "--mode", "cluster", "-k", "3") == 0
    table = capsys.readouterr().out
    assert "(cluster " in table and str(query) in table


def test_user_errors_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("train", tmp_path / "missing") == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    assert run("search", tmp_path, tmp_path / "q.png") == 2
    assert "not an imgret collection" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run("embed", tmp_path / "model", tmp_path / "empty") == 2
    assert "error" in capsys.readouterr().err


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("demo", "--out", tmp_path / "demo", "--epochs", "1") == 0
    out = capsys.readouterr().out
    assert "skipped 2 broken: broken.jpg, truncated.png" in out
    assert "cluster query query_2_" in out and "exact   query query_9_" in out
    for name in (
        "model/loss.png",
        "model/reconstructions.png",
        "collection/elbow.png",
        "collection/clusters.png",
        "search-exact/query0.png",
        "search-cluster/results.json",
    ):
        assert (tmp_path / "demo" / name).exists(), name
