"""End to end in a real headless Chromium: every page at 390 and 1400 px, searching by upload,
drop and paste, more like this, Back, browsing, clusters, duplicates, the filter, the
lightbox, adding images with progress, the login page (issue 14).

Needs Debian's chromium at /usr/bin/chromium (skipped without it) and Playwright for Python.
Every test fails on a console error or a request to another host than the server. The
screenshots are saved in the test's folder and, when IMGRET_SCREENSHOT_DIR is set, also there
(the README's pictures: IMGRET_SCREENSHOT_DIR=docs/images .venv/bin/python -m pytest
tests/test_web_browser.py).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from helpers import pattern_image
from web_fixtures import WebCollection, shared_web_collection

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN = "browser-test-token"
WIDTHS = (390, 1400)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebCollection:
    return shared_web_collection(tmp_path_factory)


def _serve(app: Any) -> Iterator[str]:
    """The app on a free port of 127.0.0.1, in a thread; stopped after."""
    uvicorn = pytest.importorskip("uvicorn")
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the server did not start")
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(web: WebCollection) -> Iterator[str]:
    """The shared collection, behind an access token."""
    from imgret.web import create_app

    leak = _leak_id(web)
    Watched.refused = (f"/api/thumbs/{leak}?", f"/api/images/{leak}?")
    yield from _serve(create_app(web.collection, token=TOKEN))


@pytest.fixture(scope="module")
def editable(web: WebCollection, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A copy of the collection with a near-duplicate, served with --allow-add."""
    from imgret.jobs.index import add_paths
    from imgret.web import WebConfig, create_app

    root = tmp_path_factory.mktemp("editable")
    coll = root / "collection"
    shutil.copytree(web.collection, coll, ignore=shutil.ignore_patterns("thumbs", ".readers"))
    (root / "allowed" / "twins").mkdir(parents=True)
    twin = root / "allowed" / "twins" / "stripes-copy.png"
    shutil.copyfile(web.photos / "stripes" / "03.png", twin)
    add_paths(coll, [root / "allowed" / "twins"], progress=False, log=lambda _: None)
    leak = _leak_id(web)
    Watched.refused = (f"/api/thumbs/{leak}?", f"/api/images/{leak}?")
    app = create_app(coll, config=WebConfig(allow_add=root / "allowed"))
    for url in _serve(app):
        yield url, root


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page whose console errors and requests to other hosts are recorded.

    `refused`: addresses whose failure is expected (the server refuses the image of the
    symlink that points out of the collection: 403).
    """

    refused: tuple[str, ...] = ()

    def __init__(self, browser: Any, base: str, width: int = 1400, **kw: Any) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": width, "height": 900}, **kw)
        self.page = self.context.new_page()
        self.page.set_default_timeout(90_000)  # the CPU may be shared with other jobs
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.allowed_failures: tuple[str, ...] = Watched.refused
        host = urlparse(base).hostname
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", self._console)
        self.page.on("request", lambda r: self._request(r.url, host))

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if not any(part in url for part in self.allowed_failures):
            self.errors.append(f"console: {msg.text} ({url})")

    def _request(self, url: str, host: str | None) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("data", "blob") and parsed.hostname != host:
            self.foreign.append(url)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def check(self) -> None:
        """No console error, no request elsewhere, no sideways scroll."""
        assert not self.errors, self.errors
        assert not self.foreign, self.foreign
        overflow = self.page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{self.page.url} scrolls sideways by {overflow} px"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Watched]]:
    pages: list[Watched] = []

    def make(base: str, **kw: Any) -> Watched:
        w = Watched(browser, base, **kw)
        pages.append(w)
        return w

    yield make
    for w in pages:
        w.close()


def _shot(w: Watched, tmp_path: Path, name: str, full: bool = False) -> None:
    shot = tmp_path / name
    w.page.screenshot(path=str(shot), full_page=full)
    assert shot.stat().st_size > 5_000
    if os.environ.get("IMGRET_SCREENSHOT_DIR"):
        target = Path(os.environ["IMGRET_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / name)


def _login(w: Watched) -> None:
    w.goto(f"/?token={TOKEN}")  # sets the cookie, drops the token from the address
    assert "token" not in w.page.url


def _leak_id(web: WebCollection) -> str:
    from imgret.store.opening import open_collection

    coll = open_collection(web.collection)
    return str(next(i for i, k in enumerate(coll.keys) if k.endswith("red/leak.png")))


def _wait_status(page: Any, words: str) -> None:
    page.wait_for_selector(f"#status:has-text({words!r})")


def _hit_names(w: Watched) -> list[str]:
    return w.page.locator("#hits .card .name").all_inner_texts()


def test_search_by_upload_more_like_this_and_the_lightbox(
    server: str, open_page: Callable[..., Watched], web: WebCollection, tmp_path: Path
) -> None:
    w = open_page(server)
    _login(w)
    page = w.page
    page.wait_for_selector("#browse-grid .card img.thumb")
    assert not page.locator("#query").is_visible()  # issue 14.1: no broken-image box
    assert not page.locator("#query-img").is_visible()
    page.set_input_files("#file", str(web.query))
    page.wait_for_selector("#hits .card")
    first = page.locator("#hits .card").first
    assert first.locator(".name").inner_text() == web.query_name
    assert float(first.locator(".score").inner_text()) == pytest.approx(1.0, abs=1e-3)
    assert page.locator("#hits .card").count() == 12
    assert "results (index search)" in page.locator("#status").inner_text()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#hits img.thumb')].every((i) => i.complete)"
    )
    shown = page.evaluate(
        "() => [...document.querySelectorAll('#hits .card')].map((c) => "
        "[c.querySelector('.name').textContent, c.querySelector('img').naturalWidth > 0])"
    )
    assert all(ok == (name != "red/leak.png") for name, ok in shown), shown
    _shot(w, tmp_path, "web-search.png")

    # cluster mode: every result in the query's cluster; re-ranking is for the other modes
    page.check('input[name="mode"][value="cluster"]')
    _wait_status(page, "in cluster")
    assert page.locator("#rerank").is_disabled()
    clusters = {t.split()[-1] for t in page.locator("#hits .card .cluster").all_inner_texts()}
    assert len(clusters) == 1
    page.check('input[name="mode"][value="exact"]')
    page.check("#rerank")
    _wait_status(page, "re-ranked")
    assert page.locator("#hits .card").count() == 12

    # the lightbox: larger image, arrow keys step through the results, Escape closes
    page.locator("#hits .card .thumb-link").nth(1).click()
    page.wait_for_selector("#lightbox:not([hidden]) .lb-img")
    second = _hit_names(w)[1]
    assert page.locator(".lb-name").inner_text() == second
    page.keyboard.press("ArrowRight")
    assert page.locator(".lb-name").inner_text() == _hit_names(w)[2]
    page.keyboard.press("ArrowLeft")
    assert page.locator(".lb-count").inner_text() == "2 of 12"
    page.wait_for_function("() => document.querySelector('.lb-img').naturalWidth > 0")
    _shot(w, tmp_path, "web-lightbox.png")
    page.keyboard.press("Escape")
    assert not page.locator("#lightbox").is_visible()

    # "more like this" from a result: a search by id, its address shareable
    page.locator("#hits .card .more").first.click()
    page.wait_for_url("**/?id=*")
    page.wait_for_selector("#hits .card")
    assert page.locator("#results-title").inner_text().startswith("More like ")
    assert "rerank=true" in page.url and page.locator("#rerank").is_checked()
    w.check()


def test_back_returns_to_uploaded_results_and_the_browse_page(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    """Issue 14.3: Back lost uploaded results; the browse page was not in the address."""
    w = open_page(server)
    _login(w)
    page = w.page
    page.set_input_files("#file", str(web.query))
    page.wait_for_selector("#hits .card")
    before = _hit_names(w)
    page.locator("#hits .card .more").nth(2).click()
    page.wait_for_url("**/?id=*")
    page.wait_for_selector("#results-title:has-text('More like')")
    page.go_back()
    page.wait_for_selector("#results-title:has-text('Most like query.png')")
    assert _hit_names(w) == before
    assert page.locator("#query-img").is_visible()  # the preview kept in the history entry
    w.check()


def test_browse_paging_survives_back(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    w = open_page(server)
    _login(w)
    page = w.page
    page.goto(w.base + "/?per=10")  # 10 images a page (26 would fit on one page of 48)
    page.wait_for_selector("#browse-pager .next")
    page.click("#browse-pager .next")
    page.wait_for_url("**/?per=10&page=2")
    page.wait_for_selector("#browse-pager .range:has-text('11–20')")
    names = page.locator("#browse-grid .card .name").all_inner_texts()
    page.locator("#browse-grid .card .more").first.click()
    page.wait_for_url("**/?id=*")
    page.go_back()
    page.wait_for_selector("#browse-pager .range:has-text('11–20')")
    assert page.locator("#browse-grid .card .name").all_inner_texts() == names
    w.check()


def test_a_refused_upload_names_the_file_and_clears_the_last_query(
    server: str, open_page: Callable[..., Watched], web: WebCollection, tmp_path: Path
) -> None:
    """Issue 14.2: the previous preview stayed, and the error did not name the file."""
    w = open_page(server)
    w.allowed_failures = (*Watched.refused, "/api/search")  # the 415 itself
    _login(w)
    page = w.page
    page.set_input_files("#file", str(web.query))
    page.wait_for_selector("#hits .card")
    bad = tmp_path / "holiday.png"
    bad.write_text("not an image at all")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    text = page.locator("#status").inner_text()
    assert text.startswith("holiday.png: ") and "not an image" in text
    assert not page.locator("#query").is_visible() and not page.locator("#results").is_visible()
    w.check()


def test_k_out_of_range_is_corrected_in_the_box(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    """Issue 14.6: k=0 searched with 12 while the box said 0; k=500 showed a raw 422."""
    w = open_page(server)
    _login(w)
    page = w.page
    page.goto(w.base + "/?id=3&k=0")
    page.wait_for_selector("#hits .card")
    assert page.locator("#k").input_value() == "1" and page.locator("#hits .card").count() == 1
    page.fill("#k", "500")
    page.dispatch_event("#k", "change")
    page.wait_for_function("() => document.querySelectorAll('#hits .card').length > 1")
    assert page.locator("#k").input_value() == "200"
    assert page.locator("#hits .card").count() == 25  # everything but the query itself
    assert "422" not in page.locator("#status").inner_text()
    w.allowed_failures = (*Watched.refused, "/nope/x", "/clusters/abc")  # the 404 pages
    page.goto(w.base + "/nope/x")
    assert "Nothing here" in page.locator("main").inner_text()
    page.goto(w.base + "/clusters/abc")
    assert "/clusters/abc is not a page" in page.locator("#what").inner_text()
    w.check()


def test_drop_anywhere_paste_and_the_slash_key(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    w = open_page(server)
    _login(w)
    page = w.page
    page.wait_for_selector("#browse-grid .card")
    data = list(web.query.read_bytes())
    make = (
        "(bytes) => { const dt = new DataTransfer(); dt.items.add(new File("
        "[new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'})); return dt; }"
    )
    dt = page.evaluate_handle(make, data)
    page.dispatch_event("#browse", "dragenter", {"dataTransfer": dt})
    assert page.locator("#drop-overlay").is_visible()
    page.dispatch_event("#browse", "drop", {"dataTransfer": dt})
    page.wait_for_selector("#results-title:has-text('dropped.png')")
    assert not page.locator("#drop-overlay").is_visible()
    assert _hit_names(w)[0] == web.query_name

    page.evaluate(
        "(bytes) => { const dt = new DataTransfer(); dt.items.add(new File([new Uint8Array(bytes)],"
        " 'pasted.png', {type: 'image/png'})); document.dispatchEvent(new ClipboardEvent('paste',"
        " {clipboardData: dt, bubbles: true})); }",
        data,
    )
    page.wait_for_selector("#results-title:has-text('pasted.png')")
    assert _hit_names(w)[0] == web.query_name

    with page.expect_file_chooser() as chooser:
        page.locator("body").press("/")
    chooser.value.set_files(str(web.query))
    page.wait_for_selector("#results-title:has-text('query.png')")
    w.check()


def test_filter_by_label_and_folder(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    w = open_page(server)
    _login(w)
    page = w.page
    page.wait_for_selector("#filter option[value='label:stripes']", state="attached")
    page.select_option("#filter", "label:stripes")
    page.wait_for_function("() => document.querySelectorAll('#browse-grid .card').length === 6")
    labels = set(page.locator("#browse-grid .card .label").all_inner_texts())
    assert labels == {"stripes"}
    page.set_input_files("#file", str(web.query))
    page.wait_for_selector("#hits .card")
    assert page.locator("#hits .card").count() == 6
    assert set(page.locator("#hits .card .label").all_inner_texts()) == {"stripes"}
    page.select_option("#filter", "folder:more")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#hits .card .name')]"
        ".every((n) => n.textContent.startsWith('more/'))"
    )
    w.check()


def test_an_image_chosen_while_the_page_loads_is_searched(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    """The file input's listener was attached only after /api/info and the filters had loaded:
    a file chosen before (a slow server, a quick user) did nothing (a CI run timed out so)."""
    w = open_page(server)
    page = w.page
    held: list[Any] = []
    page.route("**/api/info", lambda route: held.append(route))  # answered when released below
    _login(w)
    page.set_input_files("#file", str(web.query))
    assert held, "the page asked for /api/info"
    for route in held:
        route.continue_()
    page.unroute("**/api/info")
    page.wait_for_selector("#hits .card")
    assert page.locator("#hits .card").first.locator(".name").inner_text() == web.query_name
    w.check()


def test_the_rerank_box_starts_at_the_collections_default(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    """A collection whose model is built on a pretrained backbone re-ranks by default
    (/api/info's rerank_default, faked here: the test collection's model is trained); the
    page starts with the box ticked, and a box the user cleared stays cleared after "more
    like this"."""
    w = open_page(server)
    page = w.page

    def pretrained(route: Any) -> None:
        info = route.fetch().json()
        route.fulfill(json={**info, "rerank_default": True})

    page.route("**/api/info", pretrained)
    _login(w)
    page.wait_for_selector("#browse-grid .card img.thumb")
    assert page.locator("#rerank").is_checked()
    page.set_input_files("#file", str(web.query))
    _wait_status(page, "re-ranked")
    page.uncheck("#rerank")
    _wait_status(page, "(index search)")  # not "(index search, re-ranked)"
    page.locator("#hits .card .more").first.click()
    page.wait_for_url("**/?id=*")
    page.wait_for_selector("#hits .card")
    assert "rerank=false" in page.url and not page.locator("#rerank").is_checked()
    assert "re-ranked" not in page.locator("#status").inner_text()
    page.goto(w.base + "/?id=3")  # no rerank in the address: the default
    _wait_status(page, "re-ranked")
    assert page.locator("#rerank").is_checked()
    w.check()


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_the_width(
    server: str, open_page: Callable[..., Watched], web: WebCollection, width: int,
    tmp_path: Path,
) -> None:
    """Issue 14.4: at 390 px the pages scrolled sideways and results came one per row."""
    w = open_page(server, width=width)
    _login(w)
    page = w.page
    page.set_input_files("#file", str(web.query))
    page.wait_for_selector("#hits .card")
    tops = page.evaluate(
        "() => [...document.querySelectorAll('#hits .card')].slice(0, 3)"
        ".map((c) => c.getBoundingClientRect().top)"
    )
    assert tops[0] == tops[1], "results come one per row"
    w.check()
    if width == 390:
        _shot(w, tmp_path, "web-mobile.png")
    page.goto(w.base + "/collection")
    page.wait_for_selector("#clusters .strip")
    page.wait_for_function("() => document.querySelector('#plot-elbow img')?.naturalWidth > 0")
    w.check()
    if width == 1400:
        _shot(w, tmp_path, "web-collection.png")
    w.allowed_failures = (*w.allowed_failures, "/nope")  # the 404 page's own status
    for path in ("/clusters/0", "/duplicates", "/docs", "/redoc", "/nope"):
        page.goto(w.base + path)
        page.wait_for_load_state("networkidle")
        w.check()


