"""Issue 16, fixes 1-7: names in any bytes, one model reference, workers that die with the job,
every write under the lock, durable renames, readers and writers, transient errors retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model, pattern_image

from imgret.cli import main
from imgret.core import atomic
from imgret.core.errors import UserError
from imgret.data import loader
from imgret.jobs.cluster import cluster
from imgret.jobs.index import IndexJobConfig, add_paths, index_folder, remove_paths
from imgret.jobs.maintenance import check, compact
from imgret.store.index_files import IndexSettings, load_index, read_pointer
from imgret.store.lock import LOCK_NAME, collection_lock
from imgret.store.metadata import Item
from imgret.store.opening import (
    collection_generation,
    create_collection,
    open_collection,
    upgrade_collection,
)

JOB = IndexJobConfig(batch_size=4, workers=0, chunk_rows=5)
QUIET = {"progress": False, "log": lambda _: None}
LATIN1 = b"caf\xe9.png"  # "café" in Latin-1: not UTF-8


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_tiny_model(tmp_path / "model")


def _index(folder: Path, coll: Path, model: Path | None = None, **kw):  # noqa: ANN202
    return index_folder(folder, coll, model=model, config=JOB, **QUIET, **kw)


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` -> (size, mtime_ns); lock files and SQLite's shared-memory
    index (which readers write) aside."""
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and p.name not in (LOCK_NAME, ".readers", "meta.sqlite-shm"):
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


# -- 1. names in any bytes --------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_indexed_kept_exactly_and_shown_readably(
    image_folder: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = os.path.join(os.fsencode(image_folder / "red"), LATIN1)
    with open(raw, "wb") as f:
        pattern_image("blue", np.random.default_rng(5)).save(f, "PNG")
    bad = os.path.join(os.fsencode(image_folder / "red"), b"broken-\xff.jpg")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    key, bad_key = os.fsdecode(raw), os.fsdecode(bad)  # str with surrogates, as os.walk gives
    coll_dir = tmp_path / "coll"
    report = _index(image_folder, coll_dir, model)
    assert report.added == 25 and any(k == bad_key for k, _ in report.failed)
    coll = open_collection(coll_dir)
    assert key in coll.keys and os.fsencode(coll.keys[coll.keys.index(key)]) == raw
    assert coll.store.get(key) is not None and bad_key in coll.store.failures()
    again = _index(image_folder, coll_dir)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 25)
    # Shown readably: the CLI prints the odd byte escaped, never a UnicodeEncodeError.
    assert main(["search", str(coll_dir), str(image_folder / "red"), "-k", "1"]) == 0
    assert "caf\\udce9.png" in capsys.readouterr().out
    assert main(["failures", str(coll_dir)]) == 0
    assert "broken-\\xff.jpg" in capsys.readouterr().out
    coll.close()
    assert remove_paths(coll_dir, [raw.decode("utf-8", "surrogateescape")], log=print).removed == 1


# -- 2. one canonical model reference (the pretrained case runs in test_collection_badfiles) ---


def test_a_model_given_by_another_spelling_is_the_same_model(
    image_folder: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder / "red", coll_dir, model)
    monkeypatch.chdir(model.parent)
    again = _index(image_folder / "red", coll_dir, "./model/")  # type: ignore[arg-type]
    assert again.unchanged == 6


# -- 3. decode workers die with the job; lock descriptors are not inherited -------------------


