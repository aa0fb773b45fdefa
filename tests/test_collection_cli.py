"""The collection commands as a user runs them: index, search variants, duplicates, remove."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import make_tiny_model

from imgret.cli import main


def run(*args: object) -> int:
    return main([str(a) for a in args])


def test_index_search_duplicates_remove(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_model(tmp_path / "model")
    shutil.copy(image_folder / "red" / "02.png", image_folder / "red" / "copy-of-02.png")
    coll = tmp_path / "coll"
    assert run("index", image_folder, "--out", coll, "--model", model, "--workers", "0") == 0
    out = capsys.readouterr().out
    assert "25 added" in out and "skipped 3 unreadable" in out
    assert run("index", image_folder, "--out", coll, "--index-kind", "hnsw") == 0
    out = capsys.readouterr().out
    assert "0 added" in out and "25 unchanged" in out and "index rebuilt" in out
    assert json.loads((coll / "index.json").read_text())["kind"] == "hnsw"

    # A folder of queries, batched; each image finds itself first.
    assert run("search", coll, image_folder / "blue", "-k", "2", "--json") == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 6 and all(r["hits"][0]["key"] == r["query"] for r in results)
    # Images already in the collection, by path and by id: the query itself is left out.
    query = str(image_folder / "red" / "02.png")
    assert run("search", coll, query, "0", "--in-collection", "-k", "1", "--json") == 0
    by_path, by_id = json.loads(capsys.readouterr().out)
    assert by_path["hits"][0]["key"] == str(image_folder / "red" / "copy-of-02.png")
    assert by_id["hits"][0]["id"] != 0

    assert run("duplicates", coll, "--threshold", "0.9999", "--json") == 0
    pairs = json.loads(capsys.readouterr().out)
    assert [sorted([p["key_a"], p["key_b"]]) for p in pairs] == [
        [str(image_folder / "red" / "02.png"), str(image_folder / "red" / "copy-of-02.png")]
    ]
    assert run("remove", coll, image_folder / "red") == 0
    assert "7 removed" in capsys.readouterr().out
    assert run("search", coll, "nothing-like-this", "--in-collection") == 2
    assert "not in" in capsys.readouterr().err