def test_collection_and_cluster_pages(
    server: str, open_page: Callable[..., Watched], web: WebCollection
) -> None:
    from imgret.store.opening import open_collection

    k = open_collection(web.collection).clustering.k
    w = open_page(server)
    _login(w)
    page = w.page
    page.goto(w.base + "/collection")
    page.wait_for_selector("#clusters .strip")
    assert page.locator("#clusters .strip").count() == k  # every cluster on one page
    assert not page.locator("#clusters-pager button").count()
    page.wait_for_function(
        "() => document.querySelector('#plot-elbow img')?.naturalWidth > 0 && "
        "document.querySelector('#plot-loss img')?.naturalWidth > 0"
    )
    page.locator("#clusters .strip h3 a").first.click()
    page.wait_for_selector("#grid .card")
    assert page.locator("#title").inner_text().startswith("Cluster 0")
    w.check()


def test_api_documentation_works_offline(server: str, open_page: Callable[..., Watched]) -> None:
    """Issue 14.5: /docs and /redoc were blank offline."""
    w = open_page(server)
    _login(w)
    page = w.page
    w.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    assert "/api/search/{item_id}" in page.locator(".swagger-ui").inner_text()
    w.goto("/redoc")
    page.wait_for_selector("h2:has-text('Search Item')", timeout=20_000)
    assert "More like this" in page.locator("#redoc").inner_text()
    w.check()


