"""AWS Glue job: raw ERA5 downloads → daily contour bands, isolines, plots and catalog rows.

For each raw day ``s3://<input>/raw/<dataset>/YYYY/MM/DD.nc`` (day D and D+1, so D's precipitation
total is complete) it computes D's mean 2 m temperature and total precipitation
(``picsel_nb.era5.daily``) and writes, per (variable, day), the products of ``picsel_nb.products``
in full or not at all. The (day, variable) units are Spark tasks: each executor task reads its own
raw file from S3 and writes its unit, so nothing large passes through the driver and memory stays
bounded by one unit per task. The same file runs on AWS Glue 5.0 and on the embedded cloud's
Spark; plain boto3 everywhere (the endpoint comes from the environment: AWS_ENDPOINT_URL locally).

Arguments (all set as the job's DefaultArguments): --input_bucket, --output_bucket, --dataset,
--dates ("all-new" | "YYYY-MM-DD:YYYY-MM-DD"), --redo ("true" | "false"), --t2m_levels and
--tp_levels (comma-separated numbers | "default").

A bad day (corrupt or incomplete raw file, missing raw file, failed upload) is reported on stderr
and the other days are still published; the run then fails with a one-line summary. A rerun does
only the units not yet published (all of them with --redo true).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import boto3
import orjson
from awsglue.utils import getResolvedOptions
from pyspark import SparkContext

from picsel_nb import contours, era5, plots, products
from picsel_nb.contours.styles import check_levels

OPTIONS = ("input_bucket", "output_bucket", "dataset", "dates", "redo", "t2m_levels",
           "tp_levels")
_RAW_DAY = re.compile(r"(\d{4})/(\d{2})/(\d{2})\.nc")
TASKS_PER_SLOT = 4


class JobFailed(RuntimeError):
    """Some days failed; the message is the one-line summary Glue shows as the run's error."""


@dataclass(frozen=True)
class Options:
    """The job's arguments, validated."""

    input_bucket: str
    output_bucket: str
    dataset: str
    dates: tuple[date, date] | None  # None: every raw day not yet published
    redo: bool
    levels: dict[str, tuple[float, ...] | None]  # by variable; None: the contours' defaults


@dataclass(frozen=True)
class Unit:
    """One (day, variable) to turn into products: a Spark task."""

    options: Options
    day: date
    raw_key: str
    variable: str


@dataclass
class UnitResult:
    """What became of one unit: the keys written, or the error (then nothing of it was left)."""

    day: date
    variable: str
    written: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class DayResult:
    """What became of one day: the keys written and the variables published, or the errors."""

    day: date
    written: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    error: str | None = None


def _levels(text: str, name: str) -> tuple[float, ...] | None:
    """--<name> as increasing numbers, or None for "default"."""
    if text.strip() == "default":
        return None
    try:
        return tuple(check_levels([float(part) for part in text.split(",")], 2).tolist())
    except ValueError:
        raise ValueError(f"--{name} {text!r} is not valid; accepted: \"default\" or at least two "
                         "increasing comma-separated numbers, e.g. \"0,1,5,10\"") from None


def parse_options(argv: list[str]) -> Options:
    """The job arguments from ``--key value`` pairs, through Glue's getResolvedOptions."""
    args = getResolvedOptions(["contours_job", *argv], list(OPTIONS))
    redo = args["redo"].strip().lower()
    if redo not in ("true", "false"):
        raise ValueError(f"--redo {args['redo']!r} is not valid; accepted: \"true\" or \"false\"")
    era5.dataset_info(args["dataset"])
    return Options(args["input_bucket"], args["output_bucket"], args["dataset"],
                   products.parse_dates(args["dates"]), redo == "true",
                   {name: _levels(args[f"{name}_levels"], f"{name}_levels")
                    for name in products.SHORT_NAMES})


