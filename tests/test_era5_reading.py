"""open_download on real CDS files (every layout the CDS has sent) and on broken ones."""

from __future__ import annotations

import io
import tempfile
import zipfile

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from picsel_nb import era5
from picsel_nb.era5 import DownloadError

KERALA_10 = "era5land_kerala_2025-09-10_hourly.zip"
KERALA_11 = "era5land_kerala_2025-09-11_hourly.zip"
KERALA_2022 = "era5land_kerala_2022_00utc.nc"
COLORADO_NEW = "era5sl_colorado_2021-01-01_t2m_tp_newcds.nc"
COLORADO_OLD = "era5sl_colorado_2021-01-01_t2m_tp_legacycds.nc"
TELANGANA = "era5sl_telangana_2023-09-01_07_stepType-{}.nc"
BRAZIL_GRIB = "era5land_brazil_2002-03-10_t2m_grib.zip"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def assert_tidy(ds: xr.Dataset) -> None:
    """The layout open_download promises, whatever the file."""
    assert ds["t2m"].dims[:3] == ("valid_time", "latitude", "longitude") if "t2m" in ds else True
    assert ds.indexes["latitude"].is_monotonic_decreasing
    assert ds.indexes["longitude"].is_monotonic_increasing
    assert ds["longitude"].min() >= -180 and ds["longitude"].max() < 180
    assert ds.indexes["valid_time"].is_monotonic_increasing
    assert "number" not in ds.coords
    for variable in ds.variables.values():
        assert isinstance(variable.data, np.ndarray)  # loaded, no lazy backend array


@pytest.mark.parametrize(("name", "sizes", "variables"), [
    (KERALA_11, (19, 46, 41), {"t2m", "d2m", "tp", "u10", "v10"}),
    (KERALA_10, (15, 21, 15), {"t2m", "tp", "u10", "v10"}),
    (KERALA_2022, (365, 47, 28), {"t2m", "d2m", "sp", "u10", "v10", "tp"}),
    (COLORADO_NEW, (3, 21, 29), {"t2m", "tp"}),
    (COLORADO_OLD, (3, 21, 29), {"t2m", "tp"}),
    (TELANGANA.format("accum"), (168, 21, 21), {"tp"}),
    (TELANGANA.format("instant"), (168, 21, 21), {"d2m", "u10", "v10", "sp"}),
    (BRAZIL_GRIB, (2, 394, 401), {"t2m"}),
])
def test_every_real_sample_opens_tidy(samples_dir, name, sizes, variables):
    ds = era5.open_download(samples_dir / name)
    assert tuple(ds.sizes[dim] for dim in ("valid_time", "latitude", "longitude")) == sizes
    assert set(ds.data_vars) == variables
    assert_tidy(ds)


def test_bytes_and_path_give_the_same_dataset(samples_dir):
    path = samples_dir / KERALA_10
    xr.testing.assert_identical(era5.open_download(path), era5.open_download(path.read_bytes()))


def test_container_is_detected_from_bytes_not_name(samples_dir, tmp_path):
    misnamed_zip = tmp_path / "daily_climate.nc"  # the zip the Kerala repo saved as .nc
    misnamed_zip.write_bytes((samples_dir / KERALA_10).read_bytes())
    misnamed_nc = tmp_path / "download.zip"
    misnamed_nc.write_bytes((samples_dir / COLORADO_NEW).read_bytes())
    assert era5.open_download(misnamed_zip).sizes["valid_time"] == 15
    assert era5.open_download(misnamed_nc).sizes["valid_time"] == 3


