"""Interactive maps of one day: folium (Leaflet) pages that draw the published contours.

Each product is a layer in its own pane, styled by its features' own colours, with a tooltip
naming the band and a legend built from the same features; the layer control turns them on and
off. By default the browser fetches the GeoJSON from the output bucket's public URLs when the page
is viewed (the bucket's CORS rule lets pages of any origin do so); ``embed=True`` reads it here
and writes it into the page, which then works without the bucket. Offline (the default) the page
needs no other network: Leaflet is inline and the basemap is Natural Earth, embedded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import folium
from branca.element import Element, MacroElement
from folium.map import CustomPane, Layer
from jinja2 import Template

from picsel_nb.era5 import Area, parse_area, parse_date
from picsel_nb.maps import basemap
from picsel_nb.maps.assets import InlineCode, inline_leaflet
from picsel_nb.maps.sources import Source, object_url, product_url, read_geojson
from picsel_nb.plots import TITLES
from picsel_nb.products import SHORT_NAMES
from picsel_nb.settings import DEMO_AREA
from picsel_nb.stack.buckets import publish
from picsel_nb.stack.context import Stack

ONLINE_ENV = "PICSEL_MAPS_ONLINE"  # "1": CDN scripts and OpenStreetMap tiles instead
MAPS_PREFIX = "products/maps/"
SUBJECTS = {"t2m": "Temperature", "tp": "Precipitation"}
PRODUCT_ATTRIBUTION = "Contains modified Copernicus Climate Change Service information (ERA5-Land)"
BASEMAP_ATTRIBUTION = "Natural Earth"
BAND_STYLE = {"weight": 0.5, "opacity": 0.8, "fillOpacity": 0.7}
LINE_STYLE = {"weight": 1.2, "opacity": 0.9, "fill": False}
LAND_STYLE = {"weight": 0, "fillColor": basemap.LAND, "fillOpacity": 1.0}
COAST_STYLE = {"color": basemap.COASTLINE, "weight": 1.0, "opacity": 0.9}
BORDER_STYLE = {"color": basemap.BORDERS, "weight": 0.8, "opacity": 0.9, "dashArray": "4 3"}
# Panes, bottom to top: land, bands, isolines, then coastlines and borders over everything.
LAND_PANE, LINES_PANE = ("basemap-land", 300), ("basemap-lines", 460)
NO_FAVICON = '<link rel="icon" href="data:,">'  # else browsers ask the bucket for /favicon.ico
PAGE_CSS = f".leaflet-container {{ background: {basemap.OCEAN}; }}" + """
.picsel-legend { background: rgba(255, 255, 255, 0.92); padding: 6px 8px; border-radius: 4px;
  font: 12px/1.4 sans-serif; box-shadow: 0 1px 4px rgba(0, 0, 0, 0.3); }
.picsel-legend-title { font-weight: bold; margin-bottom: 3px; }
.picsel-legend-row i { display: inline-block; width: 18px; height: 12px; margin-right: 6px;
  vertical-align: middle; border: 1px solid rgba(0, 0, 0, 0.25); }
"""


def online() -> bool:
    """Whether maps may use the internet (CDN scripts, OSM tiles): PICSEL_MAPS_ONLINE=1."""
    return os.environ.get(ONLINE_ENV, "") == "1"


def band_pane(variable: str) -> str:
    """The pane of a variable's bands; its DOM class is ``leaflet-<pane>-pane``."""
    return f"bands-{variable}"


def isoline_pane(variable: str) -> str:
    """The pane of a variable's isolines."""
    return f"isolines-{variable}"


