"""CDS request building and validation: what the Lambda sends and what the loopback CDS accepts."""

from __future__ import annotations

import importlib
from datetime import date, datetime

import numpy as np
import pytest

from picsel_nb import era5
from picsel_nb.era5 import RequestError

LAND, SINGLE = "reanalysis-era5-land", "reanalysis-era5-single-levels"
TODAY = date(2025, 1, 20)  # latest ERA5(-Land) date: 2025-01-15
cds_request = importlib.import_module("picsel_nb.era5.cds_request")


@pytest.fixture(autouse=True)
def fixed_today(monkeypatch):
    """Latency checks against a fixed UTC date, so the tests do not age."""
    monkeypatch.setattr(cds_request, "utc_today", lambda: TODAY)


def assert_error(error: pytest.ExceptionInfo, field: str, *accepted: str) -> None:
    """The message starts with the field and lists what is accepted."""
    message = str(error.value)
    assert isinstance(error.value, RequestError) and isinstance(error.value, ValueError)
    assert error.value.field == field
    assert message.startswith(f"{field}: ")
    assert "accepted: " in message
    for text in accepted:
        assert text in message.split("accepted: ", 1)[1]


def full_request(**changes) -> dict:
    request = {
        "product_type": ["reanalysis"],
        "variable": ["2m_temperature", "total_precipitation"],
        "year": ["2023"], "month": ["09"], "day": ["01", "02"],
        "time": ["00:00", "12:00"],
        "area": [-9, -60, -24, -40],
        "data_format": "netcdf", "download_format": "unarchived",
    }
    request.update(changes)
    return {key: value for key, value in request.items() if value is not None}


def test_demo_request_asks_for_the_day_after_end_to_close_precipitation():
    request = era5.build_request(LAND, "2023-09-01", "2023-09-03")
    assert request == {
        "variable": ["2m_temperature", "total_precipitation"],
        "year": ["2023"], "month": ["09"], "day": ["01", "02", "03", "04"],
        "time": [f"{hour:02d}:00" for hour in range(24)],
        "area": [-9.0, -60.0, -24.0, -40.0],
        "data_format": "netcdf", "download_format": "unarchived",
    }


def test_single_day_request_includes_next_day():
    request = era5.build_request(LAND, date(2023, 9, 1))
    assert request["day"] == ["01", "02"]
    assert era5.request_dates(request) == [date(2023, 9, 1), date(2023, 9, 2)]


def test_temperature_only_request_needs_no_next_day():
    request = era5.build_request(LAND, "2023-09-01", variables=["2m_temperature"])
    assert request["day"] == ["01"] and request["variable"] == ["2m_temperature"]


def test_single_levels_request_has_product_type_and_its_own_grid_limits():
    request = era5.build_request(SINGLE, "1940-01-01", area=[10, 0, 9.75, 0.25],
                                 download_format="zip")
    assert request["product_type"] == ["reanalysis"]
    assert request["download_format"] == "zip"


def test_range_over_a_month_boundary_is_a_cartesian_product():
    request = era5.build_request(LAND, "2023-08-31", "2023-08-31")
    assert (request["month"], request["day"]) == (["08", "09"], ["01", "31"])
    # 31 September does not exist and is skipped, as the CDS does
    assert era5.request_dates(request) == [date(2023, 8, 1), date(2023, 8, 31), date(2023, 9, 1)]


def test_build_request_accepts_latest_day_without_precipitation():
    assert era5.build_request(LAND, "2025-01-15", variables="2m_temperature")["day"] == ["15"]


