"""A collection-adapted model: a frozen base model and a head trained without labels.

imgret.training.adapt trains the head on augmented views of a collection's images (and their
nearest neighbours). The head is residual and starts as the identity, as the fine-tuning head
does (imgret.models.head), so that a short or failed run leaves the base embedding intact.

An adapted model is a folder: head.safetensors + model.json (kind "adapted-head", the base
model's reference, the head's width and the adaptation settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ..core.errors import UserError
from .head import WEIGHTS, FinetunedEmbedder, ProjectionHead, write_head_folder

__all__ = ["AdaptHead", "AdaptedEmbedder", "save_adapted", "load_folder", "KIND", "WEIGHTS"]

KIND = "adapted-head"


class AdaptHead(ProjectionHead):
    """(B, dim) -> (B, dim) unit-norm: normalize(x + MLP(x)), the identity at the start."""


class AdaptedEmbedder(FinetunedEmbedder):
    """A frozen base embedder followed by an adaptation head; same interface as the base."""

    name = KIND


def save_adapted(head: AdaptHead, out: Path, doc: dict[str, Any]) -> None:
    """Write head.safetensors and model.json (`doc` plus the kind) into the folder `out`.

    `doc` holds "base" (the base model's description), "dim" and "adapt" (the settings, with
    "hidden", the head's width).
    """
    write_head_folder(head, out, {"kind": KIND, **doc})


def load_folder(path: Path, doc: dict[str, Any], base: Any, device: str = "cpu") -> Any:
    """Rebuild an adapted model from its folder, on its already loaded `base`."""
    if not (path / WEIGHTS).is_file():
        raise UserError(f"{path}: {WEIGHTS} is missing; make the model again with imgret adapt")
    try:
        head = AdaptHead(int(doc["dim"]), int(doc["adapt"]["hidden"]))
        head.load_state_dict(load_file(str(path / WEIGHTS)))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: broken adapted model ({type(e).__name__}: {e})") from None
    return AdaptedEmbedder(base, head.to(device).eval(), doc["base"]["ref"])
