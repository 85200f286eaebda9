"""A daily field made ready for contouring: float64, latitude ascending, longitude in -180..180.

Contours are traced in grid-index space (column ``x``, row ``y``) and written in integer units of
``10**-precision`` degrees. A regular grid whose step is a whole number of units maps index to units
exactly: grid lines land on whole units and a point between two grid lines rounds strictly between
them, because values closer than ``eps`` to a level are first moved to ``level ± eps`` (see
``nudge``). That, and a check that no two levels can cross one grid edge within one unit of each
other, is what keeps every rounded ring simple: validity is built in, not repaired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date as Date

import numpy as np
import pandas as pd
import xarray as xr

LATITUDE_NAMES = ("latitude", "lat")
LONGITUDE_NAMES = ("longitude", "lon")
EPS_UNITS = 0.6  # how far (in units of precision, at the steepest grid edge) values leave a level
MIN_GAP_UNITS = 1.25  # the least distance (in units) between two levels' crossings of one edge
MIN_STEP_UNITS = 10  # so that EPS_UNITS / (1 + 2 EPS_UNITS / K) stays above half a unit


@dataclass(frozen=True)
class Grid:
    """A field ready for contouring, and how its index space maps to rounded lon/lat units."""

    z: np.ndarray  # (ny, nx) float64 C-contiguous, NaN where there is no data
    variable: str
    units: str
    date: str  # ISO date
    precision: int  # decimals of the written coordinates
    x0: int  # longitude of column 0, in units of 10**-precision degrees
    y0: int  # latitude of row 0, in units
    kx: int  # units per column
    ky: int  # units per row


def prepare(field: xr.DataArray, levels: np.ndarray, *, variable: str | None, units: str | None,
            date: str | Date | None, precision: int) -> Grid:
    """The Grid of a 2-D lat/lon field; ValueError naming the problem for anything else."""
    if not 1 <= precision <= 6:
        raise ValueError(f"precision: {precision!r} decimals; accepted: 1..6")
    field = _squeeze(field)
    lat_name, lon_name = _name(field, LATITUDE_NAMES), _name(field, LONGITUDE_NAMES)
    if field.dims != (lat_name, lon_name):
        field = field.transpose(lat_name, lon_name)
    lat, lat_step = _axis(field[lat_name].values, lat_name)
    lon, lon_step = _axis(field[lon_name].values, lon_name)
    values = field.values
    if lat_step < 0:
        lat, lat_step, values = lat[::-1], -lat_step, values[::-1]
    if lon_step < 0:
        lon, lon_step, values = lon[::-1], -lon_step, values[:, ::-1]
    z, lon0 = _wrapped(values, lon, lon_step)
    unit = 10.0 ** -precision
    grid = Grid(z=z, variable=_variable(field, variable), units=_units(field, units),
                date=_date(field, date), precision=precision,
                x0=_units_of(lon0, unit, lon_name), y0=_units_of(lat[0], unit, lat_name),
                kx=_steps(lon_step, unit, lon_name), ky=_steps(lat_step, unit, lat_name))
    nudge(grid, levels)
    return grid


def nudge(grid: Grid, levels: np.ndarray) -> None:
    """Move values within ``eps`` of a level to ``level ± eps``, in place.

    ``eps = EPS_UNITS * G / K`` with G the largest difference across a grid edge and K the fewest
    units per grid step, so every crossing sits more than half a unit from both ends of its edge
    and rounds strictly inside it. A value equal to a level stays on its side: below, except for the
    lowest level, whose band holds its lower edge. Raises ValueError when two levels are so close,
    for the steepest edge, that their crossings could round onto one point. Only levels that
    separate values count (see ``_boundaries``).
    """
    z = grid.z
    steepest = max(_steepest(z, 0), _steepest(z, 1))
    if levels.size == 0 or steepest == 0.0:
        return
    flat = z.reshape(-1)
    boundaries = _boundaries(levels, flat)
    per_step = min(grid.kx, grid.ky)
    gap = float(np.diff(boundaries).min()) if boundaries.size > 1 else math.inf
    if gap * per_step < MIN_GAP_UNITS * steepest:
        needed = grid.precision + math.ceil(math.log10(MIN_GAP_UNITS * steepest
                                                       / (gap * per_step)))
        raise ValueError(f"precision: {grid.precision} decimals cannot keep levels {gap:g} apart "
                         f"distinct where the field changes by {steepest:g} per grid step; "
                         f"accepted: precision >= {needed} (or levels further apart)")
    eps = EPS_UNITS * steepest / per_step
    near, level = _near_levels(flat, boundaries, eps)
    values = flat[near]
    lowest_edge = (level == levels[0]) & (levels.size > 1)  # the lowest band holds its lower edge
    up = np.where(lowest_edge, values >= level, values > level)
    flat[near] = np.where(up, level + eps, level - eps)


def _boundaries(levels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The levels that separate values: those inside the data range, but the lowest only if some
    value is below it and the highest only if some value is above it (a value on either of those
    stays in its band without moving)."""
    low, high = np.nanmin(values), np.nanmax(values)
    keep = (levels >= low) & (levels <= high)
    if levels.size > 1:
        keep[0] &= low < levels[0]
        keep[-1] &= high > levels[-1]
    return levels[keep]


