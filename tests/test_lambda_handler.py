"""The ingest Lambda's handler, in-process: S3 and Secrets Manager from moto, a fake CDS client.

The fake stands in for what cdsapi returns with ``wait_until_complete=False`` (an
``ecmwf.datastores.Remote``): ``request_id``, ``results_ready``, ``last_status``, ``download``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from dataclasses import dataclass

import boto3
import cdsapi
import numpy as np
import pytest
import requests
import xarray as xr
from moto import mock_aws

from picsel_nb import era5
from tests.conftest import REPO

BUCKET = "picsel-input-test"
SECRET_NAME = "picsel/cds-api-key"
SECRET_KEY = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"  # looks like a CDS personal access token
DAY = "2023-09-01"
KEY = "raw/reanalysis-era5-land/2023/09/01.nc"
MIB = 1024 * 1024
REAL_CDS_CLIENT = cdsapi.Client


def _load_handler():
    path = REPO / "infra" / "lambda" / "handler.py"
    spec = importlib.util.spec_from_file_location("ingest_handler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


handler_module = _load_handler()
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@dataclass
class Context:
    """The parts of the Lambda context the handler and powertools read."""

    remaining_ms: int = 300_000
    function_name: str = "picsel-era5-ingest"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:sa-east-1:123456789012:function:picsel-era5-ingest"
    aws_request_id: str = "11111111-2222-3333-4444-555555555555"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class FakeRemote:
    """A submitted CDS job: ready after `polls` status checks, then downloads `payload`."""

    def __init__(self, request_id: str, payload: bytes, polls: int | None = 0, fail: str = ""):
        self.request_id, self.payload, self.polls, self.fail = request_id, payload, polls, fail
        self.last_status = "accepted"

    @property
    def status(self) -> str:
        return "failed" if self.fail else self.last_status

    @property
    def results_ready(self) -> bool:
        if self.fail:  # cdsapi reads a failed job's results: the CDS answers 400
            raise requests.HTTPError(f"400 Client Error\nThe job has failed\n{self.fail}")
        if self.polls is None or self.polls > 0:
            self.polls = None if self.polls is None else self.polls - 1
            self.last_status = "running"
            return False
        self.last_status = "successful"
        return True

    def download(self, target: str) -> str:
        with open(target, "wb") as out:
            out.write(self.payload)
        return target


class FakeCds:
    """Replaces cdsapi.Client; records every client made and every request submitted."""

    def __init__(self):
        self.real_client = False  # also run cdsapi's own constructor (it calls the CDS once)
        self.clients: list[dict] = []
        self.requests: list[tuple[str, dict]] = []
        self.payload: bytes | None = None  # None: the exact bytes the CDS would send
        self.polls: int | None = 0
        self.fail = ""
        self.remotes: dict[str, FakeRemote] = {}

    @property
    def client(self) -> FakeCds:
        """cdsapi's underlying ecmwf-datastores client, which looks jobs up by id."""
        return self

    def get_remote(self, request_id: str) -> FakeRemote:
        if request_id not in self.remotes:
            raise requests.HTTPError(f"404 Client Error: job {request_id} not found")
        return self.remotes[request_id]

    def __call__(self, **kwargs):
        if self.real_client:
            REAL_CDS_CLIENT(**{**kwargs, "retry_max": 1})
        self.clients.append(kwargs)
        return self

    def retrieve(self, name: str, request: dict) -> FakeRemote:
        self.requests.append((name, request))
        payload = self.payload
        if payload is None:
            payload = era5.synthetic_download(name, request)
        remote = FakeRemote(f"job-{len(self.requests)}", payload, self.polls, self.fail)
        self.remotes[remote.request_id] = remote
        return remote