def s3() -> Any:
    """A new S3 client: one per Spark task (a client can neither cross a fork nor travel with a
    task) and one for the driver's listings."""
    return boto3.client("s3")


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def raw_keys(options: Options, client: Any) -> dict[date, str]:
    """The raw download of each day in the input bucket, by day."""
    prefix = f"raw/{options.dataset}/"
    found = {}
    for key in _keys(client, options.input_bucket, prefix):
        match = _RAW_DAY.fullmatch(key[len(prefix):])
        with suppress(ValueError):  # 2023/02/30.nc is no day
            if match:
                found[date(*map(int, match.groups()))] = key
    return found


def published(options: Options, client: Any) -> set[tuple[str, date]]:
    """The (variable, day) pairs whose web GeoJSON exists: those are published."""
    parsed = (products.parse_key(key) for key in
              _keys(client, options.output_bucket, f"{products.PRODUCTS_PREFIX}geojson/"))
    return {(variable, day) for kind, variable, day in filter(None, parsed)}


def plan(options: Options) -> tuple[list[Unit], list[date], list[DayResult]]:
    """The units to process, the days skipped (all published, no --redo) and the days that cannot
    be processed (asked for, but no raw file)."""
    client = s3()
    raw = raw_keys(options, client)
    wanted = sorted(raw) if options.dates is None else products.days(*options.dates)
    done = set() if options.redo else published(options, client)
    units, skipped, missing = [], [], []
    for day in wanted:
        variables = [v for v in products.SHORT_NAMES if (v, day) not in done]
        if not variables:
            skipped.append(day)
        elif day not in raw:
            missing.append(DayResult(day, error=f"no raw file at s3://{options.input_bucket}/raw/"
                                                f"{options.dataset}/{day:%Y/%m/%d}.nc "
                                                "(ingest the day first)"))
        else:
            units += [Unit(options, day, raw[day], variable) for variable in variables]
    return units, skipped, missing


def render(field_: Any, levels: tuple[float, ...] | None) -> dict[str, bytes]:
    """Every product of one daily field, by kind: the two GeoJSON documents from one tracing."""
    bands, lines = contours.products(field_, levels)
    return {
        "png": plots.plot_day(field_, levels),
        "isolines": lines,
        "catalog": products.ndjson(products.catalog_rows(orjson.loads(bands))),
        "geojson": bands,
    }


def put(client: Any, bucket: str, key: str, body: bytes, content_type: str) -> None:
    """Upload one object."""
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def write_unit(client: Any, bucket: str, variable: str, day: date,
               bodies: dict[str, bytes]) -> list[str]:
    """Write one (variable, day) in full or not at all; the keys written.

    The web GeoJSON is removed first (the unit is unpublished while it is rewritten) and written
    last; when any upload fails, every object of the unit is deleted before the error goes on.
    """
    keys = products.keys(variable, day)
    client.delete_object(Bucket=bucket, Key=keys["geojson"])
    try:
        for kind in products.KINDS:
            put(client, bucket, keys[kind], bodies[kind], products.CONTENT_TYPE[kind])
    except Exception:
        client.delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": key} for key in keys.values()], "Quiet": True})
        raise
    return list(keys.values())


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def daily_field(unit: Unit, client: Any) -> Any:
    """The unit's daily field from its raw file (read here, by the task), None when the file does
    not hold the variable (it was not ingested); ValueError with the reason and the key."""
    where = f"s3://{unit.options.input_bucket}/{unit.raw_key}"
    body = client.get_object(Bucket=unit.options.input_bucket, Key=unit.raw_key)["Body"].read()
    try:
        hourly = era5.open_download(body)
        if unit.variable not in hourly:
            return None
        fields = era5.daily(hourly[[unit.variable]], unit.options.dataset, days=[unit.day])
    except era5.DownloadError as exc:
        raise ValueError(f"corrupt raw file {where}: {exc}") from exc
    except era5.IncompleteDayError as exc:
        raise ValueError(f"incomplete day in raw file {where}: {exc}") from exc
    return fields[unit.variable].isel(date=0)  # the one day asked for