def test_kerala_land_values_and_ocean_nan(samples_dir):
    ds = era5.open_download(samples_dir / KERALA_11)
    assert int(ds["t2m"].isnull().sum()) == 15770  # ocean stays NaN
    assert set(ds["expver"].values) == {"0005"}
    tp_mm = ds["tp"].mean(("latitude", "longitude")) * 1000
    assert float(tp_mm[0]) == pytest.approx(6.25, abs=0.01)  # 00 UTC: yesterday's total
    assert float(tp_mm[-1]) == pytest.approx(2.30, abs=0.01)
    steps = ds["tp"].isel(valid_time=slice(1, None)).diff("valid_time")
    assert int(steps.notnull().sum()) == 17952
    # accumulated since 00 UTC: never decreases in the day, beyond packing noise (~1.5e-8 m)
    assert float(steps.min()) > -1e-7


def test_kerala_pair_shows_land_accumulation_convention(samples_dir):
    day_10 = era5.open_download(samples_dir / KERALA_10)["tp"].sel(valid_time="2025-09-10T14")
    day_11 = era5.open_download(samples_dir / KERALA_11)["tp"].sel(valid_time="2025-09-11T00")
    at_14, at_00 = xr.align(day_10, day_11, join="inner")
    land = at_14.notnull() & at_00.notnull()
    assert int(land.sum()) == 204
    assert bool((at_00.where(land) >= at_14.where(land)).sum() == 204)


def test_legacy_netcdf3_and_new_netcdf4_hold_the_same_values(samples_dir):
    old = era5.open_download(samples_dir / COLORADO_OLD)
    new = era5.open_download(samples_dir / COLORADO_NEW)
    assert (samples_dir / COLORADO_OLD).read_bytes()[:4] == b"CDF\x02"
    for dim in ("valid_time", "latitude", "longitude"):
        assert old.indexes[dim].equals(new.indexes[dim])
    assert float(abs(old["t2m"] - new["t2m"]).max()) < 2e-4  # K, int16 packing error
    assert float(abs(old["tp"] - new["tp"]).max()) < 1e-9  # m
    assert "expver" not in old.coords and "expver" in new.coords


def test_zip_of_instant_and_accum_files_merges(samples_dir, tmp_path):
    members = {TELANGANA.format(kind).replace("era5sl_telangana_2023-09-01_07_",
                                              "data_stream-oper_"): (samples_dir /
                                                                     TELANGANA.format(kind))
               .read_bytes() for kind in ("accum", "instant")}
    path = tmp_path / "download.nc"
    path.write_bytes(zip_bytes(members))
    ds = era5.open_download(path)
    assert set(ds.data_vars) == {"tp", "d2m", "u10", "v10", "sp"}
    assert ds.sizes == {"valid_time": 168, "latitude": 21, "longitude": 21}
    assert not ds.to_array().isnull().any()
    assert_tidy(ds)


def test_grib_zip_opens_on_valid_time_and_leaves_no_files(samples_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ds = era5.open_download(samples_dir / BRAZIL_GRIB)
    assert list(tmp_path.iterdir()) == []
    # dataDate 2002-03-10 step 24 h and dataDate 2002-03-11 step 12 h (SOURCES.md says 03-10 12:00)
    assert list(ds.indexes["valid_time"]) == [pd.Timestamp("2002-03-11T00"),
                                               pd.Timestamp("2002-03-11T12")]
    assert float(ds["t2m"].min()) == pytest.approx(268.16, abs=0.01)
    assert float(ds["t2m"].max()) == pytest.approx(307.84, abs=0.01)
    assert (float(ds.latitude[0]), float(ds.latitude[-1])) == (5.3, -34.0)
    assert (float(ds.longitude[0]), float(ds.longitude[-1])) == (-74.0, -34.0)
    assert ds["t2m"].isnull().any()  # ocean


def test_single_grib_message_keeps_a_valid_time_dimension(samples_dir):
    grib = zipfile.ZipFile(samples_dir / BRAZIL_GRIB).read("data.grib")
    first = grib[: int.from_bytes(grib[4:7], "big")]  # GRIB1 section 0: total message length
    ds = era5.open_download(first)
    assert ds["t2m"].dims == ("valid_time", "latitude", "longitude")
    assert list(ds.indexes["valid_time"]) == [pd.Timestamp("2002-03-11T00")]


def test_single_time_netcdf_keeps_a_valid_time_dimension():
    ds = tiny([1.0, 0.0], [10.0, 11.0], times=1).isel(valid_time=0)
    assert era5.open_download(ds.to_netcdf(engine="h5netcdf"))["t2m"].shape == (1, 2, 2)


def tiny(lat, lon, times=2) -> xr.Dataset:
    """A small t2m field whose value encodes its position: 1000·lat + lon."""
    values = np.add.outer(1000.0 * np.asarray(lat), lon).astype("float32")
    return xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"), np.stack([values] * times))},
        coords={"valid_time": pd.date_range("2023-09-01", periods=times, freq="h"),
                "latitude": lat, "longitude": lon})


