"""FAISS index kinds, the cluster mode as IVF, the index following changes, query variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import rank

from imgret.core.clustering import fit_kmeans
from imgret.core.errors import UserError
from imgret.core.vectors import normalize, top_k
from imgret.retrieval.duplicates import find_duplicates
from imgret.retrieval.queries import search_items
from imgret.retrieval.results import resolve_items
from imgret.retrieval.searcher import Searcher
from imgret.store.collection import Collection
from imgret.store.index_files import IndexSettings, choose_kind, ivf_lists, plan_index
from imgret.store.metadata import Item
from imgret.store.opening import create_collection, open_collection, upgrade_collection

MODEL = {"ref": "m", "name": "x", "embedding_dim": 32, "image_size": 8, "channels": 1}


def _data(n: int = 3000, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors around 30 random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, dim))
    x = centres[rng.integers(0, 30, n)] + 0.5 * rng.normal(size=(n, dim))
    return normalize(x.astype(np.float32))


def _make(tmp_path: Path, x: np.ndarray, kind: str = "auto", name: str = "c", **kw) -> Collection:
    return create_collection(
        tmp_path / name, model=MODEL, source="s", keys=[f"k{i}" for i in range(len(x))],
        labels=[None] * len(x), embeddings=x, settings=IndexSettings(kind=kind, **kw),
    )  # fmt: skip


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def test_kind_by_size_and_ivf_lists_by_hand() -> None:
    assert [choose_kind(n) for n in (100, 20_000, 20_001, 300_000, 300_001)] == [
        "flat", "flat", "ivf", "ivf", "ivfsq"
    ]  # fmt: skip
    assert choose_kind(10, IndexSettings(kind="hnsw")) == "hnsw"
    # 4 sqrt(n) rounded to a power of two, with >= 39 points a list
    assert [ivf_lists(n) for n in (1_000_000, 100_000, 3000, 100)] == [4096, 1024, 64, 2]
    assert plan_index("ivfpq", 1_000_000, 512).factory == "PCA64,IVF4096,PQ32x4fs"
    assert plan_index("ivfsq", 100_000, 32).factory == "IVF1024,SQ8"
    assert plan_index("ivf", 1_000_000, 512).nprobe == 64  # sqrt(nlist)
    with pytest.raises(ValueError):
        IndexSettings(kind="lsh")


@pytest.mark.parametrize(("kind", "least_recall"), [
    ("flat", 1.0), ("ivf", 0.9), ("hnsw", 0.95), ("ivfsq", 0.9), ("ivfpq", 0.85),
])  # fmt: skip
def test_each_index_kind_against_exact(tmp_path: Path, kind: str, least_recall: float) -> None:
    x = _data()
    coll = _make(tmp_path, x, kind)
    meta = json.loads((tmp_path / "c" / "index.json").read_text())
    assert meta["kind"] == kind and (tmp_path / "c" / meta["file"]).exists()
    queries = _data(200, seed=1)
    _, truth, _ = rank(coll, queries, 10, "exact")
    scores, found, _ = rank(coll, queries, 10, "index")
    assert _recall(found, truth) >= least_recall
    # Scores are exact cosines of the ids found, best first.
    cos = np.einsum("qd,qkd->qk", queries, coll.embeddings[found])
    assert np.allclose(scores, cos, atol=1e-4) and np.all(np.diff(scores, axis=1) <= 1e-6)
    if kind.startswith("ivf"):  # every list scanned: the candidates are all there
        _, full, _ = rank(coll, queries, 10, "index", nprobe=10_000)
        assert _recall(full, truth) >= (1.0 if kind == "ivf" else 0.97)
    again = open_collection(tmp_path / "c")
    assert np.array_equal(rank(again, queries, 10, "index")[1], found)


def test_a_flat_index_is_searched_where_the_embeddings_lie(tmp_path: Path) -> None:
    """Index mode over a flat index ranks the memory-mapped chunks (as FAISS's flat index
    would); a service maps the flat index read-only instead of loading its vectors."""
    import faiss

    x = _data(500)
    _make(tmp_path, x, "flat")
    queries = _data(20, seed=2)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    want_s, want_i = flat.search(queries, 10)
    scores, ids, _ = rank(open_collection(tmp_path / "c"), queries, 10, "index")
    assert np.array_equal(ids, want_i) and np.allclose(scores, want_s, atol=1e-5)
    served = open_collection(tmp_path / "c")
    loaded = served.map_index()
    assert loaded is not None and served.index is loaded and loaded.index.ntotal == 500
    assert np.array_equal(rank(served, queries, 10, "index")[1], want_i)
    more = _data(10, seed=3)
    served.append(more, [Item(f"n{i}", -1, None, None, None, None) for i in range(10)])
    assert served.refresh_index() == "updated"  # read anew: FAISS aborts adding to a mapping
    assert open_collection(tmp_path / "c").index.index.ntotal == 510  # type: ignore[union-attr]


def _brute_force_cluster(coll: Collection, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The cluster mode as it was before IVF: mask everything outside the query's cluster."""
    c = coll.clustering
    assert c is not None
    d = ((q[:, None, :] - c.centroids[None]) ** 2).sum(-1)
    mine = np.argmin(d, axis=1)
    sims = q @ coll.embeddings.T
    sims = np.where(c.assignments[None, :] != mine[:, None], -np.inf, sims)
    return top_k(sims, k)


