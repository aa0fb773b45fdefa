"""Several pretrained backbones side by side: one embedding made of theirs, each unit-norm.

A reference such as ``efficientnet-lite0+efficientnet-lite1+efficientnet-lite2`` (parts joined
by ``+``, each a pretrained name ``NAME[@SIZE][:POOLING]``) embeds an image with every part
and concatenates the L2-normalised embeddings, scaled by 1/sqrt(n) so that the whole is
unit-norm: the cosine of two images is the mean of the parts' cosines.

The data loader resizes images to one side, the largest of the parts'; a part whose own side
is smaller gets the batch resized again inside the model (bilinear, antialiased), so that
every part sees its native input size. Embedding takes about the sum of the parts' times.

    model = SideBySide([load_pretrained("efficientnet-lite0", image_size=224, pooling="gem"),
                        load_pretrained("efficientnet-lite1", image_size=240, pooling="gem")])
    model.embed_batch(images)  # (B, 3, 240, 240) in [0, 1] -> (B, 2560)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import SEPARATOR
from .pretrained import PretrainedEmbedder

__all__ = ["SideBySide"]


class SideBySide(nn.Module):
    """Frozen pretrained embedders side by side; the Embedder contract (imgret.models.base).

    `name` joins the parts' names with "+"; `image_size` is the largest part's side;
    `embedding_dim` the sum of the parts' dimensions.
    """

    channels: int = 3

    def __init__(self, parts: Sequence[PretrainedEmbedder]) -> None:
        super().__init__()
        if len(parts) < 2:
            raise ValueError(f"side by side needs two models or more, got {len(parts)}")
        self.parts = nn.ModuleList(parts)
        self.sides = [int(p.image_size) for p in parts]
        self.name = SEPARATOR.join(p.name for p in parts)
        self.image_size = max(self.sides)
        self.embedding_dim = sum(int(p.embedding_dim) for p in parts)
        self._scale = 1.0 / math.sqrt(len(parts))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> SideBySide:
        """Stay in eval mode, as the parts do."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1], S = `image_size` -> (B, embedding_dim), unit-norm rows."""
        outs = []
        for part, side in zip(self.parts, self.sides, strict=True):
            xi = x
            if x.shape[-1] != side or x.shape[-2] != side:
                xi = F.interpolate(
                    x, size=(side, side), mode="bilinear", align_corners=False, antialias=True
                )
            outs.append(part(xi))  # (B, dim_i), L2-normalised
        return torch.cat(outs, dim=1) * self._scale

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float32 in [0, 1] or uint8 -> (B, embedding_dim) float32."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        with torch.inference_mode():
            return self.forward(x.float()).float().contiguous()

    def embedding_graph(self) -> nn.Module:
        """An nn.Module whose forward is embed_batch without inference mode (for export)."""
        return self
