"""Label-free adaptation of a frozen model to a collection: a head trained on augmented views.

In the spirit of SimCLR on frozen features and CIBHash: every image of the collection is
embedded once as it is and as several random views (imgret.training.views: crops, flips,
colour jitter; cached). A small residual head (imgret.models.adapted) then learns, on those
embeddings alone, that two views of one image should be each other's nearest neighbours among
a batch of other images (InfoNCE / NT-Xent). With `neighbors` = K > 0, the positive is
sometimes a view of one of the image's K nearest neighbours in the base embedding instead
(kNN pseudo-positives): images that already look alike are pulled together, so the head learns
what the collection's kinds of images share, not only what a crop keeps.

No label is used. The output is a model folder like any other (kind "adapted-head", the base
model's reference): `imgret adapt MODEL FOLDER --out DIR`, then `imgret index FOLDER --model
DIR`. The head starts as the identity, so a short run cannot make the base embedding useless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UserError
from ..core.vectors import knn, normalize
from ..data.benchmarks import open_training_source
from ..models import registry
from ..models.adapted import KIND, AdaptHead, save_adapted
from ..models.backend import InferenceSettings, load_for_inference
from ..models.base import SEPARATOR
from ..models.embed import embed_source
from .schedule import set_lr
from .views import ViewConfig, embed_views

__all__ = [
    "AdaptConfig", "AdaptResult", "train_adapt_head", "adapt", "neighbour_table", "info_nce",
    "view_ref",
]  # fmt: skip

Log = Callable[[str], None]


@dataclass(frozen=True)
class AdaptConfig:
    views: ViewConfig = field(default_factory=ViewConfig)  # the augmented views, embedded once
    # Input side of the views for a pretrained base (None: the base's own). Smaller is faster;
    # the head is applied to full-size embeddings (BENCHMARKS.md measures the difference).
    view_size: int | None = 160
    neighbors: int = 5  # K of the kNN pseudo-positives (0 = views of the same image only)
    neighbor_p: float = 0.5  # share of positives taken from a neighbour instead of the image
    temperature: float = 0.1  # softmax temperature of the InfoNCE loss
    hidden: int = 1024  # width of the head's hidden layer
    steps: int = 2000  # optimisation steps
    batch_size: int = 512  # images per step (each brings an anchor and a positive)
    lr: float = 1e-3  # Adam learning rate (cosine decay to 0)
    weight_decay: float = 1e-5
    seed: int = 0  # one seed for the views, the neighbour draws and the head

    def __post_init__(self) -> None:
        if self.neighbors < 0 or not 0.0 <= self.neighbor_p <= 1.0:
            raise UserError("neighbours must be 0 or more and their share within 0..1")
        if self.steps < 1 or self.batch_size < 2 or not 0 < self.temperature < float("inf"):
            raise UserError("steps must be 1 or more, batch size 2 or more, temperature > 0")


@dataclass
class AdaptResult:
    model_dir: Path
    n_images: int
    losses: list[float]
    seconds: dict[str, float]  # embed, views, neighbours, train
    skipped: list[tuple[str, str]] = field(default_factory=list)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of (B, d) unit rows: row i of `a` and of `b` are a positive pair, the
    other rows of the batch negatives -> scalar."""
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def neighbour_table(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Each row's `k` nearest other rows by cosine -> (n, k) int64 (itself left out)."""
    x = normalize(embeddings)
    k = min(k, len(x) - 1)
    _, ids = knn(x, x, k + 1)
    own = ids == np.arange(len(x))[:, None]
    # drop each row's own id (normally first); rows whose own id was not found lose the last
    keep = np.where(own.any(1, keepdims=True), ~own, np.arange(k + 1)[None, :] < k)
    return ids[keep].reshape(len(x), k)


def train_adapt_head(
    clean: np.ndarray,
    views: np.ndarray,
    config: AdaptConfig,
    *,
    neighbours: np.ndarray | None = None,
    log: Log | None = None,
) -> tuple[AdaptHead, list[float]]:
    """Train a head on frozen embeddings without labels -> (head in eval mode, loss per step).

    clean : (n, dim) embeddings of the images as they are (also the kNN space)
    views : (n, v, dim) embeddings of v augmented views of each image
    neighbours : (n, K) int64 rows, each image's candidate pseudo-positives (by default its
        `config.neighbors` nearest in `clean`: neighbour_table)
    An anchor is a random view (or the image itself), its positive another view of the same
    image, or with probability `neighbor_p` a view of one of its `neighbors` nearest images.
    """
    n, dim = clean.shape
    if n < 2:
        raise UserError(f"adaptation needs at least 2 images, found {n}")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    # (n, v + 1, dim): slot 0 is the image itself
    bank = torch.from_numpy(np.concatenate([normalize(clean)[:, None], views], axis=1))
    slots = bank.shape[1]
    nbrs = None
    if config.neighbors > 0 and config.neighbor_p > 0:
        table = neighbour_table(clean, config.neighbors) if neighbours is None else neighbours
        nbrs = torch.from_numpy(table)
    head = AdaptHead(dim, config.hidden)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, n)
    losses: list[float] = []
    head.train()
    for step in range(config.steps):
        set_lr(opt, config.lr, "cosine", step / config.steps)
        i = torch.randperm(n, generator=gen)[:batch]
        s1 = torch.randint(0, slots, (batch,), generator=gen)
        s2 = s1  # another slot of the same image (or, with no views, of a neighbour)
        if slots > 1:
            s2 = (s1 + torch.randint(1, slots, (batch,), generator=gen)) % slots
        j = i
        if nbrs is not None:
            pick = nbrs[i, torch.randint(0, nbrs.shape[1], (batch,), generator=gen)]
            use = torch.rand(batch, generator=gen) < config.neighbor_p
            j = torch.where(use, pick, i)
        loss = info_nce(head(bank[i, s1]), head(bank[j, s2]), config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step + 1) % 500 == 0:
            log(f"step {step + 1}/{config.steps}: loss {np.mean(losses[-100:]):.4f}")
    return head.eval(), losses


