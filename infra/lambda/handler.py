"""ERA5 ingest Lambda: download days from the Copernicus CDS and store them in the input bucket.

Event: ``{"date": "2023-09-01"}`` (or ``{"year": 2023, "month": 9, "day": 1}``) for one day, or
``{"start": "2023-01-01", "end": "2023-01-30"}`` for a block of days asked of the CDS as one
request and stored one object per day (a block must close inside its month: the CDS request is a
year × month × day product, and the last day's precipitation needs 00 UTC of the next); optional
``dataset``, ``area`` [N, W, S, E], ``variables`` and ``force``.

A CDS job that is still queued or running when the Lambda must stop is not lost: its id is kept
under ``raw/<dataset>/cds-jobs/<request hash>.json`` and the answer is ``{"status": "queued", …}``;
the next invocation for the same request resumes polling that job instead of submitting anew.

The science (request building, validation, reading the download) lives in ``picsel_nb.era5``,
shipped in this zip; cdsapi, powertools and the scientific stack come from the layer; boto3 from
the runtime.

Tunable from the environment: PICSEL_TMP (download dir, /tmp), PICSEL_UPLOAD_MARGIN_S (seconds
kept for the upload when waiting for the CDS, 30), PICSEL_MULTIPART_THRESHOLD (bytes, 8 MiB).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import cdsapi
import requests
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from boto3.s3.transfer import TransferConfig

from picsel_nb import era5
from picsel_nb.settings import DEMO_AREA, DEMO_DATASET
from picsel_nb.stack.secret import check_cds_credentials, load_cds_credentials

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "era5-ingest"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "picsel/pipeline"))
# botocore logs every response body at DEBUG, the secret's value among them: keep it at WARNING
# (its level under the Lambda runtime's default), whatever level the root logger is given.
logging.getLogger("botocore").setLevel(logging.WARNING)
# A rejected event has no metrics to flush; Lambda's own Errors metric counts it.
warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)

EVENT_FIELDS = ("date", "year", "month", "day", "start", "end", "dataset", "area", "variables",
                "force")
MIB = 1024 * 1024
# cdsapi's defaults retry for hours (retry_max=500, sleep_max=120): a Lambda must bound them.
CDS_RETRY_MAX = 3
CDS_SLEEP_MAX = 10.0
CDS_TIMEOUT = 60
POLL_FIRST, POLL_MAX = 1.0, 15.0  # seconds between job status checks, growing by 1.5x


class InvalidEventError(ValueError):
    """The event is not a valid ingest request; the message names the field and accepted values."""


class CdsJobPending(TimeoutError):
    """The CDS job is still queued or running and the Lambda's time is up: answered "queued"."""


class CorruptDownloadError(ValueError):
    """The CDS returned a file that is not a readable ERA5 download; nothing was stored."""


@dataclass(frozen=True)
class Ingest:
    """One validated ingest request: which days of which dataset, and the CDS request body."""

    dataset: str
    days: tuple[date, ...]
    request: dict
    request_hash: str
    force: bool
    day_hashes: tuple[str, ...]  # each day's own one-day request hash, kept on its object

    @property
    def day(self) -> date:
        return self.days[0]

    @property
    def key(self) -> str:
        """The first day's raw object key."""
        return self.keys[0]

    @property
    def keys(self) -> list[str]:
        """The raw object of each day: raw/<dataset>/YYYY/MM/DD.nc."""
        return [f"raw/{self.dataset}/{day:%Y/%m/%d}.nc" for day in self.days]

    @property
    def job_key(self) -> str:
        """Where the id of this request's pending CDS job is kept."""
        return f"raw/{self.dataset}/cds-jobs/{self.request_hash}.json"


# CDS request field -> the event field it comes from, so errors name what the caller wrote.
EVENT_FIELD_OF = {"year": "date", "month": "date", "day": "date", "variable": "variables"}


def _invalid(exc: ValueError) -> InvalidEventError:
    """An era5 RequestError ("<field>: <problem>; accepted: …") restated for the event's field."""
    field = getattr(exc, "field", None)
    if field is None:
        return InvalidEventError(f"invalid event: {exc}")
    problem = str(exc).removeprefix(f"{field}: ")
    return InvalidEventError(f"event field '{EVENT_FIELD_OF.get(field, field)}': {problem}")


