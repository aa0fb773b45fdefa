"""Embedding and index building on Ray (imgret.scaleout), on one private Ray cluster.

The cluster (2 CPUs, no dashboard, no usage statistics, no token authentication: it is
private to this machine) is started once for the module; the library finds this process
connected and uses it, and a `imgret index --ray ADDRESS` subprocess joins it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from badfiles import make_corpus
from helpers import make_tiny_model
from PIL import Image

from imgret.cli import main
from imgret.core.errors import UserError
from imgret.data.sources import open_source
from imgret.jobs.index import add_paths, index_folder
from imgret.jobs.sync import IndexJobConfig
from imgret.scaleout import index_shards
from imgret.scaleout.cluster import RayConfig
from imgret.scaleout.embed import ray_embedded_batches
from imgret.store.index_files import IndexSettings, build_index, plan_index
from imgret.store.opening import open_collection

QUIET = {"progress": False, "log": lambda _: None}
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    import ray

    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # also read by the subprocesses that join the cluster
    context = ray.init(address="local", num_cpus=2, include_dashboard=False,
                       logging_level="WARNING")  # fmt: skip
    yield context.address_info["gcs_address"]
    ray.shutdown()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_tiny_model(tmp_path / "model")


def _by_key(coll_dir: Path) -> dict[str, tuple[np.ndarray, str | None]]:
    """key -> (embedding, sha256) of a collection."""
    coll = open_collection(coll_dir)
    return {
        k: (e, coll.store.get(k).sha256)  # type: ignore[union-attr]
        for k, e in zip(coll.keys, coll.embeddings, strict=True)
    }


def _assert_same(ray_dir: Path, one_dir: Path) -> None:
    """The same keys, hashes and skipped files; embeddings within 1e-5; no duplicate rows."""
    ray_coll, one_coll = open_collection(ray_dir), open_collection(one_dir)
    assert len(set(ray_coll.keys)) == len(ray_coll.keys)
    got, want = _by_key(ray_dir), _by_key(one_dir)
    assert sorted(got) == sorted(want)
    for k, (emb, digest) in want.items():
        assert np.abs(got[k][0] - emb).max() <= 1e-5 and got[k][1] == digest
    assert _reasons(ray_coll.skipped) == _reasons(one_coll.skipped)


def _reasons(failed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(key, reason) sorted, Python object addresses in the reasons masked."""
    return sorted((key, re.sub(r"0x[0-9a-f]+", "0x?", why)) for key, why in failed)


