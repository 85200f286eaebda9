"""The offline basemap: Natural Earth land, coastlines and borders from local shapefiles.

No tile server is reachable offline, so both map kinds draw the same Natural Earth data instead:
the folium maps as GeoJSON layers clipped to the area, the cartopy maps through cartopy's own
Natural Earth readers. The shapefiles are in cartopy's layout
(``shapefiles/natural_earth/{physical,cultural}/ne_<scale>_<name>.shp``) under one directory,
found by ``natural_earth_dir``. Without it the maps still draw, without a basemap, and warn.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cartopy
import geopandas as gpd
from shapely.geometry import box

from picsel_nb.era5 import Area

DATA_DIR_ENV = "CARTOPY_DATA_DIR"  # cartopy's own variable for its pre-existing data
SCALES = ("110m", "50m")  # the scales shipped; cartopy's "auto" would pick 10m and download it
MARGIN_DEGREES = 2.0  # basemap drawn this far beyond the area, so panning a little shows land
SIMPLIFY_DEGREES = {"110m": 0.0, "50m": 0.01}  # below a pixel at the maps' zoom levels
# The basemap's colours, the same on the folium and the cartopy maps.
OCEAN, LAND, COASTLINE, BORDERS = "#d6e6f2", "#f4f1ea", "#4d4d4d", "#7a7a7a"
# Natural Earth layers of the basemap: (category, name) in cartopy's layout.
LAYERS = {"land": ("physical", "land"), "coastline": ("physical", "coastline"),
          "borders": ("cultural", "admin_0_boundary_lines_land")}


class BasemapWarning(UserWarning):
    """The Natural Earth data is missing: the map is drawn without a basemap."""


def natural_earth_dir() -> Path | None:
    """The Natural Earth data directory: ``$CARTOPY_DATA_DIR`` when set, else the repository's
    sibling ``../shared/data/natural_earth``; None (with a BasemapWarning) when it is absent."""
    configured = os.environ.get(DATA_DIR_ENV)
    repo = Path(__file__).resolve().parents[2]
    path = Path(configured) if configured else repo.parent / "shared" / "data" / "natural_earth"
    if (path / "shapefiles" / "natural_earth").is_dir():
        return path
    how = f"{DATA_DIR_ENV}={configured}" if configured else f"no {DATA_DIR_ENV}, and {path}"
    warnings.warn(f"Natural Earth data not found ({how} holds no shapefiles/natural_earth): "
                  "maps are drawn without land, coastlines and borders. Set "
                  f"{DATA_DIR_ENV} to a directory in cartopy's layout.", BasemapWarning,
                  stacklevel=3)
    return None


def shapefile(directory: Path, layer: str, scale: str) -> Path:
    """The path of one basemap layer ("land", "coastline", "borders") at ``scale``."""
    if scale not in SCALES:
        raise ValueError(f"scale: {scale!r}; accepted: {', '.join(SCALES)}")
    category, name = LAYERS[layer]
    return directory / "shapefiles" / "natural_earth" / category / f"ne_{scale}_{name}.shp"


def use_for_cartopy(scale: str) -> bool:
    """Point cartopy at the Natural Earth directory so it never downloads; False (with a
    BasemapWarning) when the shapefiles of ``scale`` are missing."""
    directory = natural_earth_dir()
    if directory is None:
        return False
    if not all(shapefile(directory, layer, scale).is_file() for layer in LAYERS):
        warnings.warn(f"Natural Earth {scale} shapefiles missing under {directory}: maps are "
                      "drawn without a basemap.", BasemapWarning, stacklevel=2)
        return False
    cartopy.config["pre_existing_data_dir"] = directory
    return True


def basemap_frames(area: Area, scale: str = "50m",
                   margin: float = MARGIN_DEGREES) -> dict[str, gpd.GeoDataFrame]:
    """The basemap layers clipped to ``area`` plus ``margin`` degrees and simplified, geometry
    only, by layer name; empty when the data is missing (with a BasemapWarning)."""
    directory = natural_earth_dir()
    if directory is None:
        return {}
    bounds = (area.west - margin, area.south - margin, area.east + margin, area.north + margin)
    frames = {}
    for layer in LAYERS:
        frame = gpd.read_file(shapefile(directory, layer, scale), bbox=bounds, columns=[])
        clipped = frame.clip(box(*bounds))
        simplified = clipped.geometry.simplify(SIMPLIFY_DEGREES[scale])
        frames[layer] = gpd.GeoDataFrame(geometry=simplified[~simplified.is_empty])
    return frames