def view_ref(base_ref: str, view_size: int | None) -> str:
    """The reference that embeds the views: the base at `view_size` when it is pretrained (a
    name, or names side by side: each part at `view_size`); other bases as they are."""
    parts = registry.parse_side_by_side(base_ref)
    if parts is None:
        one = registry.parse_pretrained(base_ref)
        parts = None if one is None else [one]
    if parts is None or view_size is None:
        return base_ref
    return SEPARATOR.join(f"{name}@{view_size}:{pooling}" for name, _, pooling in parts)


def adapt(
    base_ref: str | Path,
    folder: str | Path,
    out: str | Path,
    *,
    config: AdaptConfig = AdaptConfig(),
    inference: InferenceSettings | None = None,
    progress: bool = True,
    log: Log = print,
) -> AdaptResult:
    """Adapt `base_ref` to the images of `folder` without labels; write the model to `out`.

    `out` receives head.safetensors + model.json (kind "adapted-head") and views/, the cached
    view embeddings (delete it to save space; a new run with other view settings replaces it).
    """
    base_ref = str(base_ref)
    out = Path(out)
    registry.check_out_folder(out, KIND, base_ref)
    source = open_training_source(folder)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    base = load_for_inference(base_ref, inference)
    emb = embed_source(base, source, progress=progress, workers=1, need=2)
    seconds["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    views_by = view_ref(base_ref, config.view_size)
    viewer = base if views_by == base_ref else load_for_inference(views_by, inference)
    kept = source.subset(emb.positions)
    facts = registry.describe(views_by, viewer)
    views = embed_views(viewer, kept, config.views, cache=out / "views", model_facts=facts,
                        progress=progress, log=log)  # fmt: skip
    seconds["views"] = time.perf_counter() - t0
    ok = ~np.isnan(views).any(axis=(1, 2))
    t0 = time.perf_counter()
    head, losses = train_adapt_head(emb.embeddings[ok], views[ok], config,
                                    log=log if progress else None)  # fmt: skip
    seconds["train"] = time.perf_counter() - t0
    save_adapted(head, out, {
        "base": registry.describe(base_ref, base), "dim": int(emb.embeddings.shape[1]),
        "adapt": asdict(config), "view_ref": registry.canonical_ref(views_by),
        "images": int(ok.sum()), "source": source.name,
        "final_loss": float(np.mean(losses[-50:])), "seconds": seconds,
    })  # fmt: skip
    return AdaptResult(out, int(ok.sum()), losses, seconds, emb.failures)
