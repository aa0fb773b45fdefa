"""An ONNX Runtime session standing in for an embedding model on the CPU (imgret.models.backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OnnxEmbedder", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


class OnnxEmbedder:
    """An ONNX Runtime session that stands in for an imgret embedder (CPU).

    path : an .onnx file written by `export_onnx` (or a quantised copy of one)
    threads : intra-op threads (None: torch.get_num_threads(), what imgret set for torch)
    spinning : let idle ORT worker threads busy-wait (ORT's default); off by default: it was
        5-60 % faster with decode workers beside it on 2 cores (/tmp measurement, issue 12)
    optimized_model_path : where ORT may save the optimised graph (for inspection)

    Session: CPUExecutionProvider, ORT_ENABLE_ALL, sequential execution, inter_op 1 thread.
    Attributes: path, image_size, channels, embedding_dim, input_dtype ("float32"/"uint8").
    """

    def __init__(
        self,
        path: Path | str,
        *,
        threads: int | None = None,
        spinning: bool = False,
        optimized_model_path: Path | str | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = int(threads if threads is not None else torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if optimized_model_path is not None:
            so.optimized_model_filepath = str(optimized_model_path)
        self.threads = so.intra_op_num_threads
        self.session = ort.InferenceSession(
            str(self.path), sess_options=so, providers=["CPUExecutionProvider"]
        )
        (inp,) = self.session.get_inputs()
        (out,) = self.session.get_outputs()
        self._input_name, self._output_name = inp.name, out.name
        types = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}
        if inp.type not in types or len(inp.shape) != 4 or len(out.shape) != 2:
            raise ValueError(
                f"{self.path}: expected one (B, C, S, S) float32/uint8 input and one (B, D) "
                f"output, got {inp.type} {inp.shape} -> {out.type} {out.shape}"
            )
        self.input_dtype = types[inp.type]
        _, c, h, w = inp.shape
        meta = self.session.get_modelmeta().custom_metadata_map
        self.channels = int(meta.get("imgret.channels", c))
        self.image_size = int(meta.get("imgret.image_size", h))
        dim = out.shape[1]
        self.embedding_dim = int(
            meta.get("imgret.embedding_dim", dim if isinstance(dim, int) else 0)
        )
        self.name = f"onnx:{self.path.name}"
        self.model_name = meta.get("imgret.name", self.name)  # the exported model's kind

    def __repr__(self) -> str:
        return (
            f"OnnxEmbedder({str(self.path)!r}, input={self.input_dtype} "
            f"(B, {self.channels}, {self.image_size}, {self.image_size}), "
            f"embedding_dim={self.embedding_dim}, threads={self.threads})"
        )

    # torch-module look-alikes, so code that calls them on an embedder keeps working
    def eval(self) -> OnnxEmbedder:
        return self

    def to(self, device: Any = "cpu") -> OnnxEmbedder:
        if torch.device(device).type != "cpu":
            raise ValueError(f"OnnxEmbedder runs on the CPU only, not {device}")
        return self

    def _check(self, batch: np.ndarray) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if batch.ndim != 4 or batch.shape[1:] != want:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, want))}), "
                             f"got {batch.shape}")  # fmt: skip

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Feed an array already in the graph's input dtype."""
        if len(batch) == 0:
            return np.empty((0, self.embedding_dim), np.float32)
        out = self.session.run([self._output_name], {self._input_name: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def embed_uint8(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, S, S) uint8 (0..255) -> (B, D) float32.

        Passed straight through to a uint8-input graph; for a float32 graph converted here
        exactly as imgret's loader does (float32 x / 255).
        """
        batch = np.ascontiguousarray(batch)
        if batch.dtype != np.uint8:
            raise TypeError(f"expected a uint8 array, got {batch.dtype}")
        self._check(batch)
        if self.input_dtype == "uint8":
            return self._run(batch)
        x = batch.astype(np.float32)
        np.divide(x, np.float32(255.0), out=x)
        return self._run(x)

    def embed_float(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, S, S) float in [0, 1] -> (B, D) float32.

        A uint8-input graph gets round(255 x): exact for images that came from 8-bit pixels
        (imgret's loader output), a rounding of at most 0.5/255 otherwise.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._check(batch)
        if self.input_dtype == "float32":
            return self._run(batch)
        x = np.clip(np.rint(batch * np.float32(255.0)), 0, 255).astype(np.uint8)
        return self._run(x)

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Like imgret's embed_batch: (B, C, S, S) float in [0, 1] (or uint8) -> (B, D) float32
        CPU tensor."""
        x = x.detach().cpu()
        if x.dtype == torch.uint8:
            out = self.embed_uint8(x.contiguous().numpy())
        elif x.is_floating_point():
            out = self.embed_float(x.to(torch.float32).contiguous().numpy())
        else:
            raise TypeError(f"expected float images in [0, 1] or uint8, got {x.dtype}")
        return torch.from_numpy(out)

    __call__ = embed_batch


