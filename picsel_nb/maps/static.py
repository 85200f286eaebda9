"""Static maps with cartopy, drawn from the published GeoJSON (what the world sees), not from the
fields: one day of one variable, and small multiples comparing days side by side.

The bands keep their published colours; coastlines, borders and land come from the offline
Natural Earth shapefiles at an explicit scale (cartopy's "auto" would download 10m data). Without
them the maps still draw, with a BasemapWarning. matplotlib's object API, no pyplot state.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import cartopy.crs as ccrs
import cartopy.feature as cfeature
import geopandas as gpd
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from picsel_nb.era5 import Area, parse_area, parse_date
from picsel_nb.maps import basemap
from picsel_nb.maps.sources import Source, read_frame
from picsel_nb.plots import TITLES
from picsel_nb.products import SHORT_NAMES, days
from picsel_nb.settings import DEMO_AREA, DEMO_END, DEMO_START

PLATE_CARREE = ccrs.PlateCarree()
DPI = 72  # screen resolution: the notebooks store these figures; savefig(dpi=...) for print
ISOLINE_COLOUR = "#333333"
LEGEND_INCHES = 1.3  # right of the small multiples, for each row's legend


def draw_basemap(axes, scale: str) -> None:
    """Land under, coastlines and borders over the products (only the sea's colour, with a
    BasemapWarning, when the data is missing)."""
    axes.set_facecolor(basemap.OCEAN)
    if not basemap.use_for_cartopy(scale):
        return
    axes.add_feature(cfeature.LAND.with_scale(scale), facecolor=basemap.LAND, edgecolor="none",
                     zorder=0)
    axes.coastlines(scale, linewidth=0.6, color=basemap.COASTLINE, zorder=3)
    axes.add_feature(cfeature.BORDERS.with_scale(scale), linewidth=0.5, edgecolor=basemap.BORDERS,
                     linestyle=(0, (4, 3)), zorder=3)


def draw_products(axes, bands: gpd.GeoDataFrame, lines: gpd.GeoDataFrame | None) -> None:
    """Each band in its published colour, then the isolines."""
    for geometry, fill in zip(bands.geometry, bands["fill"], strict=True):
        axes.add_geometries([geometry], PLATE_CARREE, facecolor=fill, edgecolor="none", zorder=1)
    if lines is not None and not lines.empty:
        axes.add_geometries(lines.geometry, PLATE_CARREE, facecolor="none",
                            edgecolor=ISOLINE_COLOUR, linewidth=0.4, zorder=2)


def legend_handles(frames: Iterable[gpd.GeoDataFrame]) -> list[Patch]:
    """One patch per band found in ``frames`` (the same band has the same colour every day),
    highest band first."""
    rows = pd.concat([frame[["lower", "label", "fill"]] for frame in frames], ignore_index=True)
    rows = rows.drop_duplicates("label").sort_values("lower", ascending=False, na_position="last")
    return [Patch(facecolor=row.fill, edgecolor="none", label=row.label)
            for row in rows.itertuples()]


def _panel(axes, source: Source, variable: str, day: date, area: Area, scale: str,
           isolines: bool) -> gpd.GeoDataFrame:
    """One map panel: basemap, bands (and isolines) of one variable and day; the bands read."""
    axes.set_extent([area.west, area.east, area.south, area.north], crs=PLATE_CARREE)
    bands = read_frame(source, "geojson", variable, day)
    lines = read_frame(source, "isolines", variable, day) if isolines else None
    draw_basemap(axes, scale)
    draw_products(axes, bands, lines)
    return bands


def static_map(source: Source, day: str | date, variable: str = "t2m", *,
               area: Sequence[float] = DEMO_AREA, scale: str = "50m",
               isolines: bool = True) -> Figure:
    """A static map of one variable's published bands (and isolines) on one day, with a legend."""
    day, area = parse_date(day), parse_area(area)
    figure = Figure(figsize=(7.5, 4.8), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.1, 0.08, 0.66, 0.84), projection=PLATE_CARREE)
    bands = _panel(axes, source, variable, day, area, scale, isolines)
    axes.gridlines(draw_labels=["left", "bottom"], linewidth=0.3, color="#888888")
    axes.set_title(f"{TITLES[variable]}, {day.isoformat()}", fontsize=10)
    figure.legend(handles=legend_handles([bands]), loc="center left",
                  bbox_to_anchor=(0.78, 0.5), fontsize=8, frameon=False)
    return figure


def small_multiples(source: Source, dates: Sequence[str | date] | None = None,
                    variables: Sequence[str] = SHORT_NAMES, *,
                    area: Sequence[float] = DEMO_AREA, scale: str = "50m",
                    isolines: bool = True) -> Figure:
    """A grid of static maps, one row per variable and one column per day (default: the demo's
    days), each row with one legend: the days compare at a glance, in the same colours."""
    dates = [parse_date(d) for d in (dates or days(DEMO_START, DEMO_END))]
    area = parse_area(area)
    figure = Figure(figsize=(2.7 * len(dates) + LEGEND_INCHES, 2.4 * len(variables)), dpi=DPI)
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(variables), len(dates), squeeze=False,
                           subplot_kw={"projection": PLATE_CARREE})
    figure.subplots_adjust(left=0.01, right=1 - LEGEND_INCHES / figure.get_figwidth(), top=0.9,
                           bottom=0.03, wspace=0.05, hspace=0.3)
    for row, variable in zip(grid, variables, strict=True):
        frames = [_panel(axes, source, variable, day, area, scale, isolines)
                  for axes, day in zip(row, dates, strict=True)]
        for axes, day in zip(row, dates, strict=True):
            axes.set_title(f"{TITLES[variable]}\n{day.isoformat()}", fontsize=8)
        row[-1].legend(handles=legend_handles(frames), loc="center left",
                       bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    return figure


def save_png(figure: Figure, path: Path, colours: int = 256) -> Path:
    """Save a figure as an indexed-colour PNG: a map has few colours, so ``colours`` keep it
    faithful at about a third of the size (notebooks store these images)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    image = Image.open(buffer).convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT,
                                                         dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    return path
