"""kill -9 at the crash points of add, remove, compact and repair, then an immediate re-run; two
writers at once; searches during a writer's run; full disks (issues 16 and 17)."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import make_tiny_model

from imgret.cli import main
from imgret.core import atomic
from imgret.core.crashpoints import POINTS
from imgret.core.errors import DiskFullError, UserError
from imgret.jobs.index import IndexJobConfig, add_paths, index_folder, remove_paths
from imgret.retrieval.searcher import Searcher
from imgret.store.check import check_collection
from imgret.store.opening import open_collection

JOB = IndexJobConfig(batch_size=4, workers=0, chunk_rows=5)
QUIET = {"progress": False, "log": lambda _: None}


def imgret(*args: object, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMGRET_TEST_CRASH_AT": crash or ""}
    cmd = [sys.executable, "-m", "imgret", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def sound(coll_dir: Path) -> int:
    """Assert the collection loads, holds no duplicate, loses no committed chunk and searches;
    -> its number of images."""
    gc.collect()
    coll = open_collection(coll_dir)
    with sqlite3.connect(coll_dir / "meta.sqlite") as db:
        assert db.execute("SELECT COUNT(*) - COUNT(DISTINCT key) FROM items").fetchone() == (0,)
    report = check_collection(coll_dir)
    assert not report.damaged, report.findings
    if len(coll):
        _, ids, _ = Searcher(coll).search(coll.embeddings[:1], 3, mode="index")
        assert ids[0, 0] == 0
    n = len(coll)
    coll.close()
    return n


@pytest.fixture
def setup(image_folder: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(photos, model, collection of red + blue + stripes in chunks of 5)."""
    model = make_tiny_model(tmp_path / "model")
    coll = tmp_path / "coll"
    index_folder(image_folder / "red", coll, model=model, config=JOB, **QUIET)
    add_paths(coll, [image_folder / "blue", image_folder / "stripes"], config=JOB, **QUIET)
    return image_folder, model, coll


# (command, crash point, images after the re-run)
CASES = [
    ("add", "chunk-committed:1", 24),
    ("remove", "items-removed:1", 6),
    ("compact", "compact-committed:1", 17),
    ("repair", "repair-committed:1", 13),
]
SLOW_CASES = [
    ("add", "chunk-written:1", 24),
    ("add", "index-written:1", 24),
    ("add", "index-current:1", 24),
    ("remove", "compact-written:1", 6),
    ("remove", "compact-committed:1", 6),
    ("remove", "index-current:1", 6),
    ("compact", "compact-written:1", 17),
    ("compact", "index-written:1", 17),
    ("compact", "index-current:1", 17),
    ("repair", "index-written:1", 13),
    ("repair", "salvage-ready:1", 0),
]


def _command(kind: str, photos: Path, coll: Path) -> list[object]:
    if kind == "add":
        return ["add", coll, photos / "more"]
    if kind == "remove":
        return ["remove", coll, photos / "red", photos / "blue"]
    if kind == "compact":
        return ["compact", coll]
    return ["check", coll, "--repair"]


def _prepare(kind: str, point: str, photos: Path, coll: Path) -> None:
    if kind == "compact":
        remove_paths(coll, [photos / "red" / "00.png"], log=lambda _: None)  # 1 row dead
    if kind == "repair":
        if point.startswith("salvage"):
            (coll / "meta.sqlite").write_bytes(b"garbage" * 1000)
            for extra in ("meta.sqlite-wal", "meta.sqlite-shm"):
                (coll / extra).unlink(missing_ok=True)
        else:
            sorted((coll / "embeddings").glob("chunk-*.npy"))[0].unlink()  # 5 images lost


