"""A tiny clustered collection for the web tests, built once per test session and shared.

The folder is the `image_folder` of conftest.py (the same generated classes), plus a wide
image (so that a thumbnail is really scaled down) and a symlink that points out of the folder
to an image elsewhere: it decodes, so it is embedded, and the server must still refuse it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, pattern_image

__all__ = ["WebCollection", "shared_web_collection"]


@dataclass(frozen=True)
class WebCollection:
    collection: Path  # the collection folder (clustered)
    photos: Path  # the folder it was embedded from
    model: Path
    query: Path  # a copy of photos/stripes/03.png outside the collection
    query_name: str  # its name in the collection: the expected first result
    outside: Path  # the image the symlink photos/red/leak.png points to


_built: dict[Path, WebCollection] = {}


def shared_web_collection(tmp_path_factory: pytest.TempPathFactory) -> WebCollection:
    """Train (16 px, 32-d, 2 epochs), embed and cluster once per session (about 10 s)."""
    base = tmp_path_factory.getbasetemp()
    if base not in _built:
        _built[base] = _build(tmp_path_factory.mktemp("web"))
    return _built[base]


def _build(root: Path) -> WebCollection:
    from imgret.jobs.cluster import cluster
    from imgret.jobs.index import embed
    from imgret.jobs.train import train
    from imgret.training.config import TrainConfig

    rng = np.random.default_rng(0)
    photos = root / "photos"
    for cls in CLASSES:
        folder = photos / ("more" if cls == "disc" else "") / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(6):
            pattern_image(cls, rng).save(folder / f"{i:02d}.png")
    (photos / "big").mkdir()
    pattern_image("red", rng, size=200).resize((320, 200)).save(photos / "big" / "wide.jpg")
    (photos / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0not a jpeg at all")
    (photos / "blue" / "empty.png").write_bytes(b"")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    outside = elsewhere / "secret.png"
    pattern_image("blue", rng).save(outside)
    (photos / "red" / "leak.png").symlink_to(outside)
    queries = root / "queries"
    queries.mkdir()
    query = queries / "query.png"
    shutil.copyfile(photos / "stripes" / "03.png", query)

    model, coll = root / "model", root / "collection"
    overrides = {"image_size": 16, "embedding_dim": 32, "width": 8}
    tc = TrainConfig(objective="reconstruction", epochs=2, workers=0, seed=0)
    log = lambda _: None  # noqa: E731
    train(photos, model, train_config=tc, overrides=overrides, progress=False, log=log)
    embed(model, photos, coll, workers=0, progress=False, log=log)
    cluster(coll, k_max=8, progress=False)
    return WebCollection(coll, photos, model, query, "stripes/03.png", outside)
