"""A few labels sharpen any embedding model: a projection head trained with triplet loss.

The base model (the autoencoder or the pretrained backbone) stays frozen; the labelled images
are embedded once, and a small residual head learns on those embeddings, so fine-tuning takes
seconds. The head starts as the identity (its last layer is zero), so with few labels it can
only move the label-free embedding, not throw it away.

Without labels, KMeans clusters of the collection can stand in for them (`pseudo_labels`): a
label-free adaptation of the model to the collection.

The head and its model folder are imgret.models.head.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.clustering import fit_kmeans
from ..core.errors import UserError
from ..data.benchmarks import open_training_source
from ..models import registry
from ..models.backend import InferenceSettings, load_for_inference
from ..models.embed import embed_source
from ..models.head import KIND as HEAD_KIND
from ..models.head import ProjectionHead, save_head
from ..retrieval.rerank import database_augmentation

__all__ = [
    "FinetuneConfig", "FinetuneResult", "triplet_loss", "finetune_head", "finetune",
    "read_label_csv", "check_labels", "pseudo_labels", "auto_lr", "PSEUDO_LABEL_LR",
    "MIN_PER_CLASS", "CLUSTER_HEAD_STEPS", "fit_cluster_head",
]  # fmt: skip

MIN_PER_CLASS = 2  # a class needs an anchor and a positive
# Learning rate of heads trained on pseudo-labels (Caltech-101, K = 100, then re-ranked: 0.836
# mAP@all at 1e-4; 0.789 at 1e-3 with 300 steps)
PSEUDO_LABEL_LR = 1e-4
# Steps of the cluster head `imgret train` fits (fit_cluster_head). On fashion-mnist:val, K 300
# on the default model: 0.790 mAP@1000 re-ranked at 600 steps, 0.792 at 2000, 0.789 at 4000
# (bench/results/validation.md).
CLUSTER_HEAD_STEPS = 2000


@dataclass(frozen=True)
class FinetuneConfig:
    margin: float = 0.2  # triplet margin on unit-norm embeddings (distance = Euclidean)
    # "semi-hard" or "batch-hard"; with thousands of labels batch-hard chases outliers
    # (CIFAR-10, 10 % labels: 0.551 mAP@1000 against 0.739 semi-hard with 16 per class)
    mining: str = "semi-hard"
    hidden: int = 1024  # width of the head's hidden layer
    steps: int = 600  # optimisation steps
    classes_per_batch: int = 16  # P of a P x K batch
    per_class: int = 16  # K of a P x K batch (fewer where a class has fewer images)
    # Adam learning rate; None = auto (`auto_lr`): small when the classes have few labelled
    # images each, where a faster head overfits them and loses to the base embedding
    lr: float | None = None
    weight_decay: float = 1e-4  # Adam weight decay
    seed: int = 0  # one seed for sampling and initialisation


def triplet_loss(
    z: torch.Tensor, labels: torch.Tensor, margin: float, mining: str = "batch-hard"
) -> torch.Tensor:
    """Triplet loss of (B, dim) embeddings with (B,) integer labels.

    batch-hard: each anchor's farthest positive and nearest negative.
    semi-hard: the nearest negative farther than the positive (within the margin when one
    exists), else the nearest negative. Anchors without a positive are left out.
    """
    d = torch.cdist(z, z)  # (B, B) Euclidean distances
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pos_mask, neg_mask = same & ~eye, ~same
    valid = pos_mask.any(1) & neg_mask.any(1)
    if not valid.any():
        return z.sum() * 0.0
    d_ap = torch.where(pos_mask, d, torch.full_like(d, -np.inf)).max(1).values  # (B,)
    d_neg = torch.where(neg_mask, d, torch.full_like(d, np.inf))
    if mining == "batch-hard":
        d_an = d_neg.min(1).values
    elif mining == "semi-hard":
        farther = d_neg > d_ap[:, None]
        semi = torch.where(farther, d_neg, torch.full_like(d, np.inf)).min(1).values
        d_an = torch.where(torch.isfinite(semi), semi, d_neg.min(1).values)
    else:
        raise ValueError(f"mining must be 'batch-hard' or 'semi-hard', got {mining!r}")
    return F.relu(d_ap - d_an + margin)[valid].mean()


def check_labels(labels: list[str]) -> dict[str, int]:
    """Count images per class; raise a UserError when there are too few to train."""
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    usable = {c: n for c, n in counts.items() if n >= MIN_PER_CLASS}
    if len(usable) < 2:
        raise UserError(
            f"too few labels to fine-tune: {len(labels)} labelled image(s) in {len(counts)} "
            f"class(es); triplet loss needs at least 2 classes with {MIN_PER_CLASS}+ images each "
            "(5 or more per class works well)"
        )
    return counts


def _pk_batches(labels: np.ndarray, cfg: FinetuneConfig, rng: np.random.Generator):  # noqa: ANN202
    """Endless P x K batches of row indices (classes with >= 2 images only)."""
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    classes = [rows for rows in classes if len(rows) >= MIN_PER_CLASS]
    p = min(cfg.classes_per_batch, len(classes))
    while True:
        picked = rng.choice(len(classes), p, replace=False)
        batch = []
        for ci in picked:
            rows = classes[ci]
            batch.append(rng.choice(rows, min(cfg.per_class, len(rows)), replace=False))
        yield np.concatenate(batch)


def auto_lr(counts: dict[str, int]) -> float:
    """Learning rate for classes of these sizes: 1e-3 from a median of 20 labelled images per
    class, else 1e-4.

    Measured with GeM EfficientNet embeddings (bench/pretrained.py and a side run): Caltech-101
    with 1 % labels (about 2 per class) 0.618 mAP@all at 1e-3 against 0.688 at 1e-4 (the base
    embedding: 0.680); CIFAR-10 with 1 % labels (59 per class) 0.630 mAP@1000 at 1e-3 against
    0.575 at 1e-4 (base: 0.540).
    """
    return 1e-3 if float(np.median(list(counts.values()))) >= 20 else 1e-4


def finetune_head(
    embeddings: np.ndarray, labels: list[str], config: FinetuneConfig = FinetuneConfig()
) -> tuple[ProjectionHead, list[float]]:
    """Train a head on (n_labelled, dim) embeddings -> (head in eval mode, loss per step)."""
    counts = check_labels(labels)
    lr = config.lr if config.lr is not None else auto_lr(counts)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    names = sorted(set(labels))
    y = np.array([names.index(lab) for lab in labels])
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    head = ProjectionHead(x.shape[1], config.hidden)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=config.weight_decay)
    losses = []
    batches = _pk_batches(y, config, rng)
    head.train()
    for _ in range(config.steps):
        rows = next(batches)
        loss = triplet_loss(head(x[rows]), torch.from_numpy(y[rows]), config.margin, config.mining)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return head.eval(), losses


@dataclass
class FinetuneResult:
    model_dir: Path
    n_labelled: int
    classes: dict[str, int]  # images per class used
    losses: list[float] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def read_label_csv(path: str | Path) -> dict[str, str]:
    """A CSV of `path,label` rows (a header row is allowed) -> {resolved path: label}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such label file")
    out = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a UTF-8 CSV of `path,label` rows ({e})") from None
    for i, row in enumerate(rows):
        if len(row) < 2 or (i == 0 and row[0].strip().lower() == "path"):
            continue
        if "\0" in row[0]:
            raise UserError(f"{path}: row {i + 1}: a path with a NUL byte")
        img = Path(row[0].strip()).expanduser()
        if not img.is_absolute():
            img = path.parent / img
        out[str(img.resolve())] = row[1].strip()
    if not out:
        raise UserError(f"{path}: no `path,label` rows found")
    return out