def test_kill_9_leaves_no_worker_and_an_immediate_rerun_succeeds(
    image_folder: Path, model: Path, tmp_path: Path
) -> None:
    coll_dir = tmp_path / "coll"
    cmd = [sys.executable, "-m", "imgret", "index", str(image_folder), "--out", str(coll_dir),
           "--model", str(model), "--chunk-size", "4", "--batch-size", "2", "--workers", "2"]
    env = {**os.environ, "IMGRET_TEST_CRASH_AT": "chunk-committed:2"}
    job = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)  # fmt: skip
    assert job.wait(timeout=300) == -signal.SIGKILL, job.stderr.read() if job.stderr else ""
    deadline = time.monotonic() + 3.0  # the workers, in the job's process group, must go too
    while True:
        try:
            os.killpg(job.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "decode workers outlived the killed job"
        time.sleep(0.05)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(open_collection(coll_dir)) == 24


def test_forked_children_do_not_hold_the_lock(tmp_path: Path) -> None:
    with collection_lock(tmp_path):
        lock = os.path.realpath(tmp_path / LOCK_NAME)
        pid = os.fork()
        if pid == 0:  # the child: is the lock file among its open descriptors?
            fds = os.listdir("/proc/self/fd")
            held = any(os.path.realpath(f"/proc/self/fd/{fd}") == lock for fd in fds)
            os._exit(1 if held else 0)
        assert os.waitpid(pid, 0)[1] == 0


# -- 4. every write under the lock --------------------------------------------------------------


def test_every_write_is_refused_while_another_writer_holds_the_lock(
    image_folder: Path, model: Path, tmp_path: Path
) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder / "red", coll_dir, model)
    remove_paths(coll_dir, [image_folder / "red" / "00.png"], log=lambda _: None)
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:  # another thread is another writer, as another process is
        with collection_lock(coll_dir):
            held.set()
            release.wait(60)

    t = threading.Thread(target=other_writer)
    t.start()
    held.wait(10)
    coll = open_collection(coll_dir)
    before = _files(coll_dir)
    x = np.ones((1, coll.dim), np.float32)
    writes = {
        "index": lambda: _index(image_folder / "red", coll_dir),
        "settings": lambda: _index(image_folder / "red", coll_dir, index_kind="hnsw"),
        "rebuild": lambda: _index(image_folder / "red", coll_dir, rebuild_index=True),
        "add": lambda: add_paths(coll_dir, [image_folder / "blue"], config=JOB, **QUIET),
        "remove": lambda: remove_paths(coll_dir, [image_folder / "red"], log=lambda _: None),
        "cluster": lambda: cluster(coll_dir, k_max=3, progress=False),  # elbow.png too
        "compact": lambda: compact(coll_dir, log=lambda _: None),
        "check": lambda: check(coll_dir, log=lambda _: None),
        "repair": lambda: check(coll_dir, repair=True, log=lambda _: None),
        "create": lambda: create_collection(coll_dir, model={"ref": "m"}, source="s", keys=["a"],
                                            labels=[None], embeddings=x),  # fmt: skip
        "upgrade": lambda: upgrade_collection(coll_dir).remove_leftovers(),
        "append": lambda: coll.append(x, [Item("k", -1, None, None, None, None)]),
        "remove_keys": lambda: coll.remove_keys(coll.keys[:1]),
        "refresh_index": lambda: coll.refresh_index(rebuild=True),
        "set_index_settings": lambda: coll.set_index_settings(IndexSettings(kind="flat")),
    }
    try:
        for name, write in writes.items():
            with pytest.raises(UserError, match="being changed by another imgret process"):
                write()
            assert _files(coll_dir) == before, name
    finally:
        release.set()
        t.join()
    assert compact(coll_dir, log=lambda _: None).rows_after == 5  # free again: it runs


# -- 5. durability: fsync of the file and of its folder ---------------------------------------


def test_a_rename_is_made_durable_by_an_fsync_of_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    atomic.write_json(tmp_path / "sub" / "a.json", {"x": 1})
    kinds = [(e, Path(p).name if e == "replace" else p) for e, p in events]
    i = kinds.index(("replace", "a.json"))
    assert kinds[i - 1][0] == "fsync" and kinds[i - 1][1].endswith(".tmp")  # data first
    assert ("fsync", str(tmp_path / "sub")) in kinds[i + 1 :]  # then the rename itself
    assert ("fsync", str(tmp_path)) in kinds[:i]  # the new folder's entry too


@pytest.mark.parametrize("mmap", [False, True])
def test_npy_files_read_back_without_numpys_header_parser(tmp_path: Path, mmap: bool) -> None:
    """read_npy reads what np.save writes (np.load's ast.literal_eval fails in two threads at
    once on CPython < 3.11.9) and refuses what it should not read."""
    path = tmp_path / "a.npy"
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((0, 64), np.float32),
              np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.array([7], np.int64),
              np.array(2.5), np.array(["ab", "c"])]  # fmt: skip
    for a in arrays:
        np.save(path, a)
        b = atomic.read_npy(path, mmap=mmap)
        assert b.shape == a.shape and b.dtype == a.dtype and np.array_equal(a, b)
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects"):
        atomic.read_npy(path, mmap=mmap)
    np.save(path, np.ones((100, 4), np.float32))
    with open(path, "r+b") as f:
        f.truncate(200)
    with pytest.raises(ValueError, match="too short"):
        atomic.read_npy(path, mmap=mmap)
    for junk in (b"", b"\x93NUMPY", b"PK\x03\x04 a zip"):
        path.write_bytes(junk)
        with pytest.raises(ValueError):
            atomic.read_npy(path, mmap=mmap)
    with pytest.raises(FileNotFoundError):
        atomic.read_npy(tmp_path / "missing.npy", mmap=mmap)


# -- 6. readers and writers --------------------------------------------------------------------


