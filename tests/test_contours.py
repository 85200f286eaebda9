"""picsel_nb.contours: filled bands and isolines as RFC 7946 GeoJSON."""

from __future__ import annotations

import json
import re

import numpy as np
import orjson
import pytest
import shapely
import xarray as xr
from matplotlib.figure import Figure
from shapely.geometry import shape

from picsel_nb import contours

DATE = np.datetime64("2023-09-01")


def field(values, lat, lon, name="t2m", units="degC", date=DATE) -> xr.DataArray:
    """A daily field as picsel_nb.era5.daily gives it (latitude as given, scalar date)."""
    coords = {"latitude": np.asarray(lat, float), "longitude": np.asarray(lon, float)}
    if date is not None:
        coords["date"] = date
    return xr.DataArray(np.asarray(values, float), coords=coords,
                        dims=("latitude", "longitude"), name=name, attrs={"units": units})


def grid_field(fn, step=0.25, west=10.0, south=-5.0, nx=41, ny=21, **kwargs) -> xr.DataArray:
    """fn(lon, lat) on a regular grid, latitude north to south as ERA5 stores it."""
    lat = (south + step * np.arange(ny))[::-1]
    lon = west + step * np.arange(nx)
    lon2, lat2 = np.meshgrid(lon, lat)
    return field(fn(lon2, lat2), lat, lon, **kwargs)


def geometries(document: dict) -> list:
    return [shape(feature["geometry"]) for feature in document["features"]]


def by_label(document: dict) -> dict:
    return {f["properties"]["label"]: shape(f["geometry"]) for f in document["features"]}


def assert_valid_polygons(document: dict) -> None:
    """Valid, anticlockwise exteriors, clockwise holes, no ring under 4 points or of zero area."""
    for geometry in geometries(document):
        assert geometry.geom_type == "MultiPolygon"
        assert geometry.is_valid, shapely.is_valid_reason(geometry)
        for polygon in geometry.geoms:
            assert polygon.exterior.is_ccw
            assert len(polygon.exterior.coords) >= 4 and polygon.area > 0
            for hole in polygon.interiors:
                assert not hole.is_ccw
                assert len(hole.coords) >= 4 and shapely.Polygon(hole).area > 0


def assert_valid_lines(document: dict) -> None:
    for geometry in geometries(document):
        assert geometry.geom_type == "MultiLineString"
        for line in geometry.geoms:
            assert line.is_valid and len(line.coords) >= 2 and line.length > 0


def paraboloid(lon, lat):
    return (lon - 12.5) ** 2 + (lat + 0.5) ** 2


# --- analytic fields -----------------------------------------------------------------------------

def test_paraboloid_bands_are_annuli_of_known_area():
    f = grid_field(paraboloid, step=0.05, west=7.5, south=-5.5, nx=201, ny=201, name="tp",
                   units="mm")
    document = contours.bands(f, [0, 1, 4, 9, 16])
    areas = {label: g.area for label, g in by_label(document).items()}
    # r² in (a, b] is the annulus √a < r <= √b, of area π (b - a)
    for label, (low, high) in {"0–1 mm": (0, 1), "1–4 mm": (1, 4), "4–9 mm": (4, 9),
                               "9–16 mm": (9, 16)}.items():
        assert areas[label] == pytest.approx(np.pi * (high - low), rel=5e-3)


def test_annuli_have_one_hole_and_the_disc_none():
    f = grid_field(paraboloid, step=0.05, west=7.5, south=-5.5, nx=201, ny=201)
    bands = by_label(contours.bands(f, [0, 2, 6, 12]))
    assert [len(p.interiors) for p in bands["0–2 °C"].geoms] == [0]
    for label in ("2–6 °C", "6–12 °C"):
        assert [len(p.interiors) for p in bands[label].geoms] == [1]


def test_ramp_bands_are_strips():
    f = grid_field(lambda lon, lat: lon, step=0.25, west=-10, south=0, nx=81, ny=21)
    bands = by_label(contours.bands(f))
    assert len(bands) == 10  # -10..10 every 2 °C
    for label, geometry in bands.items():
        low = float(re.match(r"(-?\d+)–", label).group(1))
        assert geometry.area == pytest.approx(2 * 5, abs=1e-3)
        assert geometry.bounds == pytest.approx((low, 0, low + 2, 5), abs=1e-3)


