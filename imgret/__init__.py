"""imgret: unsupervised content-based image retrieval.

The public API, imported on first use (so `import imgret` is instant)::

    import imgret
    imgret.index_folder("photos/", "collection", model="efficientnet-lite0")
    collection = imgret.open_collection("collection")
    results = imgret.search("collection", ["query.jpg"], k=10)

The stages live in sub-packages (see docs/architecture.md): core, data, models, training,
store, retrieval, evaluation, jobs, viz, cli, web.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP threads that spin while waiting make FAISS up to ~80x slower when the cores are shared
# with other processes (measured on this project's 2-core machine); waiting passively costs
# little when they are not. It must be set before the OpenMP runtime starts (torch and faiss
# both load one), hence here, before any submodule imports them, unless the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "UserError": ("imgret.core.errors", "UserError"),
    "load_model": ("imgret.models.registry", "load"),
    "embed_files": ("imgret.models.embed", "embed_files"),
    "Whitening": ("imgret.models.whitening", "Whitening"),
    "TrainConfig": ("imgret.training.config", "TrainConfig"),
    "train": ("imgret.jobs.train", "train"),
    "Collection": ("imgret.store.collection", "Collection"),
    "open_collection": ("imgret.store.opening", "open_collection"),
    "create_collection": ("imgret.store.opening", "create_collection"),
    "index_folder": ("imgret.jobs.index", "index_folder"),
    "add_paths": ("imgret.jobs.index", "add_paths"),
    "remove_paths": ("imgret.jobs.index", "remove_paths"),
    "cluster": ("imgret.jobs.cluster", "cluster"),
    "Searcher": ("imgret.retrieval.searcher", "Searcher"),
    "ArrayVectors": ("imgret.retrieval.vector_set", "ArrayVectors"),
    "RerankConfig": ("imgret.retrieval.rerank", "RerankConfig"),
    "search": ("imgret.jobs.search", "search"),
    "evaluate": ("imgret.evaluation.evaluate", "evaluate"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'imgret' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