def _event_day(event: dict, dataset: str) -> date:
    """The day of the event, from "date" or from "year"/"month"/"day" (ints or digit strings)."""
    parts = [name for name in ("year", "month", "day") if name in event]
    if "date" in event and parts:
        raise InvalidEventError(
            f"event has both 'date' and {parts}; accepted: either 'date' (YYYY-MM-DD) "
            "or 'year', 'month' and 'day'")
    if "date" in event:
        return era5.parse_date(event["date"], dataset, field="date")
    if not parts:
        raise InvalidEventError(
            "event field 'date' is missing; accepted: 'date' as YYYY-MM-DD (e.g. \"2023-09-01\") "
            "or 'year', 'month' and 'day' (e.g. 2023, 9, 1)")
    numbers = {}
    for name in ("year", "month", "day"):
        value = event.get(name)
        if isinstance(value, bool) or not (isinstance(value, int) or str(value).strip().isdigit()):
            raise InvalidEventError(
                f"event field '{name}' is {value!r}; accepted: an integer or a string of digits")
        numbers[name] = int(value)
    try:
        day = date(**numbers)
    except ValueError as exc:
        raise InvalidEventError(
            f"event fields 'year', 'month', 'day' {numbers} are not a date ({exc}); "
            "accepted: a real calendar date") from None
    return era5.parse_date(day, dataset, field="date")


def _event_days(event: dict, dataset: str) -> tuple[date, ...]:
    """The days of the event: one (``date`` or year/month/day) or a block (``start``..``end``)."""
    if "start" not in event and "end" not in event:
        return (_event_day(event, dataset),)
    if {"date", "year", "month", "day"} & set(event) or not {"start", "end"} <= set(event):
        raise InvalidEventError("event field 'start': a block needs both 'start' and 'end' "
                                "(YYYY-MM-DD) and no 'date'; accepted: one of the two forms")
    first = era5.parse_date(event["start"], dataset, field="start")
    last = era5.parse_date(event["end"], dataset, field="end")
    closing = last + timedelta(days=1)
    if last < first or (last > first and (closing.year, closing.month) != (first.year, first.month)):
        raise InvalidEventError(
            f"event field 'end': {last} does not close block {first}..{last} inside "
            f"{first:%Y-%m}; accepted: a day from {first} to the month's last day but one (the "
            "CDS request is one year × month × day product, with the day after for precipitation)")
    return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))


def parse_event(event: Any) -> Ingest:
    """Validate an event into an `Ingest`, or raise InvalidEventError (before any CDS call)."""
    if not isinstance(event, dict):
        raise InvalidEventError(
            f"event {event!r} is not a JSON object; accepted: {{\"date\": \"YYYY-MM-DD\"}} plus "
            "optional 'dataset', 'area', 'variables', 'force'")
    unknown = sorted(set(event) - set(EVENT_FIELDS))
    if unknown:
        raise InvalidEventError(
            f"event has unknown field(s) {unknown}; accepted: {list(EVENT_FIELDS)}")
    force = event.get("force", False)
    if not isinstance(force, bool):
        raise InvalidEventError(f"event field 'force' is {force!r}; accepted: true or false")
    variables = event.get("variables", list(era5.VARIABLES))
    if isinstance(variables, str) or not isinstance(variables, list):
        raise InvalidEventError(f"event field 'variables' is {variables!r}; accepted: a list of "
                                f"{', '.join(era5.VARIABLES)}")
    dataset = event.get("dataset", DEMO_DATASET)
    try:
        era5.dataset_info(dataset)
        days = _event_days(event, dataset)
        area = era5.parse_area(event.get("area", DEMO_AREA), dataset)
        request = era5.build_request(dataset, days[0], days[-1], area=area, variables=variables)
        day_hashes = tuple(era5.request_hash(dataset, era5.build_request(
            dataset, day, area=area, variables=variables)) for day in days)
    except InvalidEventError:
        raise
    except ValueError as exc:
        raise _invalid(exc) from exc
    return Ingest(dataset, days, request, era5.request_hash(dataset, request), force, day_hashes)


@cache
def _s3():
    """The S3 client of this container (made once; AWS_ENDPOINT_URL is read here)."""
    return boto3.client("s3")


@cache
def cds_credentials(secret_name: str) -> tuple[str, str]:
    """(url, key) of the CDS API from Secrets Manager, read once per warm container."""
    secret = load_cds_credentials(boto3.client("secretsmanager"), secret_name)
    return check_cds_credentials(secret["url"], secret["key"])