def test_global_longitudes_are_wrapped_and_sorted():
    ds = tiny([1.0, 0.0], [0.0, 90.0, 180.0, 270.0])
    opened = era5.open_download(ds.to_netcdf(engine="h5netcdf"))
    assert list(opened.longitude.values) == [-180.0, -90.0, 0.0, 90.0]
    assert list(opened["t2m"].values[0, 0]) == [1180.0, 1270.0, 1000.0, 1090.0]


def test_ascending_latitude_is_flipped_north_to_south():
    ds = tiny([-1.0, 0.0, 1.0], [10.0, 11.0])
    opened = era5.open_download(ds.to_netcdf(engine="h5netcdf"))
    assert list(opened.latitude.values) == [1.0, 0.0, -1.0]
    assert list(opened["t2m"].values[0, :, 0]) == [1010.0, 10.0, -990.0]


def test_old_cds_expver_dimension_is_combined():
    """The old CDS put ERA5 (expver 1) and ERA5T (expver 5) side by side, NaN where absent."""
    ds = tiny([1.0, 0.0], [10.0, 11.0], times=3).rename(valid_time="time")
    first, second = ds["t2m"].copy(), ds["t2m"].copy() + 1
    first[2], second[:2] = np.nan, np.nan
    both = xr.concat([first, second], pd.Index([1, 5], name="expver")).transpose("time", "expver",
                                                                                   ...)
    data = both.to_dataset().to_netcdf(engine="netcdf4", format="NETCDF3_64BIT")
    assert bytes(data[:4]) == b"CDF\x02"
    opened = era5.open_download(bytes(data))
    assert opened["t2m"].dims == ("valid_time", "latitude", "longitude")
    assert list(opened["t2m"].values[:, 0, 0]) == [1010.0, 1010.0, 1011.0]


ACCEPTED = "NetCDF3 (CDF\\x01, CDF\\x02), NetCDF4/HDF5 (\\x89HDF), GRIB, or a ZIP"


@pytest.mark.parametrize(("name", "cut", "found"), [
    (KERALA_2022, 0.5, "truncated or corrupt NetCDF4/HDF5"),
    (COLORADO_NEW, 0.9, "truncated or corrupt NetCDF4/HDF5"),
    (COLORADO_OLD, 0.5, "truncated or corrupt NetCDF3 (64-bit offset)"),
    (COLORADO_OLD, 0.01, "truncated or corrupt NetCDF3 (64-bit offset)"),
    (KERALA_11, 0.5, "truncated or corrupt ZIP"),
])
def test_truncated_real_files_raise_download_error(samples_dir, name, cut, found):
    data = (samples_dir / name).read_bytes()
    with pytest.raises(DownloadError) as error:
        era5.open_download(data[: int(len(data) * cut)])
    assert found in str(error.value) and ACCEPTED in str(error.value).split("accepted: ")[1]