def test_cluster_mode_is_ivf_over_the_users_centroids(tmp_path: Path) -> None:
    x = _data(1000)
    coll = _make(tmp_path, x)
    coll.save_clustering(fit_kmeans(x, 12, seed=0))
    queries = _data(100, seed=2)
    scores, ids, clusters = rank(coll, queries, 15, "cluster")
    want_scores, want_ids = _brute_force_cluster(coll, queries, 15)
    assert np.array_equal(ids, want_ids)
    assert np.allclose(scores[ids >= 0], want_scores[want_ids >= 0], atol=1e-5)
    assert clusters is not None
    assert all(
        set(coll.clustering.assignments[i[i >= 0]]) == {c}
        for i, c in zip(ids, clusters, strict=True)
    )
    # nprobe = K searches every cluster: exact search.
    _, all_ids, _ = rank(coll, queries, 15, "cluster", nprobe=12)
    assert np.array_equal(all_ids, rank(coll, queries, 15, "exact")[1])


def test_new_items_get_their_nearest_cluster(tmp_path: Path) -> None:
    x = _data(500)
    coll = _make(tmp_path, x[:400])
    coll.save_clustering(fit_kmeans(x[:400], 5, seed=0))
    coll.append(x[400:], [Item(f"n{i}", -1, None, None, None, None) for i in range(100)])
    c = open_collection(tmp_path / "c").clustering
    assert c is not None and len(c.assignments) == 500
    d = ((x[400:, None, :] - c.centroids[None]) ** 2).sum(-1)
    assert np.array_equal(c.assignments[400:], np.argmin(d, axis=1))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_search_stays_current_while_the_index_lags(tmp_path: Path, kind: str) -> None:
    x = _data(2000)
    coll = _make(tmp_path, x[:1500], kind)
    coll.remove_keys([f"k{i}" for i in range(0, 1500, 3)])  # index not refreshed yet
    coll.append(x[1500:], [Item(f"new{i}", -1, None, None, None, None) for i in range(500)])
    coll = open_collection(tmp_path / "c")
    add, drop = coll.index_delta()
    assert (len(add), len(drop)) == (500, 500)
    queries = _data(100, seed=3)
    _, truth, _ = rank(coll, queries, 10, "exact")
    _, found, _ = rank(coll, queries, 10, "index", nprobe=10_000)
    assert _recall(found, truth) >= 0.95  # removed ones filtered, new ones found
    assert coll.refresh_index() in ("updated", "rebuilt")
    assert coll.index_delta()[0].size == 0
    _, found, _ = rank(open_collection(tmp_path / "c"), queries, 10, "index",
                                    nprobe=10_000)  # fmt: skip
    assert _recall(found, truth) >= 0.95
    files = sorted(p.name for p in (tmp_path / "c").glob("index-*"))
    assert len(files) == 2  # the previous generation's files are gone


def test_query_by_item_and_duplicates(tmp_path: Path) -> None:
    x = _data(300)
    x[7] = x[100]  # an exact copy
    coll = _make(tmp_path, x)
    assert resolve_items(coll, ["k7", "100"]) == [7, 100]
    result = search_items(Searcher(coll), [7], k=3)[0]
    assert (
        result.query == "k7"
        and result.hits[0].key == "k100"
        and 7 not in [h.id for h in result.hits]
    )
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-5)
    pairs = find_duplicates(Searcher(coll), 0.9999)
    assert [(p.a, p.b) for p in pairs] == [(7, 100)]
    with pytest.raises(Exception, match="not in"):
        resolve_items(coll, ["nope"])


def test_a_format_1_collection_is_upgraded_by_writers_only(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    emb = _data(20)
    np.save(old / "embeddings.npy", emb)
    (old / "items.json").write_text(json.dumps({"keys": [f"k{i}" for i in range(20)],
                                                "labels": ["a"] * 20}))  # fmt: skip
    (old / "collection.json").write_text(json.dumps({
        "format": "imgret-collection", "version": 1, "model": MODEL, "source": "s",
        "metric": "cosine", "count": 20, "dim": 32, "skipped": [],
    }))  # fmt: skip
    with pytest.raises(UserError, match="imgret index"):
        open_collection(old)  # a read never rewrites the files
    assert json.loads((old / "collection.json").read_text())["version"] == 1
    coll = upgrade_collection(old)
    assert len(coll) == 20 and coll.labels == ["a"] * 20 and np.allclose(coll.embeddings, emb)
    assert json.loads((old / "collection.json").read_text())["version"] == 2
    assert not (old / "embeddings.npy").exists()
    assert len(open_collection(old)) == 20
