"""CDS request bodies for ERA5-Land and ERA5 single levels: build them and validate them as the CDS does.

Every invalid input raises ``RequestError`` (a ``ValueError``) whose message names the field and what
is accepted, so the loopback CDS can answer 400 with it and a notebook reader knows what to fix.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from picsel_nb.settings import DEMO_AREA


@dataclass(frozen=True)
class DatasetInfo:
    """What the pipeline needs to know about one CDS dataset."""

    name: str
    title: str
    grid_step: float  # degrees, native regular lat/lon grid
    first_date: date
    latency_days: int  # how far behind today's UTC date the data ends
    tp_convention: str  # "accumulated-since-00utc" (ERA5-Land) or "hourly-amount" (ERA5)
    land_only: bool  # ocean points are NaN
    product_type_required: bool


DATASETS: dict[str, DatasetInfo] = {
    "reanalysis-era5-land": DatasetInfo(
        "reanalysis-era5-land", "ERA5-Land hourly data from 1950 to present", 0.1,
        date(1950, 1, 1), 5, "accumulated-since-00utc", True, False),
    "reanalysis-era5-single-levels": DatasetInfo(
        "reanalysis-era5-single-levels", "ERA5 hourly data on single levels from 1940 to present",
        0.25, date(1940, 1, 1), 5, "hourly-amount", False, True),
}
VARIABLES = {"2m_temperature": "t2m", "total_precipitation": "tp"}
DATA_FORMATS = ("netcdf", "grib")
DOWNLOAD_FORMATS = ("unarchived", "zip")
PRODUCT_TYPES = ("reanalysis",)
HOURS = tuple(f"{hour:02d}:00" for hour in range(24))
_FIELDS = ("product_type", "variable", "year", "month", "day", "time", "area", "grid",
           "data_format", "format", "download_format")


class RequestError(ValueError):
    """An invalid CDS request; ``field`` names the offending request field."""

    def __init__(self, field: str, problem: str, accepted: str):
        super().__init__(f"{field}: {problem}; accepted: {accepted}")
        self.field = field


class Area(NamedTuple):
    """A CDS area, in the CDS order [north, west, south, east], degrees."""

    north: float
    west: float
    south: float
    east: float


def utc_today() -> date:
    """Today's UTC date: the reference for each dataset's latency."""
    return datetime.now(UTC).date()


def dataset_info(dataset: str) -> DatasetInfo:
    """The info of a supported dataset; RequestError naming the supported ones otherwise."""
    if dataset not in DATASETS:
        raise RequestError("dataset", f"unknown dataset {dataset!r}", ", ".join(DATASETS))
    return DATASETS[dataset]


def latest_date(dataset: str) -> date:
    """The last date the dataset holds today, given its latency."""
    return utc_today() - timedelta(days=dataset_info(dataset).latency_days)


def parse_date(value: str | date | np.datetime64, dataset: str | None = None,
               field: str = "date") -> date:
    """A calendar date from an ISO string, date, datetime or datetime64.

    With ``dataset`` given, the date must also lie between the dataset's first and latest dates.
    """
    day = _to_date(value, field)
    if dataset is not None:
        _check_available(day, dataset, field)
    return day


def parse_area(value: Sequence[float] | str, dataset: str | None = None) -> Area:
    """An ``Area`` from [N, W, S, E] (or "N/W/S/E"); with ``dataset``, at least one grid cell big."""
    accepted = ("[N, W, S, E] in degrees with N >= S, latitudes -90..90, longitudes -180..360, "
                "W < E and E - W <= 360")
    try:
        items = list(value.split("/") if isinstance(value, str) else value)
        numbers = [float(item) for item in items if not isinstance(item, bool)]
    except (TypeError, ValueError):
        raise RequestError("area", f"{value!r} is not four numbers", accepted) from None
    if len(numbers) != 4 or len(numbers) != len(items) or not all(map(math.isfinite, numbers)):
        raise RequestError("area", f"{value!r} is not four finite numbers", accepted)
    area = Area(*numbers)
    if not all(-90 <= lat <= 90 for lat in (area.north, area.south)):
        raise RequestError("area", f"latitude out of range in {list(area)}", accepted)
    if not all(-180 <= lon <= 360 for lon in (area.west, area.east)):
        raise RequestError("area", f"longitude out of range in {list(area)}", accepted)
    if area.north < area.south:
        raise RequestError("area", f"north {area.north} is south of south {area.south}", accepted)
    if not area.west < area.east <= area.west + 360:
        raise RequestError("area", f"west {area.west} and east {area.east} do not bound a "
                           "longitude range", accepted)
    if dataset is not None:
        step = dataset_info(dataset).grid_step
        spans = {"north-south": area.north - area.south, "west-east": area.east - area.west}
        for direction, span in spans.items():
            if span < step - 1e-9:
                raise RequestError(
                    "area", f"{list(area)} spans {span:g}° {direction}, less than one {step}° grid "
                    f"cell of {dataset}", f"{accepted}, spanning at least {step}° each way")
    return area


def build_request(dataset: str, start: str | date, end: str | date | None = None,
                  area: Sequence[float] = DEMO_AREA,
                  variables: Iterable[str] = tuple(VARIABLES), data_format: str = "netcdf",
                  download_format: str = "unarchived") -> dict[str, Any]:
    """The CDS request body for the days ``start``..``end`` (all 24 hours of each).

    With total_precipitation, the day after ``end`` is included: its 00 UTC value closes the last
    day under both datasets' conventions. year/month/day form a cartesian product, so a range over
    a month boundary also asks for a few days outside it.
    """
    dataset_info(dataset)
    first = parse_date(start, dataset, "start")
    last = parse_date(end if end is not None else first, dataset, "end")
    if last < first:
        raise RequestError("end", f"{last} is before start {first}", f"a date on or after {first}")
    names = [variables] if isinstance(variables, str) else list(variables)
    if "total_precipitation" in names:
        last += timedelta(days=1)
        if last > latest_date(dataset):
            raise RequestError(
                "end", f"total_precipitation of {last - timedelta(days=1)} needs 00 UTC of {last}, "
                f"not yet in {dataset}", f"an end date up to {latest_date(dataset) - timedelta(1)}")
    days = pd.date_range(first, last, freq="D")
    request: dict[str, Any] = {
        "variable": names,
        "year": sorted({f"{d.year}" for d in days}),
        "month": sorted({f"{d.month:02d}" for d in days}),
        "day": sorted({f"{d.day:02d}" for d in days}),
        "time": list(HOURS),
        "area": list(parse_area(area, dataset)),
        "data_format": data_format,
        "download_format": download_format,
    }
    if DATASETS[dataset].product_type_required:
        request = {"product_type": list(PRODUCT_TYPES), **request}
    return validate_request(dataset, request)


def validate_request(dataset: str, request: dict[str, Any]) -> dict[str, Any]:
    """Check a CDS request body as the CDS would; return it normalised (lists of strings).

    The legacy key ``format`` is accepted for ``data_format``. Absent ``area`` means the globe,
    absent ``data_format`` means GRIB and absent ``download_format`` unarchived, as on the CDS.
    """
    info = dataset_info(dataset)
    if not isinstance(request, dict):
        raise RequestError("request", f"{type(request).__name__} is not an object",
                           "a JSON object of request fields")
    unknown = sorted(set(request) - set(_FIELDS))
    if unknown:
        raise RequestError(unknown[0], "unknown request field", ", ".join(_FIELDS))
    normal: dict[str, Any] = {}
    if info.product_type_required or "product_type" in request:
        normal["product_type"] = _choices(request, "product_type", PRODUCT_TYPES)
    normal["variable"] = _choices(request, "variable", tuple(VARIABLES))
    normal["year"] = _numbers(request, "year", range(info.first_date.year, utc_today().year + 1),
                              "{:04d}")
    normal["month"] = _numbers(request, "month", range(1, 13), "{:02d}")
    normal["day"] = _numbers(request, "day", range(1, 32), "{:02d}")
    normal["time"] = _times(request)
    for day in request_dates(normal):
        _check_available(day, dataset, "year/month/day")
    if "area" in request:
        normal["area"] = list(parse_area(request["area"], dataset))
    if "grid" in request:
        _check_grid(request["grid"], info.grid_step)
    normal["data_format"] = _data_format(request)
    normal["download_format"] = _one_of(request.get("download_format", "unarchived"),
                                        "download_format", DOWNLOAD_FORMATS)
    return normal


def request_dates(request: dict[str, Any]) -> list[date]:
    """The calendar dates a (validated) request asks for: year × month × day, impossible ones left out.

    RequestError when no combination is a real date.
    """
    dates = []
    for year, month, day in itertools.product(request["year"], request["month"], request["day"]):
        try:
            dates.append(date(int(year), int(month), int(day)))
        except ValueError:
            continue  # e.g. 31 September: the CDS skips it too
    if not dates:
        raise RequestError("day", f"no real date in year {request['year']} × month "
                           f"{request['month']} × day {request['day']}", "at least one real date")
    return sorted(dates)


def request_blocks(start: date, end: date) -> list[tuple[date, date]]:
    """The days ``start``..``end`` as CDS request units: per calendar month one block up to the
    month's last day but one (its request, closed by the next day for precipitation, is exactly
    that month's year × month × day product), then the month's last day alone (its request
    reaches into the next month)."""
    blocks, first = [], start
    while first <= end:
        month_end = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        last = min(end, month_end - timedelta(days=1))
        if last >= first:
            blocks.append((first, last))
        if end >= month_end:
            blocks.append((month_end, month_end))
        first = month_end + timedelta(days=1)
    return blocks


def request_hash(dataset: str, request: dict[str, Any]) -> str:
    """A stable sha256 (hex) of the dataset and request, as canonical JSON (sorted keys)."""
    text = json.dumps({"dataset": dataset, "request": request}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _to_date(value: Any, field: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, np.datetime64) and not np.isnat(value):
        return pd.Timestamp(value).date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise RequestError(field, f"{value!r} is not a date", "a date as YYYY-MM-DD")


def _check_available(day: date, dataset: str, field: str) -> None:
    info, latest = dataset_info(dataset), latest_date(dataset)
    accepted = f"dates from {info.first_date} to {latest} for {dataset}"
    if day < info.first_date:
        raise RequestError(field, f"{day} is before {dataset} starts ({info.first_date})", accepted)
    if day > latest:
        raise RequestError(field, f"{day} is too recent: {dataset} runs about "
                           f"{info.latency_days} days behind today ({utc_today()} UTC)", accepted)


def _as_list(request: dict[str, Any], field: str) -> list:
    if field not in request:
        raise RequestError(field, "missing", "a value or a list of values")
    value = request[field]
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise RequestError(field, "empty list", "a value or a list of values")
    return values


def _choices(request: dict[str, Any], field: str, accepted: tuple[str, ...]) -> list[str]:
    values = _as_list(request, field)
    for value in values:
        _one_of(value, field, accepted)
    return list(dict.fromkeys(values))


def _one_of(value: Any, field: str, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise RequestError(field, f"{value!r} is not supported", ", ".join(accepted))
    return value


def _numbers(request: dict[str, Any], field: str, accepted: range, form: str) -> list[str]:
    numbers = []
    for value in _as_list(request, field):
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or int(text) not in accepted:
            raise RequestError(field, f"{value!r} is not valid",
                               f"{form.format(accepted[0])}..{form.format(accepted[-1])}")
        numbers.append(int(text))
    return [form.format(number) for number in sorted(set(numbers))]


def _times(request: dict[str, Any]) -> list[str]:
    hours = []
    for value in _as_list(request, "time"):
        hour, _, minute = str(value).partition(":")
        if not (hour.isdigit() and int(hour) < 24 and minute == "00"):
            raise RequestError("time", f"{value!r} is not a whole UTC hour", "HH:00, 00:00..23:00")
        hours.append(int(hour))
    return [HOURS[hour] for hour in sorted(set(hours))]


def _check_grid(value: Any, step: float) -> None:
    items = value.split("/") if isinstance(value, str) else value
    try:
        ok = len(items) == 2 and all(abs(float(item) - step) < 1e-9 for item in items)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise RequestError("grid", f"{value!r} is not the native grid", f"[{step}, {step}]")


def _data_format(request: dict[str, Any]) -> str:
    given = {key: request[key] for key in ("data_format", "format") if key in request}
    formats = {_one_of(value, key, DATA_FORMATS) for key, value in given.items()}
    if len(formats) > 1:
        raise RequestError("data_format", f"conflicts with legacy format {request['format']!r}",
                           "one of " + ", ".join(DATA_FORMATS) + " (data_format or format)")
    return formats.pop() if formats else "grib"
