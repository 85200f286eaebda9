"""The published map page in a real browser: headless Chromium (Debian's) driven by Playwright.

The page is opened from the output bucket's public URL under the alias host ``localhost`` while
the GeoJSON URLs in it name ``127.0.0.1``: two origins, so the browser fetches the products
cross-origin and only the bucket's CORS rule lets it read them, as on AWS when a page elsewhere
reads the bucket. Products come from the real pipeline pieces (tests.test_maps.publish_products).
A screenshot of each page is kept under test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, expect, sync_playwright
from shapely.geometry import shape

from picsel_nb import maps
from picsel_nb.maps.assets import LEAFLET_VERSION
from picsel_nb.stack.context import Stack
from tests.cloud_fixtures import cloud  # noqa: F401
from tests.test_maps import DAY, published, stack  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
VIEWPORT = {"width": 1100, "height": 760}
TIMEOUT_MS = 15_000


def chromium_path() -> Path | None:
    """Debian's Chromium (or $PICSEL_CHROMIUM): the browser of these tests."""
    found = os.environ.get("PICSEL_CHROMIUM") or shutil.which("chromium")
    return Path(found) if found and Path(found).is_file() else None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the module; missing: a failure in CI, a skip elsewhere."""
    executable = chromium_path()
    if executable is None:
        message = ("Chromium not found: install it with `apt-get install chromium` (Debian) or "
                   "point PICSEL_CHROMIUM at a Chromium binary")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), headless=True,
                                              args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page_url(stack: Stack, published) -> str:  # noqa: F811
    """The day's map, published with browser-fetched GeoJSON; its URL under the alias host."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", maps.BasemapWarning)
        saved = maps.publish_day_map(stack, DAY, embed=False)
    parts = urlsplit(saved["url"])
    assert parts.hostname == "127.0.0.1"
    return parts._replace(netloc=f"localhost:{parts.port}").geturl()


class Visit:
    """One page load: the page, every request it made and every console error."""

    def __init__(self, page: Page):
        self.page, self.requests, self.errors = page, [], []
        page.on("request", self.on_request)
        page.on("console", self.on_console)

    def on_request(self, request: Request) -> None:
        self.requests.append(request)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)


@pytest.fixture
def visit(browser, page_url, request) -> Visit:
    """The map page, loaded with its first products drawn; screenshot kept after the test."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = Visit(page)
    page.goto(page_url)
    yield seen
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"browser-map-{request.node.name}.png")
    context.close()


def paths(page: Page, pane: str):
    """The interactive SVG paths drawn in one layer pane."""
    return page.locator(f".leaflet-{pane}-pane path.leaflet-interactive")


def overlay_checkbox(page: Page, name: str):
    """The layer control's checkbox of an overlay."""
    return page.locator(".leaflet-control-layers-overlays label", has_text=name).locator("input")


def point_inside(page: Page, pane: str, index: int) -> tuple[float, float]:
    """A viewport point where the index-th path of ``pane`` is the topmost element."""
    point = paths(page, pane).nth(index).evaluate("""path => {
        const box = path.getBoundingClientRect();
        for (let fy = 0.025; fy < 1; fy += 0.025) {
            for (let fx = 0.025; fx < 1; fx += 0.025) {
                const x = box.left + fx * box.width, y = box.top + fy * box.height;
                if (document.elementFromPoint(x, y) === path) { return [x, y]; }
            }
        }
        return null;
    }""")
    assert point is not None, f"path {index} of {pane} is hidden under other elements"
    return point


def test_leaflet_comes_from_the_page_and_the_products_from_the_bucket(visit, page_url):
    expect(paths(visit.page, maps.band_pane("t2m")).first).to_be_attached()
    assert visit.page.evaluate("window.L.version") == LEAFLET_VERSION
    hosts = {urlsplit(r.url).netloc for r in visit.requests if r.url.startswith("http")}
    port = urlsplit(page_url).port
    assert hosts <= {f"localhost:{port}", f"127.0.0.1:{port}"}  # nothing from the internet
    fetched = [r for r in visit.requests if r.url.endswith(".geojson")]
    assert {r.all_headers().get("origin") for r in fetched} == {f"http://localhost:{port}"}
    assert all(r.response().all_headers()["access-control-allow-origin"] == "*" for r in fetched)
    assert visit.errors == []  # every load succeeded, the favicon included


def test_every_feature_is_drawn_and_hidden_layers_are_not(visit, published):  # noqa: F811
    for variable, shown in (("t2m", True), ("tp", False)):
        bands = published["geojson", variable, DAY]["features"]
        lines = published["isolines", variable, DAY]["features"]
        expect(paths(visit.page, maps.band_pane(variable))).to_have_count(
            len(bands) if shown else 0)
        expect(paths(visit.page, maps.isoline_pane(variable))).to_have_count(
            len(lines) if shown else 0)
    rows = visit.page.locator(".picsel-legend-t2m .picsel-legend-row")
    expect(rows).to_have_count(len(published["geojson", "t2m", DAY]["features"]))
    expect(visit.page.locator(".picsel-legend-tp")).to_have_count(0)


def test_the_layer_control_toggles_bands_and_their_legend(visit, published):  # noqa: F811
    page = visit.page
    t2m, tp = (len(published["geojson", v, DAY]["features"]) for v in ("t2m", "tp"))
    expect(paths(page, maps.band_pane("t2m"))).to_have_count(t2m)
    overlay_checkbox(page, "Precipitation bands").check()
    expect(paths(page, maps.band_pane("tp"))).to_have_count(tp)
    expect(page.locator(".picsel-legend-tp .picsel-legend-row")).to_have_count(tp)
    overlay_checkbox(page, "Temperature bands").uncheck()
    expect(paths(page, maps.band_pane("t2m"))).to_have_count(0)
    expect(page.locator(".picsel-legend-t2m")).to_have_count(0)


def test_hovering_a_band_shows_its_range_and_units(visit, published):  # noqa: F811
    features = published["geojson", "t2m", DAY]["features"]
    closed = [i for i, f in enumerate(features)
              if None not in (f["properties"]["lower"], f["properties"]["upper"])]
    index = max(closed, key=lambda i: shape(features[i]["geometry"]).area)
    pane = maps.band_pane("t2m")
    expect(paths(visit.page, pane)).to_have_count(len(features))
    visit.page.mouse.move(*point_inside(visit.page, pane, index))
    tooltip = visit.page.locator(".leaflet-tooltip.picsel-tooltip")
    properties = features[index]["properties"]
    expect(tooltip).to_contain_text(properties["label"])  # e.g. "24–26 °C"
    expect(tooltip).to_contain_text(f"{properties['lower']:g}–{properties['upper']:g} °C")
    expect(tooltip).to_contain_text(f"Daily mean 2 m temperature, {DAY.isoformat()}")
