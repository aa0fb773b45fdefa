"""Two Ray nodes (ray.cluster_utils.Cluster, both on this machine): one actor on each, the
same collection as one process makes. Slow (two nodes start): `make test-all` runs it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model

from imgret.data.sources import open_source
from imgret.jobs.index import index_folder
from imgret.jobs.sync import IndexJobConfig
from imgret.scaleout.cluster import RayConfig
from imgret.scaleout.embed import ray_embedded_outputs
from imgret.store.opening import open_collection

pytestmark = pytest.mark.slow


def test_two_nodes_share_the_work_and_match_one_process(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # both nodes are private to this machine
    model = make_tiny_model(tmp_path / "model")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, logging_level="WARNING")
        config = RayConfig(address=cluster.address, actors=2, threads=1)
        source = open_source(str(image_folder))
        outputs = list(ray_embedded_outputs(source, str(model), config, batch_size=2))
        workers = {os.fsdecode(w) for out in outputs for w in out["worker"]}
        assert len({w.split(":")[0] for w in workers}) == 2  # host/node: one actor per node
        job = IndexJobConfig(batch_size=3, chunk_rows=5, ray=config)
        on_ray = index_folder(image_folder, tmp_path / "ray", model=model, config=job,
                              progress=False, log=lambda _: None)  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()
    one = index_folder(image_folder, tmp_path / "one", model=model, config=IndexJobConfig(),
                       progress=False, log=lambda _: None)  # fmt: skip
    assert sorted(k for k, _ in on_ray.failed) == sorted(k for k, _ in one.failed)
    assert on_ray.count == one.count == 24
    got, want = open_collection(tmp_path / "ray"), open_collection(tmp_path / "one")
    order_got, order_want = np.argsort(got.keys), np.argsort(want.keys)
    assert sorted(got.keys) == sorted(want.keys)
    assert np.abs(got.embeddings[order_got] - want.embeddings[order_want]).max() <= 1e-5
