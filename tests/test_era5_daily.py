"""daily(): mean temperature and total precipitation per UTC day, with each dataset's tp convention."""

from __future__ import annotations

import zipfile
from datetime import date

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from picsel_nb import era5
from picsel_nb.era5 import IncompleteDayError

LAND, SINGLE = "reanalysis-era5-land", "reanalysis-era5-single-levels"
DAY = date(2023, 9, 1)
OCEAN = (1, 1)  # the NaN grid point of the tiny datasets


def tiny(dataset: str, hours: int = 25, start: str = "2023-09-01") -> xr.Dataset:
    """A 2×2 grid, hourly from ``start`` 00 UTC, with known answers for day 2023-09-01.

    t2m is 273.15 + h K at hour h (daily mean 11.5 °C); 00 UTC of the next day is 1000 K, which
    must not count. The hour ending at h brings h mm (h = 1..24, so the day's total is 300 mm);
    the hour ending at 00 UTC of the day itself brings 100 mm, which belongs to the day before.
    ERA5 single levels store those amounts; ERA5-Land stores their running sum since 00 UTC.
    """
    times = pd.date_range(start, periods=hours, freq="h")
    hour = ((times - pd.Timestamp(DAY)) / pd.Timedelta(hours=1)).to_numpy()
    t2m = np.where(hour < 24, 273.15 + hour, 1000.0)
    amount_mm = np.where(hour % 24 == 0, np.where(hour == 0, 100.0, 24.0), hour % 24)
    if dataset == LAND:
        tp_mm = np.where(hour == 0, 100.0, np.where(hour <= 24, hour * (hour + 1) / 2, 0.0))
    else:
        tp_mm = amount_mm
    grid = np.ones((len(times), 2, 2))
    grid[:, OCEAN[0], OCEAN[1]] = np.nan
    return xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"), (t2m[:, None, None] * grid)
                 .astype("float32")),
         "tp": (("valid_time", "latitude", "longitude"), (tp_mm[:, None, None] / 1000 * grid)
                .astype("float32"))},
        coords={"valid_time": times, "latitude": [1.0, 0.0], "longitude": [0.0, 1.0]})


def test_land_precipitation_is_the_next_day_00utc_value_never_a_sum():
    result = era5.daily(tiny(LAND), LAND)
    assert list(result.date.values) == [np.datetime64("2023-09-01", "ns")]
    assert float(result["tp"][0, 0, 0]) == pytest.approx(300.0)  # summing would give 2700+
    assert float(result["t2m"][0, 0, 0]) == pytest.approx(11.5, abs=1e-4)


def test_single_levels_precipitation_sums_01utc_to_next_00utc():
    result = era5.daily(tiny(SINGLE), SINGLE)
    assert float(result["tp"][0, 0, 0]) == pytest.approx(300.0)  # 00..23 UTC would give 376
    assert float(result["t2m"][0, 0, 0]) == pytest.approx(11.5, abs=1e-4)


@pytest.mark.parametrize("dataset", [LAND, SINGLE])
def test_daily_output_layout_units_and_ocean(dataset):
    result = era5.daily(tiny(dataset), dataset)
    assert result["t2m"].dims == result["tp"].dims == ("date", "latitude", "longitude")
    assert result["t2m"].dtype == result["tp"].dtype == np.float32
    assert (result["t2m"].attrs["units"], result["tp"].attrs["units"]) == ("degC", "mm")
    assert result["t2m"].attrs["long_name"] and result["tp"].attrs["long_name"]
    assert result.attrs["dataset"] == dataset
    assert "00 UTC of D+1" in result.attrs["convention"]
    assert result.attrs["partial_days"] == []
    assert np.isnan(result["t2m"][0][OCEAN]) and np.isnan(result["tp"][0][OCEAN])
    assert int(result["tp"].isnull().sum()) == 1


def test_convention_attribute_names_the_rule_used():
    assert "accumulation since 00 UTC" in era5.daily(tiny(LAND), LAND)["tp"].attrs["convention"]
    assert "sum of 01 UTC" in era5.daily(tiny(SINGLE), SINGLE)["tp"].attrs["convention"]


@pytest.mark.parametrize("dataset", [LAND, SINGLE])
def test_tiny_negative_precipitation_is_clipped_to_zero(dataset):
    ds = tiny(dataset)
    ds["tp"] = xr.full_like(ds["tp"], -1e-9).where(ds["tp"].notnull())
    result = era5.daily(ds, dataset)
    assert float(result["tp"][0, 0, 0]) == 0.0
    assert np.isnan(result["tp"][0][OCEAN])


