"""End to end in a real headless Chromium: open the search page, upload a query, see results.

Needs Debian's chromium at /usr/bin/chromium (skipped without it) and Playwright for Python.
The screenshot of the search page is saved in the test's folder and, when IMGRET_SCREENSHOT_DIR
is set, also there (the README's picture: IMGRET_SCREENSHOT_DIR=docs/images make test).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_fixtures import WebCollection, shared_web_collection

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebCollection:
    return shared_web_collection(tmp_path_factory)


@pytest.fixture(scope="module")
def server(web: WebCollection) -> Iterator[str]:
    """The app (with an access token) on a free port of 127.0.0.1, in a thread; stopped after."""
    uvicorn = pytest.importorskip("uvicorn")
    from imgret.web import create_app

    app = create_app(web.collection, token=TOKEN)
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
def browser() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _save_screenshot(page: object, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot))  # type: ignore[attr-defined]
    if os.environ.get("IMGRET_SCREENSHOT_DIR"):
        target = Path(os.environ["IMGRET_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / name)
    return shot


def test_upload_a_query_and_see_the_expected_first_result(
    server: str, browser: object, web: WebCollection, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{server}/?token={TOKEN}")  # sets the cookie, drops the token from the URL
        assert "token" not in page.url
        page.wait_for_selector("#browse-grid .card img.thumb")
        page.set_input_files("#file", str(web.query))
        page.wait_for_selector("#hits .card")
        first = page.locator("#hits .card").first
        assert first.locator(".name").inner_text() == web.query_name
        assert float(first.locator(".score").inner_text()) == pytest.approx(1.0, abs=1e-3)
        assert page.locator("#hits .card").count() == 12
        assert "results (index search)" in page.locator("#status").inner_text()
        # every thumbnail shown was served (the cookie carries the token to <img> requests),
        # except that of the symlink pointing out of the collection, which is refused
        page.wait_for_function(
            "() => [...document.querySelectorAll('#hits img.thumb')].every((i) => i.complete)"
        )
        shown = page.evaluate(
            "() => [...document.querySelectorAll('#hits .card')].map((c) => "
            "[c.querySelector('.name').textContent, c.querySelector('img').naturalWidth > 0])"
        )
        assert all(ok == (name != "red/leak.png") for name, ok in shown), shown
        shot = _save_screenshot(page, tmp_path, "web-search.png")
        assert shot.stat().st_size > 10_000

        # cluster mode: every result in the query's cluster
        page.check('input[name="mode"][value="cluster"]')
        page.wait_for_function(
            "() => document.querySelector('#status').textContent.includes('in cluster')"
        )
        clusters = {t.split()[-1] for t in page.locator("#hits .card .cluster").all_inner_texts()}
        assert len(clusters) == 1

        # "more like this" from a result: a search by id, its URL shareable
        page.locator("#hits .card .more").first.click()
        page.wait_for_url("**/?id=*")
        page.wait_for_selector("#hits .card")
        assert page.locator("#results-title").inner_text().startswith("More like ")

        # the collection page: facts, a strip per cluster, the plots
        page.goto(f"{server}/collection")
        page.wait_for_selector("#clusters .strip")
        k = int(page.locator("#clusters-title").inner_text().split("K = ")[1].rstrip(")"))
        assert page.locator("#clusters .strip").count() == k
        page.wait_for_function(
            "() => document.querySelector('#plot-elbow img')?.naturalWidth > 0 && "
            "document.querySelector('#plot-loss img')?.naturalWidth > 0"
        )
        page.locator("#clusters .strip h3 a").first.click()
        page.wait_for_selector("#grid .card")
        assert page.locator("#title").inner_text().startswith("Cluster 0")
        assert not errors, errors
    finally:
        page.close()
