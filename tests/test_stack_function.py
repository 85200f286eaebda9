"""The ingest Lambda's package, deployment and invocation.

Unit tests first (zips, retries, results); then the real thing on the embedded cloud: the built
function zip and layer deployed, the secret pointing at the loopback CDS, days ingested.
"""

from __future__ import annotations

import json
import zipfile
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from picsel_nb import era5
from picsel_nb.settings import LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack import errors, function
from picsel_nb.stack.context import Stack
from tests.cloud_fixtures import cloud  # noqa: F401

DAY = "2023-09-01"


# --- the package --------------------------------------------------------------------------------

def test_zip_is_deterministic_sorted_and_timeless(tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("b.py", "a.py"):
        (tmp_path / "src" / name).write_text(f"# {name}\n")
    files = [("pkg/b.py", tmp_path / "src/b.py"), ("pkg/a.py", tmp_path / "src/a.py")]
    one = function.write_zip(tmp_path / "one.zip", files).read_bytes()
    (tmp_path / "src/a.py").touch()  # a newer mtime changes nothing
    two = function.write_zip(tmp_path / "two.zip", reversed(files)).read_bytes()
    assert one == two
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        assert archive.namelist() == ["pkg/a.py", "pkg/b.py"]
        assert {info.date_time for info in archive.infolist()} == {function.ZIP_TIME}


@pytest.fixture(scope="session")
def package() -> function.Package:
    """The real package, built once (the layer comes from the build cache after the first run)."""
    return function.build_package(get_settings())


def test_function_zip_has_the_handler_at_its_root_and_the_picsel_nb_sources(package):
    with zipfile.ZipFile(package.function_zip) as archive:
        names = archive.namelist()
    assert "handler.py" in names
    assert {"picsel_nb/__init__.py", "picsel_nb/era5/__init__.py",
            "picsel_nb/stack/secret.py"} <= set(names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert names == sorted(names)


def test_layer_holds_the_third_party_packages_but_not_the_runtimes(package):
    with zipfile.ZipFile(package.layer_zip) as archive:
        tops = {name.split("/")[1] for name in archive.namelist()}
    assert {"cdsapi", "ecmwf", "aws_lambda_powertools", "numpy", "pandas", "xarray",
            "netCDF4"} <= tops
    assert not tops & {"boto3", "botocore", "s3transfer"}


def test_package_fits_lambdas_unzipped_limit(package):
    sizes = package.sizes()
    assert sizes["function_unzipped"] + sizes["layer_unzipped"] < function.UNZIPPED_LIMIT
    assert sizes["function_zip"] < 1024 * 1024


def test_rebuild_comes_from_the_cache(package):
    layer_written = package.layer_zip.stat().st_mtime_ns
    again = function.build_package(get_settings())
    assert again.layer_zip == package.layer_zip
    assert again.layer_zip.stat().st_mtime_ns == layer_written


def test_function_zip_is_cached_by_its_sources(monkeypatch, tmp_path):
    source = tmp_path / "picsel_nb"
    (source / "era5").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "era5" / "__init__.py").write_text("X = 1\n")
    (source / "era5" / "__pycache__").mkdir()
    (source / "era5" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"stale")
    monkeypatch.setattr(function, "PACKAGE_DIR", source)
    first = function.build_function_zip(tmp_path)
    written = first.stat().st_mtime_ns
    assert function.build_function_zip(tmp_path) == first and first.stat().st_mtime_ns == written
    with zipfile.ZipFile(first) as archive:
        assert archive.namelist() == ["handler.py", "picsel_nb/__init__.py",
                                      "picsel_nb/era5/__init__.py"]
    (source / "era5" / "__init__.py").write_text("X = 2\n")
    assert function.build_function_zip(tmp_path) != first


# --- retries and results, without a cloud -----------------------------------------------------

def _role_not_ready() -> ClientError:
    return ClientError({"Error": {"Code": "InvalidParameterValueException",
                                  "Message": "The role defined for the function cannot be "
                                             "assumed by Lambda."}}, "CreateFunction")


def test_role_not_yet_assumable_is_retried_until_it_is(monkeypatch):
    monkeypatch.setattr(errors.time, "sleep", lambda seconds: None)
    made = []

    def create(**kwargs):
        made.append(kwargs)
        if len(made) < 3:
            raise _role_not_ready()
        return {"FunctionName": kwargs["FunctionName"]}

    assert function._assumable(create, FunctionName="f") == {"FunctionName": "f"}
    assert len(made) == 3


def test_other_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr(errors.time, "sleep", lambda seconds: None)
    made = []

    def create(**kwargs):
        made.append(kwargs)
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Create")

    with pytest.raises(ClientError, match="no"):
        function._assumable(create, FunctionName="f")
    assert len(made) == 1


def test_failed_days_are_reported_not_hidden(monkeypatch, capsys):
    def fake_invoke(stack, day, **event):
        if day.day == 2:
            return function.DayResult(day, {"errorType": "InvalidEventError",
                                            "errorMessage": "event field 'area': …"}, "Unhandled")
        return function.DayResult(day, {"status": "stored"})

    monkeypatch.setattr(function, "invoke_day", fake_invoke)
    results = function.invoke_range(None, "2023-09-01", "2023-09-03")
    assert [r.day for r in results] == [date(2023, 9, d) for d in (1, 2, 3)]
    assert [r.ok for r in results] == [True, False, True]
    assert (results[1].error_type, results[1].error_message) == (
        "InvalidEventError", "event field 'area': …")
    assert "2023-09-02: InvalidEventError: event field 'area'" in capsys.readouterr().out


def test_range_ending_before_it_starts_is_refused():
    with pytest.raises(ValueError, match="before start"):
        function.invoke_range(None, "2023-09-03", "2023-09-01")


# --- on the embedded cloud ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(cloud, package):  # noqa: F811
    """The stack with buckets, the CDS secret (loopback CDS), the role and the function."""
    from picsel_nb.localcloud.cds_api import DEFAULT_TOKEN, api_url
    from picsel_nb.stack import buckets, roles, secret

    settings = get_settings()
    stack = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                  client_factory=cloud.client)
    buckets.ensure_input_bucket(stack)
    secret.ensure_secret(stack, api_url(cloud.endpoint_url), DEFAULT_TOKEN)
    arn = secret.secret_arn(stack)
    role_arn = roles.ensure_role(stack, stack.names.lambda_role,
                                 *roles.role_documents(stack, "lambda", SecretArn=arn))
    config = function.ensure_function(stack, role_arn, stack.names.secret,
                                      stack.names.input_bucket, package=package)
    return SimpleNamespace(stack=stack, role_arn=role_arn, config=config, token=DEFAULT_TOKEN,
                           s3=cloud.client("s3"), cloud=cloud)