def test_isolines_of_a_ramp_are_meridians():
    f = grid_field(lambda lon, lat: lon, step=0.25, west=-10, south=0, nx=81, ny=21)
    document = contours.isolines(f, [-5, 0, 5])
    assert_valid_lines(document)
    for feature in document["features"]:
        xs = np.array([c[0] for line in feature["geometry"]["coordinates"] for c in line])
        assert np.allclose(xs, feature["properties"]["level"], atol=1e-3)
    (single,) = contours.isolines(f, [0.5])["features"]
    assert shape(single["geometry"]).bounds == pytest.approx((0.5, 0, 0.5, 5), abs=1e-3)


# --- validity ------------------------------------------------------------------------------------

def random_field(rng: np.random.Generator, kind: int) -> xr.DataArray:
    """Small fields full of the hard cases: values on levels, exact zeros, saddles, NaN."""
    ny, nx = int(rng.integers(2, 16)), int(rng.integers(2, 16))
    if kind == 0:
        values = rng.integers(0, 4, (ny, nx)).astype(float)  # on the levels, and saddles
    elif kind == 1:
        values = rng.choice([0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 5.0, 7.0, 120.0], (ny, nx))
    elif kind == 2:
        values = rng.random((ny, nx)) * 6
    else:
        values = np.round(rng.normal(2, 2, (ny, nx)), 1)
    if rng.random() < 0.6:
        values[rng.random((ny, nx)) < rng.uniform(0.05, 0.5)] = np.nan
    lat = np.arange(ny) * 0.1
    return field(values, lat[::-1] if rng.random() < 0.5 else lat, 20 + np.arange(nx) * 0.1,
                 name="tp", units="mm")


@pytest.mark.parametrize("seed", range(6))
def test_random_fields_give_only_valid_geometry(seed):
    rng = np.random.default_rng(seed)
    for trial in range(120):
        f = random_field(rng, trial % 4)
        levels = [0, 1, 2, 5] if trial % 3 else [1, 2, 3]
        bands, lines = (orjson.loads(doc) for doc in contours.products(f, levels))
        assert_valid_polygons(bands)
        assert_valid_lines(lines)


def test_real_era5_land_fields_over_a_coast_give_valid_geometry(samples_dir):
    with xr.open_dataset(samples_dir / "era5land_kerala_2022_00utc.nc") as hourly:
        hours = hourly[["t2m", "tp"]].isel(valid_time=slice(0, None, 7)).load()
    assert np.isnan(hours.t2m.values).any()  # the Arabian Sea is NaN
    for time in hours.valid_time.values:
        hour = hours.sel(valid_time=time).drop_vars("valid_time").assign_coords(date=time)
        for name, values, units in (("t2m", hour.t2m - 273.15, "degC"),
                                    ("tp", hour.tp * 1000, "mm")):
            f = values.rename(name).assign_attrs(units=units)
            bands, lines = (orjson.loads(doc) for doc in contours.products(f))
            assert bands["features"]
            assert_valid_polygons(bands)
            assert_valid_lines(lines)


def test_values_exactly_on_levels_and_saddles_are_valid():
    checkerboard = np.indices((12, 12)).sum(axis=0) % 2 * 2.0  # saddles at every quad, 0 and 2
    f = field(checkerboard, np.arange(12) * 0.25, np.arange(12) * 0.25, name="tp", units="mm")
    document = contours.bands(f, [0, 1, 2, 5])
    assert_valid_polygons(document)
    assert sum(g.area for g in geometries(document)) == pytest.approx(11 * 11 * 0.0625)


def test_a_mask_pinched_to_a_point_gives_valid_polygons():
    # NaN at the two diagonal neighbours of (4, 4): the band touches itself there.
    values = np.ones((9, 9))
    values[3, 3] = values[5, 5] = np.nan
    values[1, 6] = values[6, 1] = 3.0
    f = field(values, np.arange(9) * 0.1, np.arange(9) * 0.1, name="tp", units="mm")
    document = contours.bands(f, [0, 1, 2, 5])
    assert_valid_polygons(document)


