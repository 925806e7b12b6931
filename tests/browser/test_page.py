"""The page, as a user sees it: a real `lookalike serve` on 127.0.0.1 with a SQLite store,
driven by Chromium (Debian's package) through Playwright. Screenshots go to
``tests/browser/output/`` (not committed)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import PHOTOS, encode, photo
from e2e.api.test_serve import Served, serve
from PIL import Image

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = Path(__file__).parent / "output"
XSS = "<img src=x onerror=alert(1)>.jpg"
KEY = "browser-test-key"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="no Chromium: apt-get install chromium (CI does)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright.Browser]:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: playwright.Browser) -> Iterator[playwright.Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    opened.errors = []  # type: ignore[attr-defined]
    opened.on("console", lambda m: m.type == "error" and opened.errors.append(m.text))  # type: ignore[attr-defined]
    opened.on("pageerror", lambda e: opened.errors.append(str(e)))  # type: ignore[attr-defined]
    opened.on("dialog", lambda d: (opened.errors.append(f"dialog: {d.message}"), d.dismiss()))  # type: ignore[attr-defined]
    yield opened
    context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("page")
    yield from serve(folder, "sqlite:///" + str(folder / "store.db"), WORKER_COUNT="1")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    files = {}
    for name in PHOTOS:
        files[name] = folder / f"{name}.jpg"
        files[name].write_bytes(encode(photo(name), quality=90))
    return files


def stored(server: Served, photos: dict[str, Path], extra: dict[str, bytes] | None = None) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name, path in photos.items():
            client.post("/add", data={"filepath": name}, files={"image": path.read_bytes()})
        for name, content in (extra or {}).items():
            client.post("/add", data={"filepath": name}, files={"image": content})


def resized_copy(path: Path) -> bytes:
    image = Image.open(path)
    buffer = io.BytesIO()
    image.resize((image.width // 2, image.height // 2)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_page_is_served_under_its_security_policy(server: Served) -> None:
    answer = httpx.get(server.url + "/")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert (
        httpx.get(server.url + "/web/app.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )


def test_choosing_a_query_shows_the_stored_picture_first(
    server: Served, photos: dict[str, Path], page: playwright.Page, tmp_path: Path
) -> None:
    stored(server, photos, {XSS: photos["coffee"].read_bytes()[:-2] + b"\xff\xd9"})
    query = tmp_path / "query.png"
    query.write_bytes(resized_copy(photos["chelsea"]))
    page.goto(server.url + "/")
    page.set_input_files("#search-file", str(query))
    page.click("#search-form button[type=submit]")
    first = page.locator("#results li").first
    playwright.expect(first.locator(".name")).to_have_text("chelsea")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "search.png"), full_page=True)
    first.locator("button").click()
    playwright.expect(page.locator("#side-by-side")).to_be_visible()
    playwright.expect(page.locator("#side-caption")).to_have_text("chelsea")
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_hostile_filepath_shows_as_text_and_runs_nothing(
    server: Served, photos: dict[str, Path], page: playwright.Page
) -> None:
    stored(server, photos, {XSS: photos["coffee"].read_bytes()})
    page.goto(server.url + "/")
    page.click("nav button[data-view=collection]")
    playwright.expect(page.locator("#collection-grid .name", has_text="onerror")).to_have_text(XSS)
    assert page.locator("#collection-grid img[src=x]").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]


def test_adding_files_shows_each_outcome_and_the_count_goes_up(
    tmp_path: Path, photos: dict[str, Path], page: playwright.Page
) -> None:
    for server in serve(tmp_path, "sqlite:///" + str(tmp_path / "add.db"), WORKER_COUNT="1"):
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"not a picture")
        page.goto(server.url + "/")
        page.click("nav button[data-view=collection]")
        playwright.expect(page.locator("#collection-count")).to_have_text("0 stored")
        files = [str(photos["astronaut"]), str(photos["rocket"]), str(broken)]
        page.set_input_files("#add-files", files)
        page.click("#add-form button[type=submit]")
        outcomes = page.locator("#add-outcomes li")
        playwright.expect(outcomes).to_have_count(3)
        playwright.expect(outcomes.nth(2)).to_have_class("error")
        playwright.expect(page.locator("#collection-count")).to_have_text("2 stored")
        assert httpx.get(server.url + "/count").json()["result"] == [2]


def test_paging_through_a_collection_and_deleting(
    tmp_path: Path, photos: dict[str, Path], page: playwright.Page
) -> None:
    for server in serve(tmp_path, "sqlite:///" + str(tmp_path / "pages.db"), WORKER_COUNT="1"):
        content = photos["camera"].read_bytes()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(30):  # more than one page of 24
                client.post("/add", data={"filepath": f"copy-{i:02}"}, files={"image": content})
        page.goto(server.url + "/")
        page.click("nav button[data-view=collection]")
        grid = page.locator("#collection-grid li")
        playwright.expect(grid).to_have_count(24)
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "collection.png"), full_page=True)
        page.click("#page-next")
        playwright.expect(grid).to_have_count(6)
        playwright.expect(grid.first.locator(".name")).to_have_text("copy-24")
        grid.first.get_by_role("button", name="Delete copy-24").click()
        page.click("#confirm-yes")
        playwright.expect(grid).to_have_count(5)
        playwright.expect(page.locator("#collection-count")).to_have_text("29 stored")
        assert httpx.get(server.url + "/count").json()["result"] == [29]


def test_with_an_api_key_the_page_asks_for_it_once(
    tmp_path: Path, photos: dict[str, Path], page: playwright.Page
) -> None:
    for server in serve(
        tmp_path, "sqlite:///" + str(tmp_path / "key.db"), WORKER_COUNT="1", LOOKALIKE_API_KEY=KEY
    ):
        page.goto(server.url + "/")
        playwright.expect(page.locator("#key-form")).to_be_visible()
        page.fill("#key", "wrong")
        page.click("#key-form button")
        playwright.expect(page.locator("#message")).to_contain_text("wrong")
        page.fill("#key", KEY)
        page.click("#key-form button")
        playwright.expect(page.locator("#key-form")).to_be_hidden()
        page.click("nav button[data-view=collection]")
        playwright.expect(page.locator("#collection-count")).to_have_text("0 stored")
        page.reload()  # the key is kept for the browser session
        playwright.expect(page.locator("#key-form")).to_be_hidden()
