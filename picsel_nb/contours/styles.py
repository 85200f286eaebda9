"""Levels, labels and colours of the contour products: everything that depends only on the levels.

A band's colour depends only on its variable and bounds, never on the day's data range, so the same
band has the same colour on every map. Each variable has a colour scale: values spread evenly over a
named matplotlib colormap at fixed anchor values, linearly in between and clipped outside.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import matplotlib
import numpy as np
from matplotlib.colors import to_hex

TEMPERATURE_CMAP = "RdYlBu_r"
PRECIPITATION_CMAP = "YlGnBu"
TEMPERATURE_STEP = 2.0  # °C between default temperature levels, aligned to multiples of it
PRECIPITATION_LEVELS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)  # mm, default
UNIT_SYMBOLS = {"degC": "°C", "mm": "mm"}


@dataclass(frozen=True)
class Style:
    """How one variable is drawn: its units, colormap and colour anchors."""

    units: str
    cmap: str
    anchors: tuple[float, ...]  # values placed evenly along the colormap

    @lru_cache(maxsize=4096)  # noqa: B019 - a handful of frozen styles, kept for the process
    def colour(self, value: float) -> str:
        """The hex colour of a value, from its place among the anchors."""
        position = np.interp(value, self.anchors, np.linspace(0.0, 1.0, len(self.anchors)))
        return to_hex(_colormap(self.cmap)(float(position)))


STYLES = {
    "t2m": Style("degC", TEMPERATURE_CMAP, (-40.0, 40.0)),
    "tp": Style("mm", PRECIPITATION_CMAP, PRECIPITATION_LEVELS),
}


@dataclass(frozen=True)
class Band:
    """One filled band: ``lower < value <= upper``, except that the lowest closed band also holds
    its lower edge. ``lower``/``upper`` is None for the open bands below the lowest level and above
    the highest one, which exist only when the data reaches there."""

    lower: float | None
    upper: float | None
    label: str
    fill: str


@lru_cache
def _colormap(name: str) -> matplotlib.colors.Colormap:
    """A named matplotlib colormap, its lookup table built before threads share it (the registry
    hands out a fresh copy on every lookup, so this is done once)."""
    colormap = matplotlib.colormaps[name]
    colormap(0.0)
    return colormap


def style(variable: str) -> Style:
    """The style of ``variable``; ValueError naming the supported variables otherwise."""
    if variable not in STYLES:
        raise ValueError(f"variable: {variable!r} has no contour style; accepted: "
                         f"{', '.join(STYLES)}")
    return STYLES[variable]


def check_units(variable: str, units: str) -> None:
    """ValueError unless ``units`` are the ones the variable's levels and colours are set in."""
    expected = style(variable).units
    if units != expected:
        raise ValueError(f"units: {units!r} for {variable}; accepted: {expected} (daily fields "
                         "from picsel_nb.era5.daily are in these units)")


def default_levels(variable: str, field) -> np.ndarray:
    """Default levels: precipitation on PRECIPITATION_LEVELS; temperature every TEMPERATURE_STEP
    °C on multiples of it, from below the field's minimum to above its maximum (empty when the
    field is all NaN)."""
    if style(variable).units == "mm":
        return np.array(PRECIPITATION_LEVELS)
    values = np.asarray(field)
    if not np.isfinite(values).any():
        return np.array([])
    low = math.floor(float(np.nanmin(values)) / TEMPERATURE_STEP) * TEMPERATURE_STEP
    high = math.ceil(float(np.nanmax(values)) / TEMPERATURE_STEP) * TEMPERATURE_STEP
    return np.arange(low, max(high, low + TEMPERATURE_STEP) + TEMPERATURE_STEP / 2,
                     TEMPERATURE_STEP)


def check_levels(levels: Sequence[float], minimum: int) -> np.ndarray:
    """Levels as a strictly increasing float array of at least ``minimum`` finite values."""
    array = np.asarray(levels, dtype=float).ravel()
    if array.size < minimum or not np.isfinite(array).all() or (np.diff(array) <= 0).any():
        raise ValueError(f"levels: {list(array)} is not usable; accepted: at least {minimum} "
                         "finite, strictly increasing values")
    return array


def bands_for(variable: str, levels: np.ndarray, below: bool, above: bool) -> list[Band]:
    """The bands between consecutive levels, plus the open bands below/above when asked for."""
    look = style(variable)
    unit = UNIT_SYMBOLS[look.units]
    edges = [float(v) for v in levels]
    bands = [Band(lo, hi, f"{lo:g}–{hi:g} {unit}", look.colour((lo + hi) / 2))
             for lo, hi in pairwise(edges)]
    if below:
        first = edges[0] - (edges[1] - edges[0]) / 2
        bands.insert(0, Band(None, edges[0], f"< {edges[0]:g} {unit}", look.colour(first)))
    if above:
        last = edges[-1] + (edges[-1] - edges[-2]) / 2
        bands.append(Band(edges[-1], None, f"> {edges[-1]:g} {unit}", look.colour(last)))
    return bands


def line_label(variable: str, level: float) -> tuple[str, str]:
    """The label and stroke colour of the isoline at ``level``."""
    look = style(variable)
    return f"{level:g} {UNIT_SYMBOLS[look.units]}", look.colour(level)
