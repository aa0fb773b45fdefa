"""The web app's HTTP API through FastAPI's test client: answers, limits, refusals."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import rank
from PIL import Image
from web_fixtures import WebCollection, shared_web_collection

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from imgret.core.errors import UserError  # noqa: E402
from imgret.store.opening import create_collection, open_collection  # noqa: E402
from imgret.web import WebConfig, create_app  # noqa: E402
from imgret.web.errors import WebError  # noqa: E402
from imgret.web.files import ItemFiles  # noqa: E402
from imgret.web.server import is_loopback  # noqa: E402
from imgret.web.uploads import decode_upload  # noqa: E402

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebCollection:
    return shared_web_collection(tmp_path_factory)


@pytest.fixture(scope="module")
def client(web: WebCollection) -> TestClient:
    return TestClient(create_app(web.collection), base_url=LOCAL)


@pytest.fixture(scope="module")
def strict(web: WebCollection, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """Small limits, so that refusals can be tested with small files."""
    config = WebConfig(
        max_upload_bytes=20_000,
        max_pixels=250_000,
        max_k=5,
        max_page=10,
        cache_dir=tmp_path_factory.mktemp("thumbs"),
    )
    return TestClient(create_app(web.collection, config=config), base_url=LOCAL)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _upload(client: TestClient, data: bytes, name: str = "q.png", **form: str):  # noqa: ANN202
    return client.post("/api/search", files={"file": (name, data, "image/png")}, data=form)


def _ids(coll: object, name: str) -> int:
    return next(i for i, k in enumerate(coll.keys) if k.endswith(name))  # type: ignore[attr-defined]


_HOUSEKEEPING = ("meta.sqlite-wal", "meta.sqlite-shm", ".readers", ".lock")  # readers' files


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file under the folders (thumbnail cache and SQLite's and the locks' files of
    readers excepted) -> (size, mtime)."""
    out = {}
    for folder in folders:
        for p in folder.rglob("*"):
            if p.name in _HOUSEKEEPING:
                continue
            if "thumbs" not in p.parts and not p.is_symlink() and p.is_file():
                out[str(p)] = (p.stat().st_size, p.stat().st_mtime_ns)
    return out


# -- describing the collection -----------------------------------------------------------


def test_info_describes_the_collection(client: TestClient, web: WebCollection) -> None:
    coll = open_collection(web.collection)
    info = client.get("/api/info").json()
    assert info["count"] == len(coll) == 6 * 4 + 2  # + the wide image and the symlink
    assert info["skipped"] == 2  # corrupt.jpg, empty.png
    assert info["model"]["name"] == "conv-autoencoder" and info["model"]["embedding_dim"] == 32
    assert info["clustered"] and info["k"] == coll.clustering.k
    assert info["modes"] == ["index", "exact", "cluster"]
    assert info["index"] == f"flat (IDMap2,Flat, {len(coll)} images)"
    assert set(info["plots"]) == {"elbow", "clusters", "loss", "reconstructions"}
    for url in info["plots"].values():
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size[0] > 100


def test_items_are_paginated(client: TestClient, web: WebCollection) -> None:
    coll = open_collection(web.collection)
    page = client.get("/api/items?offset=20&limit=3").json()
    assert page["total"] == len(coll) and [it["id"] for it in page["items"]] == [20, 21, 22]
    item = page["items"][0]
    assert item["name"] == Path(coll.keys[20]).relative_to(web.photos.resolve()).as_posix()
    assert item["cluster"] == int(coll.clustering.assignments[20])
    assert not any(it["name"].startswith("/") for it in page["items"])  # no absolute paths
    assert client.get("/api/items?offset=1000").json()["items"] == []
    assert client.get("/api/items?limit=100000").status_code == 422
    assert client.get("/api/items/3").json()["id"] == 3
    r = client.get(f"/api/items/{len(coll)}")
    assert r.status_code == 404 and "ids run from 0" in r.json()["detail"]


def test_clusters_list_sizes_and_central_members(client: TestClient, web: WebCollection) -> None:
    coll = open_collection(web.collection)
    c = coll.clustering
    page = client.get("/api/clusters?limit=100").json()
    assert page["total"] == c.k
    assert [s["size"] for s in page["clusters"]] == np.bincount(
        c.assignments, minlength=c.k
    ).tolist()
    for strip in page["clusters"]:
        ci = strip["cluster"]
        members = client.get(f"/api/clusters/{ci}?limit=100").json()
        ids = [it["id"] for it in members["items"]]
        assert sorted(ids) == np.flatnonzero(c.assignments == ci).tolist()
        dist = ((coll.embeddings[ids] - c.centroids[ci]) ** 2).sum(1)
        assert np.all(np.diff(dist) >= -1e-6)  # most central first
        assert [s["id"] for s in strip["samples"]] == ids[: len(strip["samples"])]
    one = client.get("/api/clusters/0?offset=1&limit=2").json()
    assert len(one["items"]) <= 2 and one["offset"] == 1
    r = client.get(f"/api/clusters/{c.k}")
    assert r.status_code == 404 and "no cluster" in r.json()["detail"]