def test_files_a_reader_may_need_stay_until_it_closes(
    image_folder: Path, model: Path, tmp_path: Path
) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder / "red", coll_dir, model)
    reader = open_collection(coll_dir)
    gen0, old = reader.generation, read_pointer(coll_dir)
    assert old is not None and reader.changed() is False
    add_paths(coll_dir, [image_folder / "blue"], config=JOB, **QUIET)
    remove_paths(coll_dir, [image_folder / "blue"], log=lambda _: None)  # half dead: compacted
    assert reader.changed() and collection_generation(coll_dir) > gen0
    assert (coll_dir / old["file"]).exists()  # the generation the reader may still open
    assert np.array_equal(reader.fetch(reader.rows), reader.embeddings)  # its old chunks too
    assert len(reader) == 6 and len(open_collection(coll_dir)) == 6
    reader.close()
    add_paths(coll_dir, [image_folder / "stripes"], config=JOB, **QUIET)
    assert not (coll_dir / old["file"]).exists()  # no reader: the next write tidies up
    assert len(list(coll_dir.glob("index-*.faiss"))) == 1


def test_a_reader_retries_when_the_index_moved_on(
    image_folder: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder / "red", coll_dir, model)
    stale = dict(read_pointer(coll_dir) or {}, file="index-000000.faiss")  # read "before"
    from imgret.store import index_files

    real, calls = index_files.read_pointer, []

    def first_stale(folder: Path, *, strict: bool = True):  # noqa: ANN202
        calls.append(1)
        return stale if len(calls) == 1 else real(folder, strict=strict)

    monkeypatch.setattr(index_files, "read_pointer", first_stale)
    loaded = load_index(coll_dir)
    assert loaded is not None and loaded.index.ntotal == 6 and len(calls) >= 3


def test_removed_rows_are_compacted_away(image_folder: Path, model: Path, tmp_path: Path) -> None:
    coll_dir = tmp_path / "coll"
    _index(image_folder, coll_dir, model)
    coll = open_collection(coll_dir)
    emb = dict(zip(coll.keys, coll.embeddings, strict=True))
    coll.close()
    remove_paths(coll_dir, [image_folder / "red"], log=lambda _: None)  # a quarter: kept
    chunk_rows = sum(np.load(p, mmap_mode="r").shape[0]
                     for p in (coll_dir / "embeddings").glob("*.npy"))  # fmt: skip
    assert chunk_rows == 24
    report = compact(coll_dir, log=lambda _: None)
    assert (report.rows_before, report.rows_after, report.index) == (24, 18, "rebuilt")
    assert report.bytes_freed > 0
    coll = open_collection(coll_dir)
    assert sum(np.load(p).shape[0] for p in (coll_dir / "embeddings").glob("*.npy")) == 18
    assert all(np.allclose(e, emb[k]) for k, e in zip(coll.keys, coll.embeddings, strict=True))
    assert coll.rows.min() >= 24  # new rows: an old index never names the wrong image
    coll.close()
    assert compact(coll_dir, log=lambda _: None).rows_before == 18  # nothing more to do
    # More than a quarter dead: `imgret remove` compacts by itself.
    report2 = remove_paths(coll_dir, [image_folder / "stripes", image_folder / "more"],
                           log=lambda _: None)  # fmt: skip
    assert report2.compacted and report2.count == 6
    assert sum(np.load(p).shape[0] for p in (coll_dir / "embeddings").glob("*.npy")) == 6


# -- 7. transient errors are retried, decode failures recorded -------------------------------


def test_io_and_memory_errors_are_retried_next_run(
    image_folder: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied, memory = str(image_folder / "red" / "01.jpg"), str(image_folder / "blue" / "02.png")
    real_read, real_decode = loader.read_image_file, loader.decode_image

    def read(path):  # noqa: ANN001, ANN202
        if str(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    def decode(data, *, name, **kw):  # noqa: ANN001, ANN003, ANN202
        if name == memory:
            raise MemoryError  # decode_image lets it through: not the file's fault
        return real_decode(data, name=name, **kw)

    monkeypatch.setattr(loader, "read_image_file", read)
    monkeypatch.setattr(loader, "decode_image", decode)
    coll_dir = tmp_path / "coll"
    first = _index(image_folder, coll_dir, model)
    assert sorted(k for k, _ in first.retry) == sorted([denied, memory])
    assert first.added == 22 and len(first.failed) == 3  # the really broken files
    failures = open_collection(coll_dir).store.failures()
    assert denied not in failures and memory not in failures
    monkeypatch.undo()
    second = _index(image_folder, coll_dir)
    assert (second.added, second.known_failures, second.retry) == (2, 3, [])