def test_lambda_download_of_two_days_gives_the_asked_day_only():
    """The Lambda asks for D and D+1 (24 hours each); the job computes D."""
    ds = tiny(LAND, hours=48)
    result = era5.daily(ds, LAND, days=[DAY])
    assert float(result["tp"][0, 0, 0]) == pytest.approx(300.0)
    with pytest.raises(IncompleteDayError, match="2023-09-02 misses tp at 2023-09-03 00:00 UTC"):
        era5.daily(ds, LAND)  # by default D+1 is a day too, and it has no closing 00 UTC


@pytest.mark.parametrize("days", [DAY, "2023-09-01", ["2023-09-01"], np.datetime64("2023-09-01"),
                                  pd.DatetimeIndex(["2023-09-01"]), ("2023-09-01", DAY)])
def test_days_accepts_dates_in_common_forms(days):
    assert era5.daily(tiny(LAND), LAND, days=days).sizes["date"] == 1


def test_days_rejects_non_dates():
    with pytest.raises(ValueError, match="days: 'soon' is not a date; accepted: a date"):
        era5.daily(tiny(LAND), LAND, days=["soon"])


def test_missing_hours_are_named_in_the_error():
    ds = tiny(LAND).drop_sel(valid_time=pd.date_range("2023-09-01T19", periods=6, freq="h"))
    with pytest.raises(IncompleteDayError) as error:
        era5.daily(ds, LAND)
    message = str(error.value)
    assert "2023-09-01 misses t2m at 19:00, 20:00, 21:00, 22:00, 23:00 UTC" in message
    assert "2023-09-01 misses tp at 2023-09-02 00:00 UTC" in message
    assert "allow_partial=True" in message
    assert isinstance(error.value, ValueError)
    assert list(error.value.missing[DAY]) == ["t2m", "tp"]
    assert len(error.value.missing[DAY]["t2m"]) == 5


def test_single_levels_missing_first_hour_is_named():
    ds = tiny(SINGLE).drop_sel(valid_time=[pd.Timestamp("2023-09-01T01")])
    with pytest.raises(IncompleteDayError, match="misses t2m at 01:00 UTC; 2023-09-01 misses tp at "
                                                 "01:00 UTC"):
        era5.daily(ds, SINGLE)


def test_an_hour_with_no_value_anywhere_counts_as_missing():
    ds = tiny(SINGLE)
    ds["tp"][5] = np.nan  # e.g. an outer merge of instant and accum files of different lengths
    with pytest.raises(IncompleteDayError, match="misses tp at 05:00 UTC"):
        era5.daily(ds, SINGLE)


def test_an_all_ocean_area_is_not_incomplete():
    ds = tiny(LAND) * np.nan
    result = era5.daily(ds, LAND)
    assert bool(result["t2m"].isnull().all()) and bool(result["tp"].isnull().all())


def test_day_outside_the_data_is_incomplete():
    with pytest.raises(IncompleteDayError, match="2023-09-05 misses t2m at 00:00, 01:00"):
        era5.daily(tiny(LAND), LAND, days=["2023-09-05"])


def test_allow_partial_computes_from_hours_present_and_flags_them():
    ds = tiny(LAND).drop_sel(valid_time=pd.date_range("2023-09-01T19", periods=6, freq="h"))
    result = era5.daily(ds, LAND, allow_partial=True)
    assert result.attrs["partial_days"] == ["2023-09-01"]
    assert result["t2m"].attrs["partial_days"] == ["2023-09-01"]
    assert result["tp"].attrs["missing_hours"] == ["2023-09-02T00:00"]
    assert len(result["t2m"].attrs["missing_hours"]) == 5
    assert float(result["t2m"][0, 0, 0]) == pytest.approx(9.0, abs=1e-4)  # mean of 0..18
    assert float(result["tp"][0, 0, 0]) == pytest.approx(171.0)  # running total at 18 UTC


def test_allow_partial_single_levels_sums_what_exists():
    ds = tiny(SINGLE).isel(valid_time=slice(0, 13))  # 00..12 UTC
    result = era5.daily(ds, SINGLE, allow_partial=True)
    assert float(result["tp"][0, 0, 0]) == pytest.approx(78.0)  # 1 + ... + 12
    assert result.attrs["partial_days"] == ["2023-09-01"]


def test_allow_partial_day_without_any_hour_is_nan():
    result = era5.daily(tiny(LAND), LAND, days=["2023-09-05"], allow_partial=True)
    assert bool(result["t2m"].isnull().all()) and bool(result["tp"].isnull().all())


def test_only_temperature_or_only_precipitation():
    assert list(era5.daily(tiny(LAND)[["t2m"]], LAND).data_vars) == ["t2m"]
    assert list(era5.daily(tiny(LAND)[["tp"]], LAND).data_vars) == ["tp"]