@pytest.fixture
def aws(monkeypatch, tmp_path):
    """moto S3 + Secrets Manager with the input bucket and the CDS secret; the handler's env."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "sa-east-1", "INPUT_BUCKET": BUCKET,
                        "CDS_SECRET_NAME": SECRET_NAME, "PICSEL_TMP": str(tmp_path / "tmp"),
                        "PICSEL_UPLOAD_MARGIN_S": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    (tmp_path / "tmp").mkdir()
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET,
                         CreateBucketConfiguration={"LocationConstraint": "sa-east-1"})
        boto3.client("secretsmanager").create_secret(
            Name=SECRET_NAME,
            SecretString=json.dumps({"url": "https://cds.example.test/api", "key": SECRET_KEY}))
        handler_module._s3.cache_clear()
        handler_module.cds_credentials.cache_clear()
        yield s3
        handler_module._s3.cache_clear()
        handler_module.cds_credentials.cache_clear()


@pytest.fixture
def cds(monkeypatch):
    fake = FakeCds()
    monkeypatch.setattr(handler_module.cdsapi, "Client", fake)
    monkeypatch.setattr(handler_module, "POLL_FIRST", 0.01)
    monkeypatch.setattr(handler_module, "POLL_MAX", 0.02)
    return fake


@pytest.fixture
def log_stream(monkeypatch):
    """Everything the powertools logger writes during the test."""
    stream = io.StringIO()
    monkeypatch.setattr(handler_module.logger.registered_handler, "stream", stream)
    return stream


def invoke(event: dict, **context) -> dict:
    return handler_module.handler(event, Context(**context))


def _tmp_is_empty(tmp_path) -> bool:
    return not any((tmp_path / "tmp").iterdir())


# --- events -----------------------------------------------------------------------------------

@pytest.mark.parametrize("event", [
    {"date": DAY},
    {"year": 2023, "month": 9, "day": 1},
    {"year": "2023", "month": "09", "day": "1"},
])
def test_both_event_forms_store_the_day(aws, cds, event):
    result = invoke(event)
    assert result["status"] == "stored"
    assert (result["bucket"], result["key"], result["date"]) == (BUCKET, KEY, DAY)
    assert result["dataset"] == "reanalysis-era5-land"
    assert result["bytes"] == aws.head_object(Bucket=BUCKET, Key=KEY)["ContentLength"]


def test_precipitation_request_includes_the_next_day(aws, cds):
    invoke({"date": DAY})
    name, request = cds.requests[0]
    assert name == "reanalysis-era5-land"
    assert request["day"] == ["01", "02"] and request["year"] == ["2023"]
    assert request["data_format"] == "netcdf"


def test_temperature_only_request_is_that_day_alone(aws, cds):
    invoke({"date": DAY, "variables": ["2m_temperature"], "area": [-10, -50, -12, -48]})
    _, request = cds.requests[0]
    assert request["day"] == ["01"] and request["variable"] == ["2m_temperature"]
    assert request["area"] == [-10.0, -50.0, -12.0, -48.0]


@pytest.mark.parametrize("event, field, accepted", [
    ({"date": "2023-13-01"}, "'date'", "YYYY-MM-DD"),
    ({"date": 20230901}, "'date'", "YYYY-MM-DD"),
    ({}, "'date'", "YYYY-MM-DD"),
    ({"date": "1900-01-01"}, "'date'", "1950-01-01"),
    ({"date": "2999-01-01"}, "'date'", "dates from 1950-01-01"),
    ({"date": DAY, "year": 2023}, "'date'", "either 'date'"),
    ({"year": 2023, "month": 2, "day": 30}, "'day'", "a real calendar date"),
    ({"year": 2023, "month": "nine", "day": 1}, "'month'", "an integer"),
    ({"year": True, "month": 9, "day": 1}, "'year'", "an integer"),
    ({"date": DAY, "dataset": "era5-monthly"}, "'dataset'", "reanalysis-era5-land"),
    ({"date": DAY, "area": [1, 2]}, "'area'", "[N, W, S, E]"),
    ({"date": DAY, "area": [-24, -60, -9, -40]}, "'area'", "N >= S"),
    ({"date": DAY, "area": [-9, -60, -9.05, -40]}, "'area'", "at least 0.1°"),
    ({"date": DAY, "variables": ["10m_u_component_of_wind"]}, "'variables'", "2m_temperature"),
    ({"date": DAY, "variables": "total_precipitation"}, "'variables'", "a list of"),
    ({"date": DAY, "variables": []}, "'variables'", "a list of values"),
    ({"date": DAY, "force": "yes"}, "'force'", "true or false"),
    ({"date": DAY, "bucket": "elsewhere"}, "['bucket']", "'dataset'"),
    ([DAY], "JSON object", '{"date": "YYYY-MM-DD"}'),
])
def test_invalid_event_raises_naming_field_and_accepted_values_without_calling_the_cds(
        aws, cds, event, field, accepted):
    with pytest.raises(handler_module.InvalidEventError) as caught:
        invoke(event)
    message = str(caught.value)
    assert field in message or field.strip("'") in message
    assert "accepted" in message and accepted in message
    assert isinstance(caught.value, ValueError)
    assert cds.clients == [] and cds.requests == []
    assert _stored_days(aws) == []


# --- idempotence --------------------------------------------------------------------------------

def test_same_request_already_stored_is_skipped_without_a_cds_call(aws, cds, capsys):
    first = invoke({"date": DAY})
    second = invoke({"year": 2023, "month": 9, "day": 1})
    assert second["status"] == "skipped"
    assert second["request_hash"] == first["request_hash"]
    assert second["bytes"] == first["bytes"] and second["cds_job_id"] == first["cds_job_id"]
    assert len(cds.requests) == 1
    assert '"SkippedExisting"' in capsys.readouterr().out


def test_force_downloads_again(aws, cds):
    invoke({"date": DAY})
    result = invoke({"date": DAY, "force": True})
    assert result["status"] == "stored" and result["cds_job_id"] == "job-2"
    assert len(cds.requests) == 2


def test_a_different_request_for_the_same_day_replaces_the_object(aws, cds):
    invoke({"date": DAY})
    result = invoke({"date": DAY, "area": [-10, -50, -12, -48]})
    assert result["status"] == "stored"
    metadata = aws.head_object(Bucket=BUCKET, Key=KEY)["Metadata"]
    assert metadata["request-hash"] == result["request_hash"]


def test_object_carries_provenance_metadata(aws, cds):
    result = invoke({"date": DAY})
    metadata = aws.head_object(Bucket=BUCKET, Key=KEY)["Metadata"]
    assert metadata == {"request-hash": result["request_hash"], "cds-job-id": "job-1",
                        "cds-request-hash": result["request_hash"],
                        "dataset": "reanalysis-era5-land", "date": DAY, "source": "cds"}


def test_stored_object_is_the_cds_file_and_reads_as_the_day(aws, cds):
    invoke({"date": DAY})
    body = aws.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    assert body == era5.synthetic_download(*cds.requests[0])
    day = era5.daily(era5.open_download(body), "reanalysis-era5-land", days=[DAY])
    assert set(day.data_vars) == {"t2m", "tp"}


# --- the CDS client and the secret -------------------------------------------------------------

def test_cds_client_has_bounded_retries_and_the_secret_url(aws, cds):
    invoke({"date": DAY})
    kwargs = cds.clients[0]
    assert kwargs["url"] == "https://cds.example.test/api" and kwargs["key"] == SECRET_KEY
    assert kwargs["quiet"] is True and kwargs["wait_until_complete"] is False
    assert kwargs["retry_max"] <= 5 and kwargs["sleep_max"] <= 30 and kwargs["timeout"] <= 120


def test_secret_is_read_once_per_warm_container(aws, cds, monkeypatch):
    reads = []
    real = handler_module.load_cds_credentials
    monkeypatch.setattr(handler_module, "load_cds_credentials",
                        lambda *args: reads.append(args[1]) or real(*args))
    invoke({"date": DAY})
    invoke({"date": DAY, "force": True})
    assert reads == [SECRET_NAME]


def test_legacy_uid_key_secret_is_refused_without_showing_it(aws, cds):
    legacy = "12345:" + SECRET_KEY
    boto3.client("secretsmanager").put_secret_value(
        SecretId=SECRET_NAME, SecretString=json.dumps({"url": "https://x.test/api", "key": legacy}))
    with pytest.raises(ValueError, match="UID:KEY") as caught:
        invoke({"date": DAY})
    assert SECRET_KEY not in str(caught.value)
    assert cds.requests == []


@pytest.mark.filterwarnings("ignore:HTTPConnectionPool")  # the real client's start-up call
def test_no_secret_in_logs_metrics_or_results(aws, cds, log_stream, caplog, capsys):
    cds.real_client = True  # cdsapi logs its key at DEBUG unless quiet: it must stay quiet
    boto3.client("secretsmanager").put_secret_value(  # a closed port: refused at once
        SecretId=SECRET_NAME, SecretString=json.dumps({"url": "http://127.0.0.1:9/api",
                                                       "key": SECRET_KEY}))
    caplog.set_level("DEBUG")
    handler_module.logger.setLevel("DEBUG")
    try:
        result = invoke({"date": DAY})
        cds.fail = f"the job failed (request used key {'*' * 4})"
        with pytest.raises(requests.HTTPError) as caught:
            invoke({"date": DAY, "force": True})
    finally:
        handler_module.logger.setLevel("INFO")
    out, err = capsys.readouterr()
    logged = log_stream.getvalue()
    assert '"stored"' in logged and "job-1" in logged  # the logs were captured
    for text in (logged, caplog.text, out, err, json.dumps(result), str(caught.value)):
        assert SECRET_KEY not in text


def test_logs_are_json_lines_with_the_lambda_context(aws, cds, log_stream):
    invoke({"date": DAY})
    records = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    stored = next(r for r in records if r["message"] == "stored")
    assert stored["date"] == DAY and stored["key"] == KEY
    assert stored["function_request_id"] == Context.aws_request_id


def test_metrics_are_flushed_as_emf(aws, cds, capsys):
    result = invoke({"date": DAY})
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    names = {m["Name"] for m in emf[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {"BytesDownloaded", "DownloadSeconds"}
    assert emf[0]["BytesDownloaded"] == [float(result["bytes"])]


# --- failures leave nothing behind -----------------------------------------------------------

def _stored_days(s3) -> list[str]:
    """The raw day objects in the bucket (a pending CDS job's id kept beside them is no day)."""
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return sorted(key for key in keys if "/cds-jobs/" not in key)


@pytest.mark.parametrize("payload", [b"", b"<html>502 Bad Gateway</html>", b"CDF\x02truncated",
                                     b"\x89HDF\r\n\x1a\n" + bytes(100), b"PK\x03\x04broken"])
def test_corrupt_download_is_refused_and_nothing_stored(aws, cds, tmp_path, payload):
    cds.payload = payload
    with pytest.raises(handler_module.CorruptDownloadError, match="nothing was stored"):
        invoke({"date": DAY})
    assert _stored_days(aws) == []
    assert _tmp_is_empty(tmp_path)


def test_download_lacking_a_requested_variable_is_refused(aws, cds, tmp_path):
    request = era5.build_request("reanalysis-era5-land", DAY, variables=["2m_temperature"])
    cds.payload = era5.synthetic_download("reanalysis-era5-land", request)
    with pytest.raises(handler_module.CorruptDownloadError, match=r"lacks variable\(s\) \['tp'\]"):
        invoke({"date": DAY})
    assert _stored_days(aws) == []


def test_failed_cds_job_propagates_and_stores_nothing(aws, cds, tmp_path):
    cds.fail = "400 Bad Request: the request you have submitted is not valid"
    with pytest.raises(requests.HTTPError, match="not valid"):
        invoke({"date": DAY})
    assert _stored_days(aws) == []
    assert _tmp_is_empty(tmp_path)


def test_job_still_pending_at_the_deadline_is_queued_and_the_next_invocation_resumes_it(
        aws, cds, tmp_path):
    cds.polls = None  # not ready while this invocation may wait
    queued = invoke({"date": DAY}, remaining_ms=1_200)  # 1.2 s left, 1 s kept for the upload

    assert (queued["status"], queued["cds_job_id"], queued["cds_status"]) == (
        "queued", "job-1", "running")
    assert _stored_days(aws) == [] and _tmp_is_empty(tmp_path)
    kept = json.loads(aws.get_object(Bucket=BUCKET, Key=queued["job_key"])["Body"].read())
    assert kept["cds_job_id"] == "job-1" and kept["request"] == cds.requests[0][1]

    cds.remotes["job-1"].polls = 0  # the CDS has finished the job meanwhile
    stored = invoke({"date": DAY})

    assert (stored["status"], stored["cds_job_id"]) == ("stored", "job-1")
    assert len(cds.requests) == 1  # resumed, not submitted again
    assert _stored_days(aws) == [KEY]


def test_a_pending_job_the_cds_no_longer_has_is_submitted_again(aws, cds):
    cds.polls = None
    invoke({"date": DAY}, remaining_ms=1_200)
    del cds.remotes["job-1"]
    cds.polls = 0

    assert invoke({"date": DAY})["cds_job_id"] == "job-2"


def test_a_block_is_one_cds_request_stored_as_one_object_per_day(aws, cds):
    result = invoke({"start": "2023-09-01", "end": "2023-09-03"})

    assert len(cds.requests) == 1 and cds.requests[0][1]["day"] == ["01", "02", "03", "04"]
    keys = [f"raw/reanalysis-era5-land/2023/09/0{n}.nc" for n in (1, 2, 3)]
    assert result["status"] == "stored" and result["keys"] == keys == _stored_days(aws)
    second = aws.get_object(Bucket=BUCKET, Key=keys[1])["Body"].read()
    daily = era5.daily(era5.open_download(second), "reanalysis-era5-land", days=["2023-09-02"])
    assert daily.sizes["date"] == 1  # a whole day, its precipitation closed by the 3rd
    assert invoke({"date": "2023-09-02"})["status"] == "skipped"  # as a one-day ingest of it


def test_a_block_that_does_not_close_inside_its_month_is_refused(aws, cds):
    with pytest.raises(handler_module.InvalidEventError, match="event field 'end'.*2023-09"):
        invoke({"start": "2023-09-20", "end": "2023-09-30"})
    assert cds.requests == []


def test_job_that_finishes_within_the_deadline_is_stored(aws, cds):
    cds.polls = 3
    assert invoke({"date": DAY})["status"] == "stored"


def test_temporary_file_is_removed_after_success(aws, cds, tmp_path):
    invoke({"date": DAY})
    assert _tmp_is_empty(tmp_path)


# --- multipart upload --------------------------------------------------------------------------

def _big_download(path, size_mib: int = 7) -> bytes:
    """A valid, uncompressible NetCDF4 of about `size_mib` MiB (random values)."""
    rng = np.random.default_rng(0)
    times = np.arange("2023-09-01T00", "2023-09-03T01", dtype="datetime64[h]")
    lat, lon = np.linspace(-9, -24, 100), np.linspace(-60, -40, 200)
    n = size_mib * MIB // (2 * 4 * lat.size * lon.size) or 1
    shape = (min(n, times.size), lat.size, lon.size)
    ds = xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"), rng.random(shape, dtype="float32") + 290),
         "tp": (("valid_time", "latitude", "longitude"), rng.random(shape, dtype="float32"))},
        coords={"valid_time": times[:shape[0]], "latitude": lat, "longitude": lon})
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4")
    return path.read_bytes()


