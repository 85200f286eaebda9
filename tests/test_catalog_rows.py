"""The catalog form of the bands: geodesic areas in km² and the features' bboxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import Geod

from picsel_nb import products

RADIUS_KM = 6371.0


def parallel_band(west: float, east: float, south: float, north: float) -> dict:
    """A polygon between two parallels, its edges along them densified (geodesics between
    vertices a hundredth of a degree apart stay within metres of the parallel)."""
    lons = np.linspace(west, east, int((east - west) * 100) + 1).tolist()
    ring = ([[lon, south] for lon in lons] + [[east, north]]
            + [[lon, north] for lon in lons[::-1]] + [[west, south]])
    return {"type": "Polygon", "coordinates": [ring]}


def test_area_of_a_spherical_cap_band_is_the_analytic_one():
    """On a sphere of radius R the band between latitudes φ1 and φ2 over Δλ has the area
    R² Δλ (sin φ2 − sin φ1)."""
    sphere = Geod(a=RADIUS_KM * 1000, b=RADIUS_KM * 1000)
    geometry = parallel_band(-60.0, -40.0, -24.0, -9.0)
    expected = RADIUS_KM ** 2 * math.radians(20.0) * (math.sin(math.radians(-9.0))
                                                       - math.sin(math.radians(-24.0)))
    assert products.area_km2(geometry, sphere) == pytest.approx(expected, rel=1e-4)


def test_areas_are_on_the_wgs84_ellipsoid_and_holes_are_subtracted():
    one_degree = parallel_band(0.0, 1.0, 0.0, 1.0)
    assert products.area_km2(one_degree) == pytest.approx(12308.8, rel=1e-3)  # at the equator
    holed = {"type": "Polygon", "coordinates": [
        one_degree["coordinates"][0],
        [[0.25, 0.25], [0.25, 0.75], [0.75, 0.75], [0.75, 0.25], [0.25, 0.25]]]}
    assert products.area_km2(holed) == pytest.approx(0.75 * 12308.8, rel=2e-3)


def test_a_catalog_row_carries_the_bands_bounds_area_and_bbox():
    feature = {"type": "Feature", "bbox": [0.0, 0.0, 1.0, 1.0],
               "geometry": parallel_band(0.0, 1.0, 0.0, 1.0),
               "properties": {"variable": "tp", "date": "2023-09-01", "units": "mm",
                              "lower": 20.0, "upper": 50.0, "label": "20–50 mm",
                              "fill": "#123456"}}
    [row] = products.catalog_rows({"type": "FeatureCollection", "features": [feature]})
    assert list(row) == list(products.CATALOG_COLUMNS)
    assert (row["lower"], row["upper"], row["units"], row["label"]) == (20.0, 50.0, "mm",
                                                                         "20–50 mm")
    assert [row["west"], row["south"], row["east"], row["north"]] == [0.0, 0.0, 1.0, 1.0]
    assert row["area_km2"] == pytest.approx(12308.8, rel=1e-3)
