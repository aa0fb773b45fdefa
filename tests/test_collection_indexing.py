"""Incremental indexing of a folder: re-index, add, remove, resume after kill -9, refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model, rank
from PIL import Image

from imgret.core.errors import UserError
from imgret.jobs.index import IndexJobConfig, add_paths, index_folder, remove_paths
from imgret.models import registry
from imgret.models.embed import embed_files
from imgret.store.collection import FORMAT_VERSION
from imgret.store.opening import open_collection

JOB = IndexJobConfig(batch_size=4, workers=0, chunk_rows=5)
QUIET = {"progress": False, "log": lambda _: None}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_tiny_model(tmp_path / "model")


def _index(folder: Path, coll: Path, model: Path | None = None, **kw):  # noqa: ANN202
    return index_folder(folder, coll, model=model, config=JOB, **QUIET, **kw)


def test_index_then_reindex_costs_nothing(image_folder: Path, model: Path, tmp_path: Path) -> None:
    coll_dir = tmp_path / "coll"
    first = _index(image_folder, coll_dir, model)
    assert (first.added, first.updated, first.removed, first.count) == (24, 0, 0, 24)
    assert len(first.failed) == 3 and first.index == "rebuilt"  # corrupt, empty, fake
    coll = open_collection(coll_dir)
    assert json.loads((coll_dir / "collection.json").read_text())["version"] == FORMAT_VERSION
    assert len(list((coll_dir / "embeddings").glob("chunk-*.npy"))) == 5  # 24 in chunks of 5
    item = coll.store.get(str(image_folder / "red" / "00.png"))
    assert item is not None and item.label == "red" and len(item.sha256 or "") == 64
    # The stored embeddings are the model's, in key order.
    fresh = embed_files(registry.load(model), [coll.keys[3]])[0]
    assert np.allclose(coll.embeddings[3], fresh / np.linalg.norm(fresh), atol=1e-5)

    again = _index(image_folder, coll_dir)  # the collection's model, nothing to do
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 24)
    assert again.known_failures == 3 and not again.failed and again.index == "current"
    assert len(list((coll_dir / "embeddings").glob("*"))) == 5


def test_changes_in_the_folder_are_followed(
    image_folder: Path, model: Path, tmp_path: Path
) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder, coll_dir, model)
    touched = image_folder / "blue" / "01.png"
    os.utime(touched, ns=(1, 1_000_000_000))  # new mtime, same content: not embedded again
    changed = image_folder / "red" / "00.png"
    Image.open(image_folder / "stripes" / "02.png").save(changed)  # new content
    gone = image_folder / "more" / "disc" / "05.png"
    gone.unlink()
    new = image_folder / "new" / "copy.png"
    new.parent.mkdir()
    shutil.copy(image_folder / "blue" / "02.png", new)

    report = _index(image_folder, coll_dir)
    assert (report.added, report.updated, report.removed, report.unchanged) == (1, 1, 1, 22)
    coll = open_collection(coll_dir)
    assert len(coll) == 24 and str(gone) not in coll.keys and str(new) in coll.keys
    assert coll.store.get(str(new)).label == "new"  # type: ignore[union-attr]
    # The index follows: the new file finds itself and its identical twin first.
    q = coll.embeddings[coll.keys.index(str(new))][None]
    scores, ids, _ = rank(coll, q, 2, "index")
    found = {coll.keys[i] for i in ids[0]}
    assert found == {str(new), str(image_folder / "blue" / "02.png")}
    assert scores[0] == pytest.approx([1.0, 1.0], abs=1e-5)


def test_add_and_remove_paths(image_folder: Path, model: Path, tmp_path: Path) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder / "red", coll_dir, model)
    assert len(open_collection(coll_dir)) == 6
    report = add_paths(coll_dir, [image_folder / "blue", image_folder / "stripes" / "01.png"],
                       config=JOB, **QUIET)  # fmt: skip
    assert (report.added, report.count) == (7, 13)
    assert add_paths(coll_dir, [image_folder / "blue"], config=JOB, **QUIET).added == 0
    report = remove_paths(coll_dir, [image_folder / "blue", image_folder / "red" / "00.png"],
                          log=lambda _: None)  # fmt: skip
    assert (report.removed, report.count) == (7, 6)
    coll = open_collection(coll_dir)
    assert (
        not any("/blue/" in k for k in coll.keys)
        and str(image_folder / "red" / "00.png") not in coll.keys
    )
    assert coll.index is not None and coll.index_delta()[0].size == 0
    with pytest.raises(UserError, match="not in"):
        remove_paths(coll_dir, [image_folder / "blue"], log=lambda _: None)
    with pytest.raises(UserError, match="no such file"):
        add_paths(coll_dir, [tmp_path / "missing.png"], config=JOB, **QUIET)


def _run_index(
    folder: Path, coll: Path, model: Path, crash_at: str | None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMGRET_TEST_CRASH_AT": crash_at or ""}
    cmd = [sys.executable, "-m", "imgret", "index", str(folder), "--out", str(coll), "--model",
           str(model), "--chunk-size", "5", "--batch-size", "4", "--workers", "0"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_kill_9_at_any_point_then_resume_loses_no_finished_work(
    image_folder: Path, model: Path, tmp_path: Path
) -> None:
    coll_dir = tmp_path / "coll"
    chunks = coll_dir / "embeddings"
    # (where the process kills itself, images committed by then, chunk files on disk then)
    steps = [
        ("chunk-committed:2", 10, 2),  # right after the 2nd chunk's transaction
        ("chunk-written:2", 15, 4),  # 2nd chunk of the resumed run complete, not yet listed
        ("index-written:1", 24, 5),  # all committed, new index file written, not yet current
    ]
    for crash_at, committed, files in steps:
        before = len(open_collection(coll_dir)) if coll_dir.exists() else 0
        killed = _run_index(image_folder, coll_dir, model, crash_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert f"removed, {before} unchanged" in killed.stderr  # resumed where the last one died
        survived = open_collection(coll_dir)  # whatever the moment, the collection loads
        assert len(survived) == committed and len(list(chunks.glob("*"))) == files
        _, ids, _ = rank(survived, survived.embeddings[:1], 3, "index")
        assert ids[0, 0] == 0

    resumed = _run_index(image_folder, coll_dir, model, None)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 added" in resumed.stdout and "24 unchanged" in resumed.stdout
    coll = open_collection(coll_dir)
    assert len(coll) == 24 and coll.index is not None and coll.index_delta()[0].size == 0
    assert len(list(chunks.glob("*"))) == 5  # the uncommitted chunk file was removed
    clean = open_collection(_index(image_folder, tmp_path / "clean", model).collection_dir)
    assert coll.keys == clean.keys
    assert np.allclose(coll.embeddings, clean.embeddings, atol=1e-6)


def test_a_mismatched_collection_is_refused(
    image_folder: Path, model: Path, tmp_path: Path
) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder / "red", coll_dir, model)
    other = make_tiny_model(tmp_path / "other", dim=8)
    with pytest.raises(UserError, match="made with model"):
        _index(image_folder / "red", coll_dir, other)
    make_tiny_model(model, seed=1)  # the same folder, trained again: other weights
    with pytest.raises(UserError, match="other weights"):
        _index(image_folder / "blue", coll_dir)
    with pytest.raises(UserError, match="other weights"):
        _index(image_folder / "blue", coll_dir, model)
    info = json.loads((coll_dir / "collection.json").read_text())
    (coll_dir / "collection.json").write_text(json.dumps({**info, "version": FORMAT_VERSION + 1}))
    with pytest.raises(UserError, match="newer imgret"):
        open_collection(coll_dir)
    with pytest.raises(UserError, match="no collection there yet"):
        _index(image_folder, tmp_path / "new")


def test_a_folder_that_cannot_be_listed_keeps_its_images(
    image_folder: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll_dir = tmp_path / "coll"
    first = _index(image_folder, coll_dir, model)
    real = os.scandir
    blocked = str(image_folder / "blue")

    def scandir(path=".", *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "scandir", scandir)
    said: list[str] = []
    again = index_folder(image_folder, coll_dir, config=JOB, progress=False, log=said.append)
    assert again.removed == 0 and again.count == first.count  # blue's images are not "deleted"
    assert any("cannot list the folder" in line and "blue" in line for line in said)