def test_zip_with_a_truncated_member_names_it(samples_dir):
    member = zipfile.ZipFile(samples_dir / KERALA_11).read("data_0.nc")
    with pytest.raises(DownloadError, match="member 'data_0.nc'.*truncated or corrupt NetCDF4"):
        era5.open_download(zip_bytes({"data_0.nc": member[: len(member) // 2]}))


def test_truncated_grib_raises_download_error(samples_dir):
    grib = zipfile.ZipFile(samples_dir / BRAZIL_GRIB).read("data.grib")
    with pytest.raises(DownloadError, match="truncated or corrupt GRIB"):
        era5.open_download(grib[:1000])


@pytest.mark.parametrize(("data", "found"), [
    (b"", "it is empty"),
    (np.random.default_rng(0).bytes(4096), "it starts with b'_\\x82"),
    (b"<!DOCTYPE html><html>Service unavailable</html>", "it starts with b'<!DOCTYP"),
    (zip_bytes({"readme.txt": b"no data here"}), "member 'readme.txt' is not NetCDF or GRIB"),
    (zip_bytes({"data_0.nc": b""}), "member 'data_0.nc' is not NetCDF or GRIB (empty)"),
    (zip_bytes({"inner.zip": zip_bytes({"a": b"x"})}), "member 'inner.zip' is not NetCDF"),
    (zip_bytes({}), "an empty ZIP"),  # only the end record, PK\x05\x06
    (b"PK\x03\x04" + bytes(100), "truncated or corrupt ZIP"),
])
def test_non_era5_bytes_raise_download_error_saying_what_was_found(data, found):
    with pytest.raises(DownloadError) as error:
        era5.open_download(data)
    assert found in str(error.value) and ACCEPTED in str(error.value).split("accepted: ")[1]
    assert isinstance(error.value, ValueError)


def test_empty_zip_with_a_directory_entry_raises():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data/", b"")
    with pytest.raises(DownloadError, match="empty ZIP"):
        era5.open_download(buffer.getvalue())


def test_zip_of_files_that_do_not_merge_raises_download_error():
    one = tiny([1.0, 0.0], [10.0, 11.0]).to_netcdf(engine="h5netcdf")
    other = (tiny([1.0, 0.0], [10.0, 11.0]) + 1).to_netcdf(engine="h5netcdf")
    with pytest.raises(DownloadError, match="2 files that do not merge"):
        era5.open_download(zip_bytes({"a.nc": bytes(one), "b.nc": bytes(other)}))


def test_netcdf_without_a_grid_raises_download_error():
    data = xr.Dataset({"t2m": ("station", [290.0])}).to_netcdf(engine="h5netcdf")
    with pytest.raises(DownloadError, match="lacks the dimension"):
        era5.open_download(data)


# --- download_variables: the ingest function's check, from disk ---------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    (KERALA_11, {"t2m", "d2m", "tp", "u10", "v10"}),
    (COLORADO_NEW, {"t2m", "tp"}),
    (COLORADO_OLD, {"t2m", "tp"}),
    (BRAZIL_GRIB, {"t2m"}),
])
def test_download_variables_reads_every_container_from_disk(samples_dir, name, expected):
    assert era5.download_variables(samples_dir / name) == expected


def test_download_variables_of_a_synthetic_cds_zip(tmp_path):
    request = era5.build_request("reanalysis-era5-land", "2023-09-01", area=(-9, -60, -10, -59))
    path = tmp_path / "download.nc"
    path.write_bytes(era5.synthetic_download("reanalysis-era5-land", request))
    assert era5.download_variables(path) == {"t2m", "tp"}
    assert [p.name for p in tmp_path.iterdir()] == ["download.nc"]  # unpacked members removed


@pytest.mark.parametrize("name", [KERALA_11, COLORADO_NEW, COLORADO_OLD])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_download_variables_refuses_a_truncated_file(samples_dir, tmp_path, name, keep):
    data = (samples_dir / name).read_bytes()
    path = tmp_path / "download.nc"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DownloadError, match="truncated or corrupt"):
        era5.download_variables(path)


@pytest.mark.parametrize(("data", "found"), [(b"", "it is empty"), (b"hello world", "hello w")])
def test_download_variables_refuses_what_is_not_a_download(tmp_path, data, found):
    path = tmp_path / "download.nc"
    path.write_bytes(data)
    with pytest.raises(DownloadError, match=found):
        era5.download_variables(path)
