"""Label-free adaptation: view embeddings, the contrastive head, its model folder (imgret adapt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_model

from imgret.cli import main
from imgret.core.errors import UserError
from imgret.data.sources import open_source
from imgret.models import registry
from imgret.models.embed import embed_files
from imgret.training.adapt import (
    AdaptConfig,
    adapt,
    info_nce,
    neighbour_table,
    train_adapt_head,
    view_ref,
)
from imgret.training.views import ViewConfig, embed_views


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Tiny matrices: one thread is faster, and much faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_info_nce_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each row's positive is itself (similarity 1), its negative orthogonal (0); temperature 1
    expected = float(-np.log(np.e / (np.e + 1)))
    assert float(info_nce(a, a, 1.0)) == pytest.approx(expected, rel=1e-5)
    assert float(info_nce(a, a, 0.01)) < 1e-6  # a sharp softmax: almost no loss


def test_neighbour_table_leaves_each_row_out() -> None:
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.2]], np.float32)
    table = neighbour_table(x, 2)
    assert table.shape == (5, 2)
    assert not (table == np.arange(5)[:, None]).any()
    assert set(table[2].tolist()) == {3, 4}  # row 2's nearest: 3, then 4 (closer than 0 and 1)
    assert table[0, 0] == 1


def _clusters(rng: np.random.Generator, n_per: int, views: int) -> tuple[np.ndarray, ...]:
    """3 kinds of images in 32-d; a view is its image plus noise; dims 0-7 are shared noise."""
    centres = rng.normal(0, 1, (3, 32)).astype(np.float32)
    centres[:, :8] = 0
    y = np.repeat(np.arange(3), n_per)
    clean = centres[y] + rng.normal(0, 0.6, (len(y), 32)).astype(np.float32)
    clean[:, :8] += rng.normal(0, 3, (len(y), 8)).astype(np.float32)
    v = clean[:, None] + rng.normal(0, 0.3, (len(y), views, 32)).astype(np.float32)
    return clean, v / np.linalg.norm(v, axis=2, keepdims=True), y


def _precision_at_5(z: np.ndarray, y: np.ndarray) -> float:
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    np.fill_diagonal(s, -np.inf)
    return float((y[np.argsort(-s, axis=1)[:, :5]] == y[:, None]).mean())


def test_head_learns_what_views_and_neighbours_share(one_thread: None) -> None:
    rng = np.random.default_rng(0)
    clean, views, y = _clusters(rng, 60, 3)
    cfg = AdaptConfig(steps=120, batch_size=64, hidden=64, neighbors=5, temperature=0.2)
    head, losses = train_adapt_head(clean, views, cfg)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    with torch.inference_mode():
        adapted = head(torch.from_numpy(clean)).numpy()
    assert np.allclose(np.linalg.norm(adapted, axis=1), 1.0, atol=1e-5)
    assert _precision_at_5(adapted, y) > _precision_at_5(clean, y)
    again, _ = train_adapt_head(clean, views, cfg)  # the same seed, the same head
    for p, q in zip(head.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(UserError):
        train_adapt_head(clean[:1], views[:1], cfg)


def test_head_takes_its_pseudo_positives_from_a_given_table(one_thread: None) -> None:
    """`neighbours` replaces the table of nearest rows in `clean`: given that same table, the
    same head; given a table of rows of the same cluster, a better one than from rows of
    other clusters."""
    rng = np.random.default_rng(1)
    clean, views, y = _clusters(rng, 60, 2)
    cfg = AdaptConfig(steps=60, batch_size=64, hidden=32, neighbors=5, neighbor_p=1.0)
    default, _ = train_adapt_head(clean, views, cfg)
    given, _ = train_adapt_head(clean, views, cfg, neighbours=neighbour_table(clean, 5))
    for p, q in zip(default.parameters(), given.parameters(), strict=True):
        assert torch.equal(p, q)
    order = np.argsort(y, kind="stable")  # rows grouped by cluster, 60 per cluster
    same = np.empty((len(y), 5), np.int64)
    other = np.empty((len(y), 5), np.int64)
    for i in range(len(y)):
        same[i] = rng.choice(order[y[order] == y[i]], 5)
        other[i] = rng.choice(order[y[order] != y[i]], 5)
    scores = {}
    for name, table in (("same", same), ("other", other)):
        head, _ = train_adapt_head(clean, views, cfg, neighbours=table)
        with torch.inference_mode():
            scores[name] = _precision_at_5(head(torch.from_numpy(clean)).numpy(), y)
    assert scores["same"] > scores["other"] + 0.03, scores


def test_views_are_cached_and_reused(image_folder: Path, tmp_path: Path) -> None:
    model = registry.load(make_tiny_model(tmp_path / "tiny"))
    source = open_source(image_folder)
    cfg = ViewConfig(views=2)
    cache = tmp_path / "views"
    first = embed_views(model, source, cfg, cache=cache, progress=False)
    assert first.shape == (len(source), 2, model.embedding_dim)
    bad = np.isnan(first).any(axis=(1, 2))
    assert bad.sum() == 3  # corrupt.jpg, empty.png and the text file named fake.png
    assert np.allclose(np.linalg.norm(first[~bad], axis=2), 1.0, atol=1e-3)
    assert not np.allclose(first[~bad, 0], first[~bad, 1])  # two different views
    stamp = {p: p.stat().st_mtime_ns for p in cache.glob("views-*.npy")}
    again = embed_views(model, source, cfg, cache=cache, progress=False)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("views-*.npy")} == stamp
    np.testing.assert_allclose(again[~bad], first[~bad], atol=1e-3)  # float16 on disk
    logs: list[str] = []
    other = embed_views(model, source, ViewConfig(views=2, seed=1), cache=cache,
                        progress=False, log=logs.append)  # fmt: skip
    assert logs and not np.allclose(other[~bad], first[~bad])


def test_adapt_writes_a_model_that_loads_and_embeds(image_folder: Path, tmp_path: Path) -> None:
    base = make_tiny_model(tmp_path / "tiny")
    cfg = AdaptConfig(views=ViewConfig(views=2), steps=30, batch_size=16, hidden=32, neighbors=3)
    out = adapt(base, image_folder, tmp_path / "adapted", config=cfg, progress=False)
    assert out.n_images == 24 and len(out.losses) == 30
    assert {Path(k).name for k, _ in out.skipped} == {"corrupt.jpg", "empty.png", "fake.png"}
    doc = json.loads((tmp_path / "adapted" / "model.json").read_text())
    assert doc["kind"] == "adapted-head" and doc["adapt"]["neighbors"] == 3
    assert doc["base"]["ref"] == str(base.resolve())
    model = registry.load(tmp_path / "adapted")
    assert model.name == "adapted-head" and model.embedding_dim == 16
    files = sorted((image_folder / "red").glob("*.png"))[:3]
    emb = embed_files(model, files)
    assert emb.shape == (3, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    reloaded = embed_files(registry.load(tmp_path / "adapted"), files)
    np.testing.assert_array_equal(emb, reloaded)  # saved and loaded: the same embeddings
    # the collection's model check covers the head and its base
    assert registry.fingerprint(tmp_path / "adapted") is not None


def test_adapt_cli(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "cli"
    assert main(["adapt", str(base), str(image_folder), "--out", str(out), "--views", "2",
                 "--steps", "5", "--neighbors", "2"]) == 0  # fmt: skip
    assert "adapted to 24 images" in capsys.readouterr().out
    assert registry.load(out).embedding_dim == 16
    (out / "head.safetensors").unlink()
    assert main(["evaluate", str(out), str(image_folder)]) == 2  # a clear error, no traceback
    assert "head.safetensors is missing" in capsys.readouterr().err
    assert main(["adapt", str(base), str(tmp_path / "nothing"), "--out", str(out)]) == 2


def testview_ref_shrinks_every_pretrained_part(tmp_path: Path) -> None:
    assert view_ref("efficientnet-lite2", 160) == "efficientnet-lite2@160:gem"
    assert view_ref("efficientnet-lite0@224:avg", None) == "efficientnet-lite0@224:avg"
    assert view_ref("efficientnet-lite0+efficientnet-lite2:avg", 128) == (
        "efficientnet-lite0@128:gem+efficientnet-lite2@128:avg"
    )
    folder = make_tiny_model(tmp_path / "tiny")
    assert view_ref(str(folder), 160) == str(folder)  # a trained model embeds views as it is


def test_adapt_on_models_side_by_side(image_folder: Path, tmp_path: Path) -> None:
    """Views of a side-by-side base go through every part at the view side; the adapted model
    keeps the base's width and, built on pretrained backbones, re-ranks by default."""
    base = "efficientnet-lite0@160+efficientnet-lite0@192:avg"
    cfg = AdaptConfig(views=ViewConfig(views=1), view_size=128, steps=3, batch_size=8, hidden=16)
    adapt(base, image_folder, tmp_path / "a", config=cfg, progress=False)
    doc = json.loads((tmp_path / "a" / "model.json").read_text())
    assert doc["view_ref"] == "efficientnet-lite0@128:gem+efficientnet-lite0@128:avg"
    assert doc["base"]["ref"] == "efficientnet-lite0@160:gem+efficientnet-lite0@192:avg"
    assert registry.load(tmp_path / "a").embedding_dim == 2560
    assert registry.built_on_pretrained(tmp_path / "a")
