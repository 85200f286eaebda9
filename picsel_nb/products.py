"""The published products of one (variable, day): their keys, Content-Types and the catalog form.

Shared by the Glue job, which writes them, and by the stack and the notebooks, which list and read
them. In the output bucket:

- ``products/geojson/<variable>/YYYY-MM-DD.geojson``: the bands, RFC 7946 (public). Written last:
  its presence is what "published" means.
- ``products/isolines/<variable>/YYYY-MM-DD.geojson``: the isolines (public).
- ``products/png/<variable>/YYYY-MM-DD.png``: the plot (public).
- ``catalog/contours/variable=<v>/date=<d>/part-0000.json``: the catalog form, newline-delimited
  JSON with one flat row per band (private; crawled into the table ``contours``). ``variable`` and
  ``date`` are the partition keys, so they are folder names and not columns of the rows: a Glue
  crawler would otherwise see each of them twice and Athena would refuse the duplicate columns.

``<variable>`` is the ERA5 short name: ``t2m`` or ``tp``.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import orjson
from pyproj import Geod
from shapely.geometry import shape

from picsel_nb.era5 import VARIABLES, parse_date
from picsel_nb.stack.buckets import CONTENT_TYPES

PRODUCTS_PREFIX = "products/"
CATALOG_PREFIX = "catalog/contours/"
SHORT_NAMES = tuple(VARIABLES.values())  # ("t2m", "tp")
# Written in this order: the web GeoJSON last, so a product is never published before the rest.
KINDS = ("png", "isolines", "catalog", "geojson")
CONTENT_TYPE = {"png": CONTENT_TYPES[".png"], "isolines": CONTENT_TYPES[".geojson"],
                "catalog": CONTENT_TYPES[".ndjson"], "geojson": CONTENT_TYPES[".geojson"]}
_KEY = re.compile(r"products/(?P<kind>geojson|isolines|png)/(?P<variable>\w+)/"
                  r"(?P<date>\d{4}-\d{2}-\d{2})\.(?:geojson|png)"
                  r"|catalog/contours/variable=(?P<cvariable>\w+)/date=(?P<cdate>\d{4}-\d{2}-\d{2})"
                  r"/part-0000\.json")
ALL_NEW = "all-new"
# Catalog columns, in order; each row is one band. Its area is geodesic, in km² on the WGS84
# ellipsoid; west..north is the feature's bbox (lon/lat degrees).
CATALOG_COLUMNS = ("band", "lower", "upper", "label", "colour", "units", "area_km2", "west",
                   "south", "east", "north", "geometry")
WGS84 = Geod(ellps="WGS84")


def key(kind: str, variable: str, day: date) -> str:
    """The S3 key of one product (`kind` one of KINDS) of `variable` on `day`."""
    if kind == "catalog":
        return f"{CATALOG_PREFIX}variable={variable}/date={day.isoformat()}/part-0000.json"
    if kind not in KINDS:
        raise ValueError(f"product kind {kind!r} is not valid; accepted: {', '.join(KINDS)}")
    suffix = "png" if kind == "png" else "geojson"
    return f"{PRODUCTS_PREFIX}{kind}/{variable}/{day.isoformat()}.{suffix}"


def keys(variable: str, day: date) -> dict[str, str]:
    """Every product key of one (variable, day), by kind, in writing order (web GeoJSON last)."""
    return {kind: key(kind, variable, day) for kind in KINDS}


def parse_key(text: str) -> tuple[str, str, date] | None:
    """(kind, variable, day) of a product key; None for any other key."""
    match = _KEY.fullmatch(text)
    if match is None:
        return None
    if match["kind"]:
        return match["kind"], match["variable"], date.fromisoformat(match["date"])
    return "catalog", match["cvariable"], date.fromisoformat(match["cdate"])


def parse_dates(text: str) -> tuple[date, date] | None:
    """The job's ``--dates``: None for "all-new", else the (first, last) days of "YYYY-MM-DD" or
    "YYYY-MM-DD:YYYY-MM-DD"; ValueError naming the accepted forms otherwise."""
    accepted = f'accepted: "{ALL_NEW}", "YYYY-MM-DD" or "YYYY-MM-DD:YYYY-MM-DD"'
    text = text.strip()
    if text == ALL_NEW:
        return None
    first, _, last = text.partition(":")
    try:
        start, end = parse_date(first, field="dates"), parse_date(last or first, field="dates")
    except ValueError:
        raise ValueError(f"--dates {text!r} is not valid; {accepted}") from None
    if end < start:
        raise ValueError(f"--dates {text!r} ends before it starts; {accepted}")
    return start, end


def days(start: date, end: date) -> list[date]:
    """Every day from `start` to `end`, inclusive."""
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def area_km2(geometry: dict, geod: Geod = WGS84) -> float:
    """The geodesic area (km²) of a GeoJSON polygon or multipolygon in lon/lat on ``geod``."""
    area, _ = geod.geometry_area_perimeter(shape(geometry))
    return abs(area) / 1e6


def catalog_rows(bands: dict) -> list[dict]:
    """One flat row per band of a bands FeatureCollection (columns CATALOG_COLUMNS; variable and
    date are the partition keys); the geometry as a GeoJSON string (Athena:
    ``from_geojson_geometry(geometry)``)."""
    rows = []
    for index, feature in enumerate(bands["features"]):
        props = feature["properties"]
        rows.append({
            "band": index, "lower": props["lower"], "upper": props["upper"],
            "label": props["label"], "colour": props["fill"], "units": props["units"],
            "area_km2": round(area_km2(feature["geometry"]), 1),
            **dict(zip(("west", "south", "east", "north"), feature["bbox"], strict=True)),
            "geometry": orjson.dumps(feature["geometry"]).decode(),
        })
    return rows


def ndjson(rows: list[dict]) -> bytes:
    """Rows as newline-delimited JSON (one object a line, a final newline)."""
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)
