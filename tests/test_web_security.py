"""The web app's guards: Host names on every loopback address, the token only in a header or
the login cookie, cross-site writes refused without a token too, a port in use, bad addresses
(issue 14 items 6 and 9, issue 17: the cross-site upload, `serve` on a port in use)."""

from __future__ import annotations

import io
import socket
import struct
import zlib
from pathlib import Path

import pytest
from web_fixtures import WebCollection, shared_web_collection

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from imgret.core.errors import UserError  # noqa: E402
from imgret.web import WebConfig, create_app  # noqa: E402
from imgret.web.server import bind, host_policy, is_loopback  # noqa: E402

LOCAL = "http://127.0.0.1"
TOKEN = "s3cret-token_42"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebCollection:
    return shared_web_collection(tmp_path_factory)


@pytest.fixture(scope="module")
def open_client(web: WebCollection) -> TestClient:
    return TestClient(create_app(web.collection), base_url=LOCAL)


@pytest.fixture(scope="module")
def gated(web: WebCollection) -> TestClient:
    return TestClient(create_app(web.collection, token=TOKEN), base_url=LOCAL)


def _thin_png(width: int, height: int) -> bytes:
    """A valid PNG of width x height black pixels (tiny on disk, huge when resized)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    raw = b"".join(b"\x00" + bytes(width) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_every_loopback_address_checks_the_host_header(web: WebCollection, host: str) -> None:
    """Issue 14.9: ::1 and 127.0.0.2 got no Host check (DNS rebinding was open)."""
    assert is_loopback(host)
    token, config = host_policy(host, None, None, WebConfig())
    assert token is None and "*" not in config.allowed_hosts
    client = TestClient(create_app(web.collection, config=config), base_url=LOCAL)
    bare = host.strip("[]")
    own = f"[{bare}]:8000" if ":" in bare else f"{bare}:8000"
    for good in (own, "localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get("/api/info", headers={"Host": good}).status_code == 200, good
    for bad in ("evil.example:8000", "evil.example", "127.0.0.1.evil.example", "[::2]:8000", ""):
        assert client.get("/api/info", headers={"Host": bad}).status_code == 400, bad


def test_other_addresses_need_a_token() -> None:
    token, config = host_policy("0.0.0.0", None, None, WebConfig())
    assert token and len(token) >= 16 and config.allowed_hosts == ("*",)
    assert host_policy("192.168.1.4", None, False, WebConfig())[0] is None
    assert host_policy("127.0.0.1", "given-token", None, WebConfig())[0] == "given-token"


def test_the_token_is_taken_from_headers_and_the_login_cookie_only(gated: TestClient) -> None:
    assert gated.get(f"/api/info?token={TOKEN}").status_code == 401
    assert gated.get("/api/info", headers={"X-Imgret-Token": TOKEN}).status_code == 200
    # a page without the token leads to the login page, which sets the cookie
    r = gated.get("/collection", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/collection"
    page = gated.get("/login?next=/collection")
    assert page.status_code == 200 and 'name="token"' in page.text
    wrong = gated.post("/login", data={"token": "nope-nope", "next": "/collection"},
                       follow_redirects=False)  # fmt: skip
    assert wrong.status_code == 303 and wrong.headers["location"].startswith("/login?failed=1")
    assert "set-cookie" not in wrong.headers
    for target, expected in (("/collection", "/collection"), ("//evil.example/", "/"),
                             ("https://evil.example/", "/")):  # fmt: skip
        r = gated.post("/login", data={"token": TOKEN, "next": target}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == expected
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert gated.get("/api/info").status_code == 200  # the cookie
    gated.cookies.clear()
    assert gated.get("/api/info").status_code == 401


@pytest.mark.parametrize("client_name", ["open_client", "gated"])
def test_cross_site_writes_are_refused_with_or_without_a_token(
    client_name: str, web: WebCollection, request: pytest.FixtureRequest
) -> None:
    """Issue 17: any page the user visits could post to the local server."""
    client: TestClient = request.getfixturevalue(client_name)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    files = {"file": ("q.png", web.query.read_bytes(), "image/png")}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"},
                    {"Origin": "http://127.0.0.1:9999"}):  # fmt: skip
        r = client.post("/api/search", files=files, headers={**headers, **auth})
        assert r.status_code == 403 and "another site" in r.json()["detail"], headers
    assert client.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"},
                       follow_redirects=False).status_code == 403  # fmt: skip
    same = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin", **auth}
    assert client.post("/api/search", files=files, headers=same).status_code == 200
    assert client.post("/api/search", files=files, headers=auth).status_code == 200  # curl


def test_a_thin_image_is_refused_quickly(open_client: TestClient) -> None:
    """Issue 17.1: a 1x100000 PNG (a few hundred bytes) took gigabytes and ended in a 500."""
    data = _thin_png(1, 100_000)
    assert len(data) < 1000
    r = open_client.post("/api/search", files={"file": ("thin.png", data, "image/png")})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("thin.png: ") and "longer than wide" in r.json()["detail"]


def test_serving_on_a_port_in_use_fails_before_saying_serving(
    web: WebCollection, capsys: pytest.CaptureFixture
) -> None:
    """Issue 17.5: `serve` printed "serving ..." before failing on a port in use."""
    from imgret.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match="another program uses the port"):
            bind("127.0.0.1", port)
        assert main(["serve", str(web.collection), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert "serving" not in out and "cannot serve on 127.0.0.1" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("url", ["/nope", "/clusters/abc", "/clusters/999", "/collection/x"])
def test_bad_page_addresses_get_the_apps_404_page(open_client: TestClient, url: str) -> None:
    """Issue 14.6: bad addresses showed raw JSON."""
    r = open_client.get(url)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Nothing here" in r.text and "/static/style.css" in r.text


def test_api_addresses_still_answer_json(open_client: TestClient) -> None:
    r = open_client.get("/api/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = open_client.get("/api/clusters/abc")
    assert r.status_code == 422 and "valid integer" in str(r.json()["detail"])


def test_api_documentation_is_served_offline(open_client: TestClient) -> None:
    """Issue 14.5: /docs and /redoc loaded Swagger UI and ReDoc from outside hosts."""
    for page, assets in (("/docs", ("/vendor/swagger-ui-bundle.js", "/vendor/swagger-ui.css")),
                         ("/redoc", ("/vendor/redoc.standalone.js",))):  # fmt: skip
        r = open_client.get(page)
        assert r.status_code == 200 and "http" not in r.text.replace("http-equiv", "")
        for asset in assets:
            assert f'"{asset}"' in r.text
            a = open_client.get(asset)
            assert a.status_code == 200 and len(a.content) > 100_000
        assert "script-src 'self';" in r.headers["content-security-policy"]


def test_the_upload_of_files_to_add_has_its_own_limit(web: WebCollection, tmp_path: Path) -> None:
    config = WebConfig(allow_add=tmp_path, max_upload_bytes=1000, max_add_bytes=5000)
    client = TestClient(create_app(web.collection, config=config), base_url=LOCAL)
    big = io.BytesIO(bytes(6000)).getvalue()
    r = client.post("/api/add/files", files={"files": ("a.png", big, "image/png")})
    assert r.status_code == 413 and "5,000 bytes" in r.json()["detail"]
    with pytest.raises(UserError, match="no such folder"):
        create_app(web.collection, config=WebConfig(allow_add=tmp_path / "missing"))
