"""The page, as a user sees it: a real `lookalike serve` on 127.0.0.1 with a SQLite store,
driven by Chromium (Debian's package) through Playwright. Screenshots go to
``tests/browser/output/`` (not committed)."""

from __future__ import annotations

import io
import shutil
import time
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


def until(page: playwright.Page, expression: str, timeout: float = 10.0) -> None:
    """Wait until a JavaScript expression holds. Evaluated from outside the page (as
    ``evaluate`` does), since the page's policy forbids ``eval``, which
    ``wait_for_function`` uses when it polls."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.05)


def loaded_pictures(where: playwright.Locator) -> list[int]:
    """The natural widths of the pictures shown under ``where`` (0: it did not load)."""
    widths: list[int] = where.locator("img").evaluate_all(
        "images => images.map(image => image.complete ? image.naturalWidth : 0)"
    )
    return widths


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
    playwright.expect(first.locator("img")).to_have_attribute("alt", "chelsea")
    until(page, "document.querySelector('#results img')?.naturalWidth > 0")
    assert loaded_pictures(first) == [256]  # the stored thumbnail, not a placeholder
    playwright.expect(first.locator("dl")).to_contain_text("451×300")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "search.png"), full_page=True)
    first.locator("button").click()
    playwright.expect(page.locator("#side-by-side")).to_be_visible()
    playwright.expect(page.locator("#side-caption")).to_have_text("chelsea")
    assert page.locator("#side-stored").evaluate("image => image.naturalWidth") == 256
    assert page.locator("#side-query").evaluate("image => image.naturalWidth") == 225
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_turned_copy_is_found_and_shown_turned_back(
    server: Served, photos: dict[str, Path], page: playwright.Page, tmp_path: Path
) -> None:
    stored(server, photos)
    query = tmp_path / "turned.jpg"
    Image.open(photos["rocket"]).transpose(Image.Transpose.ROTATE_90).save(query, quality=80)
    page.goto(server.url + "/")
    page.set_input_files("#search-file", str(query))
    page.click("#search-form button[type=submit]")
    first = page.locator("#results li").first
    playwright.expect(first.locator(".name")).to_have_text("rocket")
    playwright.expect(first.locator("dl")).to_contain_text("rot270")
    first.locator("button").click()
    turn = page.locator("#side-query-frame").evaluate("frame => frame.style.transform")
    assert turn == "rotate(90deg)"  # the query, turned back as the stored picture stands
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
        grid = page.locator("#collection-grid")
        until(page, "document.querySelectorAll('#collection-grid img').length == 2")
        until(
            page,
            "[...document.querySelectorAll('#collection-grid img')].every(i => i.naturalWidth)",
        )
        assert loaded_pictures(grid) == [256, 256]

        folder = tmp_path / "holiday"
        (folder / "day1").mkdir(parents=True)
        (folder / "day1" / "coffee.jpg").write_bytes(photos["coffee"].read_bytes())
        (folder / "chelsea.jpg").write_bytes(photos["chelsea"].read_bytes())
        (folder / "notes.txt").write_text("not a picture")
        page.set_input_files("#add-folder", str(folder))
        page.click("#add-form button[type=submit]")
        playwright.expect(page.locator("#collection-count")).to_have_text("4 stored")
        playwright.expect(outcomes).to_have_count(2)
        playwright.expect(page.locator("#message")).to_contain_text("1 file(s)")
        names = set(httpx.get(server.url + "/list").json()["result"])
        assert {"holiday/chelsea.jpg", "holiday/day1/coffee.jpg"} <= names


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
        until(
            page,
            "[...document.querySelectorAll('#collection-grid img')].filter(i => i.naturalWidth)"
            ".length == 24",
        )
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
        page.click("nav button[data-view=collection]")
        page.set_input_files("#add-files", [str(photos["coffee"])])
        page.click("#add-form button[type=submit]")
        playwright.expect(page.locator("#collection-count")).to_have_text("1 stored")
        # the thumbnail is fetched with the key too
        until(page, "document.querySelector('#collection-grid img')?.naturalWidth")
        assert loaded_pictures(page.locator("#collection-grid")) == [256]


def test_without_thumbnails_the_page_says_no_preview(
    tmp_path: Path, photos: dict[str, Path], page: playwright.Page
) -> None:
    for server in serve(
        tmp_path,
        "sqlite:///" + str(tmp_path / "bare.db"),
        WORKER_COUNT="1",
        LOOKALIKE_THUMBNAILS="false",
    ):
        stored(server, {"coffee": photos["coffee"]})
        page.goto(server.url + "/")
        page.click("nav button[data-view=collection]")
        item = page.locator("#collection-grid li").first
        playwright.expect(item.locator(".no-preview")).to_have_text("no preview")
        assert page.locator("#collection-grid img").count() == 0
        assert page.errors == []  # type: ignore[attr-defined]


def test_at_phone_width_with_labelled_controls(server: Served, browser: playwright.Browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        for view in ("search", "compare", "collection", "status"):
            page.click(f"nav button[data-view={view}]")
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 375, f"the {view} view is {wide} px wide at phone width"
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input, select, textarea')]
                .filter(c => c.type !== 'hidden' && !c.labels.length && !c.ariaLabel)
                .map(c => c.id || c.name)"""
        )
        assert unlabelled == []
        # by keyboard: Tab reaches the navigation, Enter switches the view
        page.focus("nav button[data-view=status]")
        page.keyboard.press("Enter")
        playwright.expect(page.locator("#status")).to_be_visible()
    finally:
        context.close()


