"""picsel_nb.maps: offline folium pages (no CDN, inline Leaflet, layers, legends, basemap), static
cartopy maps with and without the Natural Earth data, and where the pages are published.

Products are made by the real pipeline pieces (a synthetic CDS download → era5.open_download →
era5.daily → contours) and published to the embedded cloud's output bucket, as the Glue job would.
"""

from __future__ import annotations

import re
import warnings
from datetime import date

import cartopy
import orjson
import pytest
import requests
from PIL import Image

from picsel_nb import contours, era5, maps, products
from picsel_nb.maps import assets, basemap
from picsel_nb.settings import DEMO_AREA, DEMO_DATASET, DEMO_END, DEMO_START
from picsel_nb.stack import buckets
from picsel_nb.stack.context import Stack, get_stack
from tests.cloud_fixtures import cloud  # noqa: F401

DAY = DEMO_START
DEMO_DAYS = products.days(DEMO_START, DEMO_END)
BASE_URL = "https://picsel-output-test.s3.sa-east-1.amazonaws.com"
URL = re.compile(r"https?://[^\s\"'<>)\\]+")
LAYER_NAMES = ("Temperature bands", "Temperature isolines", "Precipitation bands",
               "Precipitation isolines")


def publish_products(stack: Stack, days: list[date]) -> dict[tuple[str, str, date], dict]:
    """Publish the bands and isolines of days of a synthetic CDS download (the bytes the CDS
    would return) to the output bucket, as the Glue job does; the documents by (kind, variable,
    day)."""
    buckets.ensure_output_bucket(stack)
    request = era5.build_request(DEMO_DATASET, days[0], days[-1])  # tp: with the day after
    hourly = era5.open_download(era5.synthetic_download(DEMO_DATASET, request))
    daily = era5.daily(hourly, DEMO_DATASET, days=days)
    published = {}
    for day in days:
        for variable in products.SHORT_NAMES:
            field = daily[variable].sel(date=str(day))
            documents = dict(zip(("geojson", "isolines"), contours.products(field), strict=True))
            for kind, body in documents.items():
                buckets.publish(stack, stack.names.output_bucket,
                                products.key(kind, variable, day), body)
                published[kind, variable, day] = orjson.loads(body)
    return published


@pytest.fixture(scope="module")
def stack(cloud) -> Stack:  # noqa: F811
    """The stack on the test cloud."""
    return get_stack()


@pytest.fixture(scope="module")
def published(stack: Stack) -> dict[tuple[str, str, date], dict]:
    """The demo days' products, published."""
    return publish_products(stack, DEMO_DAYS)


@pytest.fixture
def no_natural_earth(tmp_path, monkeypatch):
    """CARTOPY_DATA_DIR pointing at an empty directory: no basemap data anywhere."""
    monkeypatch.setenv(basemap.DATA_DIR_ENV, str(tmp_path))


@pytest.fixture
def with_natural_earth(natural_earth_dir, monkeypatch):
    """CARTOPY_DATA_DIR pointing at the Natural Earth data; cartopy's config restored after."""
    monkeypatch.setenv(basemap.DATA_DIR_ENV, str(natural_earth_dir))
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir",
                        cartopy.config["pre_existing_data_dir"])


def offline_page(**options) -> str:
    return maps.render_html(maps.day_map(BASE_URL, DAY, **options))


def test_offline_page_fetches_only_the_products(with_natural_earth):
    html = offline_page()
    product_urls = {maps.product_url(BASE_URL, kind, variable, DAY)
                    for kind in ("geojson", "isolines") for variable in products.SHORT_NAMES}
    assert set(re.findall(r'fetch\("([^"]+)"\)', html)) == product_urls
    leaflet_own = set(URL.findall(assets.leaflet_js() + assets.leaflet_css()))
    assert set(URL.findall(html)) - product_urls <= leaflet_own  # namespaces, attribution
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?:", html)
    assert "L.tileLayer(" not in html and "cdn" not in html


def test_offline_page_inlines_leaflet_and_its_images(with_natural_earth):
    html = offline_page()
    assert assets.leaflet_js() in html and assets.leaflet_css() in html
    assert "url(images/" not in html and "url(data:image/png;base64," in html


def test_page_has_a_layer_pane_and_legend_per_product(with_natural_earth):
    html = offline_page()
    for name in LAYER_NAMES:
        assert f'"{name}" :' in html  # an overlay of the layer control
    for variable in products.SHORT_NAMES:
        assert f'createPane(\n                "{maps.band_pane(variable)}")' in html
        assert f'"picsel-legend-{variable}"' in html
    assert "basemap-land" in html and "basemap-lines" in html
    north, west, south, east = DEMO_AREA
    assert f"[[{south}, {west}], [{north}, {east}]]" in html.replace("\n", "").replace("  ", "")


