"""One model registry: a reference (a model folder or a built-in name) -> an Embedder.

References:

- a folder made by `imgret train`, `finetune`, `whiten` or `adapt`: its model.json says its kind
  (`kind`, or `arch` in older files); derived kinds name their base model, loaded first;
- a pretrained name ``NAME[@SIZE][:POOLING]``, e.g. ``efficientnet-lite0`` =
  ``efficientnet-lite0@224:gem``;
- pretrained names joined by ``+``, their embeddings side by side (imgret.models.side_by_side),
  e.g. ``efficientnet-lite0+efficientnet-lite1+efficientnet-lite2``.

`canonical_ref` gives each model one spelling (a resolved folder path, or the full pretrained
name); every command, the collection's model check and the web app use it. `describe` gives
the facts a collection records to refuse a different model later, its weights' fingerprint
included. To add a model kind: a module with `KIND` and `load_folder(path, doc[, base], device)`
and a branch in `_kind_module`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..core.errors import DamagedError, UserError
from .base import SEPARATOR, Embedder

__all__ = [
    "load", "canonical_ref", "describe", "fingerprint", "parse_pretrained", "parse_side_by_side",
    "read_model_doc", "built_on_pretrained", "trained_images", "check_out_folder",
    "PRETRAINED_NAMES", "DEFAULT_SIZES", "SEPARATOR",
]  # fmt: skip

PRETRAINED_NAMES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
# Input side of a pretrained name given without @SIZE: the resolution its weights were trained
# at (the validation queries of BENCHMARKS.md agree: bench/results/backbones.md).
DEFAULT_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
_WEIGHT_FILES = ("model.safetensors", "head.safetensors", "whitening.safetensors")
_MAX_DEPTH = 8  # derived models on derived models: a cycle of references stops here


def parse_pretrained(ref: str) -> tuple[str, int, str] | None:
    """``NAME[@SIZE][:POOLING]`` -> (name, input size, pooling), or None for other references.

    ``efficientnet-lite0`` = ``efficientnet-lite0@224:gem`` (GeM, p = 3); ``:avg`` averages.
    Without @SIZE, the name's DEFAULT_SIZES. Names side by side (with "+") are not one.
    """
    if SEPARATOR in ref:
        return None
    rest, _, pooling = ref.partition(":")
    name, _, size = rest.partition("@")
    if name not in PRETRAINED_NAMES:
        return None
    try:
        side = int(size) if size else DEFAULT_SIZES[name]
    except ValueError:
        raise UserError(
            f"{ref}: the input size after @ must be a number, e.g. {name}@224"
        ) from None
    return name, side, pooling or "gem"


def parse_side_by_side(ref: str) -> list[tuple[str, int, str]] | None:
    """``NAME+NAME[+...]`` -> each part's (name, input size, pooling); None for other references
    (no "+", an existing path, or no part a pretrained name: a folder whose name has a "+").

    Every part must then be a pretrained name (parse_pretrained); UserError otherwise.
    """
    if SEPARATOR not in ref or Path(ref).expanduser().exists():
        return None
    names = ref.split(SEPARATOR)
    parsed_parts = [parse_pretrained(part.strip()) for part in names]
    if all(p is None for p in parsed_parts):
        return None
    parts = []
    for part, parsed in zip(names, parsed_parts, strict=True):
        if parsed is None:
            raise UserError(
                f"{ref}: models side by side must be pretrained names joined by +, e.g. "
                f"{SEPARATOR.join(PRETRAINED_NAMES)}; {part.strip()!r} is not one"
            )
        parts.append(parsed)
    return parts


def canonical_ref(ref: str | Path) -> str:
    """The one spelling of a model reference: ``NAME@SIZE:POOL`` (joined by + side by side) or
    an absolute folder path."""
    ref_s = str(ref)
    side_by_side = parse_side_by_side(ref_s)
    if side_by_side is not None:
        return SEPARATOR.join(f"{n}@{size}:{pool}" for n, size, pool in side_by_side)
    pretrained = parse_pretrained(ref_s)
    if pretrained is not None:
        return f"{pretrained[0]}@{pretrained[1]}:{pretrained[2]}"
    return str(Path(ref_s).expanduser().resolve())


def read_model_doc(folder: Path) -> dict[str, Any]:
    """A model folder's model.json; UserError when it is missing or broken."""
    path = folder / "model.json"
    if not path.is_file():
        raise UserError(
            f"{folder}: not an imgret model (no model.json). Train one with `imgret train`, or "
            f"use a pretrained model: {', '.join(PRETRAINED_NAMES)}"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: broken model config ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != "imgret-model":
        raise UserError(f"{path}: not an imgret model file")
    return doc


def _kind(doc: dict[str, Any]) -> str:
    return str(doc.get("kind") or doc.get("arch") or "")


def check_out_folder(out: str | Path, kind: str, base_ref: str | Path | None = None) -> None:
    """Refuse to write a model of `kind` into the folder `out` when it holds a model of another
    kind (or a model.json that read_model_doc refuses), or is the base model `base_ref` itself:
    the new files would replace the model that is there."""
    out = Path(out)
    if not (out / "model.json").is_file():
        return
    try:
        found = _kind(read_model_doc(out))
    except UserError:  # unreadable, or not an imgret model file
        found = ""
    if found != kind or (base_ref is not None and out.resolve() == Path(str(base_ref)).resolve()):
        what = "its base model" if found == kind else f"a {found or 'broken'} model"
        raise UserError(f"{out} already holds {what}; write the new model to another folder")


def _kind_module(kind: str) -> tuple[Any, bool] | None:
    """(module of a model kind, whether it is derived from a base model), None if unknown.

    Imported here, on use: the kinds import torch and their own packages.
    """
    if kind == "conv-autoencoder":
        from . import autoencoder

        return autoencoder, False
    if kind == "projection-head":
        from . import head

        return head, True
    if kind == "whitened":
        from . import whitening

        return whitening, True
    if kind == "adapted-head":
        from . import adapted

        return adapted, True
    return None


def load(ref: str | Path, device: str = "cpu", *, _depth: int = 0) -> Embedder:
    """The Embedder a reference names, on `device`, in eval mode."""
    ref_s = str(ref)
    side_by_side = parse_side_by_side(ref_s)
    pretrained = parse_pretrained(ref_s)
    if side_by_side is not None or pretrained is not None:
        from .pretrained import load_pretrained
        from .side_by_side import SideBySide

        try:
            if side_by_side is None:
                name, size, pooling = pretrained  # type: ignore[misc]
                return load_pretrained(name, image_size=size, pooling=pooling).to(device)
            parts = [load_pretrained(n, image_size=s, pooling=p) for n, s, p in side_by_side]
            return SideBySide(parts).to(device)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"{ref_s}: {e}") from None
    folder = Path(ref_s).expanduser()
    doc = read_model_doc(folder)
    kind = _kind(doc)
    found = _kind_module(kind)
    if found is None:
        raise UserError(f"{folder}: unknown model kind {kind!r}; a newer imgret may read it")
    module, derived = found
    try:
        if not derived:
            return module.load_folder(folder, doc, device)  # type: ignore[no-any-return]
        if _depth >= _MAX_DEPTH:
            raise UserError(f"{folder}: its base models refer to each other in a loop")
        base = load(doc["base"]["ref"], device, _depth=_depth + 1)
        return module.load_folder(folder, doc, base, device)  # type: ignore[no-any-return]
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError) as e:
        raise damaged_model(folder, e) from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError":  # a damaged .safetensors file
            raise
        raise damaged_model(folder, e) from None


