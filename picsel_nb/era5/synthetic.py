"""Deterministic ERA5-Land-like and ERA5-like hourly data, and the bytes the CDS would send for it.

The loopback CDS serves these files, so the whole pipeline runs offline. Every field is a function
of absolute time, latitude and longitude (sums of moving plane waves), so overlapping requests
agree and the same arguments always give the same bytes. Temperature has a latitude gradient, a
season, a diurnal cycle by local solar time and day-to-day weather; precipitation falls in smooth
cells with exact zeros around them. ERA5-Land (land only) is NaN over a fixed synthetic sea.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd
import xarray as xr

from picsel_nb.era5.cds_request import (
    VARIABLES,
    Area,
    RequestError,
    dataset_info,
    parse_area,
    parse_date,
    request_dates,
    validate_request,
)
from picsel_nb.settings import DEMO_AREA

SECONDS = np.int64(3600)
# South America's Atlantic coast, roughly (lat, lon) south to north: sea lies east of it, to 5° W.
_COAST = np.array([(-55, -66.0), (-50, -68.5), (-45, -65.5), (-41, -63.0), (-38, -57.5),
                   (-34, -53.4), (-33, -52.5), (-30, -50.2), (-28, -48.6), (-25, -48.2),
                   (-24, -46.5), (-23, -43.5), (-22, -41.9), (-21, -40.9), (-20, -40.2),
                   (-18, -39.6), (-16, -39.0), (-13, -38.5), (-10, -36.0), (-8, -34.8),
                   (-5, -35.2), (-3, -39.0), (-1.5, -44.0), (0, -49.0), (4, -51.5), (8, -59.0)])
_GEOGRAPHY_SEED = 20230901  # the synthetic sea is fixed, whatever the weather seed
_LONG_NAMES = {"t2m": ("2 metre temperature", "2t", 167, "K", "instant"),
               "tp": ("Total precipitation", "tp", 228, "m", "accum")}
_PACKING = {"t2m": 2.0**9, "tp": 2.0**20}  # values rounded like GRIB's 16-bit packing: ~0.002 K, ~1 µm
_ENCODING = {"zlib": True, "complevel": 1, "shuffle": True, "dtype": "float32",
             "_FillValue": np.float32(np.nan)}


def synthetic(dataset: str, start: str | date, end: str | date | None = None,
              area: Sequence[float] = DEMO_AREA, variables: Iterable[str] = tuple(VARIABLES),
              hours: Iterable[int] = range(24), seed: int = 0) -> xr.Dataset:
    """Hourly CDS-like data for every date ``start``..``end`` at ``hours`` (UTC) over ``area``."""
    first = parse_date(start, field="start")
    last = parse_date(end if end is not None else first, field="end")
    if last < first:
        raise RequestError("end", f"{last} is before start {first}", f"a date on or after {first}")
    dates = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return _hourly(dataset, dates, parse_area(area, dataset), variables, hours, seed)


def synthetic_download(dataset: str, request: dict) -> bytes:
    """The bytes the current CDS returns for ``request``: NetCDF4, zipped as ``data_0.nc`` unless
    ``download_format`` is "unarchived". ERA5 single levels come as two files split by GRIB
    stepType (instant: t2m, accum: tp), always zipped, as the CDS does."""
    normal = validate_request(dataset, request)
    if normal["data_format"] != "netcdf":
        raise RequestError("data_format", f"{normal['data_format']!r} is not made by the "
                           "synthetic CDS", "netcdf")
    info = dataset_info(dataset)
    area = Area(*normal["area"]) if "area" in normal else Area(90, 0, -90, 360 - info.grid_step)
    hours = [int(text[:2]) for text in normal["time"]]
    ds = _hourly(dataset, request_dates(normal), area, normal["variable"], hours, seed=0)
    files = {"data_0.nc": ds}
    if not info.land_only and len(ds.data_vars) > 1:
        files = {f"data_stream-oper_stepType-{kind}.nc": _split(ds, name, kind)
                 for name, kind in (("t2m", "instant"), ("tp", "accum"))}
    blobs = {name: _netcdf_bytes(part) for name, part in files.items()}
    if len(blobs) == 1 and normal["download_format"] == "unarchived":
        return blobs["data_0.nc"]
    return _zip_bytes(blobs)


def _hourly(dataset: str, dates: list[date], area: Area, variables: Iterable[str],
            hours: Iterable[int], seed: int) -> xr.Dataset:
    """The synthetic dataset at ``hours`` of each of ``dates`` (which need not be consecutive)."""
    info = dataset_info(dataset)
    names = [variables] if isinstance(variables, str) else list(dict.fromkeys(variables))
    for name in names:
        if name not in VARIABLES:
            raise RequestError("variable", f"{name!r} is not supported", ", ".join(VARIABLES))
    hour_list = sorted(set(hours))
    if not hour_list or not set(hour_list) <= set(range(24)):
        raise RequestError("hours", f"{hours!r} are not UTC hours", "integers 0..23")
    lat, lon = _grid(area, info.grid_step)
    days = np.array([np.datetime64(day, "s").astype("int64") for day in dates])
    valid = (days[:, None] + np.array(hour_list) * SECONDS).ravel()  # seconds since 1970
    fields = {}
    for name in names:
        short = VARIABLES[name]
        if short == "t2m":
            fields[short] = _temperature(seed, valid, lat, lon)
        elif info.tp_convention == "accumulated-since-00utc":
            fields[short] = _accumulated_rain(seed, valid, lat, lon)
        else:  # the amount of the hour ending at each valid time
            fields[short] = _rain_rate(seed, valid - SECONDS // 2, lat, lon)
    sea = _sea(lat, lon) if info.land_only else np.zeros((lat.size, lon.size), dtype=bool)
    for short, values in fields.items():
        values *= _PACKING[short]
        np.round(values, out=values)
        values /= _PACKING[short]
        values[:, sea] = np.nan
    return _dataset(dataset, fields, valid, lat, lon, info.grid_step, seed)


def _grid(area: Area, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The native grid points inside the area, latitude north to south (as the CDS cuts it)."""
    def index(value: float, up: bool) -> int:
        return int(np.ceil(value / step - 1e-6) if up else np.floor(value / step + 1e-6))

    lat = np.arange(index(area.north, False), index(area.south, True) - 1, -1) * step
    lon = np.arange(index(area.west, True), index(area.east, False) + 1) * step
    return lat.round(6), lon.round(6)