def test_duplicates_page(
    editable: tuple, open_page: Callable[..., Watched], tmp_path: Path
) -> None:
    url, _ = editable
    w = open_page(url)
    page = w.page
    w.goto("/duplicates?threshold=0.9999")
    page.wait_for_selector("#groups .group")
    group = page.locator("#groups .group").filter(has_text="stripes-copy.png").first
    names = group.locator(".name").all_inner_texts()
    assert "stripes/03.png" in names
    scores = [float(s) for s in group.locator(".score").all_inner_texts()]
    assert min(scores) >= 0.9999
    assert page.locator("#threshold").input_value() == "0.9999"
    _shot(w, tmp_path, "web-duplicates.png")
    w.check()


def test_adding_images_shows_progress_and_the_new_images(
    editable: tuple, open_page: Callable[..., Watched], tmp_path: Path
) -> None:
    url, root = editable
    rng = np.random.default_rng(11)
    files = []
    for i in range(3):
        p = tmp_path / f"new {i}.png"
        pattern_image("disc", rng, size=64).save(p)
        files.append(str(p))
    w = open_page(url)
    page = w.page
    w.goto("/")
    page.wait_for_selector("#nav-add:not([hidden])")
    count = int(page.locator("#coll-name").inner_text().split("·")[1].split()[0])
    page.click("#nav-add")
    page.wait_for_selector("#folder option", state="attached")
    page.set_input_files("#files", files)
    page.wait_for_selector("#job:not([hidden]) progress")
    page.wait_for_selector("#new-section:not([hidden]) .card", timeout=60_000)
    assert page.locator("#new-grid .card").count() == 3
    assert page.locator("#progress").get_attribute("value") == "3"
    assert "3 added" in page.locator("#status").inner_text()
    page.wait_for_selector(f"#coll-name:has-text('{count + 3} images')")
    _shot(w, tmp_path, "web-add.png")
    # the new images can be searched at once
    page.locator("#new-grid .card .more").first.click()
    page.wait_for_selector("#hits .card")
    w.check()