def test_ring_through_a_pinch_point_twice_is_split_into_valid_rings():
    # Found by a random search: contourpy traces one ring through grid point (6, 4) twice.
    rows = ["0  0  0  1  0  n  2  2", "1  0  n  0  1  0  0  1", "2  0  1  2  2  2  0  n",
            "n  0  2  0  0  1  1  1", "0  2  2  1  2  n  2  0", "1  0  0  0  2  1  0  2",
            "2  0  1  0  1  2  1  1", "1  0  n  2  2  0  n  1"]
    values = np.array([[np.nan if v == "n" else float(v) for v in row.split()] for row in rows])
    f = field(values[::-1], np.arange(8) * 0.1, np.arange(8) * 0.1, name="tp", units="mm")
    document = contours.bands(f, [0.5, 1.5, 2.5])
    assert_valid_polygons(document)


def test_exact_zeros_belong_to_the_lowest_precipitation_band():
    values = np.zeros((10, 10))
    values[4:7, 4:7] = 3.0
    f = field(values, np.arange(10) * 0.25, np.arange(10) * 0.25, name="tp", units="mm")
    bands = by_label(contours.bands(f))
    assert bands["0–1 mm"].area + bands["1–2 mm"].area + bands["2–5 mm"].area \
        == pytest.approx(9 * 9 * 0.0625)
    assert bands["0–1 mm"].contains(shapely.Point(0.1, 0.1))


def test_nan_regions_are_left_out_of_every_band():
    values = np.full((10, 10), 1.5)
    values[:, 5:] = np.nan
    f = field(values, np.arange(10) * 0.25, np.arange(10) * 0.25, name="tp", units="mm")
    (geometry,) = geometries(contours.bands(f))
    assert geometry.bounds == pytest.approx((0, 0, 1.0, 2.25))


def test_all_nan_field_gives_an_empty_collection():
    f = field(np.full((5, 6), np.nan), np.arange(5.0), np.arange(6.0))
    assert contours.bands(f) == {"type": "FeatureCollection", "features": []}
    assert contours.isolines(f, [0]) == {"type": "FeatureCollection", "features": []}
    f = field(np.full((5, 6), np.nan), np.arange(5.0), np.arange(6.0), name="tp", units="mm")
    assert contours.bands(f)["features"] == []


def test_constant_field_is_one_band_and_no_isoline():
    f = field(np.full((5, 6), 20.0), np.arange(5.0), np.arange(6.0))
    (feature,) = contours.bands(f)["features"]
    assert (feature["properties"]["lower"], feature["properties"]["upper"]) == (20, 22)
    assert shape(feature["geometry"]).area == pytest.approx(20)
    assert contours.isolines(f)["features"] == []


# --- levels and open bands -----------------------------------------------------------------------

def test_default_temperature_levels_are_even_and_cover_the_field():
    values = np.array([[-3.2, 0.0], [5.5, 7.9]])
    assert list(contours.default_levels("t2m", values)) == [-4, -2, 0, 2, 4, 6, 8]
    assert list(contours.default_levels("tp", values)) == [0, 1, 2, 5, 10, 20, 50, 100]
    assert contours.default_levels("t2m", np.full(3, np.nan)).size == 0


def test_values_beyond_the_levels_form_open_bands():
    f = grid_field(lambda lon, lat: (lon - 10) * 30, name="tp", units="mm")  # 0..300 mm
    document = contours.bands(f)
    top = document["features"][-1]["properties"]
    assert (top["lower"], top["upper"], top["label"]) == (100, None, "> 100 mm")
    total = sum(g.area for g in geometries(document))
    assert total == pytest.approx(10 * 5)  # nothing vanishes
    below = contours.bands(f, [50, 100])["features"][0]["properties"]
    assert (below["lower"], below["upper"], below["label"]) == (None, 50, "< 50 mm")


def test_levels_are_overridable_and_checked():
    f = grid_field(lambda lon, lat: lon)
    labels = [f["properties"]["label"] for f in contours.bands(f, [10, 15, 20])["features"]]
    assert labels == ["10–15 °C", "15–20 °C"]
    with pytest.raises(ValueError, match="levels"):
        contours.bands(f, [3, 2, 1])
    with pytest.raises(ValueError, match="levels"):
        contours.bands(f, [1])


# --- properties and colours ----------------------------------------------------------------------

def test_band_and_isoline_properties():
    f = grid_field(lambda lon, lat: lon + 10)  # 20..30 °C
    band = contours.bands(f)["features"][0]["properties"]
    assert band == {"variable": "t2m", "date": "2023-09-01", "units": "degC", "lower": 20.0,
                    "upper": 22.0, "label": "20–22 °C", "fill": band["fill"]}
    assert re.fullmatch(r"#[0-9a-f]{6}", band["fill"])
    line = contours.isolines(f)["features"][0]["properties"]
    assert line == {"variable": "t2m", "date": "2023-09-01", "units": "degC", "level": 22.0,
                    "label": "22 °C", "stroke": line["stroke"]}


