"""Training without labels: Adam, validation every epoch, the best epoch kept.

Objectives: "reconstruction" (MSE of the autoencoder), "denoising" (reconstruct the image from
a masked copy) and "contrastive" (SimCLR: two augmented views of an image should be nearest
neighbours among the batch; NT-Xent loss on a projection head; the embedding is taken before
the head; optionally with NNCLR's nearest-neighbour positives). A model may end with a
PCA-whitening of its embedding, fitted on the training images, and a cluster head after it,
trained with KMeans clusters of the training images as labels, its encoder first trained on
those clusters (imgret.training.finish).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.atomic import atomic_path, read_json, write_json
from ..core.errors import UserError
from ..core.progress import progress_bar
from ..data.loader import decode_all, split_indices
from ..data.sources import ImageSource
from ..models.autoencoder import ConvAutoencoder, load_model, save_model
from ..models.config import ModelConfig
from .augment import AugmentConfig, augment, augment_preset, corrupt
from .config import OBJECTIVES, TrainConfig
from .finish import finish_model
from .losses import nt_xent
from .schedule import index_batches, set_lr

__all__ = ["TrainResult", "train_autoencoder", "pick_device"]

# Decoded training images are kept in memory below this size; larger sets are streamed.
CACHE_LIMIT_BYTES = 2 * 1024**3


@dataclass
class TrainResult:
    model: ConvAutoencoder  # the best epoch's weights, eval mode
    model_dir: Path
    history: list[dict[str, float]]  # one row per epoch: epoch, train_loss, val_loss, seconds
    best_epoch: int
    best_val_loss: float
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) skipped


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _batches(
    images: torch.Tensor, batch_size: int, generator: torch.Generator | None
) -> Iterator[torch.Tensor]:
    """Float batches (B, C, S, S) in [0, 1] of a uint8 tensor; shuffled, for training
    (schedule.index_batches), when given a generator."""
    for rows in index_batches(len(images), batch_size, generator, training=generator is not None):
        yield images[rows].float().div_(255.0)


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip of each image with probability 0.5."""
    mask = torch.rand(len(x), generator=generator) < 0.5
    x[mask] = x[mask].flip(-1)
    return x


class Support:
    """The last `size` training projections (unit rows), searched for nearest neighbours."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: torch.Tensor | None = None  # (<= size, d)

    def nearest(self, z: torch.Tensor) -> torch.Tensor | None:
        """(B, d) unit rows -> each one's nearest support row (B, d), or None until full."""
        if self.rows is None or len(self.rows) < self.size:
            return None
        return self.rows[(z.detach() @ self.rows.T).argmax(1)]

    def add(self, z: torch.Tensor) -> None:
        z = z.detach()
        self.rows = z if self.rows is None else torch.cat([self.rows, z])[-self.size :]


def _contrastive_loss(
    p1: torch.Tensor, p2: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
    support: Support | None,
) -> torch.Tensor:  # fmt: skip
    """NT-Xent of two views' projections; with a `support`, a share of the first views is
    replaced by its nearest neighbour among recent training images (NNCLR)."""
    if support is None or cfg.neighbor_positives <= 0:
        return nt_xent(p1, p2, cfg.temperature)
    z1 = nn.functional.normalize(p1, dim=1)
    near = support.nearest(z1)
    support.add(z1)
    if near is not None:
        swap = (torch.rand(len(z1), generator=gen) < cfg.neighbor_positives).to(z1.device)
        z1 = torch.where(swap[:, None], near, z1)
    return nt_xent(z1, p2, cfg.temperature)


def _batch_loss(
    model: ConvAutoencoder,
    x: torch.Tensor,
    cfg: TrainConfig,
    aug: AugmentConfig,
    gen: torch.Generator,
    device: str,
    training: bool,
    support: Support | None = None,
) -> tuple[torch.Tensor, int]:
    """(loss summed over the batch's units, number of units) for the objective of `cfg`.

    Units are pixels for the reconstruction objectives and images for the contrastive one.
    `support` (training only) holds the recent projections for neighbour positives.
    """
    if cfg.objective == "contrastive":
        v1, v2 = augment(x, aug, gen).to(device), augment(x, aug, gen).to(device)
        p1, p2 = model.project(model.encode(v1)), model.project(model.encode(v2))
        loss = _contrastive_loss(p1, p2, cfg, gen, support if training else None)
        return loss * len(x), len(x)
    if cfg.flip and training:
        x = _flip(x, gen)
    target = x.to(device)
    inputs = target
    if cfg.objective == "denoising":
        inputs = corrupt(x, cfg.mask_ratio, gen).to(device)
    recon = model.decode(model.encode(inputs))
    return nn.functional.mse_loss(recon, target, reduction="sum"), target.numel()


