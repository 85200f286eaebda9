"""Daily field → filled bands and isolines → RFC 7946 GeoJSON.

``bands(field)`` gives a FeatureCollection of MultiPolygons, one per band between consecutive
levels; ``isolines(field)`` one of MultiLineStrings, one per level; ``products(field)`` both
documents as UTF-8 bytes from one tracing (what the Glue job uses; large fields have their bands
traced, and their two documents written, on two threads); ``day_products(day)`` that for each
variable of a daily dataset. ``field`` is a 2-D ``xarray.DataArray`` on latitude/longitude
(either order, either direction) named ``t2m`` (units degC) or ``tp`` (mm) with a scalar ``date``
coordinate, as ``picsel_nb.era5.daily`` makes them; ``variable=``, ``units=``, ``date=`` fill in.

What the documents guarantee:

- Bands: ``lower < value <= upper``; the lowest band also holds its lower edge (dry cells, exactly
  0 mm, are in the first precipitation band). Values below the lowest level or above the highest
  are not dropped: they form the open bands labelled ``< lowest`` / ``> highest`` (``lower`` /
  ``upper`` null), which appear only when such values exist. Labels read "20–22 °C". Default
  levels: temperature every 2 °C on even numbers covering the field, precipitation
  PRECIPITATION_LEVELS; NaN cells (ocean in ERA5-Land) are in no band.
- Geometry: lon/lat WGS84 with longitudes in -180..180: a 0..360 grid is wrapped, a global grid is
  closed at the antimeridian (polygons are cut there), a regional grid across it is refused.
  Exterior rings anticlockwise, holes clockwise; coordinates rounded to ``precision`` decimals
  (DEFAULT_PRECISION = 4, ~11 m), written in fixed-width fields with exactly that many decimals;
  a ``bbox`` on the collection and on every feature. Every polygon is valid (shapely
  ``is_valid``) by construction, also with values on a level, saddles, exact zeros and NaN
  regions, and no ring has under 4 points or zero area: values closer to a level than a fraction
  of a rounding unit (at the steepest grid edge) are moved off it first (see ``grid.nudge``).
- Properties: bands ``variable, date, units, lower, upper, label, fill``; isolines ``variable, date,
  units, level, label, stroke``. Colours come from TEMPERATURE_CMAP / PRECIPITATION_CMAP at fixed
  values (an open band takes the colour half a band beyond its level), so a band has the same
  colour every day.

How: contourpy traces each band once (rows the band cannot reach are skipped); isolines are read
off the band edges, so they share the bands' vertices and their text, which numpy writes once per
vertex (see ``writer``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date as Date
from functools import partial
from itertools import pairwise

import numpy as np
import orjson
import xarray as xr

from picsel_nb.contours.grid import Grid, prepare
from picsel_nb.contours.styles import (
    PRECIPITATION_CMAP,
    PRECIPITATION_LEVELS,
    STYLES,
    TEMPERATURE_CMAP,
    TEMPERATURE_STEP,
    Band,
    bands_for,
    check_levels,
    check_units,
    line_label,
)
from picsel_nb.contours.styles import default_levels as _default_levels
from picsel_nb.contours.tracing import EMPTY, NO_LINES, Polygons, Tracer
from picsel_nb.contours.writer import (
    Coordinates,
    Geometry,
    coordinates,
    feature_collection,
    vertex_rows,
)

DEFAULT_PRECISION = 4
PARALLEL_VERTICES = 200_000  # products() joins its two documents on two threads above this
PARALLEL_CELLS = 200_000  # above this, variables and the bands of each are traced on threads

__all__ = ["DEFAULT_PRECISION", "PRECIPITATION_CMAP", "PRECIPITATION_LEVELS", "TEMPERATURE_CMAP",
           "TEMPERATURE_STEP", "bands", "day_products", "default_levels", "isolines", "products"]


def default_levels(variable: str, field: xr.DataArray | np.ndarray) -> np.ndarray:
    """The default levels of ``variable`` ("t2m" or "tp") for ``field``."""
    return _default_levels(variable, field)


def bands(field: xr.DataArray, levels=None, *, as_bytes: bool = False,
          precision: int = DEFAULT_PRECISION, variable: str | None = None,
          units: str | None = None, date: str | Date | None = None) -> dict | bytes:
    """Filled bands of ``field`` between ``levels`` as a GeoJSON FeatureCollection (dict), or its
    UTF-8 text when ``as_bytes``."""
    traced = _Traced(field, levels, 2, precision, variable, units, date, bands=True, lines=False)
    return _deliver(traced.bands_document(), as_bytes)


def isolines(field: xr.DataArray, levels=None, *, as_bytes: bool = False,
             precision: int = DEFAULT_PRECISION, variable: str | None = None,
             units: str | None = None, date: str | Date | None = None) -> dict | bytes:
    """Isolines of ``field`` at ``levels`` as a GeoJSON FeatureCollection (dict), or its UTF-8
    text when ``as_bytes``."""
    traced = _Traced(field, levels, 1, precision, variable, units, date, bands=False, lines=True)
    return _deliver(traced.lines_document(), as_bytes)


def products(field: xr.DataArray, levels=None, *, precision: int = DEFAULT_PRECISION,
             variable: str | None = None, units: str | None = None,
             date: str | Date | None = None) -> tuple[bytes, bytes]:
    """Both documents of ``field`` as UTF-8 GeoJSON, ``(bands, isolines)``, from one tracing."""
    traced = _Traced(field, levels, 2, precision, variable, units, date, bands=True, lines=True)
    if traced.vertices < PARALLEL_VERTICES:
        return traced.bands_document(), traced.lines_document()
    with ThreadPoolExecutor(1) as helper:  # bytes.join releases the GIL on large copies
        bands_document = helper.submit(traced.bands_document)
        lines_document = traced.lines_document()
        return bands_document.result(), lines_document


def day_products(day: xr.Dataset, levels: dict | None = None, *,
                 precision: int = DEFAULT_PRECISION) -> dict[str, tuple[bytes, bytes]]:
    """``products`` of each variable of a one-date daily dataset (``t2m``, ``tp``), keyed by name;
    ``levels`` optionally maps a name to its levels. On large grids the variables run on threads
    of their own (numpy, the writer and contourpy's threaded generator release the GIL)."""
    names = [name for name in day.data_vars if name in STYLES]
    fields = [day[name] for name in names]
    work = [partial(products, field, (levels or {}).get(name), precision=precision)
            for name, field in zip(names, fields, strict=True)]
    if not fields or fields[0].size < PARALLEL_CELLS:
        return {name: run() for name, run in zip(names, work, strict=True)}
    with ThreadPoolExecutor(len(work)) as pool:
        running = [pool.submit(run) for run in work]
        return {name: future.result() for name, future in zip(names, running, strict=True)}


def _deliver(document: bytes, as_bytes: bool) -> dict | bytes:
    return document if as_bytes else orjson.loads(document)


class _Traced:
    """One field's bands, traced once, and their geometries written (the bands' when ``bands``,
    the isolines' when ``lines``), ready to be put in their documents."""

    def __init__(self, field: xr.DataArray, levels, minimum: int, precision: int,
                 variable: str | None, units: str | None, date: str | Date | None, *,
                 bands: bool, lines: bool):
        self.wanted = bands, lines
        name = str(variable or field.name or "")
        levels = _default_levels(name, field) if levels is None else check_levels(levels, minimum)
        self.grid = prepare(field, levels, variable=name or None, units=units, date=date,
                            precision=precision)
        check_units(self.grid.variable, self.grid.units)
        below, above = _beyond(self.grid.z, levels)
        self.specs = bands_for(name, levels, below, above) if levels.size > 1 else []
        self.limits = _limits(levels, below, above)
        self.tracer = Tracer(self.grid) if np.isfinite(self.grid.z).any() else None
        if self.grid.z.size < PARALLEL_CELLS or len(self.limits) < 2:
            traced = [self._band(limits) for limits in self.limits]
        else:  # contourpy (threaded generator) and numpy release the GIL: bands on two threads
            with ThreadPoolExecutor(2) as pool:
                traced = list(pool.map(self._band, self.limits))
        self.vertices = sum(vertices for vertices, _, _ in traced)
        self.bands = [band for _, band, _ in traced]
        self.lines = [line for _, _, line in traced]

    def _band(self, limits: tuple[float, float]) -> tuple[int, Coordinates | None,
                                                          Coordinates | None]:
        """One band traced and written: its vertex count, its polygons and the isoline at its
        upper level (None when not wanted or the band has no upper level)."""
        polygons: Polygons = self.tracer.band(*limits) if self.tracer else EMPTY
        x, y, text = self._units(polygons.points)
        bands, lines = self.wanted
        band = coordinates(Geometry("MultiPolygon", x, y, text, polygons.rings,
                                    polygons.polygons)) if bands else None
        if not lines or not np.isfinite(limits[1]):
            return x.size, band, None
        found = self.tracer.isolines(polygons, *limits) if self.tracer else NO_LINES
        index = found.index
        line = Geometry("MultiLineString", x[index], y[index], text[index], found.offsets)
        return x.size, band, coordinates(line)

    def bands_document(self) -> bytes:
        features = [(self._band_properties(spec), band)
                    for spec, band in zip(self.specs, self.bands, strict=True)]
        return feature_collection(features, self.grid.precision)

    def lines_document(self) -> bytes:
        features = [(self._line_properties(upper), line)
                    for (_, upper), line in zip(self.limits, self.lines, strict=True)
                    if line is not None]
        return feature_collection(features, self.grid.precision)

    def _units(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index coordinates as integer lon/lat units, and their text rows (written once, for
        bands and isolines alike)."""
        grid: Grid = self.grid
        x = grid.x0 + np.rint(points[:, 0] * grid.kx).astype(np.int64)
        y = grid.y0 + np.rint(points[:, 1] * grid.ky).astype(np.int64)
        return x, y, vertex_rows(x, y, grid.precision)

    def _common(self) -> dict:
        return {"variable": self.grid.variable, "date": self.grid.date, "units": self.grid.units}

    def _band_properties(self, spec: Band) -> dict:
        return {**self._common(), "lower": spec.lower, "upper": spec.upper, "label": spec.label,
                "fill": spec.fill}

    def _line_properties(self, level: float) -> dict:
        label, stroke = line_label(self.grid.variable, level)
        return {**self._common(), "level": level, "label": label, "stroke": stroke}


def _beyond(z: np.ndarray, levels: np.ndarray) -> tuple[bool, bool]:
    """Whether some values lie below the lowest level, and above the highest."""
    if levels.size == 0 or not np.isfinite(z).any():
        return False, False
    return bool(np.nanmin(z) < levels[0]), bool(np.nanmax(z) > levels[-1])


def _limits(levels: np.ndarray, below: bool, above: bool) -> list[tuple[float, float]]:
    """contourpy's (lower, upper) of each band, as contourpy fills ``lower < z <= upper``: the
    bands between levels (the lowest holding its lower edge) and the open bands beyond them. One
    level (isolines only) gives the two sides of it."""
    edges = [float(v) for v in levels]
    if len(edges) < 2:
        return [(-np.inf, edges[0]), (edges[0], np.inf)] if edges else []
    limits = list(pairwise(edges))
    limits[0] = (edges[0] if below else -np.inf, edges[1])
    return ([(-np.inf, edges[0])] if below else []) + limits + ([(edges[-1], np.inf)] if above
                                                               else [])
