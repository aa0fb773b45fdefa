"""The embedding loop on Ray actors: files in, (batch, embeddings) out to the driver.

A pool of `EmbedActor`s, each holding the model (loaded once) and fed batches of keys by the
driver, IN_FLIGHT at a time, so that none waits for the next while the driver reads a result.
For each batch an actor reads, hashes and decodes the files with imgret's own loader item
(imgret.data.loader.ImageDataset: EXIF orientation, resize and crop, the same failure reasons),
then embeds them. Batches come back in the order they finish, each row with its position and
key; the driver turns each result into the `Batch` and embeddings the single-process loop
makes, and commits them the same way. A crashed actor is restarted and its batches retried.

Plain actors, not a Ray Data pipeline (`map_batches` over an `ActorPoolStrategy`): on 2 cores,
1,200 Caltech-101 JPEGs, 2 actors x 1 thread, in two rounds of `python
scripts/ray_pool_vs_data.py`, the driver spent 0.10-0.12 ms of CPU per image against
0.49-0.59 and Ray's own processes kept 0.11-0.12 of a core busy against 0.19-0.20 (the rates,
136 vs 98 and 102 vs 112 images/s, moved with the machine's other jobs).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..core.errors import UserError
from ..data.loader import Batch, ImageDataset, Transient
from ..data.sources import ImageSource
from ..models.backend import InferenceSettings, load_for_inference
from ..models.embed import embed_arrays
from .cluster import RayConfig, connect, import_ray

__all__ = ["EmbedActor", "ray_embedded_batches", "ray_embedded_outputs"]

IN_FLIGHT = 2  # batches queued on each actor: one running, one waiting
RETRIES = 3  # restarts of a crashed actor, and retries of its batches


class EmbedActor:
    """A Ray actor: one model, kept; a batch of keys -> their embeddings, hashes, failures."""

    def __init__(self, ref: str, inference: InferenceSettings) -> None:
        self.embedder = load_for_inference(ref, inference)
        self.threads = inference.threads or 1
        node = import_ray().get_runtime_context().get_node_id()
        self.worker = f"{socket.gethostname()}/{node[:8]}:{os.getpid()}"  # host/node:pid
        self.ready_at = time.time()  # the model loaded: the actor's start-up ends here

    def embed(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{"pos" (B,), "key" (B,)} -> the same + "embedding" (B, dim) float32 (zeros where it
        failed), "sha256", "error" (empty where it did not fail), "transient" (a failure to
        retry next run: I/O, memory), "warnings" (one per line).

        Text travels as file-system bytes (os.fsencode): a file name need not be UTF-8.
        """
        started, at = time.process_time(), time.time()  # CPU: this process, all its threads
        keys = [os.fsdecode(k) for k in batch["key"]]
        data = ImageDataset(
            ImageSource("ray", keys, [None] * len(keys)), self.embedder.image_size,
            self.embedder.channels, hash_files=True,
        )  # fmt: skip
        # Pillow releases the GIL while decoding and resizing: the actor's threads share it.
        # An item is (position, (C, S, S) uint8 or None, reason, sha256, warnings).
        with ThreadPoolExecutor(self.threads) as pool:
            items = list(pool.map(data.__getitem__, range(len(keys))))
        decoded = [(i, item[1]) for i, item in enumerate(items) if item[1] is not None]
        embeddings = np.zeros((len(keys), int(self.embedder.embedding_dim)), np.float32)
        if decoded:
            images = torch.from_numpy(np.stack([array for _, array in decoded]))
            embeddings[[i for i, _ in decoded]] = embed_arrays(self.embedder, images)
        errors = ["" if item[1] is not None else (item[2] or "unknown error") for item in items]
        cpu = (time.process_time() - started) / len(keys)
        return {
            "pos": np.asarray(batch["pos"], dtype=np.int64),
            "key": _texts(keys),
            "embedding": embeddings,
            "sha256": _texts([item[3] or "" for item in items]),
            "error": _texts(errors),
            "transient": np.asarray([isinstance(item[2], Transient) for item in items], bool),
            "warnings": _texts(["\n".join(item[4]) for item in items]),
            "cpu_seconds": np.full(len(keys), cpu),  # the batch's CPU time, shared out
            "worker": _texts([self.worker] * len(keys)),
            "ready_at": np.full(len(keys), self.ready_at),
            "started_at": np.full(len(keys), at),
        }


def _texts(values: list[str]) -> np.ndarray:
    return np.asarray([os.fsencode(v) for v in values], dtype=object)