def test_colours_depend_only_on_the_band_not_on_the_day():
    cold = grid_field(lambda lon, lat: lon + 8)  # 18..28 °C
    hot = grid_field(lambda lon, lat: 3 * lon - 10)  # 20..50 °C
    fill = [{f["properties"]["label"]: f["properties"]["fill"]
             for f in contours.bands(day)["features"]} for day in (cold, hot)]
    assert fill[0]["20–22 °C"] == fill[1]["20–22 °C"]
    assert fill[0]["26–28 °C"] == fill[1]["26–28 °C"]
    assert len(set(fill[1].values())) > 5  # still a scale, not one colour


def test_variable_units_and_date_from_arguments():
    f = grid_field(lambda lon, lat: lon, name=None, units=None, date=None)
    props = contours.bands(f, variable="t2m", units="degC", date="2024-01-31")["features"][0]
    assert props["properties"]["date"] == "2024-01-31"
    with pytest.raises(ValueError, match="date"):
        contours.bands(grid_field(lambda lon, lat: lon, date=None))
    with pytest.raises(ValueError, match="variable"):
        contours.bands(grid_field(lambda lon, lat: lon, name="sst"))
    with pytest.raises(ValueError, match="units"):
        contours.bands(grid_field(lambda lon, lat: lon + 273.15, units="K"))


# --- RFC 7946 ------------------------------------------------------------------------------------

def test_bbox_on_collection_and_features():
    f = grid_field(paraboloid, step=0.1, west=10, south=-5, nx=51, ny=51)
    document = contours.bands(f)
    bounds = [g.bounds for g in geometries(document)]
    for feature, box in zip(document["features"], bounds, strict=True):
        assert feature["bbox"] == pytest.approx(box, abs=1e-9)
    lows, highs = np.min(bounds, axis=0), np.max(bounds, axis=0)
    assert document["bbox"] == pytest.approx([lows[0], lows[1], highs[2], highs[3]])


def test_coordinates_are_rounded_to_the_precision():
    f = grid_field(lambda lon, lat: np.sin(lon) * np.cos(2 * lat), step=0.1)
    for precision in (2, 4):
        text = contours.bands(f, [-0.5, 0, 0.5], precision=precision, as_bytes=True).decode()
        coordinates = re.findall(r"\[\s*(-?\d+\.\d+),\s*(-?\d+\.\d+)\]", text)
        assert coordinates
        assert {len(c.split(".")[1]) for pair in coordinates for c in pair} == {precision}
        assert_valid_polygons(json.loads(text))


def test_as_bytes_is_the_dict_document():
    f = grid_field(paraboloid, step=0.1, west=10, south=-5, nx=51, ny=51)
    for make in (contours.bands, contours.isolines):
        document = make(f)
        text = make(f, as_bytes=True)
        assert isinstance(text, bytes)
        assert json.loads(text) == document == json.loads(json.dumps(document))


def test_products_are_the_two_documents_written_serially_or_on_two_threads(monkeypatch):
    f = grid_field(paraboloid, step=0.1, west=10, south=-5, nx=51, ny=51)
    expected = contours.bands(f, as_bytes=True), contours.isolines(f, as_bytes=True)
    assert contours.products(f) == expected
    monkeypatch.setattr(contours, "PARALLEL_VERTICES", 0)
    assert contours.products(f) == expected


def test_bands_traced_on_threads_give_the_same_documents(monkeypatch):
    rng = np.random.default_rng(7)
    fields = [random_field(rng, trial % 4) for trial in range(24)]
    expected = [contours.products(f, [0, 1, 2, 5]) for f in fields]
    monkeypatch.setattr(contours, "PARALLEL_CELLS", 0)  # each thread its own contour generators
    assert [contours.products(f, [0, 1, 2, 5]) for f in fields] == expected