@pytest.mark.parametrize(("kwargs", "field", "accepted"), [
    ({"start": "2023-13-01"}, "start", ["YYYY-MM-DD"]),
    ({"start": "yesterday"}, "start", ["YYYY-MM-DD"]),
    ({"start": 20230901}, "start", ["YYYY-MM-DD"]),
    ({"start": "1949-12-31"}, "start", ["1950-01-01"]),
    ({"start": "2025-01-16"}, "start", ["1950-01-01 to 2025-01-15"]),
    ({"end": "2025-01-16"}, "end", ["2025-01-15"]),
    ({"end": "2025-01-15"}, "end", ["up to 2025-01-14"]),  # tp needs 00 UTC of 2025-01-16
    ({"end": "2023-08-31"}, "end", ["on or after 2023-09-01"]),
    ({"variables": ["2m_temp"]}, "variable", ["2m_temperature, total_precipitation"]),
    ({"variables": []}, "variable", ["a list of values"]),
    ({"area": [-24, -60, -9, -40]}, "area", ["N >= S"]),
    ({"area": [91, -60, -24, -40]}, "area", ["latitudes -90..90"]),
    ({"area": [-9, -181, -24, -40]}, "area", ["longitudes -180..360"]),
    ({"area": [-9, -60, -24, 361]}, "area", ["longitudes -180..360"]),
    ({"area": [-9, -40, -24, -60]}, "area", ["W < E"]),
    ({"area": [-9, -60, -9.05, -40]}, "area", ["at least 0.1°"]),
    ({"area": [-9, -60, -24, -59.95]}, "area", ["at least 0.1°"]),
    ({"area": [-9, -60, -24]}, "area", ["[N, W, S, E]"]),
    ({"area": ["north", -60, -24, -40]}, "area", ["[N, W, S, E]"]),
    ({"area": [np.nan, -60, -24, -40]}, "area", ["[N, W, S, E]"]),
    ({"area": 5}, "area", ["[N, W, S, E]"]),
    ({"area": [-9, -60, True, -40]}, "area", ["[N, W, S, E]"]),
    ({"area": (x for x in (-9, -60, -24, -40, 0))}, "area", ["[N, W, S, E]"]),
    ({"data_format": "netcdf4"}, "data_format", ["netcdf, grib"]),
    ({"download_format": "tar"}, "download_format", ["unarchived, zip"]),
])
def test_build_request_rejects_invalid_input_naming_the_field(kwargs, field, accepted):
    arguments = {"start": "2023-09-01", **kwargs}
    with pytest.raises(ValueError) as error:
        era5.build_request(LAND, **arguments)
    assert_error(error, field, *accepted)


def test_unknown_dataset_lists_the_supported_ones():
    with pytest.raises(ValueError) as error:
        era5.build_request("reanalysis-era5-pressure-levels", "2023-09-01")
    assert_error(error, "dataset", LAND, SINGLE)


def test_single_levels_start_and_grid_cell_limits():
    assert era5.build_request(SINGLE, "1945-06-01")["year"] == ["1945"]
    with pytest.raises(ValueError) as error:
        era5.build_request(SINGLE, "1939-12-31")
    assert_error(error, "start", "1940-01-01")
    with pytest.raises(ValueError) as error:
        era5.build_request(SINGLE, "2023-09-01", area=[-9, -60, -9.2, -40])
    assert_error(error, "area", "at least 0.25°")


def test_validate_request_accepts_what_build_request_makes():
    for dataset in era5.DATASETS:
        request = era5.build_request(dataset, "2023-09-01")
        assert era5.validate_request(dataset, request) == request


def test_validate_request_normalises_cds_spellings():
    request = full_request(year=2023, month=[9], day="1", time="06:00", format="netcdf",
                           data_format=None, grid=[0.25, 0.25], area="-9/-60/-24/-40")
    assert era5.validate_request(SINGLE, request) == {
        "product_type": ["reanalysis"],
        "variable": ["2m_temperature", "total_precipitation"],
        "year": ["2023"], "month": ["09"], "day": ["01"], "time": ["06:00"],
        "area": [-9.0, -60.0, -24.0, -40.0],
        "data_format": "netcdf", "download_format": "unarchived",
    }


def test_validate_request_applies_cds_defaults():
    request = full_request(product_type=None, area=None, data_format=None, download_format=None)
    normal = era5.validate_request(LAND, request)
    assert "area" not in normal and "product_type" not in normal
    assert (normal["data_format"], normal["download_format"]) == ("grib", "unarchived")