def ray_embedded_batches(
    source: ImageSource, ref: str, config: RayConfig, *, batch_size: int,
    inference: InferenceSettings | None = None,
) -> Iterator[tuple[Batch, np.ndarray]]:  # fmt: skip
    """Embed the files of `source` on Ray: (Batch without images, (n_ok, dim) embeddings).

    The batches come in the order the actors finish them; `Batch.indices` and `failures`
    are positions in `source`, as in the single-process loader. Each actor runs the model
    with the backend of `inference` (default: imgret's), its device and threads from `config`.
    """
    outputs = ray_embedded_outputs(source, ref, config, batch_size=batch_size, inference=inference)
    for out in outputs:
        yield _as_batch(out, source.keys)


def ray_embedded_outputs(
    source: ImageSource, ref: str, config: RayConfig, *, batch_size: int,
    inference: InferenceSettings | None = None,
) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
    """The actors' outputs as they come: the columns of `EmbedActor.embed`, with
    "cpu_seconds" (each image's share of its batch's CPU time), "worker" (host/node:pid),
    "ready_at" (time.time() when that actor had loaded the model) and "started_at" (when it
    began the batch) for measuring."""
    if source.arrays is not None:
        raise UserError(
            f"{source.name}: --ray embeds image files; embed built-in sources without --ray"
        )
    inference = replace(
        inference or InferenceSettings(), device=config.device, threads=config.threads
    )
    if inference.quantize:
        raise UserError("--quantize does not run on Ray yet; embed without --ray to quantize")
    ray = connect(config)
    keys = np.asarray([os.fsencode(key) for key in source.keys], dtype=object)
    todo = deque(range(0, len(keys), batch_size))  # the first position of each batch
    if not todo:
        return
    remote = ray.remote(num_cpus=config.threads, num_gpus=config.gpus or None,
                        max_restarts=RETRIES, max_task_retries=RETRIES)(EmbedActor)  # fmt: skip
    actors = [remote.remote(ref, inference) for _ in range(min(config.actors, len(todo)))]
    running: dict[Any, Any] = {}  # a batch's result (ObjectRef) -> the actor embedding it

    def give(actor: Any) -> None:
        if todo:
            start = todo.popleft()
            pos = np.arange(start, min(start + batch_size, len(keys)), dtype=np.int64)
            running[actor.embed.remote({"pos": pos, "key": keys[pos]})] = actor

    try:
        for _ in range(IN_FLIGHT):
            for actor in actors:
                give(actor)
        while running:
            [done], _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done)
            out = ray.get(done)
            give(actor)
            yield out
    except ray.exceptions.RayError as e:
        cause = _user_error(e)
        if cause is None:
            raise
        raise UserError(f"on a Ray worker: {cause}") from None  # e.g. a model it cannot read
    finally:
        for actor in actors:  # their batches still running are dropped with them
            ray.kill(actor)


def _user_error(error: BaseException) -> UserError | None:
    """The UserError an actor raised, found in the chain of Ray's wrapping errors (which may
    themselves be subclasses of it)."""
    ray = import_ray()
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError) and not isinstance(e, ray.exceptions.RayError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__, *e.args]
    return None


def _as_batch(out: dict[str, Any], keys: list[str]) -> tuple[Batch, np.ndarray]:
    """An actor's output -> (Batch of positions, digests and failures; embeddings of the ok)."""
    positions = np.asarray(out["pos"], dtype=np.int64)
    for pos, key in zip(positions.tolist(), out["key"], strict=True):
        if keys[pos] != os.fsdecode(key):  # a row matched to the wrong file: a wrong embedding
            raise RuntimeError(f"Ray returned row {pos} for {key!r}, expected {keys[pos]!r}")
    errors = [os.fsdecode(e) for e in out["error"]]
    failed = np.asarray([bool(e) for e in errors], dtype=bool)
    batch = Batch(
        images=torch.empty((0,), dtype=torch.uint8),
        indices=torch.from_numpy(positions[~failed].copy()),
        failures=[(int(p), e) for p, e in zip(positions, errors, strict=True) if e],
        transient=[int(p) for p, t in zip(positions, out["transient"], strict=True) if t],
        digests=[os.fsdecode(d) or None for d in out["sha256"][~failed]],
        warnings=[
            (int(p), w)
            for p, joined in zip(positions, out["warnings"], strict=True)
            for w in os.fsdecode(joined).split("\n")
            if w
        ],
    )
    embeddings = np.ascontiguousarray(np.asarray(out["embedding"])[~failed], dtype=np.float32)
    return batch, embeddings