class ProductLayer(Layer):
    """A published GeoJSON product as a Leaflet layer in its own pane: each feature drawn in its
    own colour (``fill``, and ``stroke_from`` for the outline) with a tooltip of its label. The
    browser fetches ``url``, unless ``data`` is given to embed."""

    _template = Template("""
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = L.geoJSON(null, {
    pane: {{ this.pane|tojson }},
    attribution: {{ this.attribution|tojson }},
    style: function (feature) {
        var props = feature.properties;
        return Object.assign({}, {{ this.style|tojson }},
                             {color: props[{{ this.stroke_from|tojson }}], fillColor: props.fill});
    }
});
{{ this.get_name() }}.bindTooltip(function (layer) {
    var props = layer.feature.properties, box = document.createElement("div");
    var title = document.createElement("b");
    title.textContent = {{ this.title|tojson }} + ", " + props.date;
    box.append(title, document.createElement("br"), props.label);
    return box;
}, {sticky: true, className: "picsel-tooltip"});
{%- if this.data is not none %}
{{ this.get_name() }}.loaded = Promise.resolve({{ this.data|tojson }});
{%- else %}
{{ this.get_name() }}.loaded = fetch({{ this.url|tojson }}).then(function (response) {
    if (!response.ok) {
        throw new Error(response.status + " " + response.statusText + ": " + response.url);
    }
    return response.json();
});
{%- endif %}
{{ this.get_name() }}.loaded.then(function (data) { {{ this.get_name() }}.addData(data); })
    .catch(function (error) {
        console.error("picsel map: cannot load " + {{ this.layer_name|tojson }}, error);
    });
{% endmacro %}
""")

    def __init__(self, name: str, title: str, pane: str, style: dict, stroke_from: str, *,
                 url: str | None = None, data: dict | None = None, show: bool = True):
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "ProductLayer"
        self.title, self.pane, self.style, self.stroke_from = title, pane, style, stroke_from
        self.url, self.data, self.attribution = url, data, PRODUCT_ATTRIBUTION


class Legend(MacroElement):
    """A legend control of a bands layer, shown while the layer is: one row per band, highest
    first, built in the page from the layer's own features (plain HTML: works offline)."""

    _template = Template("""
{% macro script(this, kwargs) %}
var {{ this.get_name() }} = L.control({position: "bottomright"});
{{ this.get_name() }}.onAdd = function () {
    var box = L.DomUtil.create("div", "picsel-legend " + {{ this.class_name|tojson }});
    L.DomUtil.create("div", "picsel-legend-title", box).textContent = {{ this.title|tojson }};
    {{ this.layer.get_name() }}.loaded.then(function (data) {
        data.features.map(function (feature) { return feature.properties; })
            .sort(function (a, b) { return (b.lower ?? -Infinity) - (a.lower ?? -Infinity); })
            .forEach(function (props) {
                var row = L.DomUtil.create("div", "picsel-legend-row", box);
                var swatch = L.DomUtil.create("i", "", row);  // as translucent as the band
                swatch.style.background = props.fill;
                swatch.style.opacity = {{ this.layer.style.fillOpacity|tojson }};
                row.append(props.label);
            });
    });
    return box;
};
{{ this.layer.get_name() }}.on("add", function () {
    {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
});
{{ this.layer.get_name() }}.on("remove", function () { {{ this.get_name() }}.remove(); });
if ({{ this._parent.get_name() }}.hasLayer({{ this.layer.get_name() }})) {
    {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
}
{% endmacro %}
""")

    def __init__(self, layer: ProductLayer, title: str, class_name: str):
        super().__init__()
        self._name = "Legend"
        self.layer, self.title, self.class_name = layer, title, class_name


def add_basemap(fmap: folium.Map, area: Area, scale: str) -> None:
    """Natural Earth land under the products, coastlines and borders over them (none, with a
    BasemapWarning, when the data is missing)."""
    frames = basemap.basemap_frames(area, scale)
    if not frames:
        return
    for pane, z_index in (LAND_PANE, LINES_PANE):
        CustomPane(pane, z_index=z_index, pointer_events=False).add_to(fmap)
    layers = (("land", LAND_PANE, LAND_STYLE), ("coastline", LINES_PANE, COAST_STYLE),
              ("borders", LINES_PANE, BORDER_STYLE))
    for layer, pane, style in layers:
        folium.GeoJson(frames[layer], name=f"{layer} (Natural Earth {scale})", control=False,
                       style_function=lambda _, style=style: style, pane=pane[0],
                       interactive=False, attribution=BASEMAP_ATTRIBUTION).add_to(fmap)