def test_with_embeddings_a_heavy_crop_is_found_and_the_region_drawn(
    tmp_path: Path, photos: dict[str, Path], page: playwright.Page, model_cache: Path
) -> None:
    for server in serve(
        tmp_path,
        "sqlite:///" + str(tmp_path / "cnn.db"),
        WORKER_COUNT="1",
        LOOKALIKE_EMBEDDINGS="true",
        LOOKALIKE_MODEL_CACHE=str(model_cache),
        LOOKALIKE_EMBEDDING_THREADS="1",
    ):
        stored(server, photos)
        crop = tmp_path / "crop.jpg"
        image = Image.open(photos["chelsea"])
        width, height = image.size  # the middle 70 % of each side: half the picture gone
        box = (width * 15 // 100, height * 15 // 100, width * 85 // 100, height * 85 // 100)
        image.crop(box).save(crop)
        page.goto(server.url + "/")
        methods = page.locator("#search-method option")
        playwright.expect(methods).to_have_count(3)
        page.select_option("#search-method", "embedding")
        page.set_input_files("#search-file", str(crop))
        page.click("#search-form button[type=submit]")
        first = page.locator("#results li").first
        playwright.expect(first.locator(".name")).to_have_text("chelsea")
        playwright.expect(first.locator("dl")).to_contain_text("embedding")
        first.locator("button").click()  # side by side: the part of the photo it shows
        playwright.expect(page.locator("#side-facts")).to_contain_text("the same scene")
        drawn = shown_box(page, "#side-stored-region", "#side-stored")
        assert iou(drawn, (0.15, 0.15, 0.85, 0.85)) > 0.8
        assert iou(shown_box(page, "#side-query-region", "#side-query"), (0, 0, 1, 1)) > 0.9
        page.click("#side-by-side button")

        # the photo inside a page of text: found, and where it is on the page
        sheet, box = Image.new("RGB", (1200, 800), (245, 245, 245)), (150, 160, 550, 0)
        for y in range(40, 800, 40):
            sheet.paste((70, 70, 70), (700, y, 1160, y + 10))
        inner = image.resize((400, round(400 * height / width)))
        sheet.paste(inner, box[:2])
        box = (150 / 1200, 160 / 800, 550 / 1200, (160 + inner.height) / 800)
        sheet.save(tmp_path / "page.jpg")
        page.select_option("#search-method", "hybrid")
        page.set_input_files("#search-file", str(tmp_path / "page.jpg"))
        page.click("#search-form button[type=submit]")
        playwright.expect(first.locator(".name")).to_have_text("chelsea")
        playwright.expect(first.locator("dl")).to_contain_text("0.400")  # verified: 0.40
        first.locator("button").click()
        playwright.expect(page.locator("#side-query-region")).to_be_visible()
        assert iou(shown_box(page, "#side-query-region", "#side-query"), box) > 0.8
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "region.png"))
        assert page.errors == []  # type: ignore[attr-defined]


def shown_box(page: playwright.Page, region: str, picture: str) -> tuple[float, ...]:
    """Where ``region`` is drawn on ``picture``, relative to the picture as shown."""
    outer = page.locator(picture).bounding_box()
    inner = page.locator(region).bounding_box()
    assert outer is not None and inner is not None
    x, y = (inner["x"] - outer["x"]) / outer["width"], (inner["y"] - outer["y"]) / outer["height"]
    return (x, y, x + inner["width"] / outer["width"], y + inner["height"] / outer["height"])


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_the_duplicates_view_groups_copies_and_remembers_not_a_copy(
    tmp_path: Path, photos: dict[str, Path], page: playwright.Page
) -> None:
    """Groups as thumbnails, the kept copy marked and first; a copy stored under a hostile
    name shows as text; "Not a copy" is kept by the store and the next search honours it."""
    for server in serve(tmp_path, "sqlite:///" + str(tmp_path / "dup.db"), WORKER_COUNT="1"):
        stored(
            server,
            photos,
            {
                "astronaut-small.png": resized_copy(photos["astronaut"]),
                XSS: resized_copy(photos["coffee"]),
            },
        )
        page.goto(server.url + "/")
        page.click("nav button[data-view=duplicates]")
        page.click("#duplicates-form button[type=submit]")
        playwright.expect(page.locator("#duplicates-summary")).to_have_text("2 group(s) of copies")
        groups = page.locator("#duplicates-groups > li")
        playwright.expect(groups).to_have_count(2)
        until(
            page,
            "[...document.querySelectorAll('#duplicates-groups img')].length == 4 &&"
            " [...document.querySelectorAll('#duplicates-groups img')].every(i => i.naturalWidth)",
        )
        kept = page.locator("#duplicates-groups .card.kept .name")
        assert sorted(kept.all_text_contents()) == ["astronaut", "coffee"]
        playwright.expect(
            page.locator("#duplicates-groups .name", has_text="onerror")
        ).to_have_text(XSS)
        assert page.locator("img[src=x]").count() == 0
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "duplicates.png"), full_page=True)

        page.get_by_role("button", name="astronaut-small.png is not a copy of astronaut").click()
        playwright.expect(page.locator("#message")).to_contain_text("will not be grouped")
        marks = httpx.get(server.url + "/distinct").json()["result"]
        assert marks == [["astronaut", "astronaut-small.png"]]
        page.click("#duplicates-form button[type=submit]")
        playwright.expect(page.locator("#duplicates-summary")).to_have_text("1 group(s) of copies")
        assert page.errors == []  # type: ignore[attr-defined]