@pytest.mark.parametrize(("dataset", "changes", "field", "accepted"), [
    (SINGLE, {"product_type": None}, "product_type", ["a value"]),
    (SINGLE, {"product_type": "ensemble_members"}, "product_type", ["reanalysis"]),
    (LAND, {"product_type": ["monthly_averaged"]}, "product_type", ["reanalysis"]),
    (LAND, {"variable": None}, "variable", ["a value"]),
    (LAND, {"variable": "10m_u_component_of_wind"}, "variable", ["2m_temperature"]),
    (LAND, {"year": "20x3"}, "year", ["1950..2025"]),
    (SINGLE, {"year": ["1939"]}, "year", ["1940..2025"]),
    (LAND, {"year": True}, "year", ["1950..2025"]),
    (LAND, {"month": ["13"]}, "month", ["01..12"]),
    (LAND, {"day": ["0"]}, "day", ["01..31"]),
    (LAND, {"day": []}, "day", ["a list of values"]),
    (LAND, {"month": "02", "day": ["30", "31"]}, "day", ["at least one real date"]),
    (LAND, {"time": ["12:30"]}, "time", ["00:00..23:00"]),
    (LAND, {"time": ["24:00"]}, "time", ["00:00..23:00"]),
    (LAND, {"time": "noon"}, "time", ["00:00..23:00"]),
    (LAND, {"year": "2025", "month": "01", "day": ["16"]}, "year/month/day",
     ["1950-01-01 to 2025-01-15"]),
    (LAND, {"area": [-9, -60, -24, -40, 0]}, "area", ["[N, W, S, E]"]),
    (LAND, {"grid": [0.25, 0.25]}, "grid", ["[0.1, 0.1]"]),
    (LAND, {"grid": "fine"}, "grid", ["[0.1, 0.1]"]),
    (LAND, {"data_format": "csv"}, "data_format", ["netcdf, grib"]),
    (LAND, {"format": "netcdf.zip", "data_format": None}, "format", ["netcdf, grib"]),
    (LAND, {"format": "grib"}, "data_format", ["data_format or format"]),
    (LAND, {"download_format": "tgz"}, "download_format", ["unarchived, zip"]),
    (LAND, {"date": "2023-09-01"}, "date", ["product_type, variable"]),
])
def test_validate_request_rejects_what_the_cds_rejects(dataset, changes, field, accepted):
    request = full_request(**changes)
    with pytest.raises(ValueError) as error:
        era5.validate_request(dataset, request)
    assert_error(error, field, *accepted)


def test_validate_request_accepts_the_first_day_of_the_dataset():
    request = full_request(product_type=None, year="1950", month="01", day="01")
    assert era5.request_dates(era5.validate_request(LAND, request)) == [date(1950, 1, 1)]


def test_validate_request_rejects_non_objects():
    with pytest.raises(ValueError) as error:
        era5.validate_request(LAND, ["2m_temperature"])
    assert_error(error, "request", "JSON object")


def test_request_hash_is_canonical_and_stable():
    request = era5.build_request(LAND, "2023-09-01")
    shuffled = dict(reversed(list(request.items())))
    digest = era5.request_hash(LAND, request)
    assert digest == era5.request_hash(LAND, shuffled)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != era5.request_hash(SINGLE, request)
    assert digest != era5.request_hash(LAND, {**request, "day": ["01"]})


@pytest.mark.parametrize("value", ["2023-09-01", " 2023-09-01 ", date(2023, 9, 1),
                                   datetime(2023, 9, 1, 18), np.datetime64("2023-09-01T06")])
def test_parse_date_accepts_dates_in_common_forms(value):
    assert era5.parse_date(value) == date(2023, 9, 1)


def test_parse_date_checks_dataset_range_only_when_asked():
    assert era5.parse_date("1900-01-01") == date(1900, 1, 1)
    with pytest.raises(ValueError) as error:
        era5.parse_date("1900-01-01", LAND)
    assert_error(error, "date", "1950-01-01 to 2025-01-15")
    with pytest.raises(ValueError) as error:
        era5.parse_date(np.datetime64("NaT"))
    assert_error(error, "date", "YYYY-MM-DD")


def test_parse_area_gives_named_fields():
    area = era5.parse_area("-9/-60/-24/-40", LAND)
    assert area == era5.Area(north=-9, west=-60, south=-24, east=-40)
    assert era5.parse_area([10, 170, -10, 190]).east == 190  # across the antimeridian in 0..360


def test_dataset_table_matches_the_cds():
    land, single = era5.DATASETS[LAND], era5.DATASETS[SINGLE]
    assert (land.grid_step, land.first_date, land.latency_days) == (0.1, date(1950, 1, 1), 5)
    assert (single.grid_step, single.first_date, single.latency_days) == (0.25, date(1940, 1, 1), 5)
    assert era5.VARIABLES == {"2m_temperature": "t2m", "total_precipitation": "tp"}
    assert era5.latest_date(LAND) == date(2025, 1, 15)


def test_request_blocks_are_a_month_but_one_day_then_the_months_last_day():
    blocks = era5.request_blocks(date(2023, 1, 15), date(2023, 3, 2))
    assert blocks == [(date(2023, 1, 15), date(2023, 1, 30)), (date(2023, 1, 31), date(2023, 1, 31)),
                      (date(2023, 2, 1), date(2023, 2, 27)), (date(2023, 2, 28), date(2023, 2, 28)),
                      (date(2023, 3, 1), date(2023, 3, 2))]
    for first, last in blocks[::2]:  # a block's request is exactly its days and the closing one
        request = era5.build_request("reanalysis-era5-land", first, last)
        assert len(era5.request_dates(request)) == (last - first).days + 2
    assert len(era5.request_blocks(date(2023, 1, 1), date(2023, 12, 31))) == 24