def process_unit(unit: Unit, client: Any) -> UnitResult:
    """Compute and write every product of one (day, variable); a failure is returned, never
    raised, so one bad unit does not stop the others."""
    result = UnitResult(unit.day, unit.variable)
    try:
        field_ = daily_field(unit, client)
        if field_ is None:
            return result
        bodies = render(field_, unit.options.levels[unit.variable])
        try:
            result.written = write_unit(client, unit.options.output_bucket, unit.variable,
                                        unit.day, bodies)
        except Exception as exc:
            raise RuntimeError(f"upload of {unit.variable} failed, none of its products was "
                               f"left: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 — reported per unit; the others go on
        result.error = _one_line(exc)
    return result


def process_units(units: Iterable[Unit]) -> Iterator[UnitResult]:
    """One Spark task's units, one after the other with one S3 client: memory holds one unit."""
    client = s3()
    for unit in units:
        yield process_unit(unit, client)


def run_units(units: list[Unit]) -> list[UnitResult]:
    """Process the units as Spark tasks, a few units per task (TASKS_PER_SLOT per task slot, so
    a slow unit does not hold the others back, while each task's start-up is shared)."""
    if not units:
        return []
    context = SparkContext.getOrCreate()
    tasks = min(len(units), TASKS_PER_SLOT * context.defaultParallelism)
    return context.parallelize(units, tasks).mapPartitions(process_units).collect()


def by_day(results: list[UnitResult]) -> list[DayResult]:
    """The units' results gathered per day: a day failed when any of its units failed."""
    days: dict[date, DayResult] = {}
    for unit in sorted(results, key=lambda r: (r.day, products.SHORT_NAMES.index(r.variable))):
        day = days.setdefault(unit.day, DayResult(unit.day))
        day.written += unit.written
        if unit.error and unit.error != day.error:  # both units of a bad file: said once
            day.error = "; ".join(filter(None, [day.error, unit.error]))
        elif unit.written:
            day.published.append(unit.variable)
    return list(days.values())


def summarise(results: list[DayResult], skipped: list[date]) -> dict:
    """Counts and lists of the run, printed as its last stdout lines."""
    failed = [r for r in results if r.error]
    return {
        "days": len(results) + len(skipped),
        "published": [r.day.isoformat() for r in results if not r.error],
        "skipped": [day.isoformat() for day in skipped],
        "failed": {r.day.isoformat(): r.error for r in failed},
        "products_written": sorted(key for r in results for key in r.written),
    }


def report(summary: dict, results: list[DayResult]) -> None:
    """One stdout line per day and a total; one stderr line per failed day."""
    for result in sorted(results, key=lambda r: r.day):
        if result.error:
            print(f"ERROR {result.day}: {result.error}", file=sys.stderr, flush=True)
        else:
            print(f"published {result.day}: {', '.join(result.published) or 'nothing new'} "
                  f"({len(result.written)} objects)")
    for day in summary["skipped"]:
        print(f"skipped {day}: already published (run with --redo true to rewrite)")
    days = f"{summary['days']} day" + ("" if summary["days"] == 1 else "s")
    print(f"summary: {days}: {len(summary['published'])} published, "
          f"{len(summary['skipped'])} skipped, {len(summary['failed'])} failed; "
          f"{len(summary['products_written'])} objects written", flush=True)


def main(argv: list[str] | None = None) -> dict:
    """Run the job with ``--key value`` arguments (default: this process's); its summary.

    Raises JobFailed, with a one-line summary of the failed days, when any day failed.
    """
    options = parse_options(sys.argv[1:] if argv is None else argv)
    units, skipped, missing = plan(options)
    results = missing + by_day(run_units(units))
    summary = summarise(results, skipped)
    report(summary, results)
    if summary["failed"]:
        reasons = "; ".join(f"{day} ({error})" for day, error in sorted(summary["failed"].items()))
        raise JobFailed(f"{len(summary['failed'])} of {summary['days']} days failed: {reasons}")
    return summary


if __name__ == "__main__":
    main()