def test_day_products_gives_each_variables_documents(monkeypatch):
    t2m = grid_field(paraboloid, step=0.1, west=10, south=-5, nx=51, ny=51)
    tp = grid_field(lambda lon, lat: 2 * paraboloid(lon, lat), step=0.1, west=10, south=-5,
                    nx=51, ny=51, name="tp", units="mm")
    day = xr.Dataset({"t2m": t2m, "tp": tp}).expand_dims("date")  # as era5.daily gives it
    expected = {"t2m": contours.products(t2m), "tp": contours.products(tp, [0, 10, 20])}
    assert contours.day_products(day, {"tp": [0, 10, 20]}) == expected
    monkeypatch.setattr(contours, "PARALLEL_CELLS", 0)
    assert contours.day_products(day, {"tp": [0, 10, 20]}) == expected


def test_isolines_share_the_band_vertices():
    f = grid_field(paraboloid, step=0.1, west=10, south=-5, nx=51, ny=51)
    bands, lines = (orjson.loads(doc) for doc in contours.products(f))
    band_vertices = {tuple(point) for feature in bands["features"]
                     for polygon in feature["geometry"]["coordinates"]
                     for ring in polygon for point in ring}
    line_vertices = {tuple(point) for feature in lines["features"]
                     for line in feature["geometry"]["coordinates"] for point in line}
    assert line_vertices and line_vertices <= band_vertices


def test_latitude_descending_or_ascending_gives_the_same_document():
    north_first = grid_field(paraboloid, step=0.1, west=10, south=-5, nx=51, ny=51)
    south_first = north_first.isel(latitude=slice(None, None, -1))
    assert contours.products(north_first) == contours.products(south_first)


def test_longitudes_0_360_are_wrapped_to_the_antimeridian():
    lat = np.arange(-90.0, 91.0, 10.0)
    lon = np.arange(0.0, 360.0, 10.0)
    lon2, lat2 = np.meshgrid(lon, lat)
    values = 20 * np.cos(np.radians(lat2)) + 3 * np.sin(np.radians(lon2))
    east = field(values, lat, lon)
    west = east.roll(longitude=18, roll_coords=True)
    west = west.assign_coords(longitude=(west.longitude + 180) % 360 - 180)
    document = contours.bands(east)
    assert contours.bands(west) == document
    xs = [x for g in geometries(document) for x in (g.bounds[0], g.bounds[2])]
    assert min(xs) == -180 and max(xs) == 180
    assert_valid_polygons(document)
    regional = field(values[:, 30:], lat, lon[30:])  # 300..350 °E
    assert geometries(contours.bands(regional))[0].bounds[0] == pytest.approx(-60)


def test_grids_that_cannot_be_contoured_are_refused():
    lat, lon = np.arange(5.0), np.array([170.0, 175, 180, 185, 190])
    with pytest.raises(ValueError, match="antimeridian"):
        contours.bands(field(np.ones((5, 5)), lat, lon))
    with pytest.raises(ValueError, match="dims"):
        contours.bands(xr.concat([grid_field(np.add)] * 2, dim="date"))
    steep = grid_field(lambda lon, lat: (lon > 12) * 1000.0, name="tp", units="mm")
    with pytest.raises(ValueError, match="precision"):
        contours.bands(steep, precision=2)


# --- agreement with matplotlib -------------------------------------------------------------------

def matplotlib_areas(f: xr.DataArray, levels) -> list[float]:
    """Areas of matplotlib's contourf bands, from ContourSet.get_paths() (holes subtract)."""
    axes = Figure().add_subplot()
    filled = axes.contourf(f.longitude, f.latitude, f.values, levels=levels, corner_mask=False)
    return [sum(shapely.Polygon(ring).area * (1 if shapely.LinearRing(ring).is_ccw else -1)
                for ring in path.to_polygons() if len(ring) >= 4)
            for path in filled.get_paths()]


@pytest.mark.parametrize("seed", range(3))
def test_band_areas_agree_with_matplotlib_contourf(seed):
    rng = np.random.default_rng(seed)
    values = np.cumsum(np.cumsum(rng.normal(size=(30, 40)), axis=0), axis=1) / 5
    values[rng.random(values.shape) < 0.1 * seed] = np.nan
    f = field(values, np.arange(30) * 0.25, np.arange(40) * 0.25)
    levels = np.arange(np.floor(np.nanmin(values)), np.ceil(np.nanmax(values)) + 1.5, 1.5)
    ours = [g.area for g in geometries(contours.bands(f, levels))]
    theirs = [area for area in matplotlib_areas(f, levels) if area > 0]
    assert ours == pytest.approx(theirs, abs=2e-4)
