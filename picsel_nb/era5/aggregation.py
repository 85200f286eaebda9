"""Daily products from hourly ERA5 data: mean 2 m temperature (°C) and total precipitation (mm).

Precipitation follows each dataset's own convention. ERA5-Land ``tp`` is accumulated since 00 UTC,
so day D's total is the value at 00 UTC of D+1 (summing it would count hours many times over).
ERA5 single levels store hourly amounts ending at the valid time: day D is 01 UTC of D through
00 UTC of D+1. The day's temperature mean covers the 24 hours 00..23 UTC of D.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import numpy as np
import pandas as pd
import xarray as xr

from picsel_nb.era5.cds_request import dataset_info, parse_date

HOUR = pd.Timedelta(hours=1)
CONVENTIONS = {
    "accumulated-since-00utc": "tp: ERA5-Land accumulation since 00 UTC; day D total = value at "
                               "00 UTC of D+1",
    "hourly-amount": "tp: ERA5 hourly amounts; day D total = sum of 01 UTC of D .. 00 UTC of D+1",
}
T2M_CONVENTION = "t2m: mean of the 24 hourly values 00..23 UTC of day D"


class IncompleteDayError(ValueError):
    """A day lacks hours it needs; ``missing`` maps day → variable → the missing valid times."""

    def __init__(self, missing: dict[date, dict[str, list[pd.Timestamp]]]):
        self.missing = missing
        lines = [f"{day} misses {name} at {_hours_text(day, times)}"
                 for day, per_name in sorted(missing.items()) for name, times in per_name.items()]
        super().__init__("incomplete day(s): " + "; ".join(lines)
                         + " — pass allow_partial=True to compute from the hours present")


def daily(ds: xr.Dataset, dataset: str, days: Iterable | None = None,
          allow_partial: bool = False) -> xr.Dataset:
    """Daily ``t2m`` (°C, mean) and ``tp`` (mm, total) for ``days`` (default: the file's days).

    Dims (date, latitude, longitude); NaN (ocean) is kept. Raises IncompleteDayError naming the
    missing hours, unless ``allow_partial`` (then partial days are listed in ``partial_days``).
    """
    convention = dataset_info(dataset).tp_convention
    names = [name for name in ("t2m", "tp") if name in ds.data_vars]
    if not names:
        raise ValueError(f"ds: no t2m or tp among {list(ds.data_vars)}; accepted: a dataset with "
                         "t2m and/or tp on valid_time")
    times = ds.indexes["valid_time"]
    wanted = _default_days(times) if days is None else _parse_days(days)
    if not wanted:
        raise ValueError("days: none to compute (the dataset has no valid_time and no days were "
                         "given); accepted: dates as YYYY-MM-DD")
    out, missing = {}, {}
    for name in names:
        _check_units(ds[name])
        values = ds[name].transpose("valid_time", "latitude", "longitude").values
        present = _has_data(values)
        fields = []
        for day in wanted:
            needed = _needed(name, convention, day)
            positions = times.get_indexer(needed)
            found = (positions >= 0) & present[np.maximum(positions, 0)]
            if not found.all():
                missing.setdefault(day, {})[name] = list(needed[~found])
            fields.append(_reduce(name, convention, values, day, times, present))
        out[name] = _as_variable(name, convention, fields)
    if missing and not allow_partial:
        raise IncompleteDayError(missing)
    result = xr.Dataset(out, coords={"date": pd.DatetimeIndex(wanted).as_unit("ns"),
                                     "latitude": ds["latitude"], "longitude": ds["longitude"]})
    for name, variable in result.data_vars.items():
        variable.attrs["partial_days"] = [str(d) for d, per in sorted(missing.items())
                                          if name in per]
        variable.attrs["missing_hours"] = [f"{t:%Y-%m-%dT%H:%M}" for per in missing.values()
                                           for t in per.get(name, [])]
    result.attrs.update(
        dataset=dataset, convention=f"{T2M_CONVENTION}; {CONVENTIONS[convention]}",
        partial_days=[str(day) for day in sorted(missing)])
    return result


def _check_units(variable: xr.DataArray) -> None:
    """Hourly t2m must be in K and tp in m (as the CDS sends them), not already converted."""
    expected = {"t2m": "K", "tp": "m"}[variable.name]
    if variable.attrs.get("units", expected) != expected:
        raise ValueError(f"{variable.name}: units {variable.attrs['units']!r}; accepted: "
                         f"{expected!r}, as the CDS delivers it")


def _default_days(times: pd.DatetimeIndex) -> list[date]:
    """The file's UTC dates, less a trailing date that only holds its 00 UTC (it closes the day
    before)."""
    days = sorted(set(times.normalize().date))
    last = times[times.normalize() == pd.Timestamp(days[-1])] if days else times
    if len(days) > 1 and (last.hour == 0).all():
        days = days[:-1]
    return days


def _parse_days(days: Iterable) -> list[date]:
    values = [days] if isinstance(days, str | date | np.datetime64) else list(days)
    return sorted({parse_date(value, field="days") for value in values})


def _needed(name: str, convention: str, day: date) -> pd.DatetimeIndex:
    """The valid times a complete day needs."""
    start = pd.Timestamp(day)
    if name == "t2m":
        return pd.date_range(start, periods=24, freq="h")
    if convention == "accumulated-since-00utc":
        return pd.DatetimeIndex([start + 24 * HOUR])
    return pd.date_range(start + HOUR, periods=24, freq="h")


def _reduce(name: str, convention: str, values: np.ndarray, day: date,
            times: pd.DatetimeIndex, present: np.ndarray) -> np.ndarray:
    """One day's field from the hours present (all of them when the day is complete)."""
    start = pd.Timestamp(day)
    window = (start, start + 23 * HOUR) if name == "t2m" else (start + HOUR, start + 24 * HOUR)
    lo, hi = times.searchsorted(window[0]), times.searchsorted(window[1], side="right")
    rows = lo + np.flatnonzero(present[lo:hi])
    if rows.size == 0:
        return np.full(values.shape[1:], np.nan, dtype="float32")
    if name == "t2m":
        return _rows(values, rows).mean(axis=0, dtype="float32") - np.float32(273.15)
    if convention == "accumulated-since-00utc":
        total = values[rows[-1]]  # the running total at the last hour present
    else:
        total = _rows(values, rows).sum(axis=0, dtype="float32")
    return np.maximum(total * np.float32(1000), np.float32(0))  # m → mm; packing noise < 0


