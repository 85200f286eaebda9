"""Synthetic ERA5(-Land): plausible, deterministic, and shaped like what the CDS sends."""

from __future__ import annotations

import io
import time
import zipfile

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from picsel_nb import era5
from picsel_nb.era5 import RequestError

LAND, SINGLE = "reanalysis-era5-land", "reanalysis-era5-single-levels"
DAYS = pd.date_range("2023-09-01", "2023-09-03")
SMALL = (-20, -42, -21, -40)  # [N, W, S, E], reaching the synthetic Atlantic


@pytest.fixture(scope="module")
def demo_land() -> xr.Dataset:
    return era5.synthetic(LAND, "2023-09-01", "2023-09-04")


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_grid_is_native_and_north_to_south(demo_land):
    assert demo_land.sizes == {"valid_time": 96, "latitude": 151, "longitude": 201}
    assert (float(demo_land.latitude[0]), float(demo_land.latitude[-1])) == (-9.0, -24.0)
    assert (float(demo_land.longitude[0]), float(demo_land.longitude[-1])) == (-60.0, -40.0)
    assert np.allclose(np.diff(demo_land.latitude), -0.1)
    single = era5.synthetic(SINGLE, "2023-09-01")
    assert single.sizes == {"valid_time": 24, "latitude": 61, "longitude": 81}
    assert np.allclose(np.diff(single.longitude), 0.25)


def test_area_off_the_grid_is_cut_to_grid_points_inside():
    ds = era5.synthetic(SINGLE, "2023-09-01", area=(-9.1, -60.1, -10.1, -59.1), hours=[0])
    assert list(ds.latitude.values) == [-9.25, -9.5, -9.75, -10.0]
    assert list(ds.longitude.values) == [-60.0, -59.75, -59.5, -59.25]


def test_land_has_an_ocean_region_and_single_levels_none(demo_land):
    sea = demo_land["t2m"].isnull()
    assert 0.01 < float(sea.mean()) < 0.2
    assert bool(sea.isel(latitude=-1, longitude=-1).all())  # off Rio de Janeiro: sea
    assert not bool(sea.isel(latitude=0, longitude=0).any())  # Rondônia/Mato Grosso: land
    assert bool((sea == demo_land["tp"].isnull()).all())
    assert not era5.synthetic(SINGLE, "2023-09-01").to_array().isnull().any()


def test_temperature_is_plausible_with_a_local_afternoon_peak(demo_land):
    t2m = demo_land["t2m"]
    assert 280 < float(t2m.min()) and float(t2m.max()) < 315
    local = demo_land.sel(longitude=-45.0)["t2m"]  # local solar time = UTC - 3 h
    afternoon = local.sel(valid_time="2023-09-02T18").mean()
    before_dawn = local.sel(valid_time="2023-09-02T08").mean()
    assert float(afternoon - before_dawn) > 5


def test_weather_changes_from_day_to_day(demo_land):
    daily = era5.daily(demo_land, LAND, days=DAYS)["t2m"]
    anomaly = daily - daily.mean("date")
    assert float(abs(anomaly).max()) > 1


def test_land_precipitation_accumulates_from_00utc(demo_land):
    tp = demo_land["tp"]
    within_day = tp.sel(valid_time=slice("2023-09-02T01", "2023-09-03T00"))
    assert float(within_day.diff("valid_time").min()) >= 0
    assert float(tp.sel(valid_time="2023-09-02T01").max()) < float(tp.sel(
        valid_time="2023-09-02T00").max())  # the running sum restarts after 00 UTC
    hourly = within_day.diff("valid_time")
    assert float((hourly == 0).sum() / hourly.notnull().sum()) > 0.3  # cells, not drizzle


def test_single_levels_hourly_amounts_are_mostly_exact_zeros():
    tp = era5.synthetic(SINGLE, "2023-09-01")["tp"]
    assert float((tp == 0).mean()) > 0.5
    assert 0 < float(tp.max()) < 0.05