def test_files_chosen_while_the_add_page_loads_are_added(
    editable: tuple, open_page: Callable[..., Watched], tmp_path: Path
) -> None:
    """As on the search page: the add page listened for files only once it had loaded."""
    url, _ = editable
    early = tmp_path / "early.png"
    pattern_image("disc", np.random.default_rng(12), size=64).save(early)
    w = open_page(url)
    page = w.page
    held: list[Any] = []
    page.route("**/api/info", lambda route: held.append(route))  # answered when released below
    w.goto("/add")
    page.set_input_files("#files", [str(early)])
    assert held, "the page asked for /api/info"
    for route in held:
        route.continue_()
    page.unroute("**/api/info")
    page.wait_for_selector("#new-section:not([hidden]) .card", timeout=60_000)
    assert "1 added" in page.locator("#status").inner_text()
    w.check()


def test_removing_an_image_from_the_lightbox(
    editable: tuple, open_page: Callable[..., Watched]
) -> None:
    url, _ = editable
    w = open_page(url)
    page = w.page
    w.goto("/duplicates?threshold=0.9999")
    page.wait_for_selector("#groups .group")
    before = page.locator("#coll-name").inner_text()
    copy = page.locator("#groups .card").filter(has_text="stripes-copy.png").first
    copy.locator(".thumb-link").click()
    page.once("dialog", lambda d: d.accept())
    page.click(".lb-remove")
    page.wait_for_selector(f"#coll-name:not(:has-text({before.split('·')[1].strip()!r}))")
    page.wait_for_selector("#groups")
    assert "stripes-copy.png" not in page.locator("#groups").inner_text()
    w.check()