def test_ray_embeds_a_folder_with_bad_files_as_one_process_does(
    ray_address: str, model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "corpus"
    cases = make_corpus(folder)
    one = index_folder(folder, tmp_path / "one", model=model, index_kind="ivf",
                       config=IndexJobConfig(batch_size=4, workers=0), **QUIET)  # fmt: skip
    ray_config = RayConfig(actors=2, threads=1, shard_rows=5)  # IVF index filled in shards
    job = IndexJobConfig(batch_size=4, chunk_rows=5, ray=ray_config)
    on_ray = index_folder(folder, tmp_path / "ray", model=model, index_kind="ivf", config=job,
                          **QUIET)  # fmt: skip
    assert sum(c.expect == "bad" for c in cases) >= 5 and len(one.failed) >= 5
    assert _reasons(on_ray.failed) == _reasons(one.failed)
    assert (on_ray.added, on_ray.count, on_ray.index) == (one.added, one.count, one.index)
    _assert_same(tmp_path / "ray", tmp_path / "one")
    # Each index finds the same images for the same queries (its ids are its own rows).
    ray_coll, one_coll = open_collection(tmp_path / "ray"), open_collection(tmp_path / "one")
    assert ray_coll.index is not None and ray_coll.index.meta["kind"] == "ivf"
    queries = one_coll.embeddings[:8]
    found = []
    for coll in (ray_coll, one_coll):
        assert coll.index is not None
        scores, ids = coll.index.index.search(queries, 5)
        found.append([  # equal scores (the corpus has copies of images) in key order; those
            # tied with the 5th may be any of the tied ones: their scores only
            sorted((d, coll.keys[int(p)] if d < np.round(-s[-1], 4) else "")
                   for d, p in zip(np.round(-s, 4).tolist(), coll.positions_of_rows(row),
                                   strict=True))
            for s, row in zip(scores, ids, strict=True)
        ])  # fmt: skip
    assert found[0] == found[1]

    # A changed file is embedded again, on Ray as here.
    good = next(folder / c.name for c in cases if c.kind == "good-basic")
    Image.open(good).transpose(Image.Transpose.ROTATE_90).save(good)
    for where, config in (("ray", job), ("one", IndexJobConfig(workers=0))):
        report = add_paths(tmp_path / where, [good], config=config, **QUIET)
        assert (report.added, report.updated) == (0, 1)
    _assert_same(tmp_path / "ray", tmp_path / "one")


def test_a_killed_actor_is_restarted_and_its_batches_retried(
    ray_address: str, image_folder: Path, model: Path
) -> None:
    from imgret.scaleout.embed import ray_embedded_outputs

    source = open_source(str(image_folder))
    outputs = ray_embedded_outputs(source, str(model), RayConfig(actors=2), batch_size=2)
    first = next(outputs)
    victim = int(os.fsdecode(first["worker"][0]).rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)  # its queued batches are lost with it
    positions = list(first["pos"])
    workers = {os.fsdecode(first["worker"][0])}
    for out in outputs:
        positions += list(out["pos"])
        workers.update(os.fsdecode(w) for w in out["worker"])
    assert sorted(positions) == list(range(len(source.keys)))  # each once: none lost, none twice
    assert any(w.endswith(f":{victim}") for w in workers) and len(workers) == 3  # a new process


def _index_on_ray(folder: Path, coll: Path, model: Path, address: str, crash_at: str | None
                  ) -> subprocess.CompletedProcess:  # fmt: skip
    env = {**os.environ, **RAY_ENV, "IMGRET_TEST_CRASH_AT": crash_at or ""}
    cmd = [sys.executable, "-m", "imgret", "index", str(folder), "--out", str(coll), "--model",
           str(model), "--chunk-size", "5", "--batch-size", "3", "--ray", address,
           "--ray-actors", "2"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_a_killed_driver_resumes_without_losing_or_repeating_rows(
    ray_address: str, image_folder: Path, model: Path, tmp_path: Path
) -> None:
    coll_dir = tmp_path / "coll"
    # Killed with two chunks committed and a third on disk, not yet listed in meta.sqlite.
    killed = _index_on_ray(image_folder, coll_dir, model, ray_address, "chunk-written:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    committed = _by_key(coll_dir)
    killed_coll = open_collection(coll_dir)
    chunks = killed_coll.store.chunks()
    # A chunk holds 5 rows, or fewer when 30 s of work pass first (a loaded machine).
    assert len(chunks) == 2 and 2 <= len(committed) == sum(c.n_rows for c in chunks) <= 10
    assert len(committed) == len(killed_coll.keys)
    assert len(list((coll_dir / "embeddings").iterdir())) == 3

    resumed = _index_on_ray(image_folder, coll_dir, model, ray_address, None)
    assert resumed.returncode == 0, resumed.stderr
    n = len(committed)
    assert f"{24 - n} added" in resumed.stdout and f"{n} unchanged" in resumed.stdout
    now = _by_key(coll_dir)
    assert all(np.array_equal(now[k][0], e) for k, (e, _) in committed.items())  # kept as is
    one = index_folder(image_folder, tmp_path / "one", model=model,
                       config=IndexJobConfig(workers=0), **QUIET)  # fmt: skip
    assert one.count == 24
    _assert_same(coll_dir, tmp_path / "one")  # no duplicate rows, nothing missing
    coll = open_collection(coll_dir)
    manifest = {c.name for c in coll.store.chunks()}
    assert {p.name for p in (coll_dir / "embeddings").iterdir()} == manifest  # no leftovers


# ivfsq at 128 dims has a PCA in front. One FAISS thread: in a test process torch is imported
# before imgret sets OMP_WAIT_POLICY, and spinning OpenMP threads make PQ training crawl.
@pytest.mark.parametrize(("kind", "dim"), [("ivf", 64), ("ivfsq", 128), ("ivfpq", 32),
                                           ("hnsw", 32)])  # fmt: skip
def test_a_sharded_index_build_equals_one_build(
    ray_address: str, kind: str, dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.arange(len(x), dtype=np.int64) * 3 + 1  # ids are rows, not positions

    def fetch(r: np.ndarray) -> np.ndarray:
        return x[(np.asarray(r) - 1) // 3]

    settings = IndexSettings(kind=kind, threads=1)
    plan = plan_index(kind, len(x), x.shape[1], settings)
    one = build_index(plan, rows, fetch, dim=x.shape[1], settings=settings)
    if kind != "hnsw":  # IVF kinds must not fall back to the one-process build
        monkeypatch.setattr(index_shards, "build_index", None)
    config = RayConfig(actors=1, shard_rows=450)  # 5 shards, the last one short
    sharded = index_shards.build_index_sharded(
        plan, rows, fetch, dim=x.shape[1], settings=settings, config=config
    )
    assert sharded.ntotal == one.ntotal == len(x)
    for index in (one, sharded):
        if plan.nlist:
            import faiss

            faiss.extract_index_ivf(index).nprobe = 8
    d_one, i_one = one.search(x[:100], 10)
    d_sharded, i_sharded = sharded.search(x[:100], 10)
    assert np.array_equal(i_one, i_sharded)
    # faiss-cpu 1.15.1's IVF scalar quantizer encodes a vector slightly differently by the batch
    # it is added in (the same 2,000 rows added at once or in 450s, no Ray: distances up to
    # 6.2e-4 apart); the other kinds give the same bits either way
    tol = 2e-3 if kind == "ivfsq" else 0.0
    np.testing.assert_allclose(d_sharded, d_one, rtol=0, atol=tol)
    assert set(i_one.ravel().tolist()) <= set(rows.tolist())


def test_ray_options_are_refused_with_a_clear_error(
    ray_address: str, image_folder: Path, model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    coll = tmp_path / "coll"
    base = ["index", str(image_folder), "--out", str(coll), "--model", str(model)]
    assert main([*base, "--ray-actors", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main([*base, "--ray", ray_address, "--ray-actors", "0"])
    assert stopped.value.code == 2 and "out of range" in capsys.readouterr().err
    with pytest.raises(UserError, match="must be 1 or more"):
        RayConfig(threads=0)
    assert main([*base, "--ray", ray_address, "--ray-actors", "3"]) == 2  # the cluster has 2
    assert "has 2 CPUs" in capsys.readouterr().err

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))  # fmt: skip
    assert main([*base, "--ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "imgret[ray]"' in err and "Traceback" not in err
    with pytest.raises(UserError, match="needs Ray: pip install"):
        RayConfig()
    monkeypatch.undo()

    # What an actor refuses (here a model folder it cannot read) is the user's error too.
    source = open_source(str(image_folder))
    with pytest.raises(UserError, match="on a Ray worker: .*not an imgret model"):
        list(ray_embedded_batches(source, str(tmp_path), RayConfig(actors=1), batch_size=4))
