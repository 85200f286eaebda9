"""AWS Glue job: raw ERA5 downloads → daily contour bands, isolines, plots and catalog rows.

For each raw day ``s3://<input>/raw/<dataset>/YYYY/MM/DD.nc`` (day D and D+1, so D's precipitation
total is complete) it computes D's mean 2 m temperature and total precipitation
(``picsel_nb.era5.daily``) and writes, per (variable, day), the products of ``picsel_nb.products``
in full or not at all. Days are spread over Spark's executors on Glue, over at most two local
processes elsewhere (the embedded cloud runs the script as a plain Python process). Plain boto3
everywhere: the endpoint comes from the environment (AWS_ENDPOINT_URL on the embedded cloud).

Arguments (all set as the job's DefaultArguments): --input_bucket, --output_bucket, --dataset,
--dates ("all-new" | "YYYY-MM-DD:YYYY-MM-DD"), --redo ("true" | "false"), --t2m_levels and
--tp_levels (comma-separated numbers | "default").

A bad day (corrupt or incomplete raw file, missing raw file, failed upload) is reported on stderr
and the other days are still published; the run then fails with a one-line summary.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import boto3
import orjson
from awsglue.utils import getResolvedOptions

from picsel_nb import contours, era5, plots, products
from picsel_nb.contours.styles import check_levels

OPTIONS = ("input_bucket", "output_bucket", "dataset", "dates", "redo", "t2m_levels",
           "tp_levels")
MAX_LOCAL_WORKERS = 2
_RAW_DAY = re.compile(r"(\d{4})/(\d{2})/(\d{2})\.nc")


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
class Task:
    """One raw day to turn into products for `variables`."""

    options: Options
    day: date
    raw_key: str
    variables: tuple[str, ...]


@dataclass
class DayResult:
    """What became of one day: the keys written and the variables published, or the error."""

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


_clients: dict[int, Any] = {}


def s3() -> Any:
    """This process's S3 client (made per process: a boto3 client must not cross a fork)."""
    if os.getpid() not in _clients:
        _clients[os.getpid()] = boto3.client("s3")
    return _clients[os.getpid()]


def _keys(bucket: str, prefix: str) -> list[str]:
    pages = s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def raw_keys(options: Options) -> dict[date, str]:
    """The raw download of each day in the input bucket, by day."""
    prefix = f"raw/{options.dataset}/"
    found = {}
    for key in _keys(options.input_bucket, prefix):
        match = _RAW_DAY.fullmatch(key[len(prefix):])
        with suppress(ValueError):  # 2023/02/30.nc is no day
            if match:
                found[date(*map(int, match.groups()))] = key
    return found


def published(options: Options) -> set[tuple[str, date]]:
    """The (variable, day) pairs whose web GeoJSON exists: those are published."""
    parsed = (products.parse_key(key) for key in
              _keys(options.output_bucket, f"{products.PRODUCTS_PREFIX}geojson/"))
    return {(variable, day) for kind, variable, day in filter(None, parsed)}


def plan(options: Options) -> tuple[list[Task], list[date], list[DayResult]]:
    """The days to process, the days skipped (all published, no --redo) and the days that cannot
    be processed (asked for, but no raw file)."""
    raw = raw_keys(options)
    wanted = sorted(raw) if options.dates is None else products.days(*options.dates)
    done = set() if options.redo else published(options)
    tasks, skipped, missing = [], [], []
    for day in wanted:
        variables = tuple(v for v in products.SHORT_NAMES if (v, day) not in done)
        if not variables:
            skipped.append(day)
        elif day not in raw:
            missing.append(DayResult(day, error=f"no raw file at s3://{options.input_bucket}/raw/"
                                                f"{options.dataset}/{day:%Y/%m/%d}.nc "
                                                "(ingest the day first)"))
        else:
            tasks.append(Task(options, day, raw[day], variables))
    return tasks, skipped, missing


def render(field_: Any, levels: tuple[float, ...] | None) -> dict[str, bytes]:
    """Every product of one daily field, by kind: the two GeoJSON documents from one tracing."""
    bands, lines = contours.products(field_, levels)
    return {
        "png": plots.plot_day(field_, levels),
        "isolines": lines,
        "catalog": products.ndjson(products.catalog_rows(orjson.loads(bands))),
        "geojson": bands,
    }


def put(bucket: str, key: str, body: bytes, content_type: str) -> None:
    """Upload one object."""
    s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def write_unit(bucket: str, variable: str, day: date, bodies: dict[str, bytes]) -> list[str]:
    """Write one (variable, day) in full or not at all; the keys written.

    The web GeoJSON is removed first (the unit is unpublished while it is rewritten) and written
    last; when any upload fails, every object of the unit is deleted before the error goes on.
    """
    keys = products.keys(variable, day)
    s3().delete_object(Bucket=bucket, Key=keys["geojson"])
    try:
        for kind in products.KINDS:
            put(bucket, keys[kind], bodies[kind], products.CONTENT_TYPE[kind])
    except Exception:
        s3().delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": key} for key in keys.values()], "Quiet": True})
        raise
    return list(keys.values())


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _daily_fields(task: Task) -> Any:
    """The day's daily fields from its raw file; ValueError with the reason and the key."""
    where = f"s3://{task.options.input_bucket}/{task.raw_key}"
    body = s3().get_object(Bucket=task.options.input_bucket, Key=task.raw_key)["Body"].read()
    try:
        return era5.daily(era5.open_download(body), task.options.dataset, days=[task.day])
    except era5.DownloadError as exc:
        raise ValueError(f"corrupt raw file {where}: {exc}") from exc
    except era5.IncompleteDayError as exc:
        raise ValueError(f"incomplete day in raw file {where}: {exc}") from exc


def process_day(task: Task) -> DayResult:
    """Compute and write every product of one day; a failure is returned, never raised, so one
    bad day does not stop the others."""
    result = DayResult(task.day)
    try:
        fields = _daily_fields(task)
        for variable in task.variables:
            if variable not in fields:
                continue
            field_ = fields[variable].isel(date=0)  # the one day asked for
            bodies = render(field_, task.options.levels[variable])
            try:
                written = write_unit(task.options.output_bucket, variable, task.day, bodies)
            except Exception as exc:
                raise RuntimeError(f"upload of {variable} failed, none of its products was "
                                   f"left: {exc}") from exc
            result.written += written
            result.published.append(variable)
    except Exception as exc:  # noqa: BLE001 — reported per day; the other days go on
        result.error = _one_line(exc)
    return result


def run_tasks(tasks: list[Task]) -> list[DayResult]:
    """Process the days on Spark's executors when running in Glue, else in up to two processes."""
    if not tasks:
        return []
    try:
        from pyspark import SparkContext
    except ImportError:
        SparkContext = None  # not on Glue
    if SparkContext is not None:
        return SparkContext.getOrCreate().parallelize(tasks, len(tasks)).map(process_day).collect()
    if len(tasks) == 1:
        return [process_day(tasks[0])]
    with ProcessPoolExecutor(max_workers=min(MAX_LOCAL_WORKERS, len(tasks))) as pool:
        return list(pool.map(process_day, tasks))


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
    tasks, skipped, missing = plan(options)
    results = missing + run_tasks(tasks)
    summary = summarise(results, skipped)
    report(summary, results)
    if summary["failed"]:
        reasons = "; ".join(f"{day} ({error})" for day, error in sorted(summary["failed"].items()))
        raise JobFailed(f"{len(summary['failed'])} of {summary['days']} days failed: {reasons}")
    return summary


if __name__ == "__main__":
    main()