def test_both_conventions_give_the_same_daily_rain_where_grids_meet():
    """Same weather, two encodings: ERA5-Land running sums and ERA5 hourly amounts."""
    area = (-10, -50, -12, -48)
    land = era5.daily(era5.synthetic(LAND, "2023-09-01", "2023-09-02", area=area), LAND,
                      days=["2023-09-01"])
    single = era5.daily(era5.synthetic(SINGLE, "2023-09-01", "2023-09-02", area=area), SINGLE,
                        days=["2023-09-01"])
    half_degrees = {"latitude": np.arange(-10, -12.1, -0.5), "longitude": np.arange(-50, -47.9, 0.5)}
    on_both = single["tp"].sel(half_degrees)
    assert float(on_both.max()) > 1
    np.testing.assert_allclose(land["tp"].sel(half_degrees), on_both, atol=0.05)


def test_overlapping_requests_agree():
    big = era5.synthetic(LAND, "2023-09-01", "2023-09-02")
    small = era5.synthetic(LAND, "2023-09-02", area=SMALL, hours=[0, 13])
    same_points = big.sel(latitude=small.latitude, longitude=small.longitude,
                          valid_time=small.valid_time)
    xr.testing.assert_equal(small, same_points)  # GRIB_* attributes describe each grid


def test_same_arguments_same_values_and_seed_changes_the_weather():
    first = era5.synthetic(SINGLE, "2023-09-01", area=SMALL, seed=3)
    xr.testing.assert_identical(first, era5.synthetic(SINGLE, "2023-09-01", area=SMALL, seed=3))
    other = era5.synthetic(SINGLE, "2023-09-01", area=SMALL, seed=4)
    assert not np.array_equal(first["t2m"], other["t2m"])


def test_download_bytes_are_identical_across_clock_seconds():
    """HDF5 can stamp times into files; the synthetic CDS must not."""
    request = era5.build_request(LAND, "2023-09-01", area=SMALL)
    first, started = era5.synthetic_download(LAND, request), int(time.time())
    deadline = time.monotonic() + 10
    again = era5.synthetic_download(LAND, request)
    while int(time.time()) == started and time.monotonic() < deadline:
        again = era5.synthetic_download(LAND, request)
    assert int(time.time()) != started
    assert again == first


def test_land_download_is_netcdf4_laid_out_like_the_cds():
    data = era5.synthetic_download(LAND, era5.build_request(LAND, "2023-09-01", area=SMALL))
    assert data[:4] == b"\x89HDF"
    with netCDF4.Dataset("synthetic.nc", memory=data) as nc:
        assert nc.data_model == "NETCDF4"
        assert nc["valid_time"].dtype == np.int64
        assert nc["valid_time"].units == "seconds since 1970-01-01"
        assert nc["valid_time"].calendar == "proleptic_gregorian"
        assert nc["number"].shape == () and int(nc["number"][...]) == 0
        assert nc["expver"].dimensions == ("valid_time",) and nc["expver"][0] == "0001"
        for name in ("t2m", "tp"):
            variable = nc[name]
            assert variable.dtype == np.float32 and np.isnan(variable._FillValue)
            assert variable.filters()["zlib"] and variable.filters()["complevel"] == 1
        assert nc["tp"].GRIB_stepType == "accum" and nc["t2m"].GRIB_stepType == "instant"
        assert nc.Conventions == "CF-1.7" and "NOT Copernicus data" in nc.history


def test_download_attributes_match_a_real_cds_file(samples_dir):
    real = era5.open_download(samples_dir / "era5land_kerala_2025-09-11_hourly.zip")
    data = era5.synthetic_download(LAND, era5.build_request(LAND, "2023-09-01", area=SMALL))
    with xr.open_dataset(data, engine="h5netcdf") as fake:
        for name in ("t2m", "tp"):
            assert set(fake[name].attrs) == set(real[name].attrs)
            assert fake[name].attrs["GRIB_paramId"] == real[name].attrs["GRIB_paramId"]
        assert set(fake.coords) == {"valid_time", "latitude", "longitude", "number", "expver"}
        assert set(fake.attrs) == set(xr.open_dataset(
            samples_dir / "era5sl_colorado_2021-01-01_t2m_tp_newcds.nc").attrs)