def add_products(fmap: folium.Map, source: Source, day: date, variables: Sequence[str],
                 embed: bool) -> None:
    """The bands and isolines of each variable, each a layer of its own (the first variable's
    shown), with a legend per variable."""
    for index, variable in enumerate(variables):
        subject, title = SUBJECTS[variable], TITLES[variable]
        kinds = (("geojson", "bands", band_pane(variable), BAND_STYLE, "fill", 410),
                 ("isolines", "isolines", isoline_pane(variable), LINE_STYLE, "stroke", 440))
        for kind, what, pane, style, stroke_from, z_base in kinds:
            CustomPane(pane, z_index=z_base + index, pointer_events=True).add_to(fmap)
            place = ({"data": read_geojson(source, kind, variable, day)} if embed
                     else {"url": product_url(source, kind, variable, day)})
            layer = ProductLayer(f"{subject} {what}", title, pane, style, stroke_from,
                                 show=index == 0, **place).add_to(fmap)
            if kind == "geojson":
                Legend(layer, f"{title}, {day.isoformat()}", f"picsel-legend-{variable}"
                       ).add_to(fmap)


def day_map(source: Source, day: str | date, *, embed: bool = False,
            area: Sequence[float] = DEMO_AREA, variables: Sequence[str] = SHORT_NAMES,
            scale: str = "50m") -> folium.Map:
    """The folium map of one day's published contours over ``area`` ([N, W, S, E]): bands and
    isolines of each variable as toggleable layers with tooltips and legends.

    ``embed=False``: the page fetches the GeoJSON from its public URLs when viewed (CORS);
    ``embed=True``: the GeoJSON is read now and written into the page. Offline unless
    PICSEL_MAPS_ONLINE=1: Leaflet inline, Natural Earth basemap at ``scale``.
    """
    day, area = parse_date(day), parse_area(area)
    unknown = sorted(set(variables) - set(SUBJECTS))
    if unknown:
        raise ValueError(f"variables: {unknown} unknown; accepted: {', '.join(SUBJECTS)}")
    fmap = folium.Map(tiles="OpenStreetMap" if online() else None, control_scale=True)
    fmap.get_root().title = f"ERA5-Land contours, {day.isoformat()}"
    if not online():
        inline_leaflet(fmap)
        add_basemap(fmap, area, scale)
    header = fmap.get_root().header  # after Leaflet's CSS, so that ours wins
    header.add_child(Element(NO_FAVICON), name="favicon")
    header.add_child(InlineCode("style", PAGE_CSS), name="picsel_css")
    add_products(fmap, source, day, variables, embed)
    folium.LayerControl(collapsed=False).add_to(fmap)
    fmap.fit_bounds([[area.south, area.west], [area.north, area.east]])
    return fmap


def render_html(fmap: folium.Map) -> str:
    """The map as a standalone HTML page."""
    return fmap.get_root().render()


def map_key(day: str | date) -> str:
    """The output bucket key of a day's map page."""
    return f"{MAPS_PREFIX}{parse_date(day).isoformat()}.html"


def publish_day_map(stack: Stack, day: str | date, *, embed: bool = False,
                    build_dir: Path | None = None, **options) -> dict:
    """Render a day's map (``day_map`` options), save it as ``build/maps/YYYY-MM-DD.html`` and
    publish it as ``products/maps/YYYY-MM-DD.html`` (text/html); where it went."""
    html = render_html(day_map(stack, day, embed=embed, **options))
    key = map_key(day)
    path = (build_dir or stack.settings.build_dir) / "maps" / Path(key).name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    published = publish(stack, stack.names.output_bucket, key, html)
    return {**published, "url": object_url(stack, key), "path": path,
            "bytes": len(html.encode())}
