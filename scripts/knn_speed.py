"""Exact k-NN of a few queries against 10,000 x 1280 unit rows, one thread: imgret's `knn`
(PyTorch matrix product + top-k) against FAISS's brute force (`faiss.knn`, its BLAS path for
more than one query), the same rows memory-mapped from disk; and the bfloat16 pre-scan
(imgret.core.prescan, what the web app's searches use on CPUs with AMX) against `knn`:

    python scripts/knn_speed.py        # ms per call, median of 60, by number of queries
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from imgret.core.atomic import read_npy  # noqa: E402
from imgret.core.prescan import Prescan, prescan_pays  # noqa: E402
from imgret.core.threads import apply_threads  # noqa: E402
from imgret.core.vectors import faiss_module, knn, normalize  # noqa: E402


def _ms(fn, reps: int = 60) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    faiss = faiss_module()
    apply_threads(1)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "db.npy", normalize(rng.standard_normal((10_000, 1280))))
        db = read_npy(Path(tmp) / "db.npy", mmap=True)
        prescan = Prescan([(np.arange(len(db)), db)])
        print(f"AMX (the pre-scan's condition): {prescan_pays()}\n")
        print("| queries | imgret knn ms | faiss.knn ms | knn vs faiss | pre-scan ms | pre-scan "
              "vs knn |\n|---|---|---|---|---|---|")  # fmt: skip
        for n in (1, 2, 4, 8, 20, 40):
            q = normalize(rng.standard_normal((n, 1280)))
            faiss.cvar.distance_compute_blas_threshold = 1 if n > 1 else 2**31 - 1
            ours = _ms(lambda q=q: knn(q, db, 10))
            theirs = _ms(lambda q=q: faiss.knn(q, db, 10, metric=faiss.METRIC_INNER_PRODUCT))
            pre = _ms(lambda q=q: prescan.knn(q, 10))
            print(f"| {n} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x | {pre:.2f} | "
                  f"{ours / pre:.2f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