def test_the_login_page_and_dark_mode(
    server: str, open_page: Callable[..., Watched], tmp_path: Path
) -> None:
    w = open_page(server, color_scheme="dark")
    page = w.page
    w.goto("/collection")
    page.wait_for_url("**/login?next=/collection")
    page.fill("#token", "wrong-token")
    page.click("button[type=submit]")
    page.wait_for_url("**/login?failed=1**")
    page.wait_for_selector("#status:has-text('not the token')")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url("**/collection")
    page.wait_for_selector("#clusters .strip")
    background = page.evaluate("() => getComputedStyle(document.documentElement).backgroundColor")
    assert background == "rgb(21, 25, 29)"  # the dark palette follows the system setting
    _shot(w, tmp_path, "web-dark.png")
    w.check()


def test_an_empty_collection_says_so(
    web: WebCollection, open_page: Callable[..., Watched], tmp_path_factory: Any
) -> None:
    """Issue 14.10: the grid was blank, with no "no images yet"."""
    from imgret.jobs.index import remove_paths
    from imgret.web import create_app

    coll = tmp_path_factory.mktemp("empty") / "collection"
    shutil.copytree(web.collection, coll, ignore=shutil.ignore_patterns("thumbs", ".readers"))
    remove_paths(coll, [web.photos], log=lambda _: None)
    for url in _serve(create_app(coll)):
        w = open_page(url)
        w.goto("/")
        w.page.wait_for_selector("#browse-grid .empty:has-text('No images yet')")
        w.goto("/collection")
        w.page.wait_for_selector("#no-images:not([hidden])")
        assert "none (the collection has no images)" in w.page.locator("#facts").inner_text()
        w.check()