def _waves(rng: np.random.Generator, count: int, wavelength: tuple[float, float],
           period_hours: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Random plane waves: zonal wavenumbers are whole numbers around the globe, so a field is
    the same at longitude -170 and 190."""
    length = rng.uniform(*wavelength, count)
    angle = rng.uniform(0, 2 * np.pi, count)
    kx = np.round(360 * np.cos(angle) / length) * 2 * np.pi / 360
    ky = 2 * np.pi * np.sin(angle) / length
    omega = 2 * np.pi / rng.uniform(*period_hours, count) * rng.choice([-1, 1], count)
    phase = rng.uniform(0, 2 * np.pi, count)
    return kx, ky, omega, phase


def _wave_field(waves: tuple[np.ndarray, ...], seconds: np.ndarray, lat: np.ndarray,
                lon: np.ndarray) -> np.ndarray:
    """Σ cos(kx·lon + ky·lat + ω·t + φ), scaled to unit variance, as (time, lat, lon) float32.

    With L = e^{i(ωt + φ + ky·lat)} and X = e^{i·kx·lon}, the sum is Re(L·X) = [Re L, -Im L] @
    [Re X; Im X]: one real matrix product per block of time steps, written in place, with no
    loop over waves and temporaries bounded to ~64 MB on big grids.
    """
    kx, ky, omega, phase = waves
    in_time = np.exp(1j * (np.outer(seconds / 3600.0, omega) + phase)) * np.sqrt(2 / kx.size)
    in_lat = np.exp(1j * np.outer(lat, ky))  # (lat, wave)
    in_lon = np.outer(kx, lon)
    right = np.concatenate([np.cos(in_lon), np.sin(in_lon)]).astype("float32")  # (2·wave, lon)
    field = np.empty((seconds.size, lat.size, lon.size), dtype="float32")
    block = max(1, 2**24 // field[0].size)
    for start in range(0, seconds.size, block):
        left = in_time[start:start + block, None, :] * in_lat[None]  # (time, lat, wave)
        left = np.concatenate([left.real, -left.imag], axis=-1).astype("float32")
        np.matmul(left.reshape(-1, 2 * kx.size), right,
                  out=field[start:start + block].reshape(-1, lon.size))
    return field


def _temperature(seed: int, seconds: np.ndarray, lat: np.ndarray,
                 lon: np.ndarray) -> np.ndarray:
    """2 m temperature (K): latitude gradient + season + diurnal cycle + 2.5 K weather."""
    rng = np.random.default_rng([seed, 1])
    weather = _wave_field(_waves(rng, 12, (12, 40), (48, 150)), seconds, lat, lon)
    when = pd.to_datetime(seconds, unit="s")
    season = np.cos(2 * np.pi * (when.day_of_year.values - 200) / 365.25)
    mean = 300.5 - 0.0045 * lat**2 + 10 * np.sin(np.radians(lat)) * season[:, None]
    solar_hour = (seconds[:, None] % 86400) / 3600 + lon / 15
    diurnal = 5 * np.cos(2 * np.pi * (solar_hour - 15) / 24)
    weather *= 2.5  # in place, in float32: a global grid makes big temporaries otherwise
    weather += mean.astype("float32")[:, :, None]
    weather += diurnal.astype("float32")[:, None, :]
    return weather


def _rain_rate(seed: int, seconds: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Rain rate (m/h): moving cells where small-scale waves exceed a threshold raised in dry
    large-scale regimes, so most of the map is exactly 0."""
    rng = np.random.default_rng([seed, 2])
    cells = _wave_field(_waves(rng, 14, (1.5, 6), (6, 30)), seconds, lat, lon)
    regime = _wave_field(_waves(rng, 6, (15, 45), (72, 240)), seconds, lat, lon)
    regime *= 0.8
    cells -= regime
    cells -= 1.0
    np.maximum(cells, 0, out=cells)
    cells *= 2e-3
    return cells


def _accumulated_rain(seed: int, valid: np.ndarray, lat: np.ndarray,
                      lon: np.ndarray) -> np.ndarray:
    """ERA5-Land tp: accumulated since 00 UTC (m); at 00 UTC, the whole previous day's total."""
    day_of = (valid - SECONDS) // 86400 * 86400  # the day each value accumulates over
    field = np.empty((valid.size, lat.size, lon.size), dtype="float32")
    for day in np.unique(day_of):  # one day's 24 hourly amounts at a time
        totals = np.cumsum(_rain_rate(seed, day + SECONDS // 2 + np.arange(24) * SECONDS, lat,
                                      lon), axis=0)
        rows = np.flatnonzero(day_of == day)
        field[rows] = totals[(valid[rows] - day) // SECONDS - 1]  # 01 UTC → 0 .. 00 UTC → 23
    return field


def _sea(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A fixed land/sea mask (True = sea): the South Atlantic off Brazil's coast, plus a few
    smooth inland seas anywhere, so NaN regions appear in most areas."""
    east = (lon + 180) % 360 - 180
    coast = np.interp(lat, _COAST[:, 0], _COAST[:, 1])
    on_coast = (lat >= _COAST[0, 0]) & (lat <= _COAST[-1, 0])
    atlantic = on_coast[:, None] & (east[None, :] > coast[:, None]) & (east[None, :] < -5)
    waves = _waves(np.random.default_rng(_GEOGRAPHY_SEED), 10, (6, 20), (1, 2))
    inland = _wave_field(waves, np.zeros(1), lat, lon)[0] > 1.6  # at t = 0: a still field
    return atlantic | inland


def _dataset(dataset: str, fields: dict[str, np.ndarray], valid: np.ndarray, lat: np.ndarray,
             lon: np.ndarray, step: float, seed: int) -> xr.Dataset:
    """The fields with the coordinates, attributes and names of a current CDS NetCDF file."""
    land = dataset_info(dataset).land_only
    coords = {
        "number": ((), np.int64(0), {"long_name": "ensemble member numerical id", "units": "1",
                                     "standard_name": "realization"}),
        "valid_time": ("valid_time", valid.astype("datetime64[s]").astype("datetime64[ns]"),
                       {"long_name": "time", "standard_name": "time"}),
        "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude",
                                       "long_name": "latitude", "stored_direction": "decreasing"}),
        "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude",
                                         "long_name": "longitude"}),
        "expver": ("valid_time", np.full(valid.size, "0001")),
    }
    data_vars = {name: (("valid_time", "latitude", "longitude"), values,
                        _grib_attrs(name, land, lat, lon, step)) for name, values in fields.items()}
    source = {"source": "data.grib", "filter_by_keys": {} if land else {"stream": ["oper"]}}
    attrs = {
        "GRIB_centre": "ecmf",
        "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
        "GRIB_subCentre": np.int64(0),
        "Conventions": "CF-1.7",
        "institution": "European Centre for Medium-Range Weather Forecasts",
        "history": f"picsel-nb synthetic {dataset}-like data (seed {seed}), NOT Copernicus data; "
                   f"laid out as GRIB to CDM+CF via cfgrib-0.9.15.0/ecCodes-2.42.0 with "
                   f"{json.dumps(source)}",
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _grib_attrs(name: str, land: bool, lat: np.ndarray, lon: np.ndarray, step: float) -> dict:
    """The GRIB_* and CF attributes cfgrib writes for t2m / tp."""
    long_name, short, param, units, step_type = _LONG_NAMES[name]
    return {
        "GRIB_paramId": np.int64(param),
        "GRIB_dataType": "fc" if land or name == "tp" else "an",
        "GRIB_numberOfPoints": np.int64(lat.size * lon.size),
        "GRIB_typeOfLevel": "surface", "GRIB_stepUnits": np.int64(1),
        "GRIB_stepType": step_type, "GRIB_gridType": "regular_ll",
        "GRIB_uvRelativeToGrid": np.int64(0), "GRIB_NV": np.int64(0),
        "GRIB_Nx": np.int64(lon.size), "GRIB_Ny": np.int64(lat.size), "GRIB_cfName": "unknown",
        "GRIB_cfVarName": name, "GRIB_gridDefinitionDescription": "Latitude/Longitude Grid",
        "GRIB_iDirectionIncrementInDegrees": step, "GRIB_iScansNegatively": np.int64(0),
        "GRIB_jDirectionIncrementInDegrees": step,
        "GRIB_jPointsAreConsecutive": np.int64(0), "GRIB_jScansPositively": np.int64(0),
        "GRIB_latitudeOfFirstGridPointInDegrees": lat[0],
        "GRIB_latitudeOfLastGridPointInDegrees": lat[-1],
        "GRIB_longitudeOfFirstGridPointInDegrees": lon[0],
        "GRIB_longitudeOfLastGridPointInDegrees": lon[-1],
        "GRIB_missingValue": 3.4028234663852886e38, "GRIB_name": long_name,
        "GRIB_shortName": short, "GRIB_totalNumber": np.int64(0), "GRIB_units": units,
        "long_name": long_name, "units": units, "standard_name": "unknown",
        "GRIB_surface": 0.0,
    }


def _split(ds: xr.Dataset, name: str, kind: str) -> xr.Dataset:
    """One stepType file of an ERA5 single-levels download."""
    part = ds[[name]]
    part.attrs["history"] = ds.attrs["history"].replace(
        '"stream": ["oper"]}', f'"stream": ["oper"], "stepType": ["{kind}"]}}')
    return part


def _netcdf_bytes(ds: xr.Dataset) -> bytes:
    """NetCDF4 as the CDS writes it, in memory (h5netcdf: netcdf4 stamps the time)."""
    return bytes(ds.to_netcdf(engine="h5netcdf", encoding=netcdf_encoding(ds)))


def netcdf_encoding(ds: xr.Dataset) -> dict:
    """The CDS's NetCDF4 encoding: zlib level 1, float32, NaN fill, int64 seconds since 1970."""
    per_step = ds.sizes["latitude"] * ds.sizes["longitude"]
    chunks = (min(ds.sizes["valid_time"], max(1, 4_000_000 // per_step)),
              ds.sizes["latitude"], ds.sizes["longitude"])
    encoding = {name: {**_ENCODING, "chunksizes": chunks} for name in ds.data_vars}
    encoding["valid_time"] = {"dtype": "int64", "units": "seconds since 1970-01-01",
                              "calendar": "proleptic_gregorian"}
    encoding["latitude"] = encoding["longitude"] = {"_FillValue": np.nan}
    return encoding


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip with fixed timestamps, so the same files always give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
