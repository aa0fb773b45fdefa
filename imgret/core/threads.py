"""Thread pools set once per process: inference, FAISS and BLAS do not fight over the cores.

Decoding runs in `workers` processes; inference (torch or ONNX Runtime) gets the remaining
cores by default, so that the two stages do not oversubscribe the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ThreadPlan", "plan_threads", "apply_threads", "cpu_count"]


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    inference: int  # threads of torch / ONNX Runtime in the process that runs the model
    workers: int  # decoding processes


def plan_threads(threads: int | None = None, workers: int | None = None) -> ThreadPlan:
    """Inference threads = cores - decode workers (at least 1) unless `threads` is given.

    workers : decoding processes (None: 1 on machines of up to 4 cores, else 2)
    """
    cores = cpu_count()
    if workers is None:
        workers = 1 if cores <= 4 else 2
    if threads is None:
        threads = max(1, cores - workers)
    return ThreadPlan(inference=max(1, threads), workers=max(0, workers))


def apply_threads(threads: int) -> None:
    """Set the OpenMP pool that torch, FAISS and BLAS share in this process (one pool: the
    last call of omp_set_num_threads wins, whoever makes it), only when it changes."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(max(1, threads))
