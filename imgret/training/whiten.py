"""`imgret whiten`: fit a PCA-whitening of any model's embedding on a folder, without labels.

The whitening itself and its model folder are imgret.models.whitening.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..data.benchmarks import open_training_source
from ..models import registry
from ..models.backend import InferenceSettings, load_for_inference
from ..models.embed import embed_source
from ..models.whitening import KIND, Whitening, save_whitening

__all__ = ["WhitenResult", "whiten_model"]


@dataclass
class WhitenResult:
    model_dir: Path
    dim: int
    input_dim: int  # the base model's embedding size
    fitted_on: int  # embeddings the whitening was fitted on
    explained_variance: float  # share of the variance kept by the `dim` directions
    skipped: list[tuple[str, str]] = field(default_factory=list)


def whiten_model(
    model_ref: str | Path,
    source_spec: str | Path,
    out_dir: str | Path,
    *,
    dim: int = 512,
    limit: int | None = None,
    seed: int = 0,
    eps: float = 1e-6,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "cpu",
    progress: bool = True,
) -> WhitenResult:
    """Fit a whitening of `model_ref`'s embedding on the images of `source_spec`, written to
    `out_dir` as a model folder.

    source_spec : a folder, a built-in source, or ``BENCHMARK:database``
    limit : fit on a fixed-seed (`seed`) sample of at most this many images (None = all)
    """
    out = Path(out_dir)
    registry.check_out_folder(out, KIND, model_ref)
    if dim < 1:
        raise UserError(f"dim must be 1 or more, got {dim}")
    source = open_training_source(source_spec)
    if limit is not None and limit < len(source):
        if limit < 2:
            raise UserError(f"limit must be 2 or more, got {limit}")
        pick = np.sort(np.random.default_rng(seed).permutation(len(source))[:limit])
        source = replace(source.subset(pick), name=f"{source.name} (sample of {limit})")
    base = load_for_inference(model_ref, InferenceSettings(device=device))
    if dim > min(len(source) - 1, base.embedding_dim):  # known before embedding anything
        raise UserError(
            f"cannot whiten to {dim} dims: {len(source)} images of a {base.embedding_dim}-d "
            f"embedding give at most {max(min(len(source) - 1, base.embedding_dim), 0)} "
            "(use a smaller dim, or fit on more images)"
        )
    result = embed_source(base, source, batch_size=batch_size, workers=workers, progress=progress,
                          need=dim + 1)  # fmt: skip
    whitening = Whitening(dim, eps=eps).fit(result.embeddings)
    save_whitening(whitening, out, {
        "base": registry.describe(model_ref, base), "dim": int(dim),
        "input_dim": int(base.embedding_dim), "fitted_on": whitening.n_fitted_,
        "source": str(source_spec), "limit": limit, "seed": int(seed), "eps": float(eps),
        "explained_variance": whitening.explained_variance_ratio_,
    })  # fmt: skip
    return WhitenResult(
        out, int(dim), int(base.embedding_dim), whitening.n_fitted_,
        whitening.explained_variance_ratio_, result.failures,
    )  # fmt: skip
