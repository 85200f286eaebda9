"""Where the maps find the published products: their public URLs, read anonymously as a browser
does, so a map shows exactly what the pipeline published and what the world can see.

A source is a ``Stack`` (its output bucket's public URLs) or the base URL of a copy of the bucket
(``https://<bucket>.s3.<region>.amazonaws.com/``): product keys are appended to it.
"""

from __future__ import annotations

import io
from datetime import date

import geopandas as gpd
import orjson
import requests

from picsel_nb import products
from picsel_nb.era5 import parse_date
from picsel_nb.stack.buckets import public_url
from picsel_nb.stack.context import Stack

Source = Stack | str
TIMEOUT_SECONDS = 30


class ProductNotPublishedError(LookupError):
    """A product the map needs is not (publicly) in the output bucket."""


def product_url(source: Source, kind: str, variable: str, day: str | date) -> str:
    """The public URL of one product (`kind` "geojson" bands, "isolines" or "png")."""
    key = products.key(kind, variable, parse_date(day))
    return object_url(source, key)


def object_url(source: Source, key: str) -> str:
    """The public URL of any key of the output bucket."""
    if isinstance(source, str):
        return f"{source.rstrip('/')}/{key}"
    return public_url(source, source.names.output_bucket, key)


def fetch(url: str) -> bytes:
    """The body at a public URL; ProductNotPublishedError when S3 does not serve it (403 or 404:
    without list permission a missing key is a 403)."""
    response = requests.get(url, timeout=TIMEOUT_SECONDS)
    if response.status_code in (403, 404):
        raise ProductNotPublishedError(
            f"{url} is not published (HTTP {response.status_code}): run the contours job for "
            "that day first (picsel_nb.pipeline.process, notebook 04)")
    response.raise_for_status()
    return response.content


def read_geojson(source: Source, kind: str, variable: str, day: str | date) -> dict:
    """One published GeoJSON product as a dict."""
    return orjson.loads(fetch(product_url(source, kind, variable, day)))


def read_frame(source: Source, kind: str, variable: str, day: str | date) -> gpd.GeoDataFrame:
    """One published GeoJSON product as a GeoDataFrame (lon/lat, EPSG:4326), features in order."""
    return gpd.read_file(io.BytesIO(fetch(product_url(source, kind, variable, day))))