def _raw_key(day: str) -> str:
    return f"raw/reanalysis-era5-land/{day.replace('-', '/')}.nc"


def _exists(deployed, key: str) -> bool:
    listing = deployed.s3.list_objects_v2(Bucket=deployed.stack.names.input_bucket, Prefix=key)
    return listing.get("KeyCount", 0) > 0


def test_function_is_configured_without_the_secret(deployed):
    config = deployed.config
    assert (config["Runtime"], config["Handler"], config["Architectures"]) == (
        "python3.11", "handler.handler", ["x86_64"])
    variables = config["Environment"]["Variables"]
    assert variables["CDS_SECRET_NAME"] == deployed.stack.names.secret
    assert variables["INPUT_BUCKET"] == deployed.stack.names.input_bucket
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == deployed.stack.metrics_namespace
    assert deployed.token not in json.dumps(config, default=str)
    assert len(config["Layers"]) == 1


def test_invoking_a_day_stores_a_file_the_pipeline_reads(deployed):
    result = function.invoke_day(deployed.stack, DAY)
    assert result.ok, result.payload
    assert result.payload["status"] in ("stored", "skipped")
    assert result.payload["key"] == _raw_key(DAY)
    body = deployed.s3.get_object(Bucket=deployed.stack.names.input_bucket,
                                  Key=_raw_key(DAY))["Body"].read()
    assert len(body) == result.payload["bytes"]
    day = era5.daily(era5.open_download(body), "reanalysis-era5-land", days=[DAY])
    assert set(day.data_vars) == {"t2m", "tp"} and day.sizes["date"] == 1


def test_invoking_the_same_day_again_skips_it(deployed):
    function.invoke_day(deployed.stack, DAY)
    result = function.invoke_day(deployed.stack, DAY)
    assert result.ok and result.payload["status"] == "skipped"


def test_invalid_event_is_a_function_error_naming_the_field_and_stores_nothing(deployed):
    result = function.invoke_day(deployed.stack, "2023-09-02", area=[1, 2])
    assert not result.ok and result.function_error == "Unhandled"
    assert result.error_type == "InvalidEventError"
    assert "'area'" in result.error_message and "accepted" in result.error_message
    assert not _exists(deployed, _raw_key("2023-09-02"))
    errors = deployed.cloud.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/Lambda", MetricName="Errors", Statistics=["Sum"], Period=60,
        Dimensions=[{"Name": "FunctionName", "Value": deployed.stack.names.lambda_function}],
        StartTime=datetime.now(UTC) - timedelta(hours=1),
        EndTime=datetime.now(UTC) + timedelta(minutes=1))
    assert sum(point["Sum"] for point in errors["Datapoints"]) >= 1