def _crash_then_rerun(kind: str, point: str, expect: int, setup: tuple[Path, Path, Path]) -> None:
    photos, _, coll = setup
    gc.collect()  # this process's last SQLite connection, closing, would rewrite the database
    _prepare(kind, point, photos, coll)
    cmd = _command(kind, photos, coll)
    killed = imgret(*cmd, crash=point)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    if kind != "repair":  # a repair killed half-way may leave what it repairs
        sound(coll)
    rerun = imgret(*cmd)  # at once: nothing to wait for
    if kind == "remove" and rerun.returncode == 2:  # killed after its commit: nothing to remove
        assert "not in" in rerun.stderr and rerun.stderr.count("\n") == 1, rerun.stderr
        rerun = imgret("compact", coll)  # any next write finishes the interrupted work
    assert rerun.returncode == 0, rerun.stderr
    assert sound(coll) == expect
    assert not list(coll.glob(".*.tmp")) and not list((coll / "embeddings").glob(".*.tmp"))


@pytest.mark.parametrize(("kind", "point", "expect"), CASES)
def test_kill_9_then_rerun(kind: str, point: str, expect: int, setup) -> None:  # noqa: ANN001
    _crash_then_rerun(kind, point, expect, setup)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "point", "expect"), SLOW_CASES)
def test_kill_9_then_rerun_at_every_point(
    kind: str, point: str, expect: int, setup  # noqa: ANN001
) -> None:
    _crash_then_rerun(kind, point, expect, setup)


def test_every_crash_point_is_tested() -> None:
    tested = {p.split(":")[0] for _, p, _ in CASES + SLOW_CASES}
    tested |= {"chunk-written", "chunk-committed", "index-written"}  # test_collection_indexing
    assert tested == set(POINTS)


# -- two writers, and readers during a write ---------------------------------------------------


def test_a_second_writer_is_refused_clearly_and_nothing_breaks(
    image_folder: Path, tmp_path: Path
) -> None:
    model = make_tiny_model(tmp_path / "model")
    coll = tmp_path / "coll"
    inside, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def log(msg: str) -> None:  # called by the first writer, holding the lock
        if "to embed" in msg:
            inside.set()
            go_on.wait(60)

    def first() -> None:
        try:
            index_folder(image_folder, coll, model=model, config=JOB, progress=False, log=log)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(60)
    for second in (
        lambda: index_folder(image_folder, coll, model=model, config=JOB, **QUIET),
        lambda: remove_paths(coll, [image_folder / "red"], log=lambda _: None),
    ):
        with pytest.raises(UserError, match="being changed by another imgret process; wait"):
            second()
    go_on.set()
    t.join()
    assert not errors and sound(coll) == 24


def test_searches_during_writes_see_the_old_or_the_new_state(
    image_folder: Path, tmp_path: Path
) -> None:
    model = make_tiny_model(tmp_path / "model")
    coll = tmp_path / "coll"
    index_folder(image_folder / "red", coll, model=model, config=JOB, **QUIET)
    states = {6, 11, 12}  # red; red + the first chunk of blue; red + blue
    from imgret.models import registry
    from imgret.models.embed import embed_files

    query = image_folder / "blue" / "00.png"
    q = embed_files(registry.load(model), [query])  # (1, dim)
    stop, errors = threading.Event(), []

    # The writer's first add exports the model to ONNX: torch.export builds ASTs while the
    # searches parse .npy headers with ast.literal_eval (models.backend runs it in a child).
    onnx_job = replace(JOB, backend="auto")

    def writer() -> None:  # add and remove blue again and again (each remove compacts)
        try:
            while not stop.is_set():
                add_paths(coll, [image_folder / "blue"], config=onnx_job, **QUIET)
                remove_paths(coll, [image_folder / "blue"], log=lambda _: None)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120  # 4 s of searches from the writer's first add
        while time.monotonic() < deadline and not errors:
            for mode in ("index", "exact"):
                with open_collection(coll) as c:
                    scores, ids, _ = Searcher(c).search(q, 20, mode=mode)
                    n, keys = len(c), c.keys
                assert n in states
                found = ids[0][ids[0] >= 0]  # every image once, none missing: one state
                assert sorted(found.tolist()) == list(range(n)), (mode, n, ids)
                assert (keys[found[0]] == str(query)) == (str(query) in keys)
                if n != 6 and not seen - {6}:
                    deadline = min(deadline, time.monotonic() + 4)
                seen.add(n)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert sound(coll) in states and len(seen) >= 2, seen


