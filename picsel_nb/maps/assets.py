"""Leaflet inside the page: the map works with no network but the product URLs.

folium links Leaflet, jQuery, Bootstrap and Awesome Markers (JS and CSS) from CDNs. Our maps need
Leaflet alone (no markers, no Bootstrap widgets; folium's GeoJSON loader is the only user of jQuery
and ours uses ``fetch``), so offline every CDN link is dropped and Leaflet's own files, from the
PyPI package ``xstatic-leaflet``, are written into the page, its CSS images as data URIs.
"""

from __future__ import annotations

import base64
import re
from functools import cache
from pathlib import Path

import folium
from branca.element import Element
from jinja2 import Template
from xstatic.pkg import leaflet as xstatic_leaflet

LEAFLET_DIR = Path(xstatic_leaflet.BASE_DIR)
LEAFLET_VERSION = xstatic_leaflet.VERSION
_CSS_IMAGE = re.compile(r"url\((images/[\w.-]+\.png)\)")
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)


class InlineCode(Element):
    """A ``<script>`` or ``<style>`` element holding code verbatim (never read as a template)."""

    _template = Template("<{{ this.tag }}>{{ this.code }}</{{ this.tag }}>")

    def __init__(self, tag: str, code: str):
        super().__init__()
        self.tag, self.code = tag, code


@cache
def leaflet_js() -> str:
    """Leaflet's minified JavaScript, without its source-map comment (no map file is served)."""
    return _SOURCE_MAP.sub("", (LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8"))


@cache
def leaflet_css() -> str:
    """Leaflet's CSS with its images (layer-control icon, default marker) as data URIs."""
    def data_uri(match: re.Match) -> str:
        png = base64.b64encode((LEAFLET_DIR / match[1]).read_bytes()).decode()
        return f"url(data:image/png;base64,{png})"

    return _CSS_IMAGE.sub(data_uri, (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8"))


def inline_leaflet(fmap: folium.Map) -> None:
    """Replace every CDN script and stylesheet of ``fmap`` by Leaflet's own files, inline."""
    fmap.default_js, fmap.default_css = [], []
    header = fmap.get_root().header
    header.add_child(InlineCode("style", leaflet_css()), name="leaflet_css")
    header.add_child(InlineCode("script", leaflet_js()), name="leaflet")
