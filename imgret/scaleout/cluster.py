"""Connecting to Ray: a private cluster on this machine, or an existing one by its address.

Ray is an optional extra (``pip install "imgret[ray]"``), imported here on use. A process
connects once and stays connected until it exits (Ray disconnects, and stops a private
cluster, at exit); a process already connected (`ray.init` called before) is used as it is.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from types import ModuleType

from ..core.errors import UserError

__all__ = ["RayConfig", "import_ray", "connect"]

LOCAL = "local"
MISSING = (
    'running on Ray needs Ray: pip install "imgret[ray]" (or "ray>=2.51") on every machine of '
    "the cluster"
)


@dataclass(frozen=True)
class RayConfig:
    address: str = LOCAL  # "local": a private cluster on this machine; "HOST:PORT": join that one
    actors: int = 2  # embedding actors; each loads the model once and keeps it
    threads: int = 1  # torch threads of each actor, and the CPUs reserved for it
    gpus: float = 0.0  # GPUs reserved for each actor; above 0 the model runs on CUDA
    shard_rows: int = 262_144  # index build: embeddings added per Ray task (IVF kinds)

    def __post_init__(self) -> None:
        if not self.address:
            raise UserError("--ray needs `local` or the address of a Ray head node (HOST:PORT)")
        if self.actors < 1 or self.threads < 1:
            raise UserError("--ray-actors and --ray-threads must be 1 or more")
        if self.gpus < 0 or not math.isfinite(self.gpus):
            raise UserError("--ray-gpus must be 0 or more")
        if self.shard_rows < 1:
            raise UserError("index shards must hold at least one embedding")
        if importlib.util.find_spec("ray") is None:
            raise UserError(MISSING)  # found out before anything is written, ray not imported

    @property
    def device(self) -> str:
        return "cuda" if self.gpus > 0 else "cpu"

    @property
    def cpus(self) -> int:
        """CPUs the actor pool reserves."""
        return self.actors * self.threads


def import_ray() -> ModuleType:
    """The `ray` module; a UserError saying how to install it when missing."""
    try:
        import ray
    except ImportError:
        raise UserError(MISSING) from None
    return ray


def connect(config: RayConfig) -> ModuleType:
    """Ray, connected (started when `address` is "local"), with room for the actor pool.

    A private cluster gets as many CPUs as this machine has, or as the actors reserve when
    that is more. Ray's usage statistics are not sent unless RAY_USAGE_STATS_ENABLED says so.
    """
    ray = import_ray()
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet = {"include_dashboard": False, "logging_level": logging.WARNING}
        try:
            if config.address == LOCAL:
                cpus = max(config.cpus, os.cpu_count() or 1)
                ray.init(address=LOCAL, num_cpus=cpus, **quiet)
            else:
                ray.init(address=config.address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"cannot connect to Ray at {config.address}: {e}") from None
    _check_room(ray, config)
    return ray


def _check_room(ray: ModuleType, config: RayConfig) -> None:
    """Refuse an actor pool the cluster cannot hold: Ray would wait for it without a word."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if config.cpus > cpus:
        raise UserError(
            f"the Ray cluster has {cpus:g} CPUs; {config.actors} actors x {config.threads} "
            f"threads need {config.cpus}. Use fewer --ray-actors or --ray-threads, or add nodes"
        )
    if config.gpus * config.actors > gpus:
        raise UserError(
            f"the Ray cluster has {gpus:g} GPUs; {config.actors} actors x {config.gpus:g} GPUs "
            f"need {config.gpus * config.actors:g}. Use fewer --ray-actors or --ray-gpus"
        )