def _count_calls(client, operation: str, fail_on: int | None = None) -> list:
    calls = []

    def hook(**_):
        calls.append(operation)
        if fail_on is not None and len(calls) == fail_on:
            raise ConnectionResetError(f"connection reset during {operation} {len(calls)}")

    client.meta.events.register(f"before-call.s3.{operation}", hook)
    return calls


def test_large_file_goes_up_in_parts(aws, cds, monkeypatch, tmp_path):
    cds.payload = _big_download(tmp_path / "big.nc")
    assert len(cds.payload) > 6 * MIB
    monkeypatch.setenv("PICSEL_MULTIPART_THRESHOLD", str(MIB))
    parts = _count_calls(handler_module._s3(), "UploadPart")
    result = invoke({"date": DAY})
    assert len(parts) == 2  # parts of at least 5 MiB: S3's minimum
    assert result["bytes"] == len(cds.payload)
    assert aws.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == cds.payload


def test_failed_part_aborts_the_multipart_upload_and_leaves_no_object(aws, cds, monkeypatch,
                                                                     tmp_path):
    cds.payload = _big_download(tmp_path / "big.nc")
    monkeypatch.setenv("PICSEL_MULTIPART_THRESHOLD", str(MIB))
    s3 = handler_module._s3()
    _count_calls(s3, "UploadPart", fail_on=2)
    aborts = _count_calls(s3, "AbortMultipartUpload")
    with pytest.raises(ConnectionResetError):
        invoke({"date": DAY})
    assert aborts == ["AbortMultipartUpload"]
    assert aws.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert _stored_days(aws) == []
    assert _tmp_is_empty(tmp_path)
