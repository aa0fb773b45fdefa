"""The convolutional autoencoder: an encoder down to a dense embedding and a decoder back."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig

__all__ = ["ConvAutoencoder", "stage_widths"]


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
    a projection head (contrastive training only) and a fitted PCA-whitening of the embedding.
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
        return self.whiten(self.encode(x)).float()