def test_invoke_range_reports_every_days_failure(deployed):
    results = function.invoke_range(deployed.stack, "2023-09-02", "2023-09-03",
                                    variables=["snowfall"])
    assert [(r.day.isoformat(), r.ok) for r in results] == [("2023-09-02", False),
                                                           ("2023-09-03", False)]
    assert all("'variables'" in r.error_message for r in results)


@contextmanager
def cds_faults(deployed, **faults):
    """The function's secret points at a loopback CDS key with `faults` for the duration."""
    from picsel_nb.localcloud.cds_api import api_url, issue_token
    from picsel_nb.stack import secret

    url = api_url(deployed.cloud.endpoint_url)
    secret.ensure_secret(deployed.stack, url,
                         issue_token(deployed.cloud.endpoint_url, faults=faults))
    try:
        yield
    finally:
        secret.ensure_secret(deployed.stack, url, deployed.token)


@pytest.mark.parametrize("faults, error_type, words", [
    ({"job_error": "the request failed: no data"}, "HTTPError", "no data"),  # as cdsapi raises it
    ({"truncate_bytes": 1000}, "DownloadError", "downloaded"),
])
def test_cds_failure_is_a_function_error_and_stores_nothing(deployed, faults, error_type, words):
    with cds_faults(deployed, **faults):
        result = function.invoke_day(deployed.stack, "2023-09-04")
    assert (result.ok, result.error_type) == (False, error_type), result.payload
    assert words in result.error_message
    assert not _exists(deployed, _raw_key("2023-09-04"))


def test_cds_job_outlasting_the_function_is_queued_and_resumed_by_the_next_call(deployed,
                                                                              package):
    stack, names = deployed.stack, deployed.stack.names
    short = 33  # the handler keeps 30 s for the upload: 3 s to wait for the CDS
    function.ensure_function(stack, deployed.role_arn, names.secret, names.input_bucket,
                             package=package, timeout=short)
    try:
        with cds_faults(deployed, queue_seconds=4):
            queued = function.invoke_day(stack, "2023-09-05")
            assert queued.ok and queued.payload["status"] == "queued", queued.payload
            assert not _exists(deployed, _raw_key("2023-09-05"))
            resumed = function.invoke_day(stack, "2023-09-05")
    finally:
        function.ensure_function(stack, deployed.role_arn, names.secret, names.input_bucket,
                                 package=package)
    assert resumed.payload["status"] == "stored", resumed.payload
    assert resumed.payload["cds_job_id"] == queued.payload["cds_job_id"]
    assert _exists(deployed, _raw_key("2023-09-05"))


def test_function_logs_hold_json_lines_and_metrics_but_never_the_key(deployed):
    function.invoke_day(deployed.stack, DAY, force=True)
    logs = deployed.cloud.client("logs")
    group = f"/aws/lambda/{deployed.stack.names.lambda_function}"
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=group)
    messages = [event["message"] for page in pages for event in page["events"]]
    assert any('"BytesDownloaded"' in m and '"_aws"' in m for m in messages)
    assert any('"message":"stored"' in m.replace(" ", "") for m in messages)
    assert not [m for m in messages if deployed.token in m]
    assert not [m for m in messages if m.startswith("[INFO]")]  # botocore stays quiet


def test_ensure_function_again_changes_nothing_then_applies_a_new_setting(deployed, package):
    stack, names = deployed.stack, deployed.stack.names
    same = function.ensure_function(stack, deployed.role_arn, names.secret, names.input_bucket,
                                    package=package)
    assert same["CodeSha256"] == package.code_sha256
    assert same["LastModified"] == deployed.config["LastModified"]
    changed = function.ensure_function(stack, deployed.role_arn, names.secret,
                                       names.input_bucket, package=package, timeout=120)
    assert changed["Timeout"] == 120 and changed["Layers"] == same["Layers"]
    function.ensure_function(stack, deployed.role_arn, names.secret, names.input_bucket,
                             package=package)


def test_delete_function_removes_it_and_its_layer_versions(deployed, package):
    stack = deployed.stack
    assert function.delete_function(stack) is True
    assert function.get_function(stack) is None
    assert list(function._layer_versions(stack)) == []
    assert function.delete_function(stack) is False
