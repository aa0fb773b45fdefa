"""The Ray embedding loop as imgret runs it (a pool of actors fed by the driver) against the
Ray Data pipeline it replaced (`map_batches` over an `ActorPoolStrategy`), and the single
process, on the same images in one run (needs `pip install "ray[data]"`):

    python scripts/ray_pool_vs_data.py [N_IMAGES] [ROUNDS]    # default 1200 images, 2 rounds

Per run: images/s once every actor is ready, the actors' CPU per image, all CPU per image
(driver, Ray's processes, actors), the driver's, and the cores Ray's own processes kept busy
(bench.scaleout's measures, 2 actors x 1 thread on a private 2-CPU cluster).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.scaleout as scaleout  # noqa: E402
from bench.proctree import ProcessTree  # noqa: E402
from imgret.models.backend import InferenceSettings  # noqa: E402
from imgret.scaleout import embed  # noqa: E402
from imgret.scaleout.cluster import RayConfig, connect  # noqa: E402


class DataActor(embed.EmbedActor):
    """The actor as Ray Data calls it."""

    def __call__(self, batch: dict) -> dict:
        return self.embed(batch)


def data_outputs(source, ref, config, *, batch_size, inference=None):  # noqa: ANN001, ANN201
    """The Ray Data pipeline of imgret before the actor pool (commit d58e557)."""
    inference = replace(inference or InferenceSettings(), device=config.device,
                        threads=config.threads)  # fmt: skip
    ray = connect(config)
    items = [{"pos": i, "key": os.fsencode(key)} for i, key in enumerate(source.keys)]
    blocks = max(1, -(-len(items) // batch_size))
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        DataActor, fn_constructor_kwargs={"ref": ref, "inference": inference},
        compute=ray.data.ActorPoolStrategy(size=min(config.actors, blocks)),
        batch_size=batch_size, batch_format="numpy", num_cpus=config.threads,
    )  # fmt: skip
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    folder = scaleout.make_folder(n)
    tree = ProcessTree(scaleout.WORK / "pool-vs-data.log")
    connect(RayConfig(actors=2, threads=1))
    pool = embed.ray_embedded_outputs
    try:
        for _ in range(rounds):
            single = scaleout.single_loop(folder)
            print(f"single process: {single['rate']:.1f} images/s, "
                  f"{1000 * single['cpu_per_image']:.1f} ms CPU per image", flush=True)  # fmt: skip
            for name, outputs in (("actor pool", pool), ("Ray Data", data_outputs)):
                embed.ray_embedded_outputs = outputs  # what bench.scaleout's loop calls
                r = scaleout.ray_loop(folder, 2, 1, tree)
                w = r["window"]
                per = 1000 / w["images"]
                print(f"{name}: {r['rate']:.1f} images/s; actors {per * w['actors']:.1f}"
                      f" ms, all {per * w['all']:.1f} ms, driver "
                      f"{per * w['driver']:.2f} ms CPU per image; Ray's own "
                      f"processes {(w['all'] - w['actors']) / w['seconds']:.2f} of a core",
                      flush=True)  # fmt: skip
            embed.ray_embedded_outputs = pool
    finally:
        embed.ray_embedded_outputs = pool
        tree.close()


if __name__ == "__main__":
    main()
