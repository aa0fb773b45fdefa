"""Running a model at the speed of the hardware: ONNX Runtime on CPU, PyTorch on CUDA.

`load_for_inference(ref, settings)` is what every stage that embeds calls (index, search,
evaluate, the web app): the model from the registry, run by

    torch  PyTorch eager (the model as loaded)
    onnx   ONNX Runtime: the model's `embedding_graph()` exported once to ONNX and cached in
           the user's cache folder (IMGRET_CACHE_DIR, else $XDG_CACHE_HOME/imgret, else
           ~/.cache/imgret), keyed by everything that makes its embeddings (reference, weights'
           fingerprint, input size, torch and imgret versions)
    auto   onnx on the CPU when onnxruntime is installed and the model can be exported; torch
           otherwise (CUDA, a model kind without a graph, or a failed export: one warning)

The default is $IMGRET_BACKEND when set, else auto.
The backend changes speed, never the embedding (cosine >= 0.9999 to PyTorch, checked at
export), and is stored nowhere in a collection. `quantize` runs an int8 copy of the graph,
calibrated on images of the folder being embedded (see BENCHMARKS.md for its speed and mAP).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import UserError
from ..core.threads import apply_threads, cpu_count, inference_threads
from . import registry
from .base import Embedder

__all__ = [
    "InferenceSettings", "load_for_inference", "cache_dir", "default_backend", "BACKENDS",
    "OnnxBacked",
]  # fmt: skip

BACKENDS = ("auto", "torch", "onnx")
# (image side, channels) -> (B, C, S, S) uint8 batches of typical images, for int8 calibration
Calibration = Callable[[int, int], list[np.ndarray]]
EXPORT_VERSION = 1  # bump when the exported graphs change: old cache entries are not reused


def default_backend() -> str:
    """$IMGRET_BACKEND when set (auto, torch or onnx), else "auto"."""
    return os.environ.get("IMGRET_BACKEND") or "auto"


@dataclass(frozen=True)
class InferenceSettings:
    backend: str = field(default_factory=default_backend)  # "auto", "torch" or "onnx"
    device: str = "cpu"  # "cpu" or "cuda" (CUDA runs PyTorch)
    threads: int | None = None  # inference threads (None: every core)
    quantize: bool = False  # int8 ONNX graph (static, calibrated on the images embedded)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads must be 1 or more, got {self.threads}")


def cache_dir() -> Path:
    """The user's cache folder of imgret (exported ONNX graphs live in its onnx/)."""
    if os.environ.get("IMGRET_CACHE_DIR"):
        return Path(os.environ["IMGRET_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imgret"


class OnnxBacked:
    """A model run by ONNX Runtime; the same contract (and name) as the PyTorch model."""

    backend = "onnx"

    def __init__(self, session: Any) -> None:
        self.session = session  # imgret.models.onnx_runtime.OnnxEmbedder
        self.name = session.model_name  # the PyTorch model's, recorded at export
        self.image_size = int(session.image_size)
        self.channels = int(session.channels)
        self.embedding_dim = int(session.embedding_dim)

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) float in [0, 1] or uint8 -> (B, dim) float32 (CPU)."""
        return self.session.embed_batch(x)  # type: ignore[no-any-return]

    def embed_uint8(self, images: np.ndarray) -> np.ndarray:
        """(B, C, S, S) uint8 -> (B, dim) float32: the loader's batches, passed straight in."""
        return self.session.embed_uint8(images)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"OnnxBacked({self.name}, {self.session!r})"


def _onnx_available() -> bool:
    """onnxruntime and onnx are installed (found, not imported: `import onnx` takes seconds)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def _cache_key(ref: str, quantize: bool) -> str:
    """What the exported graph depends on, hashed: a changed model gets a new file."""
    canonical = registry.canonical_ref(ref)
    weights = registry.fingerprint(canonical) or _pretrained_stamp(canonical)
    facts = {"ref": canonical, "weights": weights, "torch": torch.__version__,
             "export": EXPORT_VERSION, "quantize": quantize}  # fmt: skip
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def _pretrained_stamp(ref: str) -> str:
    """Size and mtime of a pretrained model's weights file (it has no fingerprint); of each
    part's, side by side."""
    from .pretrained import weights_path

    one = registry.parse_pretrained(ref)
    parts = registry.parse_side_by_side(ref) or ([one] if one is not None else [])
    stamps = []
    for name, _, _ in parts:
        st = weights_path(name).stat()
        stamps.append(f"{st.st_size}:{st.st_mtime_ns}")
    return registry.SEPARATOR.join(stamps)


def _warn(message: str) -> None:
    print(f"imgret: warning: {message}", file=sys.stderr)


def load_for_inference(
    ref: str | Path,
    settings: InferenceSettings | None = None,
    *,
    calibration: Calibration | None = None,
    warn: Callable[[str], None] = _warn,
) -> Embedder:
    """The model `ref` names, ready to embed with the backend of `settings`.

    A cached ONNX graph is run without building the PyTorch model at all (start-up time).
    calibration : with `settings.quantize`, (image side, channels) -> a few (B, C, S, S)
        uint8 batches of typical images to calibrate the int8 graph on
    """
    settings = settings or InferenceSettings()
    threads = inference_threads(settings.threads)
    apply_threads(threads)  # PyTorch runs the model (FAISS shares the pool)
    if settings.backend == "torch" or (settings.backend == "auto" and settings.device != "cpu"):
        return registry.load(ref, device=settings.device)
    if settings.device != "cpu":
        raise UserError("--backend onnx runs on the CPU; use --backend torch on CUDA")
    if not _onnx_available():
        if settings.backend == "onnx":
            raise UserError(
                "--backend onnx needs the onnx and onnxruntime packages (pip install onnx "
                "onnxruntime)"
            )
        return registry.load(ref)
    from .onnx_runtime import OnnxEmbedder

    folder = cache_dir() / "onnx"
    path = folder / f"{_cache_key(str(ref), settings.quantize)}.onnx"
    if not path.is_file():
        model = registry.load(ref)
        if not hasattr(model, "embedding_graph"):
            if settings.backend == "onnx":
                raise UserError(f"{ref}: this kind of model cannot run with ONNX Runtime")
            return model
        try:
            _export(str(ref), model, path, settings.quantize, calibration)
        except Exception as e:  # noqa: BLE001 - any export failure falls back, with one warning
            warn(f"cannot run {ref} with ONNX Runtime ({type(e).__name__}: {e}); using PyTorch")
            return model
    try:
        session = OnnxEmbedder(path, threads=threads)
    except Exception as e:  # noqa: BLE001 - a damaged cache file: drop it, use PyTorch this time
        path.unlink(missing_ok=True)
        warn(f"{path}: unreadable ONNX graph, removed ({type(e).__name__}); using PyTorch")
        return registry.load(ref)
    apply_threads(cpu_count())  # ONNX Runtime has its own pool; FAISS and numpy get all cores
    return OnnxBacked(session)


def _export(
    ref: str, model: Any, path: Path, quantize: bool, calibration: Calibration | None
) -> None:
    """Export `model` to `path` (via its float graph, cached too, when quantising)."""
    from .onnx_export import export_onnx, quantize_int8

    float_path = path.with_name(f"{_cache_key(ref, False)}.onnx") if quantize else path
    if not float_path.is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(
                model.embedding_graph(), float_path, image_size=int(model.image_size),
                channels=int(model.channels), metadata={
                    "imgret.ref": registry.canonical_ref(ref), "imgret.name": str(model.name),
                },
            )  # fmt: skip
    if quantize:
        if calibration is None:
            raise UserError("--quantize needs images to calibrate on")
        quantize_int8(float_path, path, calibration(int(model.image_size), int(model.channels)))
