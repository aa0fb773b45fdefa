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

__version__ = "0.1.0"
__all__ = ["__version__"]
