"""`imgret check` finds each kind of damage, `--repair` makes the collection searchable again,
and the next `imgret index` embeds what was lost; leftovers of interrupted runs are tidied."""

from __future__ import annotations

import gc
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import make_tiny_model

from imgret.cli import main
from imgret.store.opening import open_collection


def run(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def built(image_folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(photos, collection): the 24 good images in chunks of 5."""
    model = make_tiny_model(tmp_path / "model")
    coll = tmp_path / "coll"
    assert run("index", image_folder, "--out", coll, "--model", model, "--workers", "0",
               "--chunk-size", "5") == 0  # fmt: skip
    # No SQLite connection of this process may outlive the run: SQLite shares one WAL index per
    # file within a process, and a leftover one would hide the damage done below.
    gc.collect()
    return image_folder, coll


def _chunks(coll: Path) -> list[Path]:
    return sorted((coll / "embeddings").glob("chunk-*.npy"))


def _delete_chunk(coll: Path) -> str:
    p = _chunks(coll)[1]
    p.unlink()
    return p.name


def _truncate_chunk(coll: Path) -> str:
    p = _chunks(coll)[2]
    p.write_bytes(p.read_bytes()[:150])
    return p.name


def _corrupt_index(coll: Path) -> str:
    p = next(coll.glob("index-*.faiss"))
    p.write_bytes(b"\x00garbage" * 64)
    return p.name


def _row_past_chunks(coll: Path) -> str:
    with sqlite3.connect(coll / "meta.sqlite") as db:
        db.execute("UPDATE items SET row = 999 WHERE row = 3")
    return "point past every chunk"


def _flip_chunk_bytes(coll: Path) -> str:
    p = _chunks(coll)[0]
    data = bytearray(p.read_bytes())
    data[-7] ^= 0xFF  # same size and shape, other numbers
    p.write_bytes(bytes(data))
    return "checksum"


DAMAGE: dict[str, tuple[Callable[[Path], str], int, str | None]] = {
    # name: (do it -> a word of the message, images lost and embedded again, a search mode
    # that reads the damaged part)
    "deleted chunk": (_delete_chunk, 5, "exact"),
    "truncated chunk": (_truncate_chunk, 5, "exact"),
    "corrupt index": (_corrupt_index, 0, "index"),
    "row past a chunk": (_row_past_chunks, 1, "exact"),
    "changed chunk data": (_flip_chunk_bytes, 5, None),  # only a checksum tells
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_check_finds_each_damage_and_repair_restores_search(
    built: tuple[Path, Path], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, coll = built
    query = photos / "blue" / "03.png"
    assert run("check", coll) == 0
    assert "sound; 24 images" in capsys.readouterr().out
    damage, lost, mode = DAMAGE[case]
    word = damage(coll)
    if mode is not None:  # a search reads it: one clear line, not a traceback
        assert run("search", coll, query, "--mode", mode) == 2
        err = capsys.readouterr().err
        assert "imgret check --repair" in err and len(err.strip().splitlines()) == 1
    assert run("check", coll) == 1
    out = capsys.readouterr().out
    assert word in out and "problem:" in out and "damaged" in out
    assert run("check", coll, "--repair") == 0
    out = capsys.readouterr().out
    assert "repaired" in out and f"{24 - lost} images" in out
    assert run("search", coll, query, "-k", "1", "--json") == 0
    top = json.loads(capsys.readouterr().out)[0]["hits"][0]["key"]
    assert (top == str(query)) == (str(query) in open_collection(coll).keys)
    assert run("check", coll) == 0  # sound now
    assert "sound" in capsys.readouterr().out
    # The lost images are embedded again by the next index run (nothing else is).
    assert run("index", photos, "--out", coll, "--workers", "0") == 0
    out = capsys.readouterr().out
    assert f"{lost} added" in out and "24 images" in out
    c = open_collection(coll)
    assert len(c) == 24 and c.index is not None and c.index_delta()[0].size == 0


def test_a_garbage_index_is_rebuilt_by_index_rebuild_index(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    photos, coll = built
    _corrupt_index(coll)
    (coll / "index.json").write_text("{not json")
    assert run("index", photos, "--out", coll, "--rebuild-index", "--workers", "0") == 0
    assert "index rebuilt" in capsys.readouterr().out
    assert run("search", coll, photos / "red" / "00.png", "-k", "1") == 0


def test_a_lost_manifest_row_is_rebuilt_from_the_chunk_file(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, coll = built
    name = _chunks(coll)[1].name
    with sqlite3.connect(coll / "meta.sqlite") as db:
        db.execute("DELETE FROM chunks WHERE name = ?", (name,))
    assert run("check", coll, "--repair") == 0
    out = capsys.readouterr().out
    assert f"{name}: holds items' embeddings but is not in the manifest" in out
    assert "24 images" in out  # nothing lost: the file says which rows it holds
    assert run("check", coll) == 0


@pytest.mark.parametrize("how", ["garbage", "truncated", "deleted"])
def test_a_damaged_metadata_file_is_salvaged(
    built: tuple[Path, Path], how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    photos, coll = built
    meta = coll / "meta.sqlite"
    for extra in ("meta.sqlite-wal", "meta.sqlite-shm"):
        (coll / extra).unlink(missing_ok=True)
    if how == "garbage":
        meta.write_bytes(b"this is not a database" * 100)
    elif how == "truncated":
        meta.write_bytes(meta.read_bytes()[:5000])
    else:
        meta.unlink()
    assert run("search", coll, photos / "red" / "00.png") == 2
    err = capsys.readouterr().err
    assert "meta.sqlite" in err and "imgret check --repair" in err and "Traceback" not in err
    assert run("check", coll) == 1
    assert "problem: meta.sqlite" in capsys.readouterr().out
    assert run("check", coll, "--repair") == 0
    assert "repaired" in capsys.readouterr().out
    assert run("index", photos, "--out", coll, "--workers", "0") == 0  # embeds what was lost
    assert "24 images" in capsys.readouterr().out
    assert any(coll.glob("meta.sqlite.damaged-*")) == (how != "deleted")  # kept, never deleted


def test_leftovers_are_reported_and_tidied(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    photos, coll = built
    shutil.copy(_chunks(coll)[0], coll / "embeddings" / "chunk-000099-r500.npy")  # uncommitted
    (coll / ".index.json.abcd1234.tmp").write_text("{")  # a write killed half-way
    (coll / "embeddings" / ".chunk-000100-r600.npy.zz99yy88.tmp").write_bytes(b"\x93NUMPY")
    assert run("check", coll) == 0  # nothing damaged: notes only
    out = capsys.readouterr().out
    assert "note: embeddings/: 2 file(s)" in out and "1 temporary file(s)" in out
    assert run("index", photos, "--out", coll, "--workers", "0") == 0  # the next write tidies
    assert not list(coll.glob(".*.tmp")) and len(list((coll / "embeddings").iterdir())) == 5
    assert run("check", coll) == 0
    assert "note" not in capsys.readouterr().out
