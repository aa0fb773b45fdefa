"""The web app follows a changing collection, searches through its index, and adds/removes
images from the pages (issue 14: items 7, 8, 10 and the live collection; issue 16 item 8)."""

from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import pattern_image
from PIL import Image
from web_fixtures import WebCollection, shared_web_collection

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from imgret.jobs.index import add_paths, remove_paths  # noqa: E402
from imgret.store.collection import Collection  # noqa: E402
from imgret.web import WebConfig, create_app  # noqa: E402

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebCollection:
    return shared_web_collection(tmp_path_factory)


@pytest.fixture
def own(web: WebCollection, tmp_path: Path) -> Path:
    """A copy of the shared collection that a test may change."""
    copy = tmp_path / "collection"
    shutil.copytree(web.collection, copy, ignore=shutil.ignore_patterns("thumbs", ".readers"))
    return copy


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _upload(client: TestClient, data: bytes, **form: str):  # noqa: ANN202
    return client.post("/api/search", files={"file": ("q.png", data, "image/png")}, data=form)


def _wait(client: TestClient, job: dict) -> dict:
    deadline = time.monotonic() + 60
    while job["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def test_images_added_and_removed_while_serving_are_seen_and_served(
    own: Path, web: WebCollection, tmp_path: Path
) -> None:
    """Issue 14.7: an image added by `imgret add` from another folder is found and served
    (it was refused with 403), and changes show without a restart."""
    client = TestClient(create_app(own), base_url=LOCAL)
    before = client.get("/api/info").json()["count"]
    other = tmp_path / "other"
    other.mkdir()
    new = other / "new.png"
    pattern_image("disc", np.random.default_rng(7), size=48).save(new)
    add_paths(own, [new], progress=False, log=lambda _: None)

    assert client.get("/api/info").json()["count"] == before + 1
    result = _upload(client, new.read_bytes(), k="3").json()
    first = result["hits"][0]
    assert first["name"] == "new.png" and first["score"] == pytest.approx(1.0, abs=1e-4)
    r = client.get(first["image"])
    assert r.status_code == 200 and r.content == new.read_bytes()
    assert client.get(first["thumb"]).status_code == 200

    remove_paths(own, [new], log=lambda _: None)
    assert client.get("/api/info").json()["count"] == before
    hits = _upload(client, new.read_bytes(), k="30").json()["hits"]
    assert "new.png" not in [h["name"] for h in hits]
    # the old URL named another image (ids are positions): refused, not shown wrongly
    assert client.get(first["image"]).status_code in (404, 200)
    if client.get(first["image"]).status_code == 200:
        assert client.get(first["image"]).content != new.read_bytes()


