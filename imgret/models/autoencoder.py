"""The convolutional autoencoder: an encoder down to a dense embedding and a decoder back.

Its model folder describes itself: model.safetensors (weights) + model.json (kind
"conv-autoencoder", the ModelConfig, training settings, best validation loss). No pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.atomic import atomic_path, read_json, write_json
from ..core.errors import UserError
from .config import ModelConfig, from_dict
from .head import DEFAULT_HIDDEN, ProjectionHead

__all__ = [
    "ConvAutoencoder", "stage_widths", "save_model", "load_model", "load_folder", "model_paths",
    "FORMAT", "FORMAT_VERSION", "KIND",
]  # fmt: skip

FORMAT = "imgret-model"
# Files are written with the oldest version that holds them: a model with a cluster head
# needs version 2 (imgret before it cannot rebuild the head), every other model version 1.
PLAIN_VERSION = 1
CLUSTER_HEAD_VERSION = 2
FORMAT_VERSION = CLUSTER_HEAD_VERSION  # the newest format this imgret reads
KIND = "conv-autoencoder"


def stage_widths(config: ModelConfig) -> list[int]:
    """Channels of each stride-2 stage: halve the side while it is even and above 4."""
    widths, side, width = [], config.image_size, config.width
    while side % 2 == 0 and side > 4:
        widths.append(min(width, 256))
        side //= 2
        width *= 2
    return widths


def _conv_block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ConvAutoencoder(nn.Module):
    """Encoder: stride-2 conv stages -> flatten (or average) -> linear to `embedding_dim`.

    Decoder: linear -> the last feature map -> mirrored stages up to the image size; absent
    when `decoder` is "none" (models trained with the contrastive objective). Optional parts:
    a projection head (contrastive training only), a fitted PCA-whitening of the embedding, and
    a residual cluster head after it (imgret.models.head.ProjectionHead, fitted on KMeans
    clusters of the training images once training is done).
    Input and reconstruction are (B, channels, image_size, image_size) in [0, 1].
    """

    name = "conv-autoencoder"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        widths = stage_widths(config)
        self.side = config.image_size >> len(widths)  # side of the last feature map
        self.last_width = widths[-1]
        enc: list[nn.Module] = []
        c = config.channels
        for w in widths:
            enc += _conv_block(c, w, 2) + _conv_block(w, w, 1)
            c = w
        self.encoder = nn.Sequential(*enc)
        flat = self.last_width * self.side * self.side
        pooled = flat if config.pool == "flatten" else self.last_width
        self.to_embedding = nn.Linear(pooled, config.embedding_dim)
        if config.projection_dim:
            # Contrastive training compares head outputs; the embedding is taken before the head.
            self.head = nn.Sequential(
                nn.BatchNorm1d(config.embedding_dim),
                nn.ReLU(inplace=True),
                nn.Linear(config.embedding_dim, config.projection_dim),
            )
        if config.whiten_dim:
            # PCA-whitening fitted after training: embedding = (z - mean) @ matrix.
            self.register_buffer("whiten_mean", torch.zeros(config.embedding_dim))
            self.register_buffer(
                "whiten_matrix", torch.eye(config.embedding_dim)[:, : config.whiten_dim]
            )
        if config.cluster_head:
            self.cluster_head = ProjectionHead(self.embedding_dim, DEFAULT_HIDDEN)
        if config.decoder == "none":
            return
        self.from_embedding = nn.Sequential(nn.Linear(config.embedding_dim, flat), nn.ReLU(True))
        dec: list[nn.Module] = []
        outs = list(reversed(widths))[1:] + [widths[0]]
        for c_in, c_out in zip(reversed(widths), outs, strict=True):
            if config.decoder == "transpose":
                dec += [
                    nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
            else:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_block(c_in, c_out, 1)]
            dec += _conv_block(c_out, c_out, 1)
        dec += [nn.Conv2d(widths[0], config.channels, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def embedding_dim(self) -> int:
        """Size of the embeddings `embed_batch` returns (after whitening, when fitted)."""
        return self.config.whiten_dim or self.config.embedding_dim

    @property
    def has_decoder(self) -> bool:
        return self.config.decoder != "none"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, config.embedding_dim), before any whitening."""
        h = self.encoder(x)
        h = h.flatten(1) if self.config.pool == "flatten" else h.mean(dim=(2, 3))
        return self.to_embedding(h)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """(B, config.embedding_dim) -> (B, projection_dim): the contrastive head."""
        return self.head(z)

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        """(B, config.embedding_dim) -> (B, embedding_dim); identity when not whitening."""
        if not self.config.whiten_dim:
            return z
        mean, matrix = self.get_buffer("whiten_mean"), self.get_buffer("whiten_matrix")
        return (z - mean) @ matrix

    def refine(self, z: torch.Tensor) -> torch.Tensor:
        """(B, embedding_dim) whitened -> (B, embedding_dim), unit-norm through the cluster head;
        identity when there is none."""
        if not self.config.cluster_head:
            return z
        return self.cluster_head(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, embedding_dim) -> (B, C, S, S) in [0, 1]."""
        h = self.from_embedding(z).view(-1, self.last_width, self.side, self.side)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) -> (reconstruction (B, C, S, S), embedding (B, config.embedding_dim))."""
        if not self.has_decoder:
            raise RuntimeError("this model has no decoder (decoder='none'); use encode()")
        z = self.encode(x)
        return self.decode(z), z

    @torch.inference_mode()
    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) in [0, 1] -> (B, embedding_dim) float32, in eval mode."""
        self.eval()
        return self.refine(self.whiten(self.encode(x))).float()

    def embedding_graph(self) -> nn.Module:
        """An nn.Module whose forward is embed_batch without inference mode (for export)."""
        return _EmbeddingGraph(self.eval())


class _EmbeddingGraph(nn.Module):
    """(B, C, S, S) -> refine(whiten(encode(x))): the embedding, without the decoder."""

    def __init__(self, model: ConvAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.refine(self.model.whiten(self.model.encode(x)))


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) paths of a model given its folder, its .safetensors or its .json."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".safetensors"), path.with_suffix(".json")
    return path / "model.safetensors", path / "model.json"


def save_model(
    model: ConvAutoencoder, path: str | Path, meta: dict[str, Any] | None = None
) -> Path:
    """Write `model`'s weights and config (plus `meta`, e.g. training settings) atomically."""
    weights, config_path = model_paths(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    doc = {
        "format": FORMAT,
        "version": CLUSTER_HEAD_VERSION if model.config.cluster_head else PLAIN_VERSION,
        "arch": model.config.arch,
        "model": vars(model.config).copy(),
        **(meta or {}),
    }
    write_json(config_path, doc)
    return weights.parent


def load_model(path: str | Path, device: str = "cpu") -> tuple[ConvAutoencoder, dict[str, Any]]:
    """Rebuild a model from its file alone -> (model in eval mode, the JSON document)."""
    weights, config_path = model_paths(path)
    if not config_path.exists() or not weights.exists():
        raise UserError(
            f"{path}: not an imgret model (expected {weights.name} and {config_path.name}). "
            "Train one with `imgret train`."
        )
    try:
        doc = read_json(config_path)
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}: broken model config ({e})") from None
    if doc.get("format") != FORMAT:
        raise UserError(f"{config_path}: not an imgret model file")
    if doc.get("version", 0) > FORMAT_VERSION:
        raise UserError(
            f"{config_path}: made by a newer imgret (format {doc['version']}); upgrade imgret"
        )
    model = ConvAutoencoder(from_dict(ModelConfig, doc["model"]))
    model.load_state_dict(load_file(str(weights), device=device))
    return model.to(device).eval(), doc


def load_folder(path: Path, doc: dict[str, Any], device: str = "cpu") -> ConvAutoencoder:
    """The registry's loader of this kind (the folder's model.json already read as `doc`)."""
    model, _ = load_model(path, device=device)
    return model
