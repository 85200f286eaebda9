"""ERA5 ingest Lambda: download one day from the Copernicus CDS and store it in the input bucket.

Event: ``{"date": "2023-09-01"}`` (or ``{"year": 2023, "month": 9, "day": 1}``), optional
``dataset``, ``area`` [N, W, S, E], ``variables`` and ``force``. The science (request building,
validation, reading the download) lives in ``picsel_nb.era5``, shipped in this zip; cdsapi,
powertools and the scientific stack come from the layer; boto3 from the runtime.

Tunable from the environment: PICSEL_TMP (download dir, /tmp), PICSEL_UPLOAD_MARGIN_S (seconds
kept for the upload when waiting for the CDS, 30), PICSEL_MULTIPART_THRESHOLD (bytes, 8 MiB).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import cdsapi
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

EVENT_FIELDS = ("date", "year", "month", "day", "dataset", "area", "variables", "force")
MIB = 1024 * 1024
# cdsapi's defaults retry for hours (retry_max=500, sleep_max=120): a Lambda must bound them.
CDS_RETRY_MAX = 3
CDS_SLEEP_MAX = 10.0
CDS_TIMEOUT = 60
POLL_FIRST, POLL_MAX = 1.0, 15.0  # seconds between job status checks, growing by 1.5x


class InvalidEventError(ValueError):
    """The event is not a valid ingest request; the message names the field and accepted values."""


class CdsJobTimeoutError(TimeoutError):
    """The CDS job was still queued or running when the Lambda's time ran out."""


class CorruptDownloadError(ValueError):
    """The CDS returned a file that is not a readable ERA5 download; nothing was stored."""


@dataclass(frozen=True)
class Ingest:
    """One validated ingest request: which day of which dataset, and the CDS request body."""

    dataset: str
    day: date
    request: dict
    request_hash: str
    force: bool

    @property
    def key(self) -> str:
        """The raw object's key: raw/<dataset>/YYYY/MM/DD.nc."""
        return f"raw/{self.dataset}/{self.day:%Y/%m/%d}.nc"


# CDS request field -> the event field it comes from, so errors name what the caller wrote.
EVENT_FIELD_OF = {"start": "date", "end": "date", "year": "date", "month": "date", "day": "date",
                  "variable": "variables"}


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
        day = _event_day(event, dataset)
        area = era5.parse_area(event.get("area", DEMO_AREA), dataset)
        request = era5.build_request(dataset, day, area=area, variables=variables)
    except InvalidEventError:
        raise
    except ValueError as exc:
        raise _invalid(exc) from exc
    return Ingest(dataset, day, request, era5.request_hash(dataset, request), force)


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
    """Poll the CDS job until its results are ready; fail cleanly when time runs out."""
    pause = POLL_FIRST
    while not remote.results_ready:  # raises ProcessingFailedError when the job failed
        if time.monotonic() + pause > deadline:
            raise CdsJobTimeoutError(
                f"CDS job {remote.request_id} is still {remote.last_status!r} and the Lambda is "
                "about to time out; nothing was stored. Invoke again later: the CDS answers an "
                "identical request from its cache once the job has finished")
        time.sleep(pause)
        pause = min(pause * 1.5, POLL_MAX)


def download(ingest: Ingest, target: Path, deadline: float) -> str:
    """Submit the request to the CDS, wait within the deadline, stream the file to `target`.

    Returns the CDS job id.
    """
    url, key = cds_credentials(os.environ["CDS_SECRET_NAME"])
    client = cdsapi.Client(
        url=url, key=key, quiet=True, progress=False, retry_max=CDS_RETRY_MAX,
        sleep_max=CDS_SLEEP_MAX, timeout=CDS_TIMEOUT, wait_until_complete=False)
    remote = client.retrieve(ingest.dataset, ingest.request)
    logger.info("CDS job submitted", extra={"cds_job_id": remote.request_id})
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


def upload(path: Path, bucket: str, ingest: Ingest, job_id: str) -> None:
    """Multipart-upload the file with its provenance; boto3 aborts the upload if a part fails."""
    threshold = int(os.environ.get("PICSEL_MULTIPART_THRESHOLD", 8 * MIB))
    config = TransferConfig(multipart_threshold=threshold,
                            multipart_chunksize=max(threshold, 5 * MIB))  # S3's smallest part
    metadata = {"request-hash": ingest.request_hash, "cds-job-id": job_id,
                "dataset": ingest.dataset, "date": ingest.day.isoformat(), "source": "cds"}
    _s3().upload_file(str(path), bucket, ingest.key, Config=config,
                      ExtraArgs={"Metadata": metadata, "ContentType": "application/octet-stream"})


def _result(status: str, bucket: str, ingest: Ingest, size: int, **extra) -> dict:
    return {"status": status, "bucket": bucket, "key": ingest.key, "bytes": size,
            "request_hash": ingest.request_hash, "date": ingest.day.isoformat(),
            "dataset": ingest.dataset, **extra}


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: Any, context: Any) -> dict:
    """Store one day of ERA5 in s3://$INPUT_BUCKET/raw/…, unless that same request is there."""
    ingest = parse_event(event)
    bucket = os.environ["INPUT_BUCKET"]
    logger.append_keys(date=ingest.day.isoformat(), dataset=ingest.dataset)
    head = _existing(bucket, ingest.key)
    if head and head["Metadata"].get("request-hash") == ingest.request_hash and not ingest.force:
        metrics.add_metric(name="SkippedExisting", unit=MetricUnit.Count, value=1)
        logger.info("already stored; skipped", extra={"key": ingest.key})
        return _result("skipped", bucket, ingest, head["ContentLength"],
                       cds_job_id=head["Metadata"].get("cds-job-id"))
    deadline = _deadline(context)
    root = os.environ.get("PICSEL_TMP", "/tmp")
    with tempfile.TemporaryDirectory(dir=root, prefix="picsel-ingest-") as tmp:
        target = Path(tmp) / "download"
        started = time.monotonic()
        job_id = download(ingest, target, deadline)
        seconds = time.monotonic() - started
        size = target.stat().st_size
        check_download(target, ingest)
        upload(target, bucket, ingest, job_id)
    metrics.add_metric(name="BytesDownloaded", unit=MetricUnit.Bytes, value=size)
    metrics.add_metric(name="DownloadSeconds", unit=MetricUnit.Seconds, value=seconds)
    logger.info("stored", extra={"key": ingest.key, "bytes": size, "cds_job_id": job_id})
    return _result("stored", bucket, ingest, size, cds_job_id=job_id,
                   download_seconds=round(seconds, 3))