def test_download_format_zip_holds_data_0_nc():
    request = era5.build_request(LAND, "2023-09-01", area=SMALL, download_format="zip")
    data = era5.synthetic_download(LAND, request)
    assert data[:4] == b"PK\x03\x04"
    assert list(members(data)) == ["data_0.nc"]
    unarchived = era5.synthetic_download(LAND, {**request, "download_format": "unarchived"})
    assert members(data)["data_0.nc"] == unarchived


def test_single_levels_come_zipped_split_by_step_type():
    request = era5.build_request(SINGLE, "2023-09-01", area=SMALL)  # "unarchived", yet zipped
    parts = members(era5.synthetic_download(SINGLE, request))
    assert sorted(parts) == ["data_stream-oper_stepType-accum.nc",
                             "data_stream-oper_stepType-instant.nc"]
    accum = xr.open_dataset(parts["data_stream-oper_stepType-accum.nc"], engine="h5netcdf")
    assert list(accum.data_vars) == ["tp"] and '"stepType": ["accum"]' in accum.attrs["history"]
    one = era5.synthetic_download(SINGLE, {**request, "variable": ["2m_temperature"]})
    assert one[:4] == b"\x89HDF"


@pytest.mark.parametrize("dataset", [LAND, SINGLE])
def test_download_round_trips_through_open_download_and_daily(dataset):
    request = era5.build_request(dataset, "2023-09-01", "2023-09-03")
    ds = era5.open_download(era5.synthetic_download(dataset, request))
    direct = era5.synthetic(dataset, "2023-09-01", "2023-09-04")
    xr.testing.assert_equal(ds[["t2m", "tp"]], direct[["t2m", "tp"]].drop_vars("number"))
    result = era5.daily(ds, dataset, days=DAYS)
    assert result.sizes["date"] == 3
    assert 0 < float(result["tp"].mean()) < 30 and 15 < float(result["t2m"].mean()) < 30


def test_request_dates_of_a_cartesian_request_are_all_synthesised():
    request = era5.build_request(LAND, "2023-08-31", area=SMALL)  # and 2023-09-01 00 UTC for tp
    ds = era5.open_download(era5.synthetic_download(LAND, request))
    dates = sorted(set(ds.indexes["valid_time"].normalize().strftime("%Y-%m-%d")))
    assert dates == ["2023-08-01", "2023-08-31", "2023-09-01"]


def test_global_request_without_area_covers_the_globe():
    request = {"product_type": "reanalysis", "variable": "2m_temperature", "year": "2023",
               "month": "09", "day": "01", "time": "12:00", "data_format": "netcdf"}
    ds = era5.open_download(era5.synthetic_download(SINGLE, request))
    assert ds.sizes == {"valid_time": 1, "latitude": 721, "longitude": 1440}
    assert float(ds.longitude[0]) == -180.0  # 0..359.75 delivered, normalised on reading


@pytest.mark.parametrize(("call", "field", "accepted"), [
    (lambda: era5.synthetic(LAND, "2023-09-02", "2023-09-01"), "end", "on or after"),
    (lambda: era5.synthetic(LAND, "2023-9-1"), "start", "YYYY-MM-DD"),
    (lambda: era5.synthetic(LAND, "2023-09-01", variables=["rain"]), "variable",
     "2m_temperature"),
    (lambda: era5.synthetic(LAND, "2023-09-01", hours=[24]), "hours", "0..23"),
    (lambda: era5.synthetic(LAND, "2023-09-01", hours=[]), "hours", "0..23"),
    (lambda: era5.synthetic(LAND, "2023-09-01", area=(0, 0, 0, 0)), "area", "W < E"),
    (lambda: era5.synthetic("era5", "2023-09-01"), "dataset", LAND),
    (lambda: era5.synthetic_download(LAND, {**era5.build_request(LAND, "2023-09-01"),
                                            "data_format": "grib"}), "data_format", "netcdf"),
    (lambda: era5.synthetic_download(LAND, {"variable": "2m_temperature"}), "year", "a value"),
])
def test_synthetic_rejects_bad_arguments_naming_the_field(call, field, accepted):
    with pytest.raises(RequestError) as error:
        call()
    assert error.value.field == field
    assert accepted in str(error.value).split("accepted: ")[1]