def pseudo_labels(embeddings: np.ndarray, clusters: int, seed: int = 0) -> list[str]:
    """Label-free stand-in for labels: KMeans clusters of re-ranked embeddings -> (n,) labels.

    The (n, dim) embeddings are first replaced by their database-side augmentation
    (imgret.retrieval.rerank), which pulls near neighbours together, then grouped into `clusters`
    clusters; a cluster's id is its images' label. Over-clustering (more clusters than kinds
    of images) keeps each cluster pure, which is what the triplet loss needs.
    """
    if not 2 <= clusters <= len(embeddings) // MIN_PER_CLASS:
        raise UserError(
            f"--pseudo-labels {clusters}: needs 2 to {len(embeddings) // MIN_PER_CLASS} clusters "
            f"for {len(embeddings)} image(s)"
        )
    augmented = database_augmentation(embeddings)
    return [f"c{c}" for c in fit_kmeans(augmented, clusters, seed=seed).assignments.tolist()]


def fit_cluster_head(
    embeddings: np.ndarray, clusters: int, seed: int = 0
) -> tuple[ProjectionHead, list[float]]:
    """The head `imgret train` ends with: trained on (n, dim) embeddings with their `clusters`
    KMeans clusters as labels (pseudo_labels) -> (head in eval mode, loss per step)."""
    labels = pseudo_labels(embeddings, clusters, seed=seed)
    config = FinetuneConfig(steps=CLUSTER_HEAD_STEPS, lr=PSEUDO_LABEL_LR, seed=seed)
    return finetune_head(embeddings, labels, config)


def finetune(
    base_ref: str | Path,
    source_spec: str | Path,
    out: str | Path,
    *,
    labels_csv: str | Path | None = None,
    pseudo_clusters: int | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    device: str = "cpu",
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune a head on a base model with labelled images, written to `out`.

    Labels come from `labels_csv` (path,label) when given, else from the sub-folder names of
    `source_spec`; images without a label are not used. With `pseudo_clusters` = K no label is
    needed: every image of the source gets the label of its KMeans cluster (`pseudo_labels`).
    """
    registry.check_out_folder(out, HEAD_KIND, base_ref)
    source = open_training_source(source_spec)
    if pseudo_clusters is not None:
        if labels_csv is not None:
            raise UserError("give either --labels or --pseudo-labels, not both")
    elif labels_csv is not None:
        mapping = read_label_csv(labels_csv)
        keep = [i for i, k in enumerate(source.keys) if str(Path(k).resolve()) in mapping]
        source = source.subset(keep)
        source.labels = [mapping[str(Path(k).resolve())] for k in source.keys]
    else:
        source = source.subset([i for i, lab in enumerate(source.labels) if lab is not None])
    if pseudo_clusters is None:
        check_labels([str(lab) for lab in source.labels])
    base = load_for_inference(base_ref, InferenceSettings(device=device))
    result = embed_source(base, source, progress=progress, workers=0, need=2)
    if pseudo_clusters is not None:
        labels = pseudo_labels(result.embeddings, pseudo_clusters, seed=config.seed)
        if config.lr is None:  # clusters are noisy labels: never the fast rate of big classes
            config = replace(config, lr=PSEUDO_LABEL_LR)
    else:
        labels = [str(source.labels[i]) for i in result.positions]
    head, losses = finetune_head(result.embeddings, labels, config)
    counts = check_labels(labels)
    out = Path(out)
    save_head(head, out, {
        "base": registry.describe(base_ref, base), "dim": int(result.embeddings.shape[1]),
        "finetune": asdict(config), "labelled_images": 0 if pseudo_clusters else len(labels),
        "pseudo_label_clusters": pseudo_clusters, "classes": counts,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
    })  # fmt: skip
    return FinetuneResult(out, len(labels), counts, losses, result.failures)