def test_the_service_never_copies_the_embeddings(
    own: Path, web: WebCollection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14.8: every request is answered without Collection.embeddings (the full copy);
    searches go through the FAISS index by default."""

    def refuse(self: Collection) -> np.ndarray:
        raise AssertionError("the web app read every embedding into memory")

    monkeypatch.setattr(Collection, "embeddings", property(refuse))
    client = TestClient(create_app(own), base_url=LOCAL)
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/clusters").status_code == 200
    assert client.get("/api/items?limit=5").status_code == 200
    default = client.get("/api/search/3?k=4").json()
    assert default["mode"] == "index" and len(default["hits"]) == 4
    for mode in ("index", "exact", "cluster"):
        r = client.get(f"/api/search/3?k=4&mode={mode}")
        assert r.status_code == 200, r.text
        assert _upload(client, web.query.read_bytes(), mode=mode).status_code == 200
    assert client.get("/api/search/3?rerank=true").status_code == 200
    assert client.get("/api/duplicates?threshold=0.99").status_code == 200


def test_an_emptied_collection_says_so(own: Path, web: WebCollection) -> None:
    """Issue 14.10: after removing every image the index was reported with its old vectors."""
    client = TestClient(create_app(own), base_url=LOCAL)
    remove_paths(own, [web.photos], log=lambda _: None)
    info = client.get("/api/info").json()
    assert info["count"] == 0
    assert info["index"] == "none (the collection has no images)"
    assert client.get("/api/items").json() == {"total": 0, "offset": 0, "items": []}
    r = client.get("/api/search/0")
    assert r.status_code == 404 and "has no images" in r.json()["detail"]
    assert _upload(client, web.query.read_bytes()).json()["hits"] == []


def test_requests_during_an_indexing_run_never_fail(own: Path, tmp_path: Path) -> None:
    """Issue 16.8: SQLite is never shared between threads; searches go on, old or new state."""
    client = TestClient(create_app(own), base_url=LOCAL)
    start = client.get("/api/info").json()["count"]
    more = tmp_path / "more"
    more.mkdir()
    rng = np.random.default_rng(3)
    for i in range(40):
        pattern_image(("red", "blue", "stripes", "disc")[i % 4], rng).save(more / f"{i:02d}.png")
    failures: list[str] = []
    counts: list[list[int]] = [[], [], []]  # per thread: its requests follow one another
    stop = threading.Event()

    def search(seen: list[int]) -> None:
        while not stop.is_set():
            for url in ("/api/search/1?k=5", "/api/info", "/api/items?limit=50"):
                r = client.get(url)
                if r.status_code != 200:
                    failures.append(f"{url}: {r.status_code} {r.text}")
            seen.append(client.get("/api/items?limit=200").json()["total"])

    threads = [threading.Thread(target=search, args=(seen,)) for seen in counts]
    for t in threads:
        t.start()
    try:
        from imgret.jobs.index import IndexJobConfig

        config = IndexJobConfig(workers=0, batch_size=4, chunk_rows=8)
        add_paths(own, [more], config=config, progress=False, log=lambda _: None)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    for seen in counts:  # never an older state after a newer one, in each thread's order
        assert set(seen) <= set(range(start, start + 41)) and seen == sorted(seen)
    assert client.get("/api/info").json()["count"] == start + 40


# -- adding and removing from the pages (--allow-add) --------------------------------------


def test_adding_is_off_unless_allowed(web: WebCollection) -> None:
    client = TestClient(create_app(web.collection), base_url=LOCAL)
    assert client.get("/api/info").json()["can_add"] is False
    for url in ("/api/add/files", "/api/add/folder", "/api/remove"):
        assert client.post(url, json={}).status_code == 404
    r = client.get("/add")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]


def test_add_uploads_and_a_folder_then_remove(own: Path, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "trip").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(3):
        pattern_image("stripes", rng).save(root / "trip" / f"{i}.png")
    outside = tmp_path / "secret"
    outside.mkdir()
    pattern_image("red", rng).save(outside / "private.png")
    (root / "trip" / "link.png").symlink_to(outside / "private.png")
    client = TestClient(create_app(own, config=WebConfig(allow_add=root)), base_url=LOCAL)
    info = client.get("/api/info").json()
    assert info["can_add"] is True
    before = info["count"]

    # uploads: kept in <collection>/uploads, indexed by the job, shown when it ends
    files = [("files", (f"up {i}.png", _png(pattern_image("disc", rng)), "image/png"))
             for i in range(2)]  # fmt: skip
    job = _wait(client, client.post("/api/add/files", files=files).json())
    assert job["state"] == "done" and job["done"] == job["total"] == 2, job
    assert job["report"]["added"] == 2 and len(job["new_ids"]) == 2
    names = [client.get(f"/api/items/{i}").json()["name"] for i in job["new_ids"]]
    assert all(n.startswith("uploads/") and n.endswith((".png",)) for n in names), names
    assert len(list((own / "uploads").rglob("*.png"))) == 2
    bad = [("files", ("notes.txt", b"hello", "text/plain"))]
    r = client.post("/api/add/files", files=bad)
    assert r.status_code == 415 and "notes.txt" in r.json()["detail"]
    assert len(list((own / "uploads").rglob("*"))) == 3  # nothing written for the refusal

    # a folder under the allowed root: the symlink out of it is not followed
    assert "trip" in client.get("/api/add/folders").json()["folders"]
    r = client.post("/api/add/folder", json={"folder": "trip"})
    assert r.status_code == 200, r.text
    job = _wait(client, r.json())
    assert job["state"] == "done" and job["report"]["added"] == 3, job
    assert client.get("/api/info").json()["count"] == before + 5
    for folder in ("../secret", "/etc", "trip/../../secret"):
        r = client.post("/api/add/folder", json={"folder": folder})
        assert r.status_code in (403, 404), (folder, r.text)

    # removal: only images under the allowed root or uploaded; the files stay
    r = client.post("/api/remove", json={"ids": [0]})
    assert r.status_code == 403 and "outside" in r.json()["detail"]
    job = _wait(client, client.post("/api/remove", json={"ids": job["new_ids"][:1]}).json())
    assert job["state"] == "done" and job["report"]["removed"] == 1
    assert client.get("/api/info").json()["count"] == before + 4
    assert len(list((root / "trip").glob("*.png"))) == 4  # 3 files and the link, untouched


def test_a_failed_job_says_why(own: Path, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    (root / "empty").mkdir(parents=True)
    client = TestClient(create_app(own, config=WebConfig(allow_add=root)), base_url=LOCAL)
    r = client.post("/api/add/folder", json={"folder": "empty"})
    assert r.status_code == 400 and "no images" in r.json()["detail"]
    assert client.get("/api/jobs/99").status_code == 404


# -- duplicates, filters ------------------------------------------------------------------


def test_duplicates_are_grouped_with_their_scores(own: Path, web: WebCollection) -> None:
    copy = web.photos / "stripes" / "03.png"
    twin_dir = own.parent / "twins"
    twin_dir.mkdir()
    twin = twin_dir / "twin.png"
    shutil.copyfile(copy, twin)
    add_paths(own, [twin], progress=False, log=lambda _: None)
    client = TestClient(create_app(own), base_url=LOCAL)
    page = client.get("/api/duplicates?threshold=0.999").json()
    assert page["total"] >= 1 and page["pairs"] >= 1
    group = next(g for g in page["groups"] if "twin.png" in {it["name"] for it in g})
    scores = {it["name"]: it["score"] for it in group}
    assert scores["twin.png"] == pytest.approx(1.0, abs=1e-5)
    assert scores["stripes/03.png"] == pytest.approx(1.0, abs=1e-5)
    assert client.get("/api/duplicates?threshold=0.2").status_code == 422


def test_filters_by_label_and_folder(web: WebCollection) -> None:
    client = TestClient(create_app(web.collection), base_url=LOCAL)
    facets = client.get("/api/facets").json()
    assert {"name": "red", "count": 7} in facets["labels"]  # 6 + the symlink leak.png
    assert {"name": "more", "count": 6} in facets["folders"]
    reds = client.get("/api/items?label=red&limit=100").json()
    assert reds["total"] == 7 and {it["label"] for it in reds["items"]} == {"red"}
    more = client.get("/api/items?folder=more&limit=100").json()
    assert more["total"] == 6 and all(it["name"].startswith("more/") for it in more["items"])
    result = client.get("/api/search/0?k=50&folder=more").json()
    assert len(result["hits"]) == 6 and all(h["name"].startswith("more/") for h in result["hits"])
    result = _upload(client, web.query.read_bytes(), k="50", label="stripes").json()
    assert {h["label"] for h in result["hits"]} == {"stripes"} and len(result["hits"]) == 6
    assert result["hits"][0]["name"] == web.query_name
    assert client.get("/api/search/0?folder=nowhere").json()["hits"] == []
