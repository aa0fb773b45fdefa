"""imgret: unsupervised content-based image retrieval.

The stages, each one call (see `imgret.pipeline`)::

    from imgret import pipeline
    pipeline.train("photos/", "model")
    pipeline.embed("model", "photos/", "collection")
    pipeline.cluster("collection")
    results = pipeline.search("collection", ["query.jpg"], k=10, mode="exact")

Submodules are imported on use, so `import imgret` is instant.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make FAISS up to ~80x slower when the cores are shared
# with other processes (measured on this project's 2-core machine); waiting passively costs
# little when they are not. It must be set before the OpenMP runtime starts (torch and faiss
# both load one), hence here, before any submodule imports them, unless the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["__version__"]