# -- searching ---------------------------------------------------------------------------


def test_search_by_upload_finds_the_same_image_first(
    client: TestClient, web: WebCollection
) -> None:
    r = _upload(client, web.query.read_bytes(), "query.png", k="5", mode="exact")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["query"] == {"kind": "upload", "name": "query.png", "item": None}
    assert result["mode"] == "exact" and result["cluster"] is None and len(result["hits"]) == 5
    first = result["hits"][0]
    assert first["name"] == web.query_name and first["score"] == pytest.approx(1.0, abs=1e-5)
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True) and [h["rank"] for h in result["hits"]] == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_search_by_upload_in_cluster_mode_stays_in_the_cluster(
    client: TestClient, web: WebCollection
) -> None:
    coll = open_collection(web.collection)
    result = _upload(client, web.query.read_bytes(), k="50", mode="cluster").json()
    own = int(coll.clustering.assignments[_ids(coll, web.query_name)])
    assert result["cluster"] == own
    assert {h["cluster"] for h in result["hits"]} == {own}
    assert len(result["hits"]) == int((coll.clustering.assignments == own).sum())


def test_more_like_this_matches_the_library_without_itself(
    client: TestClient, web: WebCollection
) -> None:
    coll = open_collection(web.collection)
    for mode in ("exact", "cluster"):
        result = client.get(f"/api/search/7?k=4&mode={mode}").json()
        assert result["query"]["kind"] == "item" and result["query"]["item"]["id"] == 7
        scores, ids, clusters = rank(coll, coll.embeddings[7:8], 5, mode)
        expected = [int(i) for i in ids[0] if i != 7][:4]
        assert [h["id"] for h in result["hits"]] == expected
        assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4]
        assert result["cluster"] == (None if clusters is None else int(clusters[0]))


