"""Random image augmentations on whole batches (no per-image Python loop), seeded.

Used by the label-free training objectives: two augmented views of the same image should get
close embeddings (contrastive), or a corrupted image should be reconstructed (denoising).
All functions take and return (B, C, S, S) float32 in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from .config import TrainConfig

__all__ = ["AugmentConfig", "AUGMENT_PRESETS", "augment_preset", "augment", "corrupt"]


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: float = 0.2  # smallest share of the image area a random crop keeps
    flip: bool = True  # random horizontal flip (p = 0.5)
    jitter: float = 0.0  # strength of brightness/contrast/saturation jitter (0 = none)
    hue: float = 0.0  # largest hue rotation, as a share of the colour circle
    jitter_p: float = 0.8  # probability of applying the colour jitter to an image
    gray_p: float = 0.0  # probability of turning an RGB image gray


# Presets by name, stored in TrainConfig.augment; "auto" picks by the number of channels.
AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "flip": AugmentConfig(crop_scale=1.0, flip=True),
    "crop": AugmentConfig(crop_scale=0.4, flip=True, jitter=0.4, jitter_p=0.5),
    "crop-color": AugmentConfig(crop_scale=0.2, flip=True, jitter=0.4, hue=0.1, gray_p=0.2),
}


def augment_preset(cfg: TrainConfig, channels: int) -> AugmentConfig:
    """The augmentation of the views of `cfg.augment` ("auto": by the number of channels)."""
    name = cfg.augment
    if name == "auto":
        name = "crop" if channels == 1 else "crop-color"
    if name not in AUGMENT_PRESETS:
        raise UserError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENT_PRESETS)}")
    return AUGMENT_PRESETS[name]


def _crop_grid(n: int, size: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Sampling grids (n, size, size, 2) of random resized crops (area share, ratio 3/4..4/3)."""
    area = cfg.crop_scale + (1.0 - cfg.crop_scale) * torch.rand(n, generator=gen)
    log_ratio = (torch.rand(n, generator=gen) * 2 - 1) * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # share of the width kept
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)  # centre in [-1, 1] coordinates
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    sign = torch.ones(n)
    if cfg.flip:
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return F.affine_grid(theta, [n, 1, size, size], align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 1, S, S) luma."""
    return 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma of RGB images by `angle` (B,) radians in YIQ space."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(x), 3, 3)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    m = from_yiq @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def _jitter(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    n = len(x)

    def factor() -> torch.Tensor:
        return (1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.jitter).view(n, 1, 1, 1)

    apply = (torch.rand(n, generator=gen) < cfg.jitter_p).view(n, 1, 1, 1)
    y = x * factor()  # brightness
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * factor() + mean  # contrast
    if x.shape[1] == 3:
        g = _gray(y)
        y = (y - g) * factor() + g  # saturation
        if cfg.hue > 0:
            y = _hue_rotate(y, (torch.rand(n, generator=gen) * 2 - 1) * cfg.hue * 2 * math.pi)
    return torch.where(apply, y.clamp(0, 1), x)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """A random view of each image: crop + resize, flip, colour jitter, grayscale."""
    n, c, size, _ = x.shape
    if cfg.crop_scale < 1.0:
        grid = _crop_grid(n, size, cfg, gen)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    elif cfg.flip:
        flip = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if cfg.jitter > 0:
        x = _jitter(x, cfg, gen)
    if c == 3 and cfg.gray_p > 0:
        gray = (torch.rand(n, generator=gen) < cfg.gray_p).view(n, 1, 1, 1)
        x = torch.where(gray, _gray(x).expand(-1, 3, -1, -1), x)
    return x.contiguous()


def corrupt(
    x: torch.Tensor, mask_ratio: float, gen: torch.Generator, patch: int = 4
) -> torch.Tensor:
    """Masked copy of `x`: each `patch`-pixel square is zeroed with probability `mask_ratio`."""
    n, _, size, _ = x.shape
    cells = -(-size // patch)
    keep = (torch.rand(n, 1, cells, cells, generator=gen) >= mask_ratio).float()
    keep = keep.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :size, :size]
    return x * keep