def _near_levels(flat: np.ndarray, levels: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the values within ``eps`` of a level, and that level.

    Levels on a decimal lattice (multiples of a common step wider than 2 eps, as usual) take one
    vectorised pass; other levels one pass each.
    """
    step = _lattice_step(levels)
    with np.errstate(invalid="ignore"):
        if step is None or step <= 2 * eps:
            hits = [(np.flatnonzero(np.abs(flat - level) < eps), level) for level in levels]
            return (np.concatenate([[]] + [h for h, _ in hits]).astype(np.intp),
                    np.concatenate([[]] + [np.full(h.size, v) for h, v in hits]))
        steps = (flat - levels[0]) * (1 / step)
        index = np.rint(steps)
        near = np.flatnonzero(np.abs(steps - index) < eps / step)
    lattice = np.rint((levels - levels[0]) / step)
    where = np.clip(np.searchsorted(lattice, index[near]), 0, levels.size - 1)
    on_level = lattice[where] == index[near]
    return near[on_level], levels[where[on_level]]


def _lattice_step(levels: np.ndarray) -> float | None:
    """The common step of the levels when they are multiples of it (to 1e-6), else None."""
    if levels.size < 2:
        return None
    micro = (levels - levels[0]) * 1e6
    if not np.allclose(micro, np.rint(micro), rtol=0, atol=1e-3):
        return None
    return float(np.gcd.reduce(np.rint(micro).astype(np.int64))) / 1e6


def _steepest(z: np.ndarray, axis: int) -> float:
    """The largest absolute difference between neighbours along ``axis`` (NaN ignored)."""
    if z.shape[axis] < 2:
        return 0.0
    with np.errstate(invalid="ignore"):
        diff = np.abs(np.diff(z, axis=axis))
    peak = np.fmax.reduce(diff, axis=None)
    return 0.0 if np.isnan(peak) else float(peak)


def _squeeze(field: xr.DataArray) -> xr.DataArray:
    """The field without length-1 dimensions; it must then be 2-D."""
    extra = [dim for dim in field.dims if field.sizes[dim] == 1]
    field = field.squeeze(extra) if extra else field
    if field.ndim != 2:
        raise ValueError(f"field: dims {dict(field.sizes)}; accepted: one 2-D latitude/longitude "
                         "field (select one date first)")
    return field


def _name(field: xr.DataArray, names: tuple[str, ...]) -> str:
    for name in names:
        if name in field.dims:
            return name
    raise ValueError(f"field: no {' or '.join(names)} dimension among {list(field.dims)}; "
                     f"accepted: dims named {names[0]}/{names[1]}")


def _axis(values: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """A regular coordinate axis and its (signed) step."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        raise ValueError(f"{name}: {values.size} value(s); accepted: at least 2 grid points")
    steps = np.diff(values)
    step = float(steps.mean())
    if step == 0 or not np.allclose(steps, step, rtol=1e-4, atol=1e-6):
        raise ValueError(f"{name}: not a regular grid (steps {steps.min():g}..{steps.max():g}); "
                         "accepted: evenly spaced values")
    return values, step


def _wrapped(values: np.ndarray, lon: np.ndarray, step: float) -> tuple[np.ndarray, float]:
    """Values as float64 with longitudes ascending in -180..180, and the first longitude.

    A global grid (360° of columns) is rolled to start at the antimeridian and, when a column lies
    on it, closed with a copy of that column at +180, so polygons end exactly at ±180. A regional
    grid that crosses the antimeridian is refused.
    """
    wrapped = (lon + 180.0) % 360.0 - 180.0  # -180 <= wrapped < 180
    if np.isclose(lon.size * step, 360.0):
        start = int(np.argmin(wrapped))
        closed = bool(np.isclose(wrapped[start], -180.0))
        z = np.empty((values.shape[0], lon.size + closed))
        z[:, :lon.size - start] = values[:, start:]
        z[:, lon.size - start:lon.size] = values[:, :start]
        if closed:
            z[:, -1] = z[:, 0]
        return z, float(wrapped[start])
    if np.isclose(wrapped[-1], -180.0) and lon[-1] > 0:
        wrapped[-1] = 180.0  # a regional grid ending on the antimeridian
    if (np.diff(wrapped) <= 0).any():
        raise ValueError(f"longitude: {lon[0]:g}..{lon[-1]:g} crosses the antimeridian; accepted: "
                         "a regional grid on one side of it, or a global grid")
    return np.array(values, dtype=float, order="C"), float(wrapped[0])


def _units_of(value: float, unit: float, name: str) -> int:
    """``value`` in whole units; ValueError when the grid is not on the unit lattice."""
    units = value / unit
    if abs(units - round(units)) > max(0.05, 2e-7 * abs(units)):  # float32 coordinates
        raise ValueError(f"{name}: grid point {value!r} is not a multiple of 10^-precision; "
                         "accepted: a higher precision")
    return round(units)


def _steps(step: float, unit: float, name: str) -> int:
    """Units per grid step: a whole number of at least MIN_STEP_UNITS."""
    units = _units_of(step, unit, name)
    if units < MIN_STEP_UNITS:
        raise ValueError(f"{name}: grid step {step:g} is under {MIN_STEP_UNITS} units of "
                         "10^-precision; accepted: a higher precision")
    return units


def _variable(field: xr.DataArray, variable: str | None) -> str:
    name = variable or field.name
    if not name:
        raise ValueError("variable: the field has no name; accepted: a field named t2m or tp, "
                         "or variable=")
    return str(name)


def _units(field: xr.DataArray, units: str | None) -> str:
    value = units or field.attrs.get("units")
    if not value:
        raise ValueError("units: the field has no units attribute; accepted: attrs['units'] "
                         "(degC, mm) or units=")
    return str(value)


def _date(field: xr.DataArray, date: str | Date | None) -> str:
    if date is None:
        if "date" not in field.coords or field.coords["date"].ndim != 0:
            raise ValueError("date: the field has no scalar date coordinate; accepted: a field "
                             "selected on one date, or date=")
        date = field.coords["date"].values
    return pd.Timestamp(date).date().isoformat()
