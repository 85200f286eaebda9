"""A small PNG plot of one daily field: the contour bands in exactly the colours of the published
GeoJSON, the isolines, a colorbar with the units, lon/lat axes at equal aspect.

matplotlib's object API on the Agg canvas (no pyplot: no global figure state, safe in worker
processes). Static maps with coastlines (cartopy) belong to ``picsel_nb.maps``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from picsel_nb.contours.styles import UNIT_SYMBOLS, bands_for, check_levels, default_levels, style

FIGSIZE, DPI = (6.0, 4.6), 100  # 600×460 px
AXES_BOX, COLORBAR_BOX = (0.1, 0.1, 0.72, 0.8), (0.86, 0.1, 0.03, 0.8)  # figure fractions
TITLES = {"t2m": "Daily mean 2 m temperature", "tp": "Daily total precipitation"}
# PNG text chunks are fixed, so the same field always gives the same bytes.
PNG_METADATA = {"Software": "picsel-nb"}


def plot_day(field: xr.DataArray, levels: Sequence[float] | None = None) -> bytes:
    """PNG bytes of one daily field (dims latitude, longitude; scalar coord ``date``), banded at
    `levels` (default: the contours' default levels) with the contours' band colours."""
    variable = str(field.name)
    values = field.transpose("latitude", "longitude").values
    levels = check_levels(default_levels(variable, values) if levels is None else levels, 2)
    bands = bands_for(variable, levels, below=True, above=True)  # open bands: under/over colours
    unit = UNIT_SYMBOLS.get(style(variable).units, style(variable).units)

    figure = Figure(figsize=FIGSIZE, dpi=DPI)  # fixed margins: a layout engine costs 0.3 s
    FigureCanvasAgg(figure)
    axes = figure.add_axes(AXES_BOX)
    lon, lat = field["longitude"].values, field["latitude"].values
    filled = axes.contourf(lon, lat, values, levels=levels, colors=[b.fill for b in bands],
                           extend="both")
    axes.contour(lon, lat, values, levels=levels, colors="#333333", linewidths=0.5)
    figure.colorbar(filled, cax=figure.add_axes(COLORBAR_BOX), label=unit)
    day = np.datetime_as_string(field["date"].values, unit="D") if "date" in field.coords else ""
    axes.set_title(f"{TITLES.get(variable, variable)} ({unit}) — {day}", fontsize=10)
    axes.set_xlabel("longitude (°E)")
    axes.set_ylabel("latitude (°N)")
    axes.set_aspect("equal")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata=PNG_METADATA)
    return buffer.getvalue()
