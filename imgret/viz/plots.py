"""Pictures of the work: loss curves, reconstructions, elbow plot, result grids, cluster samples.

Every function writes one PNG atomically and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.atomic import atomic_path
from ..data.images import ImageError
from ..data.sources import load_key

__all__ = [
    "plot_losses", "plot_reconstructions", "plot_elbow", "plot_results", "plot_cluster_samples",
]  # fmt: skip


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib types
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), dpi=100), plt


def _save(fig, plt, path: str | Path) -> Path:  # noqa: ANN001
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _thumb(key: str, size: int = 96) -> np.ndarray:
    """(size, size, 3) uint8 thumbnail of an image key; a grey square if it cannot be read."""
    try:
        img = load_key(key).convert("RGB")
    except (ImageError, OSError, ValueError):
        return np.full((size, size, 3), 128, np.uint8)
    scale = size / max(img.size)  # small images are enlarged to fill the tile
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(new, Image.Resampling.BICUBIC if scale < 1 else Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(canvas)


def plot_losses(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Train and validation loss per epoch, the best epoch marked."""
    fig, plt = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    epochs = [h["epoch"] for h in history]
    val = [h["val_loss"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, val, "s-", label="validation")
    best = int(np.argmin(val))
    ax.axvline(epochs[best], color="grey", ls="--", lw=1, label=f"best epoch ({epochs[best]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (MSE per pixel)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Training and validation loss")
    return _save(fig, plt, path)


def plot_reconstructions(originals: np.ndarray, recons: np.ndarray, path: str | Path) -> Path:
    """Originals (top row) over reconstructions; both (n, C, H, W) float in [0, 1]."""
    n = len(originals)
    fig, plt = _figure(max(4, 1.2 * n), 2.8)
    for row, arr in enumerate((originals, recons)):
        for i in range(n):
            ax = fig.add_subplot(2, n, row * n + i + 1)
            img = np.clip(arr[i].transpose(1, 2, 0), 0, 1)  # (C, H, W) -> (H, W, C)
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel("original" if row == 0 else "reconstruction", fontsize=8)
    fig.suptitle("Originals and their reconstructions")
    return _save(fig, plt, path)


def plot_elbow(
    ks: Sequence[int],
    inertias: Sequence[float],
    silhouettes: Sequence[float],
    chosen_k: int,
    path: str | Path,
) -> Path:
    """KMeans inertia and silhouette against K, the chosen K marked."""
    fig, plt = _figure(6.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ks, inertias, "o-", color="tab:blue", label="inertia")
    ax.set_xlabel("K (number of clusters)")
    ax.set_xticks(list(ks) if len(ks) <= 20 else list(ks)[:: max(1, len(ks) // 10)])
    ax.set_ylabel("inertia", color="tab:blue")
    ax.axvline(chosen_k, color="tab:red", ls="--", label=f"elbow: K = {chosen_k}")
    ax2 = ax.twinx()
    ax2.plot(ks, silhouettes, "s:", color="tab:green", label="silhouette")
    ax2.set_ylabel("silhouette", color="tab:green")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right")
    ax.set_title("Elbow method")
    return _save(fig, plt, path)


def plot_results(
    query_key: str,
    hits: Sequence[tuple[str, float, str | None]],
    path: str | Path,
    title: str = "",
) -> Path:
    """The query first, then each (key, score, label) hit, in one row (wrapping after 6)."""
    cols = min(6, len(hits) + 1)
    rows = (len(hits) + 1 + cols - 1) // cols
    fig, plt = _figure(1.8 * cols, 2.1 * rows)
    tiles = [(query_key, "query", None)] + [(k, f"{s:.3f}", lab) for k, s, lab in hits]
    for i, (key, caption, label) in enumerate(tiles):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(_thumb(key))
        ax.set_xticks([])
        ax.set_yticks([])
        text = caption if label is None else f"{caption}\n{label}"
        ax.set_title(text, fontsize=8, color="tab:red" if i == 0 else "black")
        if i == 0:
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:red")
                spine.set_linewidth(3)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, plt, path)


def plot_cluster_samples(
    keys: Sequence[str],
    assignments: np.ndarray,
    path: str | Path,
    per_cluster: int = 8,
    seed: int = 0,
) -> Path:
    """A row of sample images for each cluster, labelled with its size."""
    clusters = np.unique(assignments)
    rng = np.random.default_rng(seed)
    fig, plt = _figure(1.2 * per_cluster + 1, 1.25 * len(clusters))
    for row, c in enumerate(clusters):
        members = np.flatnonzero(assignments == c)
        pick = rng.choice(members, min(per_cluster, len(members)), replace=False)
        for j, idx in enumerate(sorted(pick)):
            ax = fig.add_subplot(len(clusters), per_cluster, row * per_cluster + j + 1)
            ax.imshow(_thumb(keys[idx], 64))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"#{c}\n({len(members)})", fontsize=8, rotation=0, labelpad=22)
    fig.suptitle("Sample images of each cluster (cluster number and size)")
    return _save(fig, plt, path)