def damaged_model(folder: Path, e: BaseException) -> DamagedError:
    """A model folder whose files do not rebuild the model: which file, and what to do."""
    text = " ".join(str(e).split())[:300]
    names = [n for n in (*_WEIGHT_FILES, "model.json") if n in str(e)]
    weights = [f for f in _WEIGHT_FILES if (folder / f).is_file()]
    file = folder / (names[0] if names else weights[0] if weights else "model.json")
    problem = f"a damaged model file ({type(e).__name__}: {text})"
    if isinstance(e, KeyError | TypeError):
        file, problem = folder / "model.json", f"a missing or wrong setting ({text})"
    elif "state_dict" in text:
        problem = "the weights do not fit the settings in model.json (one of them was changed)"
    return DamagedError(file, problem, "train the model again (`imgret train`), or use another")


def fingerprint(ref: str | Path, _depth: int = 0) -> str | None:
    """sha256 of a model folder's weight files (None for pretrained names and missing files).

    Two models at the same path but with different weights make different embeddings; the
    fingerprint tells them apart. A derived model also covers its base model's fingerprint,
    so retraining the base in place changes it too.
    """
    path = Path(str(ref))
    files = [path] if path.suffix == ".safetensors" else [path / f for f in _WEIGHT_FILES]
    h = hashlib.sha256()
    found = False
    for f in files:
        if f.is_file():
            found = True
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    if not found:
        return None
    base = _base_ref(path) if _depth < _MAX_DEPTH else None
    if base is not None:
        h.update((fingerprint(base, _depth + 1) or base).encode())
    return h.hexdigest()


def _base_ref(path: Path) -> str | None:
    """The base model's ref recorded in a derived model's model.json (None if not derived)."""
    try:
        doc = read_model_doc(path)
    except UserError:
        return None
    base = doc.get("base")
    ref = base.get("ref") if isinstance(base, dict) else None
    return ref if isinstance(ref, str) else None


def _chain_root(ref: str | Path) -> tuple[str, bool] | None:
    """(the ref at the start of a model's chain of base models, whether it is a pretrained
    name); the ref itself when not derived; None for a loop of bases or a malformed name."""
    ref_s = str(ref)
    for _ in range(_MAX_DEPTH):
        try:
            if parse_side_by_side(ref_s) is not None or parse_pretrained(ref_s) is not None:
                return ref_s, True
        except UserError:
            return None
        base = _base_ref(Path(ref_s).expanduser())
        if base is None:
            return ref_s, False
        ref_s = base
    return None


def built_on_pretrained(ref: str | Path) -> bool:
    """Whether a model is a pretrained backbone (by name, or several side by side) or derived
    from one (a fine-tuned, whitened or adapted model whose chain of base models starts at
    one). False for trained autoencoders, baselines (`pixels`, `pca-N`) and unreadable folders.
    """
    root = _chain_root(ref)
    return root is not None and root[1]


def trained_images(ref: str | Path) -> int:
    """How many images the model at the start of `ref`'s chain of base models was trained on
    (`imgret train` records it in model.json as `train_images`); 0 for pretrained names,
    baselines, unreadable folders and model files written before it was recorded."""
    root = _chain_root(ref)
    if root is None or root[1]:
        return 0
    try:
        count = read_model_doc(Path(root[0]).expanduser()).get("train_images", 0)
    except UserError:
        return 0
    return count if isinstance(count, int) else 0


def describe(ref: str | Path, embedder: Embedder) -> dict[str, Any]:
    """The facts a collection records to refuse a different model later."""
    ref_s = canonical_ref(ref)
    return {
        "ref": ref_s,
        "name": getattr(embedder, "name", type(embedder).__name__),
        "embedding_dim": int(embedder.embedding_dim),
        "image_size": int(embedder.image_size),
        "channels": int(embedder.channels),
        "fingerprint": fingerprint(ref_s),
    }