def _existing(bucket: str, key: str) -> dict | None:
    """The HeadObject answer for the raw object, or None when it does not exist.

    Listing the exact key first keeps a missing object a clean "absent": the role may list only
    under raw/ (an s3:prefix condition, which a HEAD request does not carry), and S3 answers a
    HEAD of a missing key with 403, not 404, to a caller without ListBucket for that request.
    """
    listing = _s3().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    if not any(item["Key"] == key for item in listing.get("Contents", [])):
        return None
    return _s3().head_object(Bucket=bucket, Key=key)


def _deadline(context) -> float:
    """The monotonic time by which the CDS job must be done, leaving a margin for the upload."""
    margin = float(os.environ.get("PICSEL_UPLOAD_MARGIN_S", "30"))
    return time.monotonic() + context.get_remaining_time_in_millis() / 1000 - margin


def _wait_for_job(remote, deadline: float) -> None:
    """Poll the CDS job until its results are ready; CdsJobPending when time runs out."""
    pause = POLL_FIRST
    while not remote.results_ready:  # raises ProcessingFailedError when the job failed
        if time.monotonic() + pause > deadline:
            raise CdsJobPending(remote.request_id, remote.last_status)
        time.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX)


def _pending_job(bucket: str, ingest: Ingest) -> str | None:
    """The id of the CDS job an earlier invocation submitted for this request, if any."""
    if _existing(bucket, ingest.job_key) is None:
        return None
    body = _s3().get_object(Bucket=bucket, Key=ingest.job_key)["Body"].read()
    return json.loads(body)["cds_job_id"]


def _keep_pending(bucket: str, ingest: Ingest, job_id: str) -> None:
    """Keep the id of the submitted job, so the next invocation resumes it."""
    body = json.dumps({"cds_job_id": job_id, "dataset": ingest.dataset,
                       "request": ingest.request, "submitted": datetime.now(UTC).isoformat()})
    _s3().put_object(Bucket=bucket, Key=ingest.job_key, Body=body.encode(),
                     ContentType="application/json")


def _remote(client, bucket: str, ingest: Ingest):
    """The CDS job of this request: the pending one an earlier invocation submitted (when the
    CDS still knows it), else a new one, whose id is kept at once."""
    pending = None if ingest.force else _pending_job(bucket, ingest)
    if pending is not None:
        try:
            remote = client.client.get_remote(pending)
            status = remote.status
        except requests.HTTPError:  # the CDS no longer has the job
            status = "gone"
        if status in ("accepted", "running", "successful"):
            logger.info("resuming the pending CDS job", extra={"cds_job_id": pending})
            return remote
        logger.info("pending CDS job is not usable; submitting again",
                    extra={"cds_job_id": pending, "cds_status": status})
    remote = client.retrieve(ingest.dataset, ingest.request)
    logger.info("CDS job submitted", extra={"cds_job_id": remote.request_id})
    _keep_pending(bucket, ingest, remote.request_id)
    return remote


def download(ingest: Ingest, bucket: str, target: Path, deadline: float) -> str:
    """Submit the request to the CDS (or resume its pending job), wait within the deadline,
    stream the file to `target`; the CDS job id. CdsJobPending when the job is not done in time.
    """
    url, key = cds_credentials(os.environ["CDS_SECRET_NAME"])
    client = cdsapi.Client(
        url=url, key=key, quiet=True, progress=False, retry_max=CDS_RETRY_MAX,
        sleep_max=CDS_SLEEP_MAX, timeout=CDS_TIMEOUT, wait_until_complete=False)
    remote = _remote(client, bucket, ingest)
    _wait_for_job(remote, deadline)
    remote.download(str(target))
    return remote.request_id


def check_download(path: Path, ingest: Ingest) -> None:
    """Refuse a download that is not a readable ERA5 file holding the requested variables
    (checked from disk, without loading the file in memory)."""
    try:
        found = era5.download_variables(path)
    except ValueError as exc:
        raise CorruptDownloadError(
            f"the CDS file for {ingest.dataset} {ingest.day} is not a readable ERA5 download "
            f"({exc}); nothing was stored") from exc
    wanted = {era5.VARIABLES[name] for name in ingest.request["variable"]}
    missing = sorted(wanted - found)
    if missing:
        raise CorruptDownloadError(
            f"the CDS file for {ingest.dataset} {ingest.day} lacks variable(s) {missing}; "
            "nothing was stored")


def upload(path: Path, bucket: str, key: str, metadata: dict[str, str]) -> None:
    """Multipart-upload one file with its provenance; boto3 aborts the upload if a part fails."""
    threshold = int(os.environ.get("PICSEL_MULTIPART_THRESHOLD", 8 * MIB))
    config = TransferConfig(multipart_threshold=threshold,
                            multipart_chunksize=max(threshold, 5 * MIB))  # S3's smallest part
    _s3().upload_file(str(path), bucket, key, Config=config,
                      ExtraArgs={"Metadata": metadata, "ContentType": "application/octet-stream"})