def _run_epoch(
    model: ConvAutoencoder,
    batches: Iterator[torch.Tensor],
    n_batches: int,
    device: str,
    optimizer: torch.optim.Optimizer | None,
    gen: torch.Generator,
    cfg: TrainConfig,
    step: tuple[int, int],
    desc: str,
    progress: bool,
    support: Support | None = None,
) -> float:
    """One pass; trains when `optimizer` is given. Returns the mean loss per unit.

    `step` is (steps done before this epoch, total steps of the run), for the lr schedule.
    """
    model.train(optimizer is not None)
    aug = augment_preset(cfg, model.channels)
    total, count = 0.0, 0
    bar = progress_bar(
        batches, total=n_batches, desc=desc, unit="batch", enabled=progress, leave=False
    )
    with torch.set_grad_enabled(optimizer is not None):
        for i, x in enumerate(bar):
            loss, units = _batch_loss(
                model, x, cfg, aug, gen, device, optimizer is not None, support
            )
            if optimizer is not None:
                set_lr(optimizer, cfg.lr, cfg.schedule, (step[0] + i) / max(step[1], 1))
                optimizer.zero_grad(set_to_none=True)
                (loss / units).backward()
                optimizer.step()
            total += float(loss.detach())
            count += units
            bar.set_postfix(loss=f"{total / count:.5f}")
    return total / max(count, 1)


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict) -> None:
    """The resumable state after an epoch: weights, Adam moments, and bookkeeping as JSON."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, value in st.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    with atomic_path(path / "last.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(path / "last.json", info)


def _load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    tensors = load_file(str(path / "last.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    opt["state"] = state
    optimizer.load_state_dict(opt)
    return read_json(path / "last.json")


def train_autoencoder(
    source: ImageSource,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train on `source` (labels unused) and write the best model to `out_dir`.

    `out_dir` receives model.safetensors + model.json (the best epoch), history.json, and
    last.safetensors + last.json (to resume an interrupted run with the same settings).
    """
    cfg = train_config
    if cfg.objective not in OBJECTIVES:  # "auto" is resolved by imgret.jobs.train
        raise ValueError(f"train with one of {OBJECTIVES}, not {cfg.objective!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if len(source) < 2:
        raise UserError(f"{source.name}: need at least 2 images to train, found {len(source)}")

    size, channels = model_config.image_size, model_config.channels
    estimate = len(source) * channels * size * size
    if estimate > CACHE_LIMIT_BYTES:
        raise UserError(
            f"{source.name}: {len(source):,} images at {size}px need {estimate / 1e9:.1f} GB "
            "decoded; train on a sample of the folder (a sub-folder) instead"
        )
    images, _, failures = decode_all(source, size, channels, workers=cfg.workers, progress=progress)
    for _key, reason in failures[:10]:
        log(f"skipped: {reason}")
    if len(failures) > 10:
        log(f"... and {len(failures) - 10} more skipped images")
    if model_config.cluster_head > len(images) // 2:  # found out now, not after training
        raise UserError(
            f"--cluster-head {model_config.cluster_head}: {len(images)} image(s) make at most "
            f"{len(images) // 2} clusters of 2 or more"
        )
    train_idx, val_idx = split_indices(len(images), cfg.val_fraction, cfg.seed)
    train_images, val_images = images[train_idx], images[val_idx]
    if len(val_images) == 0:
        val_images = train_images  # tiny sets: validate on the training images

    if cfg.objective == "contrastive" and not model_config.projection_dim:
        raise UserError("the contrastive objective needs a projection head: set projection_dim")
    if cfg.objective == "contrastive" and cfg.batch < 2:  # else every batch would be skipped
        raise UserError("contrastive training tells each image from the others of its batch: "
                        "--batch-size must be 2 or more")  # fmt: skip
    if cfg.objective != "contrastive" and model_config.decoder == "none":
        raise UserError(f"the {cfg.objective} objective needs a decoder (decoder != 'none')")
    model = ConvAutoencoder(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    settings = {"model": asdict(model_config), "train": asdict(cfg), "source": source.name}
    history: list[dict[str, float]] = []
    best_val, best_epoch, start_epoch = math.inf, 0, 1
    if (out / "last.json").exists() and (out / "last.safetensors").exists():
        info = read_json(out / "last.json")
        if info.get("settings") == settings and info.get("finished"):
            log(f"{out}: already trained with these settings; keeping it (delete it to retrain)")
            best, _ = load_model(out, device=device)
            return TrainResult(
                best, out, info["history"], info["best_epoch"], info["best_val"], failures
            )
        if info.get("settings") == settings:
            _load_state(out, model, optimizer)
            history, best_val, best_epoch = info["history"], info["best_val"], info["best_epoch"]
            start_epoch = len(history) + 1
            log(f"resuming {out} after epoch {len(history)}")

    # train_images: the collection's size, which decides whether its searches re-rank by
    # default (imgret.retrieval.rerank.chosen_rerank)
    meta = {"train": asdict(cfg), "source": source.name, "train_images": len(images)}
    n_train_batches = math.ceil(len(train_images) / cfg.batch)
    n_val_batches = math.ceil(len(val_images) / cfg.batch)
    stale = len(history) - best_epoch if history else 0
    # NNCLR's support set; not part of the resumable state (a resumed run refills it)
    support = Support(cfg.support_size) if cfg.neighbor_positives > 0 else None
    for epoch in range(start_epoch, cfg.n_epochs + 1):
        if stale >= cfg.wait:
            break
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        aug_gen = torch.Generator().manual_seed(cfg.seed * 100_019 + epoch)
        train_loss = _run_epoch(
            model, _batches(train_images, cfg.batch, gen), n_train_batches, device, optimizer,
            aug_gen, cfg, ((epoch - 1) * n_train_batches, cfg.n_epochs * n_train_batches),
            f"epoch {epoch}/{cfg.n_epochs} train", progress, support,
        )  # fmt: skip
        # The same validation views every epoch, so that validation losses compare.
        val_gen = torch.Generator().manual_seed(cfg.seed * 100_043)
        val_loss = _run_epoch(
            model, _batches(val_images, cfg.batch, None), n_val_batches, device,
            None, val_gen, cfg, (0, 0), f"epoch {epoch}/{cfg.n_epochs} val", progress,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "seconds": seconds}
        )
        improved = val_loss < best_val
        if improved:
            best_val, best_epoch, stale = val_loss, epoch, 0
            save_model(model, out, {**meta, "best_val_loss": best_val, "best_epoch": best_epoch})
        else:
            stale += 1
        log(
            f"epoch {epoch:3d}  train {train_loss:.5f}  val {val_loss:.5f}  "
            f"{len(train_images) / seconds:7.0f} img/s{'  *best' if improved else ''}"
        )
        write_json(out / "history.json", history)
        _save_state(out, model, optimizer, {
            "settings": settings, "history": history, "best_val": best_val,
            "best_epoch": best_epoch, "finished": False,
        })  # fmt: skip
    if best_epoch == 0:
        raise UserError("training ran no epoch: set --epochs to 1 or more")
    info = read_json(out / "last.json")
    best, doc = load_model(out, device=device)
    # `refined` marks a model saved by the step below: a run stopped between that save and
    # last.json's `finished` must not train its encoder on its clusters twice
    if (model_config.whiten_dim or model_config.cluster_head) and not (
        info.get("finished") or doc.get("refined")
    ):
        finish_model(best, images, cfg, device=device, progress=progress, log=log)
        kept = {key: v for key, v in doc.items() if key not in _MODEL_DOC_KEYS}
        save_model(best, out, {**kept, "refined": True})
    info["finished"] = True
    write_json(out / "last.json", info)
    return TrainResult(best.eval(), out, history, best_epoch, best_val, failures)


_MODEL_DOC_KEYS = ("format", "version", "arch", "model")
