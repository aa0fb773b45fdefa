"""Re-ranking (DBA + alpha-QE) switched on from `evaluate` and `search`, Python and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model, rank

from imgret.cli import build_parser, main
from imgret.cli.options import rerank_config
from imgret.core.errors import UserError
from imgret.evaluation.evaluate import evaluate, evaluate_embeddings, rerank_split
from imgret.retrieval.queries import search_items
from imgret.retrieval.rerank import RerankConfig, database_augmentation, query_expansion
from imgret.retrieval.searcher import Searcher
from imgret.store.collection import Collection
from imgret.store.opening import create_collection, open_collection

MODEL = {"ref": "m", "name": "x", "embedding_dim": 2, "image_size": 8, "channels": 1}


def _angles(*degrees: float) -> np.ndarray:
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


# Class a at -2, 0, 2 degrees; class b at 48, 50, 52 degrees plus one b outlier at 36 degrees;
# the query (class a) at 20 degrees: 16 degrees from the outlier, 18 from the nearest a.
BRIDGE_DB = _angles(-2, 0, 2, 36, 48, 50, 52)
BRIDGE_LABELS: list[str | None] = ["a", "a", "a", "b", "b", "b", "b"]
BRIDGE_QUERY = _angles(20)
# DBA with 3 neighbours moves the outlier to ~44 degrees (its two nearest are b at 48 and 50)
# and leaves the a images near 0; the query is then nearer all three a images, and alpha-QE
# over them pulls it further towards a.
BRIDGE = RerankConfig(dba_neighbors=3, qe_neighbors=2, alpha=3.0)


def _collection(path: Path, emb: np.ndarray, labels: list[str | None] | None = None) -> Collection:
    model = {**MODEL, "embedding_dim": emb.shape[1]}
    return create_collection(
        path, model=model, source="s", keys=[f"k{i}" for i in range(len(emb))],
        labels=labels or [None] * len(emb), embeddings=emb,
    )  # fmt: skip


def _full_rerank(
    db: np.ndarray, q: np.ndarray, config: RerankConfig, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """DBA + alpha-QE over the whole library, then exact ranking (own rows left out)."""
    q2, db2 = rerank_split(q, db, config, exclude=exclude)
    s = q2 @ db2.T
    if exclude is not None:
        s[np.arange(len(q)), exclude] = -np.inf
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- evaluate -------------------------------------------------------------------------------


def test_rerank_fixes_the_bridging_query_by_hand() -> None:
    plain = evaluate_embeddings(BRIDGE_QUERY, ["a"], BRIDGE_DB, BRIDGE_LABELS, map_ks=(3,))[0]
    # Ranks: outlier (b), then the three a images: AP = (1/2 + 2/3 + 3/4) / 3
    assert plain["mAP@all"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    q2, db2 = rerank_split(BRIDGE_QUERY, BRIDGE_DB, BRIDGE)
    assert np.degrees(np.arctan2(db2[3, 1], db2[3, 0])) == pytest.approx(44.4, abs=0.5)
    assert np.argsort(-(q2 @ db2.T)[0])[:3].tolist() == [2, 1, 0]
    reranked = evaluate_embeddings(q2, ["a"], db2, BRIDGE_LABELS, map_ks=(3,))[0]
    assert reranked["mAP@all"] == pytest.approx(1.0)


def test_query_expansion_never_uses_the_query_own_row() -> None:
    db = random_unit(12, 4, seed=1)
    exclude = np.arange(12)  # leave-one-out: every query is database row i
    config = RerankConfig(dba_neighbors=3, qe_neighbors=2, alpha=1.0)
    q2, db2 = rerank_split(db, db, config, exclude=exclude)
    assert np.allclose(db2, database_augmentation(db, 3, 1.0))
    for i in range(12):
        s = db[i] @ db2.T
        s[i] = -np.inf
        nb = np.argsort(-s)[:2]
        want = db[i] + ((np.clip(s[nb], 0, None) ** 1.0)[:, None] * db2[nb]).sum(0)
        assert q2[i] == pytest.approx(want / np.linalg.norm(want), abs=1e-5)
    # Without the exclusion the query's own (augmented) row is its first neighbour.
    assert not np.allclose(q2, query_expansion(db, db2, 2, 1.0), atol=1e-4)


def test_evaluate_rerank_records_settings(image_folder: Path) -> None:
    ev = evaluate("pixels", image_folder, rerank=RerankConfig(qe_neighbors=3), progress=False)
    assert ev.settings["rerank"] == {"dba_neighbors": 10, "qe_neighbors": 3, "alpha": 3.0,
                                     "diffusion_neighbors": 0, "by_default": False}  # fmt: skip
    assert "rerank_s" in ev.timings and 0 < ev.overall["mAP@100"] <= 1
    cl = evaluate(
        "pixels", image_folder, mode="cluster", clusters=4, rerank=RerankConfig(), progress=False
    )
    assert cl.settings["clusters"] == 4 and "rerank" in cl.settings


def test_evaluate_cli_rerank(image_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "pixels", str(image_folder), "--rerank", "--alpha", "2",
                 "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["rerank"] == {"dba_neighbors": 10, "qe_neighbors": 10, "alpha": 2.0,
                                         "diffusion_neighbors": 0, "by_default": False}  # fmt: skip
    assert main(["evaluate", "pixels", str(image_folder), "--qe", "4", "--no-per-class"]) == 0
    assert "re-ranked (DBA 10, alpha-QE 4, alpha 3)" in capsys.readouterr().out


def test_rerank_flags_parse(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    assert rerank_config(parse(["search", "c", "q"])) == "auto"  # tests/test_rerank_default.py
    assert rerank_config(parse(["search", "c", "q", "--rerank"])) == RerankConfig()
    assert rerank_config(parse(["search", "c", "q", "--qe", "5"])) == RerankConfig(qe_neighbors=5)
    got = rerank_config(parse(["evaluate", "m", "b", "--dba", "0", "--alpha", "1.5"]))
    assert got == RerankConfig(dba_neighbors=0, alpha=1.5)
    got = rerank_config(parse(["evaluate", "m", "b", "--diffusion", "50"]))
    assert got == RerankConfig(diffusion_neighbors=50)
    with pytest.raises(SystemExit):  # refused while parsing (cli.options), exit code 2
        parse(["search", "c", "q", "--dba", "-1"])
    assert "argument --dba: -1 is out of range" in capsys.readouterr().err


# -- search ---------------------------------------------------------------------------------


def test_search_rerank_fixes_the_bridging_query(tmp_path: Path) -> None:
    coll = _collection(tmp_path / "c", BRIDGE_DB, BRIDGE_LABELS)
    _, ids, _ = rank(coll, BRIDGE_QUERY, 3)
    assert ids[0, 0] == 3  # the b outlier first
    scores, ids, clusters = rank(coll, BRIDGE_QUERY, 3, rerank=BRIDGE)
    assert ids[0].tolist() == [2, 1, 0] and clusters is None
    assert np.all(np.diff(scores[0]) <= 0)


@pytest.mark.parametrize("mode", ["exact", "index"])
def test_search_rerank_equals_the_full_library_rerank(tmp_path: Path, mode: str) -> None:
    db, q = random_unit(40, 8, seed=2), random_unit(5, 8, seed=3)
    coll = _collection(tmp_path / "c", db)
    config = RerankConfig(dba_neighbors=5, qe_neighbors=4, alpha=3.0)
    scores, ids, _ = rank(coll, q, 7, mode, rerank=config)
    want_scores, want_ids = _full_rerank(db, q, config, 7)
    assert ids.tolist() == want_ids.tolist()
    assert scores == pytest.approx(want_scores, abs=1e-5)
    # More results than the collection holds: padded with -1.
    _, ids, _ = rank(coll, q[:1], 45, mode, rerank=config)
    assert sorted(ids[0, :40].tolist()) == list(range(40)) and ids[0, 40:].tolist() == [-1] * 5


def test_search_rerank_in_collection_leaves_the_query_out(tmp_path: Path) -> None:
    db = random_unit(30, 6, seed=4)
    coll = _collection(tmp_path / "c", db)
    config = RerankConfig(dba_neighbors=4, qe_neighbors=3, alpha=3.0)
    pos = np.array([3, 17])
    results = search_items(Searcher(coll), pos.tolist(), k=6, rerank=config)
    want_scores, want_ids = _full_rerank(db, db[pos], config, 6, exclude=pos)
    for r, p, s, i in zip(results, pos, want_scores, want_ids, strict=True):
        assert [h.id for h in r.hits] == i.tolist() and p not in i
        assert [h.score for h in r.hits] == pytest.approx(s.tolist(), abs=1e-5)


def test_search_rerank_only_reorders_the_candidates(tmp_path: Path) -> None:
    db, q = random_unit(60, 8, seed=5), random_unit(4, 8, seed=6)
    coll = _collection(tmp_path / "c", db)
    _, top12, _ = rank(coll, q, 12)
    scores, ids, _ = rank(coll, q, 5, "index", rerank=RerankConfig(), candidates=12)
    assert ids.shape == (4, 5) and np.all(np.diff(scores, axis=1) <= 0)
    assert all(set(row) <= set(cand) for row, cand in zip(ids, top12, strict=True))


def test_search_rerank_refuses_cluster_mode(tmp_path: Path) -> None:
    coll = _collection(tmp_path / "c", random_unit(10, 4, seed=7))
    with pytest.raises(UserError, match="index or exact"):
        rank(coll, coll.embeddings[:1], 3, "cluster", rerank=RerankConfig())


def test_search_cli_rerank(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_model(tmp_path / "model")
    coll = tmp_path / "coll"
    assert main(["index", str(image_folder), "--out", str(coll), "--model", str(model),
                 "--workers", "0"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["search", str(coll), str(image_folder / "blue"), "-k", "3", "--rerank",
                 "--json"]) == 0  # fmt: skip
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 6 and all(len(r["hits"]) == 3 for r in results)
    assert all(np.all(np.diff([h["score"] for h in r["hits"]]) <= 0) for r in results)
    assert main(["search", str(coll), "0", "--in-collection", "--qe", "3", "-k", "2",
                 "--json"]) == 0  # fmt: skip
    (found,) = json.loads(capsys.readouterr().out)
    assert len(found["hits"]) == 2 and all(h["id"] != 0 for h in found["hits"])
    assert main(["search", str(coll), "0", "--in-collection", "--mode", "cluster",
                 "--rerank"]) == 2  # fmt: skip
    assert "index or exact" in capsys.readouterr().err


def test_web_more_like_this_with_rerank(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from web_fixtures import shared_web_collection

    from imgret.web import create_app

    web = shared_web_collection(tmp_path_factory)
    client = TestClient(create_app(web.collection), base_url="http://127.0.0.1")
    result = client.get("/api/search/7?k=4&rerank=true").json()
    searcher = Searcher(open_collection(web.collection))
    (want,) = search_items(searcher, [7], k=4, rerank=RerankConfig())
    assert result["rerank"] is True and [h["rank"] for h in result["hits"]] == [1, 2, 3, 4]
    assert [h["id"] for h in result["hits"]] == [h.id for h in want.hits]
    assert client.get("/api/search/7?k=4").json()["rerank"] is False
    refused = client.get("/api/search/7?mode=cluster&rerank=true")
    assert refused.status_code == 400 and "index or exact" in refused.text