def store_days(path: Path, bucket: str, ingest: Ingest, job_id: str) -> None:
    """Store the download as one object per day: a one-day download as the CDS sent it, a block
    split into days (each day with the next day's hours, as a one-day request brings them).

    Each object carries its own one-day request hash (so a one-day ingest of it is skipped) and
    the block's CDS request hash and job id.
    """
    provenance = {"cds-request-hash": ingest.request_hash, "cds-job-id": job_id,
                  "dataset": ingest.dataset, "source": "cds"}
    if len(ingest.days) == 1:
        upload(path, bucket, ingest.key, {**provenance, "request-hash": ingest.day_hashes[0],
                                          "date": ingest.day.isoformat()})
        return
    hourly = era5.open_download(path)
    for day, key, day_hash in zip(ingest.days, ingest.keys, ingest.day_hashes):
        hours = slice(day.isoformat(), f"{day + timedelta(days=1)}T23:59")  # D and D+1
        part, one_day = path.with_suffix(f".{day:%d}.nc"), hourly.sel(valid_time=hours)
        one_day.to_netcdf(part, engine="netcdf4", encoding=era5.netcdf_encoding(one_day))
        upload(part, bucket, key, {**provenance, "request-hash": day_hash,
                                   "date": day.isoformat()})
        part.unlink()


def _stored(bucket: str, ingest: Ingest) -> list[dict] | None:
    """The HeadObject answers of the block's days when every one holds its request (else None)."""
    heads = [_existing(bucket, key) for key in ingest.keys]
    if all(head and head["Metadata"].get("request-hash") == day_hash
           for head, day_hash in zip(heads, ingest.day_hashes)):
        return heads
    return None


def _result(status: str, bucket: str, ingest: Ingest, size: int, **extra) -> dict:
    return {"status": status, "bucket": bucket, "key": ingest.key, "keys": ingest.keys,
            "bytes": size, "request_hash": ingest.request_hash, "date": ingest.day.isoformat(),
            "dates": [day.isoformat() for day in ingest.days], "dataset": ingest.dataset,
            **extra}


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: Any, context: Any) -> dict:
    """Store the days of ERA5 in s3://$INPUT_BUCKET/raw/…, unless that same request is there;
    "queued" when the CDS job is still pending as the Lambda's time runs out."""
    ingest = parse_event(event)
    bucket = os.environ["INPUT_BUCKET"]
    logger.append_keys(date=ingest.day.isoformat(), days=len(ingest.days), dataset=ingest.dataset)
    heads = None if ingest.force else _stored(bucket, ingest)
    if heads:
        metrics.add_metric(name="SkippedExisting", unit=MetricUnit.Count, value=len(heads))
        logger.info("already stored; skipped", extra={"key": ingest.key})
        return _result("skipped", bucket, ingest, sum(h["ContentLength"] for h in heads),
                       cds_job_id=heads[0]["Metadata"].get("cds-job-id"))
    deadline = _deadline(context)
    root = os.environ.get("PICSEL_TMP", "/tmp")
    with tempfile.TemporaryDirectory(dir=root, prefix="picsel-ingest-") as tmp:
        target = Path(tmp) / "download"
        started = time.monotonic()
        try:
            job_id = download(ingest, bucket, target, deadline)
        except CdsJobPending as pending:
            job_id, cds_status = pending.args
            metrics.add_metric(name="QueuedAtCds", unit=MetricUnit.Count, value=1)
            logger.info("CDS job still pending; its id is kept", extra={"cds_job_id": job_id})
            return _result("queued", bucket, ingest, 0, cds_job_id=job_id,
                           cds_status=cds_status, job_key=ingest.job_key)
        seconds = time.monotonic() - started
        size = target.stat().st_size
        check_download(target, ingest)
        store_days(target, bucket, ingest, job_id)
    metrics.add_metric(name="BytesDownloaded", unit=MetricUnit.Bytes, value=size)
    metrics.add_metric(name="DownloadSeconds", unit=MetricUnit.Seconds, value=seconds)
    logger.info("stored", extra={"key": ingest.key, "days": len(ingest.days), "bytes": size,
                                 "cds_job_id": job_id})
    return _result("stored", bucket, ingest, size, cds_job_id=job_id,
                   download_seconds=round(seconds, 3))
