"""Model files that describe themselves: weights as safetensors, settings as JSON. No pickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .atomic import atomic_path, read_json, write_json
from .config import ModelConfig, from_dict
from .errors import UserError
from .model import ConvAutoencoder

__all__ = ["save_model", "load_model", "model_paths", "FORMAT", "FORMAT_VERSION"]

FORMAT = "imgret-model"
FORMAT_VERSION = 1


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
        "version": FORMAT_VERSION,
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
