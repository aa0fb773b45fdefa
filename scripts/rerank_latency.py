"""Time of one search with re-ranking, with and without diffusion, one thread:

    python scripts/rerank_latency.py [COLLECTION]   # default: bench.web's 10,000 CIFAR-10 images

20 items of the collection searched by id ("more like this", k = 10) in each of two rounds,
`--rerank` and `--rerank --diffusion 50` alternated; p50 / p95 ms of each round.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from imgret.core.threads import apply_threads  # noqa: E402
from imgret.retrieval.rerank import RerankConfig  # noqa: E402
from imgret.retrieval.searcher import Searcher  # noqa: E402
from imgret.store.opening import open_collection  # noqa: E402

DEFAULT = Path(__file__).resolve().parent.parent / "bench-out" / "web-pretrained" / "collection"


def main() -> None:
    apply_threads(1)
    coll = open_collection(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
    searcher = Searcher(coll)
    rng = np.random.default_rng(0)
    configs = (("--rerank", RerankConfig()),
               ("--rerank --diffusion 50", RerankConfig(diffusion_neighbors=50)))  # fmt: skip
    print(f"{len(coll):,} images, {coll.dim}-d; ms per search of one item, k = 10")
    for _ in range(2):
        for name, config in configs:
            times = []
            for i in rng.integers(len(coll), size=20):
                query = coll.fetch(coll.rows[i : i + 1])
                t0 = time.perf_counter()
                searcher.search(query, 10, rerank=config, exclude=np.array([i]))
                times.append(1000 * (time.perf_counter() - t0))
            print(f"{name}: p50 {np.median(times):.0f}, p95 {np.percentile(times, 95):.0f}")


if __name__ == "__main__":
    main()