def test_daily_rejects_unknown_dataset_and_foreign_variables():
    with pytest.raises(ValueError, match="dataset: unknown dataset 'era6'; accepted: reanalysis"):
        era5.daily(tiny(LAND), "era6")
    with pytest.raises(ValueError, match="ds: no t2m or tp among \\['u10'\\]; accepted"):
        era5.daily(tiny(LAND).rename(t2m="u10")[["u10"]], LAND)
    with pytest.raises(ValueError, match="days: none to compute"):
        era5.daily(tiny(LAND).isel(valid_time=slice(0, 0)), LAND)


def test_already_converted_fields_are_refused():
    ds = tiny(LAND)
    ds["t2m"].attrs["units"] = "degC"
    with pytest.raises(ValueError, match="t2m: units 'degC'; accepted: 'K'"):
        era5.daily(ds, LAND)


def test_global_era5_day_sums_hours_01_to_00_and_averages_00_to_23():
    rng = np.random.default_rng(0)
    shape = (25, 721, 1440)
    ds = xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"),
                 250 + 60 * rng.random(shape, dtype="float32")),
         "tp": (("valid_time", "latitude", "longitude"), 1e-3 * rng.random(shape, dtype="float32"))},
        coords={"valid_time": pd.date_range("2023-09-01", periods=25, freq="h"),
                "latitude": np.linspace(90, -90, 721), "longitude": np.arange(1440) * 0.25 - 180})
    result = era5.daily(ds, SINGLE)
    expected_tp = ds["tp"].isel(valid_time=slice(1, 25)).sum("valid_time") * 1000
    np.testing.assert_allclose(result["tp"][0], expected_tp, rtol=1e-5)
    np.testing.assert_allclose(result["t2m"][0], ds["t2m"][:24].mean("valid_time") - 273.15,
                               atol=1e-3)


# --- real samples -----------------------------------------------------------------------------


def test_kerala_2022_00utc_values_are_previous_day_totals(samples_dir):
    ds = era5.open_download(samples_dir / "era5land_kerala_2022_00utc.nc")
    days = pd.date_range("2021-12-31", "2022-12-30")
    result = era5.daily(ds[["tp"]], LAND, days=days)
    assert result.sizes["date"] == 365
    assert float(result["tp"].mean(("latitude", "longitude")).sum()) == pytest.approx(2358, abs=1)


def test_kerala_preliminary_day_stops_at_18utc(samples_dir):
    ds = era5.open_download(samples_dir / "era5land_kerala_2025-09-11_hourly.zip")
    with pytest.raises(IncompleteDayError) as error:
        era5.daily(ds, LAND)
    assert "2025-09-11 misses t2m at 19:00, 20:00, 21:00, 22:00, 23:00 UTC" in str(error.value)
    assert "2025-09-11 misses tp at 2025-09-12 00:00 UTC" in str(error.value)
    partial = era5.daily(ds, LAND, allow_partial=True)
    np.testing.assert_allclose(partial["tp"][0], ds["tp"].sel(valid_time="2025-09-11T18") * 1000,
                               rtol=1e-6)
    assert float(partial["tp"].mean()) == pytest.approx(2.30, abs=0.01)


def test_telangana_daily_totals_from_hourly_amounts(samples_dir, tmp_path):
    accum = samples_dir / "era5sl_telangana_2023-09-01_07_stepType-accum.nc"
    with zipfile.ZipFile(tmp_path / "download.zip", "w") as archive:
        archive.write(accum, "data_stream-oper_stepType-accum.nc")
    ds = era5.open_download(tmp_path / "download.zip")
    result = era5.daily(ds, SINGLE, days=pd.date_range("2023-09-01", "2023-09-06"))
    means = result["tp"].mean(("latitude", "longitude")).values
    np.testing.assert_allclose(means, [0.97, 10.67, 20.92, 25.72, 16.47, 12.97], atol=0.01)
    with pytest.raises(IncompleteDayError, match="2023-09-07 misses tp at 2023-09-08 00:00"):
        era5.daily(ds, SINGLE)


def test_colorado_three_hours_are_a_partial_day(samples_dir):
    ds = era5.open_download(samples_dir / "era5sl_colorado_2021-01-01_t2m_tp_newcds.nc")
    result = era5.daily(ds, SINGLE, allow_partial=True)
    assert result.attrs["partial_days"] == ["2021-01-01"]
    np.testing.assert_allclose(result["tp"][0], ds["tp"][1:].sum("valid_time") * 1000, rtol=1e-5)
