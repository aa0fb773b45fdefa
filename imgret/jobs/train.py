"""`imgret train`: train a model on a folder without labels, and draw its pictures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from ..data.benchmarks import open_training_source
from ..data.loader import decode_all, split_indices, to_float
from ..data.sources import ImageSource
from ..models import registry
from ..models.autoencoder import KIND as AUTOENCODER_KIND
from ..models.config import ModelConfig
from ..training.config import (
    AUTO,
    IMAGES_PER_WHITENED_DIM,
    TrainConfig,
    choose_objective,
    default_epochs,
    objective_model_defaults,
)
from ..training.trainer import train_autoencoder
from ..viz.plots import plot_losses, plot_reconstructions

__all__ = ["TrainOutput", "suggest_model_config", "train"]

Log = Callable[[str], None]


def suggest_model_config(source: ImageSource) -> ModelConfig:
    """Input size and channels that suit the source: its native size for small images."""
    if source.arrays is not None:
        side = max(source.arrays.shape[1:3])
        return ModelConfig(
            image_size=max(16, -(-side // 4) * 4), channels=1 if source.is_grayscale else 3
        )
    from PIL import Image

    sides, gray = [], 0
    step = max(1, len(source) // 50)
    for key in source.keys[::step][:50]:
        try:
            with Image.open(key) as img:  # header only: cheap
                sides.append(min(img.size))
                gray += img.mode in ("L", "1", "I;16", "LA")
        except Exception:  # noqa: BLE001 - a bad file is reported later, when decoded
            continue
    median = float(np.median(sides)) if sides else 64.0
    size = 32 if median <= 48 else 64
    channels = 1 if sides and gray == len(sides) else 3
    return ModelConfig(image_size=size, channels=channels)


def _with(config: ModelConfig, fields: dict) -> ModelConfig:
    """`config` with `fields` set; a value it refuses (e.g. --whiten above --embedding-dim) is
    reported as the user's error, not a crash."""
    try:
        return replace(config, **fields)
    except ValueError as e:
        raise UserError(f"bad model setting: {e}") from None


@dataclass
class TrainOutput:
    model_dir: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def train(
    source_spec: str | Path,
    out: str | Path,
    *,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    overrides: dict | None = None,
    device: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    log: Log = print,
) -> TrainOutput:
    """Train a model on a folder or built-in source without labels; write it and its pictures.

    `overrides` sets ModelConfig fields on top of the suggestion for the source and the
    defaults of the objective (imgret.training.config.objective_model_defaults); `limit` trains
    on a sample of that many images (fixed by the training seed). The source
    may also be ``fashion-mnist:database``, ``cifar10:database`` or ``caltech101:database``:
    the database images of a benchmark protocol (imgret.data.benchmarks).
    """
    registry.check_out_folder(out, AUTOENCODER_KIND)
    source = open_training_source(source_spec)
    tc = train_config or TrainConfig()
    if limit is not None and limit < len(source):
        if limit < 2:
            raise UserError(f"--limit must be 2 or more, got {limit}")
        pick = np.sort(np.random.default_rng(tc.seed).permutation(len(source))[:limit])
        source = replace(source.subset(pick), name=f"{source.name} (sample of {limit})")
    base = model_config or _with(suggest_model_config(source), overrides or {})
    if tc.objective == AUTO:  # the rule of choose_objective, on this collection
        tc = replace(tc, objective=choose_objective(base.channels, len(source)))
        if tc.objective == "contrastive" and overrides:
            overrides = {k: v for k, v in overrides.items() if k != "decoder"}
        log(f"objective: {tc.objective} (chosen by the size and colour of the collection)")
    if tc.epochs is None:  # the objective's, more for contrastive on a small collection
        tc = replace(tc, epochs=default_epochs(tc.objective, len(source)))
    if model_config is None:
        defaults = objective_model_defaults(tc.objective, base.channels, base.embedding_dim,
                                            n_images=len(source))  # fmt: skip
        mc = _with(base, {**defaults, **(overrides or {})})
    else:
        mc = model_config
    if mc.whiten_dim:
        whitening = f", whitened to {mc.whiten_dim} dims"
    elif tc.objective == "contrastive" and "whiten_dim" not in (overrides or {}):
        whitening = (f", not whitened (fewer than {IMAGES_PER_WHITENED_DIM} images per "
                     "dimension to fit it on)")  # fmt: skip
    else:
        whitening = ""
    head = ""
    if mc.cluster_head:
        n = tc.epochs_on_clusters(mc.cluster_head)
        first = f"{n} epoch{'s' * (n != 1)} on its own clusters and " if n else ""
        head = f", then {first}a cluster head on {mc.cluster_head} clusters"
    log(f"training on {len(source):,} images from {source.name}: {mc.image_size}px, "
        f"{mc.channels} channel(s), {mc.embedding_dim}-d embedding{whitening}, {tc.objective} "
        f"objective, at most {tc.n_epochs} epochs{head}")  # fmt: skip
    t0 = time.perf_counter()
    result = train_autoencoder(source, mc, tc, out, device=device, progress=progress, log=log)
    seconds = time.perf_counter() - t0
    out = Path(out)
    files = {"model": out / "model.safetensors", "config": out / "model.json"}
    files["history"] = out / "history.json"
    files["losses"] = plot_losses(result.history, out / "loss.png")
    if result.model.has_decoder:
        # Reconstructions of validation images (the model never trained on them).
        _, val_idx = split_indices(len(source), tc.val_fraction, tc.seed)
        sample = source.subset(val_idx[:8] if len(val_idx) else range(min(8, len(source))))
        images, _, _ = decode_all(sample, mc.image_size, mc.channels, workers=0, progress=False)
        x = to_float(images)
        with torch.inference_mode():
            recon, _ = result.model.cpu().eval()(x)
        files["reconstructions"] = plot_reconstructions(
            x.numpy(), recon.numpy(), out / "reconstructions.png"
        )
    return TrainOutput(
        out, result.best_epoch, result.best_val_loss, len(result.history), seconds, files,
        result.failures,
    )  # fmt: skip


