"""Thread pools set once per process: inference, FAISS and BLAS share one pool.

Inference (torch or ONNX Runtime) gets every core by default, beside the decoding processes:
its idle threads wait passively (OMP_WAIT_POLICY=PASSIVE, ONNX Runtime without spinning), so
the decoders take a core only while they have work. `imgret index` on 2 cores, 2 decoders,
2 inference threads against 1 (the cores the decoders leave, the plan before): 1.34x the
images/s on 900 Caltech-101 JPEGs, 1.16x on 12-MP JPEGs (`python -m bench.throughput`, the
thread-plan table).
"""

from __future__ import annotations

import os

__all__ = ["inference_threads", "apply_threads", "cpu_count"]


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def inference_threads(threads: int | None = None) -> int:
    """Threads of torch / ONNX Runtime in the process that runs the model: `threads`, or
    every core when None."""
    return max(1, threads if threads is not None else cpu_count())


def apply_threads(threads: int) -> None:
    """Set the OpenMP pool that torch, FAISS and BLAS share in this process (one pool: the
    last call of omp_set_num_threads wins, whoever makes it), only when it changes."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(max(1, threads))
