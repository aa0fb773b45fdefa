"""A projection head on a frozen base model: how a few labels (or pseudo-labels) sharpen it.

The head is residual and starts as the identity (its last layer is zero), so with few labels it
can only move the base embedding, not throw it away. It is trained by imgret.training.finetune.

A fine-tuned model is a folder: head.safetensors + model.json (arch "projection-head", the base
model's reference, the head's settings and how many labels it used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.atomic import atomic_path, write_json
from ..core.errors import UserError
from .base import DerivedEmbedder

__all__ = [
    "ProjectionHead", "FinetunedEmbedder", "save_head", "write_head_folder", "load_folder", "KIND",
    "WEIGHTS",
]  # fmt: skip

KIND = "projection-head"
WEIGHTS = "head.safetensors"
DEFAULT_HIDDEN = 1024


class ProjectionHead(nn.Module):
    """(B, dim) -> (B, dim) unit-norm: normalize(x + MLP(x)), the MLP's last layer zero at start."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        last = nn.Linear(hidden, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        return F.normalize(x + self.mlp(x), dim=1)


class FinetunedEmbedder(DerivedEmbedder):
    """A frozen base embedder followed by a projection head; same interface as the base."""

    name = KIND

    def __init__(self, base: Any, head: ProjectionHead, base_ref: str) -> None:
        super().__init__()
        self.base = base
        self.head = head
        self.base_ref = base_ref

    @property
    def embedding_dim(self) -> int:
        return int(self.base.embedding_dim)

    @torch.inference_mode()
    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) in [0, 1] -> (B, dim) unit-norm."""
        self.eval()
        return self.head(self.base.embed_batch(x).float())

    def embedding_graph(self) -> nn.Module:
        """base graph then head, without inference mode (for export)."""
        return nn.Sequential(self.base.embedding_graph(), self.head).eval()

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        """Base embeddings (n, dim) -> fine-tuned embeddings (n, dim) float32."""
        with torch.inference_mode():
            return self.head.eval()(torch.from_numpy(np.asarray(embeddings, np.float32))).numpy()


def save_head(head: ProjectionHead, out: Path, doc: dict[str, Any]) -> None:
    """Write head.safetensors and model.json (`doc` plus the kind) into the folder `out`."""
    write_head_folder(head, out, {"arch": KIND, **doc})


def write_head_folder(head: nn.Module, out: Path, fields: dict[str, Any]) -> None:
    """A head on a base model, as a folder: `out`/head.safetensors (the head's weights) and
    model.json (imgret's model format with `fields`), each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp))
    write_json(out / "model.json", {"format": "imgret-model", "version": 1, **fields})


def load_folder(path: Path, doc: dict[str, Any], base: Any, device: str = "cpu") -> Any:
    """Rebuild a fine-tuned model from its folder, on its already loaded `base`."""
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path}: {WEIGHTS} is missing; make the model again with imgret finetune")
    hidden = int(doc.get("finetune", {}).get("hidden", DEFAULT_HIDDEN))
    head = ProjectionHead(int(doc["dim"]), hidden)
    head.load_state_dict(load_file(str(path / WEIGHTS)))
    return FinetunedEmbedder(base, head.to(device).eval(), doc["base"]["ref"])