def _rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[rows] as a view when the rows are consecutive (the usual case): no 100 MB copy."""
    if rows[-1] - rows[0] + 1 == rows.size:
        return values[rows[0]:rows[-1] + 1]
    return values[rows]


def _has_data(values: np.ndarray) -> np.ndarray:
    """Per valid time, whether the field holds any value; a field that is NaN everywhere (an
    all-ocean ERA5-Land area) counts as present."""
    if values.size == 0:
        return np.zeros(values.shape[0], dtype=bool)
    peak = np.fmax.reduce(values.reshape(values.shape[0], -1), axis=1)
    present = ~np.isnan(peak)
    return present if present.any() else np.ones_like(present)


def _as_variable(name: str, convention: str, fields: list[np.ndarray]) -> xr.Variable:
    attrs = ({"units": "degC", "long_name": "daily mean 2 metre temperature",
              "convention": T2M_CONVENTION} if name == "t2m" else
             {"units": "mm", "long_name": "daily total precipitation",
              "convention": CONVENTIONS[convention]})
    return xr.Variable(("date", "latitude", "longitude"), np.stack(fields), attrs)


def _hours_text(day: date, times: list[pd.Timestamp]) -> str:
    """'19:00, 20:00 UTC' for hours of the day itself, full timestamps for the next day's."""
    return ", ".join(f"{t:%H:%M}" if t.date() == day else f"{t:%Y-%m-%d %H:%M}" for t in times) \
        + " UTC"