def test_the_fast_path_answers_searches_by_id_as_the_route_does(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GET /api/search/{id}` with only k, mode and rerank=false skips FastAPI
    (imgret/web/fastpath.py); any other parameter (here an empty label, which changes
    nothing) takes the route."""
    from imgret.web.fastpath import SearchFastPath

    taken: list[int] = []
    fast = SearchFastPath._search

    async def spy(self: SearchFastPath, item: int, *args: object) -> None:
        taken.append(item)
        await fast(self, item, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(SearchFastPath, "_search", spy)
    for url in ("/api/search/7?k=4&mode=exact", "/api/search/3?", "/api/search/5?mode=cluster&k=2",
                "/api/search/2?k=3&mode=index", "/api/search/999?k=3",
                "/api/search/4?rerank=false&k=3"):  # fmt: skip
        quick = client.get(url)
        routed = client.get(url + "&label=")
        assert quick.status_code == routed.status_code, url
        assert {k: v for k, v in quick.headers.items() if k != "content-length"} == {
            k: v for k, v in routed.headers.items() if k != "content-length"
        }, url
        a, b = quick.json(), routed.json()
        for answer in (a, b):
            answer.pop("took_ms", None)
        assert a == b, url
    assert taken == [7, 3, 5, 2, 999, 4]  # the route answered the others (k=0, label, ...)
    assert client.get("/api/search/3?k=0").status_code == 422 and taken[-1] == 4
    assert client.get("/api/search/3?rerank=true").json()["rerank"] and taken[-1] == 4


@pytest.mark.parametrize(
    "url, status, words",
    [
        ("/api/search/0?k=0", 422, "greater than or equal to 1"),
        ("/api/search/0?k=100000", 422, "less than or equal to"),
        ("/api/search/0?mode=fuzzy", 422, "'index', 'exact' or 'cluster'"),
        ("/api/search/999", 404, "no image 999"),
        ("/api/search/-1", 404, "no image -1"),
        ("/api/search/abc", 422, "valid integer"),
    ],
)
def test_bad_search_parameters_are_4xx_with_a_message(
    client: TestClient, url: str, status: int, words: str
) -> None:
    r = client.get(url)
    assert r.status_code == status
    assert words in str(r.json()["detail"])


def test_cluster_mode_on_an_unclustered_collection_is_refused(
    web: WebCollection, tmp_path: Path
) -> None:
    coll = open_collection(web.collection)
    plain = create_collection(
        tmp_path / "plain",
        model=coll.model,
        source=str(web.photos),
        keys=coll.keys,
        labels=coll.labels,
        embeddings=coll.embeddings,
    )
    client = TestClient(create_app(plain.path), base_url=LOCAL)
    assert client.get("/api/info").json()["modes"] == ["index", "exact"]
    r = _upload(client, web.query.read_bytes(), mode="cluster")
    assert r.status_code == 400 and "not clustered" in r.json()["detail"]
    assert client.get("/api/search/0?mode=exact").status_code == 200
    assert client.get("/api/clusters").status_code == 404


# -- uploads: limits and refusals ---------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds no image data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_upload_refusals_are_4xx_with_a_message(
    client: TestClient, strict: TestClient, web: WebCollection
) -> None:
    good = web.query.read_bytes()
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120, 3), np.uint8))
    cases = [
        (client, b"", 400, "empty"),
        (client, b"just some text, not an image", 415, "not an image of an accepted type"),
        (client, b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "accepted type"),
        (client, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 415, "accepted type"),
        (client, good[: len(good) // 2], 400, "q.png: the PNG image cannot be used"),  # truncated
        (client, _png_header_only(30_000, 30_000), 413, "decompression bomb"),
        (strict, _png(Image.new("RGB", (600, 600))), 413, "over the limit of 250,000"),
        (strict, _png(noise), 413, "the limit is 20,000 bytes"),  # ~43 kB: over the file limit
        (strict, bytes(200_000), 413, "larger than the limit"),  # over the whole-request limit
    ]
    for app, data, status, words in cases:
        r = _upload(app, data)
        assert r.status_code == status, (words, r.status_code, r.text)
        assert words in r.json()["detail"], r.json()
    assert _upload(strict, good).status_code == 200  # small enough
    r = client.post("/api/search", data={"k": "3"})
    assert r.status_code == 422 and "file" in str(r.json()["detail"])
    assert _upload(strict, good, k="6").status_code == 422  # over max_k = 5


def test_decode_upload_turns_exif_upright_and_refuses_by_header() -> None:
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_upload(buf.getvalue(), max_bytes=10**6, max_pixels=10**6).size == (20, 40)
    with pytest.raises(WebError) as e:
        decode_upload(_png_header_only(2000, 2000), max_bytes=10**6, max_pixels=10**6)
    assert e.value.status == 413 and "2000x2000 = 4,000,000 pixels" in e.value.message


def test_nothing_uploaded_is_written_into_the_collection(
    client: TestClient, web: WebCollection
) -> None:
    before = _snapshot(web.collection, web.photos)
    for data in (web.query.read_bytes(), b"junk", _png(Image.new("L", (33, 21), 7))):
        _upload(client, data, name="../../evil.png")
    assert _snapshot(web.collection, web.photos) == before


# -- serving files: thumbnails, full images, refusals --------------------------------------


def test_thumbnails_are_made_once_and_cached(web: WebCollection, tmp_path: Path) -> None:
    client = TestClient(
        create_app(web.collection, config=WebConfig(cache_dir=tmp_path)), base_url=LOCAL
    )
    coll = open_collection(web.collection)
    wide = _ids(coll, "big/wide.jpg")
    r = client.get(f"/api/thumbs/{wide}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (160, 100)
    cached = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(cached) == 1 and cached[0].suffix == ".jpg"
    stamp = cached[0].stat().st_mtime_ns
    assert client.get(f"/api/thumbs/{wide}").content == r.content
    assert cached[0].stat().st_mtime_ns == stamp  # served from the cache, not remade
    small = client.get(f"/api/thumbs/{_ids(coll, 'red/00.png')}")
    assert small.headers["content-type"] == "image/png"  # 40 px: kept sharp as PNG
    assert Image.open(io.BytesIO(small.content)).size == (40, 40)
    assert not [p for p in tmp_path.rglob("*.tmp")]  # atomic writes leave nothing behind


def test_full_image_is_the_file_itself(client: TestClient, web: WebCollection) -> None:
    coll = open_collection(web.collection)
    wide = _ids(coll, "big/wide.jpg")
    r = client.get(f"/api/images/{wide}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == (web.photos / "big" / "wide.jpg").read_bytes()


def test_a_symlink_out_of_the_collection_is_never_served(
    client: TestClient, web: WebCollection
) -> None:
    coll = open_collection(web.collection)
    leak = _ids(coll, "red/leak.png")  # embedded: it decodes; but it points outside
    for url in (f"/api/images/{leak}", f"/api/thumbs/{leak}"):
        r = client.get(url)
        assert r.status_code == 403 and "outside the collection" in r.json()["detail"]
    assert client.get(f"/api/search/{leak}").status_code == 200  # searching it is fine


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/images/%2Fetc%2Fpasswd",
        "/api/thumbs/1%2F..%2F..%2Fcollection.json",
        "/api/plots/..%2Fcollection.json",
        "/api/plots/..%2F..%2Fetc%2Fpasswd",
        "/static/../collection.json",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/app.py",
        "/api/images/99999",
    ],
)
def test_paths_from_requests_are_never_files(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code in (404, 422)
    assert b"root:" not in r.content and b"imgret-collection" not in r.content


def test_item_files_resolve_only_regular_files_inside_the_root(tmp_path: Path) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    out.mkdir()
    Image.new("RGB", (4, 4)).save(root / "sub" / "a.png")
    Image.new("RGB", (4, 4)).save(out / "b.png")
    (root / "inside.png").symlink_to(root / "sub" / "a.png")
    (root / "outside.png").symlink_to(out / "b.png")
    (root / "linkdir").symlink_to(out, target_is_directory=True)
    (root / "folder.png").mkdir()
    (root / "notes.txt").write_text("text")
    files = ItemFiles([root], tmp_path / "cache", 16)
    assert files.resolve(str(root / "sub" / "a.png")) == (root / "sub" / "a.png").resolve()
    assert files.resolve(str(root / "inside.png")) == (root / "sub" / "a.png").resolve()
    assert files.resolve("sub/a.png") == (root / "sub" / "a.png").resolve()
    refused = {
        str(root / "outside.png"): 403,
        str(root / "linkdir" / "b.png"): 403,
        str(root / ".." / "out" / "b.png"): 403,
        "../out/b.png": 403,
        "/etc/passwd": 403,
        str(root / "folder.png"): 403,
        str(root / "notes.txt"): 403,
        str(root / "gone.png"): 404,
    }
    for key, status in refused.items():
        with pytest.raises(WebError) as e:
            files.resolve(key)
        assert e.value.status == status, key
    assert files.display_name(str(root / "sub" / "a.png")) == "sub/a.png"
    assert files.display_name("/elsewhere/x.png") == "x.png"


# -- access, hosts, headers, schema -------------------------------------------------------


def test_token_is_required_when_set(web: WebCollection) -> None:
    token = "s3cret-token_42"
    client = TestClient(create_app(web.collection, token=token), base_url=LOCAL)
    for url in ("/api/info", "/", "/api/thumbs/0", "/openapi.json", "/static/common.js",
                "/api/search/0?k=3"):  # fmt: skip
        r = client.get(url)
        assert r.status_code == 401 and "access token" in r.json()["detail"], url
    assert (
        client.get("/api/info", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    )
    assert client.get("/api/info", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/info", headers={"X-Imgret-Token": token}).status_code == 200
    # issue 14.9: a token in an API address is refused (addresses end up in logs and history)
    r = client.get(f"/api/info?token={token}")
    assert r.status_code == 401 and "access token" in r.json()["detail"]
    r = client.get(f"/collection?token={token}&x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/collection?x=1"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    assert client.get("/api/thumbs/0").status_code == 200  # the cookie now carries the token
    with pytest.raises(UserError, match="8 or more"):
        create_app(web.collection, token="a b;c")


def test_other_host_names_are_refused_on_localhost(client: TestClient) -> None:
    assert client.get("/api/info", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/info", headers={"Host": "localhost:8000"}).status_code == 200
    assert client.get("/api/info", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/api/search/0", headers={"Host": "evil.example"}).status_code == 400
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_pages_and_schema(client: TestClient) -> None:
    for url in ("/", "/collection", "/clusters/0"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("common.js", "search.js", "collection.js", "cluster.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/info",
        "/api/search",
        "/api/search/{item_id}",
        "/api/clusters",
        "/api/thumbs/{item_id}",
        "/api/images/{item_id}",
    ):
        assert path in paths
    assert "multipart/form-data" in paths["/api/search"]["post"]["requestBody"]["content"]


def test_cli_serve_is_registered_and_refuses_a_non_collection(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from imgret.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "127.0.0.1" in capsys.readouterr().out
    assert main(["serve", str(tmp_path)]) == 2
    assert "not an imgret collection" in capsys.readouterr().err


def test_an_unwritable_thumbnail_cache_still_serves_thumbnails(
    web: WebCollection, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be")  # no folder can be made here
    config = WebConfig(cache_dir=cache)
    client = TestClient(create_app(web.collection, config=config), base_url=LOCAL)
    r = client.get("/api/thumbs/1")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] > 0
    assert cache.read_text().startswith("a file")
