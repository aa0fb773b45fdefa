"""Every bad input gets a clear error (issue 17): one row per case, each run as a user would
(`imgret ...`, in this process): exit code 2 for a user error, one line that says what is wrong
(naming the file and the fix where one is damaged), no traceback, under 2 GB and 30 s.
The bad-file corpus of tests/badfiles.py is searched with as queries, file by file."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from badfiles import make_corpus
from helpers import CLASSES, make_tiny_model, pattern_image

from imgret.cli import main
from imgret.jobs.index import IndexJobConfig, index_folder

MAX_SECONDS = 30.0
MAX_BYTES = 2 << 30


@dataclass(frozen=True)
class World:
    photos: Path
    model: Path
    coll: Path  # pristine: cases that damage it work on a copy
    corpus: Path
    scratch: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("bad-input")
    photos, rng = base / "photos", np.random.default_rng(0)
    for cls in CLASSES:
        (photos / cls).mkdir(parents=True)
        for i in range(4):
            pattern_image(cls, rng).save(photos / cls / f"{i:02d}.png")
    model = make_tiny_model(base / "model")
    coll = base / "coll"
    index_folder(photos, coll, model=model, config=IndexJobConfig(workers=0, chunk_rows=5),
                 progress=False, log=lambda _: None)  # fmt: skip
    corpus = base / "corpus"
    make_corpus(corpus, n_good=3)
    gc.collect()  # no SQLite connection of this process may outlive the build (see below)
    return World(photos, model, coll, corpus, base / "scratch")


def _peak_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size
        return True
    except OSError:
        return False


def _peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def imgret(*args: object) -> tuple[int, str, str, float, int]:
    """(exit code, stdout, stderr, seconds, peak resident bytes) of `imgret ARGS`."""
    out, err = io.StringIO(), io.StringIO()
    measured = _peak_reset()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            rc = int(e.code or 0)
    seconds = time.perf_counter() - t0
    gc.collect()  # SQLite shares a file's WAL index within a process: close what was opened
    return rc, out.getvalue(), err.getvalue(), seconds, _peak() if measured else 0


def _copy(w: World, name: str) -> Path:
    """A fresh copy of the collection (new files: no SQLite state shared with others)."""
    dst = w.scratch / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(w.coll, dst, ignore=shutil.ignore_patterns(".lock", ".readers"))
    return dst


def _query(w: World) -> Path:
    return w.photos / "red" / "00.png"


def _set_info(w: World, name: str, change: Callable[[dict], object]) -> Path:
    c = _copy(w, name)
    info = json.loads((c / "collection.json").read_text())
    change(info)
    (c / "collection.json").write_text(json.dumps(info))
    return c


def _damaged_model(w: World, how: str) -> Path:
    m = w.scratch / f"model-{how}"
    shutil.rmtree(m, ignore_errors=True)
    shutil.copytree(w.model, m)
    weights = m / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    elif how == "garbage":
        weights.write_bytes(b"\x00\xff" * 500)
    else:
        doc = json.loads((m / "model.json").read_text())
        doc["model"].pop("embedding_dim")
        (m / "model.json").write_text(json.dumps(doc))
    return m


def _meta(w: World, name: str, how: str) -> Path:
    c = _copy(w, name)
    for extra in ("meta.sqlite-wal", "meta.sqlite-shm"):
        (c / extra).unlink(missing_ok=True)
    meta = c / "meta.sqlite"
    if how == "garbage":
        meta.write_bytes(b"SQLite format 3\x00" + os.urandom(8000))
    elif how == "truncated":
        meta.write_bytes(meta.read_bytes()[:3000])
    elif how == "deleted":
        meta.unlink()
    else:  # a valid SQLite file of something else
        meta.unlink()
        with sqlite3.connect(meta) as db:
            db.execute("CREATE TABLE other (x)")
    return c


def _chunk_gone(w: World) -> Path:
    c = _copy(w, "chunk-gone")
    sorted((c / "embeddings").glob("chunk-*.npy"))[0].unlink()
    return c


def _garbage_index(w: World) -> Path:
    c = _copy(w, "index-garbage")
    next(c.glob("index-*.faiss")).write_bytes(b"IxFl" + os.urandom(3000))
    return c


def _special_query(w: World, kind: str) -> Path:
    d = w.scratch / "queries"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{kind}.png"
    if not os.path.lexists(p):
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "loop":
            os.symlink(p, p)
        elif kind == "dangling":
            os.symlink(d / "nothing.png", p)
        elif kind == "device":
            os.symlink("/dev/zero", p)
    return p


# (name, argv as a function of the world, a phrase the one line must hold)
CASES: list[tuple[str, Callable[[World], list[object]], str]] = [
    # options out of range
    ("search -k 0", lambda w: ["search", w.coll, _query(w), "-k", "0"], "-k: 0 is out of range"),
    ("search -k -5", lambda w: ["search", w.coll, _query(w), "-k", "-5"], "out of range"),
    ("search -k x", lambda w: ["search", w.coll, _query(w), "-k", "x"], "not a whole number"),
    ("search --nprobe 0", lambda w: ["search", w.coll, _query(w), "--nprobe", "0"], "--nprobe"),
    ("search --nprobe -3", lambda w: ["search", w.coll, _query(w), "--nprobe", "-3"], "range"),
    ("search --dba 100000", lambda w: ["search", w.coll, _query(w), "--dba", "100000"], "--dba"),
    ("search --qe -1", lambda w: ["search", w.coll, _query(w), "--qe", "-1"], "--qe"),
    ("search --alpha nan", lambda w: ["search", w.coll, _query(w), "--alpha", "nan"], "--alpha"),
    ("search --grid /proc/x", lambda w: ["search", w.coll, _query(w), "--grid", "/proc/x"],
     "cannot write in /proc"),
    ("search --grid a file", lambda w: ["search", w.coll, _query(w), "--grid", _query(w)],
     "is a file"),
    ("search --mode cluster, not clustered", lambda w: ["search", w.coll, _query(w), "--mode",
                                                       "cluster"], "not clustered"),
    ("index --chunk-size 0", lambda w: ["index", w.photos, "--out", w.coll, "--chunk-size", "0"],
     "--chunk-size: 0 is out of range"),
    ("index --chunk-size -4", lambda w: ["index", w.photos, "--out", w.coll, "--chunk-size", "-4"],
     "--chunk-size"),
    ("index --batch-size 0", lambda w: ["index", w.photos, "--out", w.coll, "--batch-size", "0"],
     "--batch-size"),
    ("index --workers -1", lambda w: ["index", w.photos, "--out", w.coll, "--workers", "-1"],
     "--workers"),
    ("index --nprobe 0", lambda w: ["index", w.photos, "--out", w.coll, "--nprobe", "0"],
     "--nprobe"),
    ("index --out /proc/x", lambda w: ["index", w.photos, "--out", "/proc/x"], "/proc"),
    ("cluster --k 1", lambda w: ["cluster", w.coll, "--k", "1"], "--k: 1 is out of range"),
    ("cluster --k-max 0", lambda w: ["cluster", w.coll, "--k-max", "0"], "--k-max"),
    ("duplicates --threshold 2", lambda w: ["duplicates", w.coll, "--threshold", "2"],
     "--threshold"),
    ("duplicates -k 0", lambda w: ["duplicates", w.coll, "-k", "0"], "-k"),
    ("serve --port 70000", lambda w: ["serve", w.coll, "--port", "70000"], "--port"),
    ("train --epochs 0", lambda w: ["train", w.photos, "--epochs", "0"], "--epochs"),
    ("train --lr 0", lambda w: ["train", w.photos, "--lr", "0"], "--lr"),
    ("train --val-fraction 1.5", lambda w: ["train", w.photos, "--val-fraction", "1.5"],
     "--val-fraction"),
    ("train --image-size 30", lambda w: ["train", w.photos, "--image-size", "30"],
     "not a multiple of 4"),
    ("evaluate --clusters 0", lambda w: ["evaluate", w.model, w.photos, "--clusters", "0"],
     "--clusters"),
    ("whiten --dim 0", lambda w: ["whiten", w.model, w.photos, "--dim", "0"], "--dim"),
    ("adapt --views 0", lambda w: ["adapt", w.model, w.photos, "--views", "0"], "--views: 0"),
    ("adapt --temperature nan", lambda w: ["adapt", w.model, w.photos, "--temperature", "nan"],
     "--temperature: nan"),
    ("adapt --neighbors -1", lambda w: ["adapt", w.model, w.photos, "--neighbors", "-1"],
     "--neighbors: -1"),
    ("adapt --out a file", lambda w: ["adapt", w.model, w.photos, "--out", _query(w)],
     "is a file, not a folder"),
    ("train contrastive --batch-size 1", lambda w: ["train", w.photos, "--objective",
     "contrastive", "--batch-size", "1", "--out", w.scratch / "c1"], "--batch-size must be 2"),
    ("train --out a file", lambda w: ["train", w.photos, "--out", _query(w)], "is a file"),
    ("finetune --out in /proc", lambda w: ["finetune", w.model, w.photos, "--out", "/proc/x"],
     "cannot write in /proc"),
    ("finetune --labels not UTF-8", lambda w: ["finetune", w.model, w.photos, "--labels",
     _scratch_file(w, "latin.csv", b"\xff\xfe\x00a.png,x\n")], "not a UTF-8 CSV"),
    ("finetune --labels a NUL path", lambda w: ["finetune", w.model, w.photos, "--labels",
     _scratch_file(w, "nul.csv", b"a.png,x\nb\x00.png,y\n")], "row 2: a path with a NUL"),
    ("finetune on undecodable images", lambda w: ["finetune", w.model, _undecodable(w),
     "--pseudo-labels", "2"], "0 of its 3 image(s) could be decoded"),
    ("finetune --out its base", lambda w: ["finetune", w.model, w.photos, "--out", w.model,
     "--pseudo-labels", "2"], "model already holds a conv-autoencoder model"),
    ("adapt --out another kind of model", lambda w: ["adapt", w.model, w.photos, "--out",
     w.model], "already holds a conv-autoencoder model"),
    ("train --out another kind of model", lambda w: ["train", w.photos, "--out",
     _scratch_file(w, "whitened/model.json", b'{"format": "imgret-model", "kind": "whitened"}'
                   ).parent], "already holds a whitened model"),
    ("adapt on undecodable images", lambda w: ["adapt", w.model, _undecodable(w), "--out",
     w.scratch / "adapted"], "0 of its 3 image(s) could be decoded"),
    ("an unknown option", lambda w: ["search", w.coll, _query(w), "--fast"], "unrecognized"),
    # damaged models
    ("model.safetensors truncated", lambda w: ["search", w.coll, _query(w), "--model",
                                               _damaged_model(w, "truncated")],
     "model.safetensors"),
    ("model.safetensors garbage", lambda w: ["index", w.photos, "--out", w.scratch / "new",
                                             "--model", _damaged_model(w, "garbage")],
     "model.safetensors: a damaged model file"),
    ("model.json without embedding_dim", lambda w: ["index", w.photos, "--out", w.scratch / "n2",
                                                    "--model", _damaged_model(w, "json")],
     "do not fit the settings in model.json"),
    # damaged collections
    ("collection.json not JSON", lambda w: ["search", _garbage_json(w), _query(w)],
     "collection.json: unreadable"),
    ('"version": "two"', lambda w: ["search", _set_info(w, "v2", lambda i: i.update(
        version="two")), _query(w)], '"version" is \'two\''),
    ("no dim", lambda w: ["search", _set_info(w, "nodim", lambda i: i.pop("dim")), _query(w)],
     '"dim" is None'),
    ("no model", lambda w: ["search", _set_info(w, "nomodel", lambda i: i.pop("model")),
                            _query(w)], '"model" does not name the model'),
    ("a malformed format-1 collection", lambda w: ["index", w.photos, "--out",
                                                   _format1_broken(w)],
     "an old (format 1) collection that cannot be read"),
    ("meta.sqlite garbage", lambda w: ["search", _meta(w, "m1", "garbage"), _query(w)],
     "meta.sqlite: the collection's metadata is unreadable"),
    ("meta.sqlite truncated", lambda w: ["search", _meta(w, "m2", "truncated"), _query(w)],
     "meta.sqlite"),
    ("meta.sqlite deleted", lambda w: ["search", _meta(w, "m3", "deleted"), _query(w)],
     "meta.sqlite: missing"),
    ("meta.sqlite of something else", lambda w: ["search", _meta(w, "m4", "other"), _query(w)],
     "meta.sqlite"),
    ("a chunk deleted", lambda w: ["search", _chunk_gone(w), _query(w), "--mode", "exact"],
     "missing (an embedding chunk"),
    ("a garbage index file", lambda w: ["search", _garbage_index(w), _query(w)],
     "unreadable FAISS index"),
    ("index of a chunk-deleted collection", lambda w: ["index", w.photos, "--out",
                                                       _chunk_gone(w)], "imgret check --repair"),
    # queries that are not image files
    ("a fifo as a query", lambda w: ["search", w.coll, _special_query(w, "fifo")], "named pipe"),
    ("a symlink loop as a query", lambda w: ["search", w.coll, _special_query(w, "loop")],
     "symbolic link loop"),
    ("a dangling symlink as a query", lambda w: ["search", w.coll, _special_query(w, "dangling")],
     "link to nothing"),
    ("/dev/zero as a query", lambda w: ["search", w.coll, _special_query(w, "device")], "device"),
    ("a missing query", lambda w: ["search", w.coll, w.scratch / "nope.png"], "no such file"),
    ("no collection", lambda w: ["search", w.scratch, _query(w)], "not an imgret collection"),
    ("failures of no collection", lambda w: ["failures", w.photos], "not an imgret collection"),
    ("check of no collection", lambda w: ["check", w.photos], "not an imgret collection"),
]


def _scratch_file(w: World, name: str, data: bytes) -> Path:
    (w.scratch / name).parent.mkdir(parents=True, exist_ok=True)
    (w.scratch / name).write_bytes(data)
    return w.scratch / name


def _undecodable(w: World) -> Path:
    """A folder of three files named .png that hold no image."""
    d = w.scratch / "undecodable"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (d / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    return d


def _garbage_json(w: World) -> Path:
    c = _copy(w, "json")
    (c / "collection.json").write_text('{"format": "imgret-collection", "version": 2, "dim"')
    return c


def _format1_broken(w: World) -> Path:
    c = w.scratch / "format1"
    shutil.rmtree(c, ignore_errors=True)
    c.mkdir(parents=True)
    info = json.loads((w.coll / "collection.json").read_text())
    (c / "collection.json").write_text(json.dumps({**info, "version": 1}))  # items.json missing
    return c


def _one_clear_line(err: str, phrase: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("imgret") and "error:" in ln]
    assert len(errors) == 1, err
    assert phrase in errors[0], errors[0]


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_a_bad_input_is_one_clear_line(world: World, name: str) -> None:
    _, argv, phrase = next(c for c in CASES if c[0] == name)
    rc, _, err, seconds, peak = imgret(*argv(world))
    assert rc == 2, err
    _one_clear_line(err, phrase)
    assert seconds < MAX_SECONDS and peak < MAX_BYTES, (seconds, peak)


def test_corpus_files_as_queries(world: World) -> None:
    """A third of the corpus (every third file; all of it with -m slow)."""
    _corpus_as_queries(world, step=3)


@pytest.mark.slow
def test_every_corpus_file_as_a_query(world: World) -> None:
    _corpus_as_queries(world, step=1)


def _corpus_as_queries(world: World, step: int) -> None:
    """Good images are searched (exit 0), anything else is one clear line (exit 2)."""
    corpus = world.corpus
    files = sorted(p for p in corpus.rglob("*") if not p.is_dir() or p.is_symlink())[::step]
    counts = {0: 0, 2: 0}
    worst = (0.0, 0)
    for p in files:
        if p.is_dir():
            continue  # a link to a folder is a folder of queries
        rc, out, err, seconds, peak = imgret("search", world.coll, p, "-k", "3")
        assert rc in (0, 2), (p, rc, err)
        if rc == 2:
            _one_clear_line(err, "")
        else:
            assert "Traceback" not in err and "rank" in out, (p, err)
        counts[rc] += 1
        worst = (max(worst[0], seconds), max(worst[1], peak))
    assert worst[0] < MAX_SECONDS and worst[1] < MAX_BYTES, worst
    assert counts[0] >= 50 // step and counts[2] >= 40 // step, counts
    print(f"{len(files)} corpus files as queries: {counts[0]} searched, {counts[2]} refused in "
          f"one line; slowest {worst[0]:.2f} s, peak resident {worst[1] / 2**20:.0f} MB")