def test_basemap_is_clipped_to_the_area_with_a_margin(with_natural_earth):
    frames = basemap.basemap_frames(era5.Area(*DEMO_AREA))
    north, west, south, east = DEMO_AREA
    margin = basemap.MARGIN_DEGREES
    for layer in basemap.LAYERS:
        minx, miny, maxx, maxy = frames[layer].total_bounds
        assert west - margin <= minx and maxx <= east + margin, layer
        assert south - margin <= miny and maxy <= north + margin, layer


def test_online_page_uses_the_cdn_and_openstreetmap(monkeypatch):
    monkeypatch.setenv(maps.ONLINE_ENV, "1")
    html = offline_page()
    assert "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js" in html
    assert "tile.openstreetmap.org" in html
    assert assets.leaflet_js() not in html and "basemap-land" not in html


def test_page_without_natural_earth_warns_and_still_draws_the_products(no_natural_earth):
    with pytest.warns(maps.BasemapWarning, match="Natural Earth data not found"):
        html = offline_page()
    assert "basemap-land" not in html
    assert all(f'"{name}" :' in html for name in LAYER_NAMES)


def test_unknown_variable_is_refused():
    with pytest.raises(ValueError, match="accepted: t2m, tp"):
        maps.day_map(BASE_URL, DAY, variables=["swvl1"])


def test_embedded_page_holds_the_published_features(stack, published):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", maps.BasemapWarning)
        html = maps.render_html(maps.day_map(stack, DAY, embed=True))
    assert "fetch(" not in html
    for variable in products.SHORT_NAMES:
        for feature in published["geojson", variable, DAY]["features"]:
            assert feature["properties"]["fill"] in html


def test_an_unpublished_day_is_a_clear_error(stack, published):
    with pytest.raises(maps.ProductNotPublishedError, match="2023-08-01.geojson is not published"):
        maps.day_map(stack, "2023-08-01", embed=True)


def test_published_page_is_saved_and_served_as_html(stack, published, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", maps.BasemapWarning)
        saved = maps.publish_day_map(stack, DAY, build_dir=tmp_path)
    assert saved["key"] == "products/maps/2023-09-01.html" == maps.map_key(DAY)
    assert saved["path"] == tmp_path / "maps" / "2023-09-01.html"
    head = stack.client("s3").head_object(Bucket=stack.names.output_bucket, Key=saved["key"])
    assert head["ContentType"] == "text/html; charset=utf-8"
    response = requests.get(saved["url"], timeout=30)  # anonymous, as a browser
    assert response.status_code == 200
    assert response.content == saved["path"].read_bytes()


def test_static_map_draws_the_bands_on_natural_earth(stack, published, with_natural_earth,
                                                     natural_earth_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", maps.BasemapWarning)
        figure = maps.static_map(stack, DAY, "t2m")
        figure.canvas.draw()
    assert cartopy.config["pre_existing_data_dir"] == natural_earth_dir
    (axes,) = figure.axes
    bands = published["geojson", "t2m", DAY]["features"]
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == [f["properties"]["label"] for f in bands][::-1]
    assert len(axes.collections) > len(bands)  # the bands, the isolines and the basemap


def test_static_map_without_natural_earth_warns_and_still_draws(stack, published,
                                                                no_natural_earth):
    with pytest.warns(maps.BasemapWarning):
        figure = maps.static_map(stack, DAY, "tp", isolines=False)
    figure.canvas.draw()
    (axes,) = figure.axes
    assert len(axes.collections) == len(published["geojson", "tp", DAY]["features"])


def test_small_multiples_show_each_variable_on_each_day(stack, published, with_natural_earth,
                                                        tmp_path):
    figure = maps.small_multiples(stack)
    path = maps.save_png(figure, tmp_path / "maps" / "small_multiples.png")
    with Image.open(path) as image:
        assert image.mode == "P"  # indexed colours: what keeps the notebooks small
        assert image.size == tuple(int(inches * figure.dpi) for inches in figure.get_size_inches())
    assert len(figure.axes) == len(products.SHORT_NAMES) * len(DEMO_DAYS) == 6
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[0].endswith("2023-09-01") and titles[-1].endswith("2023-09-03")
    assert sum(axes.get_legend() is not None for axes in figure.axes) == 2
