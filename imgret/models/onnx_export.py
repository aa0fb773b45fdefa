"""Exporting an embedding model to ONNX, and quantising it to int8 (ONNX Runtime).

Every model kind offers `embedding_graph()`: an nn.Module computing its embedding without
inference mode. `export_onnx` traces it with torch's exporter (torch.export, opset 18; the
TorchScript exporter, opset 17, when that fails), with the uint8 -> float / 255 conversion of
the data loader inside the graph, verifies the file against PyTorch (cosine >= 0.9999 on a
test batch) and writes it atomically. imgret.models.backend decides when and where.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.atomic import atomic_path
from .onnx_runtime import INPUT_NAME, OUTPUT_NAME, OnnxEmbedder

__all__ = ["export_onnx", "quantize_int8", "UInt8Input"]

DYNAMO_OPSET = 18  # the dynamo exporter's native opset
TORCHSCRIPT_OPSET = 17
_EXPORTERS = ("auto", "dynamo", "torchscript")


class UInt8Input(nn.Module):
    """(B, C, S, S) uint8 -> inner(x.float() / 255): the data loader's conversion, in the graph."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(torch.float32) / 255.0)


def _save(model: Any, path: Path) -> Path:
    """onnx.save through imgret's atomic write (temp file beside it, fsync, rename)."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def _export_to(
    module: nn.Module, example: torch.Tensor, out: Path, exporter: str, opset: int | None
) -> str:
    """Export with one exporter to `out`; returns a description such as 'dynamo/opset18'."""
    if exporter == "dynamo":
        opset = opset or DYNAMO_OPSET
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        quiet = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # LeafSpec deprecation inside torch
                torch.onnx.export(
                    module, (example,), str(out), dynamo=True, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: batch},), external_data=False, verbose=False,
                )  # fmt: skip
        finally:
            quiet.setLevel(level)
    else:
        opset = opset or TORCHSCRIPT_OPSET
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DeprecationWarning, TracerWarnings on shape checks
            torch.onnx.export(
                module, (example,), str(out), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )  # fmt: skip
    return f"{exporter}/opset{opset}"


def export_onnx(
    module: nn.Module,
    path: Path,
    *,
    image_size: int,
    channels: int,
    exporter: str = "auto",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export `module` ((B, C, S, S) float32 in [0, 1] -> (B, D) float32) to an ONNX file.

    The graph's input is (B, C, S, S) uint8 (0..255; the graph does `x.float() / 255` first,
    as imgret's data loader does), its batch axis dynamic. The file is checked against PyTorch
    (RuntimeError when an embedding's cosine is below 0.9999) and written atomically, weights
    inline. exporter : "dynamo" (torch.export, opset 18), "torchscript" (opset 17), or "auto"
    (dynamo, then torchscript). Returns `path`.
    """
    import onnx

    if exporter not in _EXPORTERS:
        raise ValueError(f"exporter must be one of {_EXPORTERS}, got {exporter!r}")
    path = Path(path)
    graph = UInt8Input(module.eval()).eval()
    gen = torch.Generator().manual_seed(0)
    shape = (2, channels, image_size, image_size)  # batch 2: torch.export specialises 0 and 1
    example = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        tmp = Path(scratch) / "model.onnx"
        with torch.no_grad():
            expected = graph(example).float().numpy()
            for i, name in enumerate(order):
                try:
                    how = _export_to(graph, example, tmp, name, None)
                    break
                except Exception:
                    if i == len(order) - 1:
                        raise
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        onnx.helper.set_model_props(model, {
            "imgret.image_size": str(image_size),
            "imgret.channels": str(channels),
            "imgret.embedding_dim": str(expected.shape[1]),
            "imgret.exporter": f"torch {torch.__version__} {how}",
            **(metadata or {}),
        })  # fmt: skip
        onnx.save(model, str(tmp))
        got = OnnxEmbedder(tmp, threads=1).embed_uint8(example.numpy())
        cos = _row_cosines(got, expected)
        if cos.min() < 0.9999:
            raise RuntimeError(
                f"exported model disagrees with PyTorch: cosine {cos.min():.6f} < 0.9999 ({how})"
            )
        return _save(model, path)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(1) / (na * nb)




class _Batches:
    """onnxruntime.quantization.CalibrationDataReader over a list of input batches."""

    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self.batches = iter(batches)
        self.name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: np.ascontiguousarray(batch)}


def quantize_int8(src: Path, dst: Path, calibration: list[np.ndarray]) -> Path:
    """Static int8 (QDQ) copy of an exported graph, calibrated on (B, C, S, S) uint8 batches.

    Activation ranges by min/max over the calibration images (about 100 of the collection's
    are plenty), per-channel weight scales (needed by depthwise convolutions); the first and
    the last convolution stay float (measured best for EfficientNet-Lite0), as do GeM's power
    and mean and the L2 normalisation. Written atomically to `dst`; returns it.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as scratch:
        pre, out = Path(scratch) / "pre.onnx", Path(scratch) / "int8.onnx"
        # ORT's symbolic shape inference fails on F.normalize's Expand; ONNX's own suffices.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
        quantize_static(
            str(pre), str(out), _Batches(INPUT_NAME, calibration),
            nodes_to_exclude=convs[:1] + convs[-1:], quant_format=QuantFormat.QDQ,
            per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
        model = onnx.load(str(out))
        props = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
        onnx.helper.set_model_props(model, {**props, "imgret.quantization": "static-qdq-int8"})
        return _save(model, dst)
