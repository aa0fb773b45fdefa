"""--backend, --threads and --quantize: how a command runs its model (imgret.models.backend)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.backend import InferenceSettings

__all__ = ["add_inference_options", "inference_settings"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_inference_options(p: argparse.ArgumentParser, *, quantize: bool = True) -> None:
    g = p.add_argument_group("inference (speed only: the embeddings stay the same)")
    g.add_argument(
        "--backend", choices=("auto", "torch", "onnx"),
        help="auto: ONNX Runtime on the CPU when installed, PyTorch on CUDA; torch; onnx "
        "(default: $IMGRET_BACKEND, else auto)",
    )  # fmt: skip
    g.add_argument(
        "--threads", type=_positive, metavar="N",
        help="inference threads (default: every core)",
    )  # fmt: skip
    if quantize:
        g.add_argument(
            "--quantize", action="store_true",
            help="run an int8 copy of the model (ONNX Runtime; faster, slightly different "
            "embeddings: see BENCHMARKS.md)",
        )  # fmt: skip


def inference_settings(a: argparse.Namespace) -> InferenceSettings:
    """The InferenceSettings the options of `add_inference_options` ask for."""
    from ..models.backend import InferenceSettings, default_backend

    return InferenceSettings(
        backend=a.backend or default_backend(), device=getattr(a, "device", None) or "cpu",
        threads=a.threads, quantize=bool(getattr(a, "quantize", False)),
    )  # fmt: skip