# -- full disks ---------------------------------------------------------------------------------


def test_a_full_disk_while_writing_a_chunk_is_one_clear_error(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    model = make_tiny_model(tmp_path / "model")
    coll = tmp_path / "coll"
    index_folder(image_folder / "red", coll, model=model, config=JOB, **QUIET)
    real_save = atomic.np.save

    def save(f, array):  # noqa: ANN001, ANN202 - writes half, then the disk is full
        f.write(b"\x93NUMPY" + bytes(100))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.np, "save", save)
    with pytest.raises(DiskFullError, match="no space left on the device while writing .*chunk"):
        add_paths(coll, [image_folder / "blue"], config=JOB, **QUIET)
    assert main(["add", str(coll), str(image_folder / "blue"), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("imgret: error")]  # one line
    assert "Traceback" not in err and "no space left" in line and "B free there" in line
    assert not list((coll / "embeddings").glob(".*")) and sound(coll) == 6
    monkeypatch.setattr(atomic.np, "save", real_save)
    assert main(["add", str(coll), str(image_folder / "blue"), "--workers", "0"]) == 0
    assert sound(coll) == 12


def test_a_full_metadata_database_is_one_clear_error(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_tiny_model(tmp_path / "model")
    coll = tmp_path / "coll"
    index_folder(image_folder / "red", coll, model=model, config=JOB, **QUIET)
    from imgret.store import metadata

    def full(db, chunk):  # noqa: ANN001, ANN202
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(metadata.MetaStore, "put_chunk", staticmethod(full))
    with pytest.raises(DiskFullError, match="meta.sqlite"):
        add_paths(coll, [image_folder / "blue"], config=JOB, **QUIET)
    monkeypatch.undo()
    assert sound(coll) == 6  # the transaction rolled back; the unlisted chunk goes next time
    assert add_paths(coll, [image_folder / "blue"], config=JOB, **QUIET).added == 6
    listed = {c.name for c in open_collection(coll).store.chunks()}
    assert {p.name for p in (coll / "embeddings").iterdir()} == listed and len(listed) == 4


DISKFULL_SCRIPT = Path(__file__).with_name("diskfull_probe.py")


def test_a_really_full_disk_leaves_a_consistent_collection(
    image_folder: Path, tmp_path: Path
) -> None:
    """On a small tmpfs (in a private mount namespace: needs unshare, skipped without it), fill
    the disk to several levels, index, check, free the space, index again."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot make a mount namespace here")
    model = make_tiny_model(tmp_path / "model", dim=256)
    out = subprocess.run(
        ["unshare", "-rm", sys.executable, str(DISKFULL_SCRIPT), str(image_folder), str(model),
         str(tmp_path / "mnt")], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if "cannot mount" in out.stdout:
        pytest.skip("tmpfs cannot be mounted here")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("free ")]
    assert len(lines) >= 8 and any("rc 2" in ln for ln in lines), out.stdout
    assert any("rc 0" in ln for ln in lines), out.stdout
    assert all("ok" in ln for ln in lines), out.stdout


# -- random kills (slow): any command, any moment --------------------------------------------


@pytest.mark.slow
def test_30_random_kill_9_trials(tmp_path: Path) -> None:
    """`python -m bench.crash_trials` prints the same counts (and writes them down)."""
    from bench.crash_trials import run_trials

    counts = run_trials(None, tmp_path / "trials", n=30, seed=0, log=print)
    print(counts)
    assert counts["trials"] == 30 and counts["killed"] >= 10
    for bad in ("unloadable", "lost_chunks", "duplicates", "rerun_failed", "damaged"):
        assert counts[bad] == 0, counts

