"""The contours Glue job as the stack deploys it: code upload, definition, runs through StartJobRun
on the embedded cloud, waiting with the custom waiter."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
import subprocess
import sys
import time
import zipfile
from datetime import date
from importlib import metadata

import boto3
import pytest
from botocore.stub import Stubber

from picsel_nb import era5, products
from picsel_nb.localcloud.glue_jobs import RUNTIME_PATH
from picsel_nb.settings import DEMO_DATASET, LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack import buckets, catalog, job
from picsel_nb.stack.context import Stack
from picsel_nb.stack.waiters import DeadlineError, wait_for_job_run
from tests.cloud_fixtures import cloud  # noqa: F401

DAYS = [date(2023, 9, 1), date(2023, 9, 2), date(2023, 9, 3)]
SCRIPT_OPTIONS = ("input_bucket", "output_bucket", "dataset", "dates", "redo", "t2m_levels",
                  "tp_levels")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The picsel_nb wheel, built once into a build dir of the session from a snapshot of the
    sources (so edits made to the tree meanwhile do not change its hash)."""
    snapshot = tmp_path_factory.mktemp("snapshot")
    shutil.copy2(job.REPO / "pyproject.toml", snapshot)
    shutil.copytree(job.REPO / "picsel_nb", snapshot / "picsel_nb",
                    ignore=shutil.ignore_patterns("__pycache__"))
    settings = dataclasses.replace(get_settings(), build_dir=tmp_path_factory.mktemp("build"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job, "REPO", snapshot)
        began = time.perf_counter()
        path = job.build_wheel(settings)
        print(f"wheel built in {time.perf_counter() - began:.1f} s")
        yield settings, path


def test_definition_is_a_glue_5_spark_job_with_every_script_argument(offline_stack):
    code = {"script": "s3://in/scripts/glue/contours_job.py", "wheel": "s3://in/w.whl"}
    definition = job.job_definition(offline_stack, "arn:aws:iam::1:role/r", code)
    assert definition["Command"] == {"Name": "glueetl", "ScriptLocation": code["script"],
                                     "PythonVersion": "3"}
    assert (definition["GlueVersion"], definition["WorkerType"], definition["NumberOfWorkers"]) == (
        "5.0", "G.1X", 2)
    assert definition["ExecutionProperty"] == {"MaxConcurrentRuns": 1}
    arguments = definition["DefaultArguments"]
    assert {f"--{name}" for name in SCRIPT_OPTIONS} <= set(arguments)
    assert arguments["--dates"] == "all-new" and arguments["--redo"] == "false"
    assert arguments["--job-language"] == "python"
    assert arguments["--enable-continuous-cloudwatch-log"] == "true"
    pinned = definition["NonOverridableArguments"]
    assert set(pinned) == {"--scriptLocation", "--additional-python-modules",
                           "--python-modules-installer-option"}
    assert not set(pinned) & set(arguments)  # the code is never a default a run may replace
    assert pinned["--scriptLocation"] == code["script"]
    modules = pinned["--additional-python-modules"].split(",")
    assert modules[0] == code["wheel"]
    assert f"orjson=={metadata.version('orjson')}" in modules
    assert f"contourpy=={metadata.version('contourpy')}" in modules
    assert pinned["--python-modules-installer-option"] == "--no-deps"


IMPORTS_OF_A_DAY = """
import runpy, sys
import pyspark  # Glue's Spark runtime, and what it imports, is Glue's own
before = set(sys.modules)
sys.path.insert(0, sys.argv[1])
job = runpy.run_path(sys.argv[2], run_name="job")
fields = job["era5"].daily(job["era5"].open_download(open(sys.argv[3], "rb").read()),
                           sys.argv[4], days=[sys.argv[5]])
for name in fields.data_vars:
    job["render"](fields[name].isel(date=0), None)
from importlib.metadata import packages_distributions
owners = packages_distributions()
print(sorted({owner for name in set(sys.modules) - before if "." not in name
              for owner in owners.get(name, [])}))
"""


def test_every_third_party_import_of_the_job_is_pinned_or_preinstalled_on_glue(tmp_path):
    """The wheel is installed without dependencies: whatever processing a day imports must be
    pinned or come with Glue 5.0."""
    glue_5 = {"numpy", "pandas", "matplotlib", "pillow", "certifi", "python-dateutil", "pytz",
              "pyparsing", "cycler", "kiwisolver", "fonttools", "boto3", "botocore", "six",
              "s3transfer", "jmespath", "urllib3", "tzdata", "contourpy", "packaging"}
    raw = tmp_path / "raw.nc"
    raw.write_bytes(era5.synthetic_download(DEMO_DATASET, era5.build_request(DEMO_DATASET,
                                                                             DAYS[0])))
    done = subprocess.run([sys.executable, "-c", IMPORTS_OF_A_DAY, str(RUNTIME_PATH),
                           str(job.SCRIPT), str(raw), DEMO_DATASET, DAYS[0].isoformat()],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {name.lower() for name in ast.literal_eval(done.stdout)} - {"picsel-nb"}
    pinned = {name.lower() for name in job.GLUE_PACKAGES}
    assert "netcdf4" in imported  # the reading engine was exercised
    assert imported - glue_5 - pinned == set()


def test_wheel_holds_the_package_and_comes_from_the_cache(wheel):
    settings, path = wheel
    names = zipfile.ZipFile(path).namelist()
    assert {"picsel_nb/products.py", "picsel_nb/era5/aggregation.py",
            "picsel_nb/stack/buckets.py"} <= set(names)
    assert not [name for name in names if "__pycache__" in name]
    began = time.perf_counter()
    assert job.build_wheel(settings) == path
    assert time.perf_counter() - began < 1
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import picsel_nb.products as p;"
            "print(p.__file__)")
    done = subprocess.run([sys.executable, "-I", "-c", code, str(path)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip().startswith(str(path))


def test_start_run_refuses_bad_dates_before_calling_glue(offline_stack):
    with pytest.raises(ValueError, match="accepted: \"all-new\""):
        job.start_run(offline_stack, dates="last week")


def test_run_wait_past_its_deadline_names_the_run_and_its_state():
    glue = boto3.client("glue", region_name="sa-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x")
    with Stubber(glue) as stub:
        for _ in range(3):
            stub.add_response("get_job_run", {"JobRun": {"Id": "jr_1", "JobRunState": "RUNNING"}},
                              {"JobName": "j", "RunId": "jr_1"})
        with pytest.raises(DeadlineError, match="run jr_1 of j is still RUNNING after 0.02 s"):
            wait_for_job_run(glue, "j", "jr_1", deadline_s=0.02, delay_s=0.01)


# --- on the embedded cloud ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(cloud, wheel):  # noqa: F811
    """A stack of its own (prefix picsel-job) with both buckets and three raw days."""
    settings = dataclasses.replace(wheel[0], prefix="picsel-job")
    stack = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                  client_factory=cloud.client)
    buckets.ensure_input_bucket(stack)
    buckets.ensure_output_bucket(stack)
    for day in DAYS:
        body = era5.synthetic_download(DEMO_DATASET, era5.build_request(DEMO_DATASET, day))
        buckets.publish(stack, stack.names.input_bucket,
                        f"raw/{DEMO_DATASET}/{day:%Y/%m/%d}.nc", body)
    yield stack
    job.delete_job(stack)
    for bucket in (stack.names.input_bucket, stack.names.output_bucket):
        buckets.delete_bucket(stack, bucket)


def test_job_is_deployed_with_its_code_in_the_input_bucket(stack, wheel):
    described = job.ensure_job(stack, wheel=wheel[1])
    pinned = described["NonOverridableArguments"]
    wheel_url = pinned["--additional-python-modules"].split(",")[0]
    assert described["Command"]["ScriptLocation"] == pinned["--scriptLocation"] == (
        f"s3://{stack.names.input_bucket}/scripts/glue/contours_job.py")
    assert wheel_url.startswith(f"s3://{stack.names.input_bucket}/scripts/glue/")
    assert wheel_url.endswith(".whl")
    keys = {item["Key"] for item in buckets.list_objects(stack, stack.names.input_bucket,
                                                          "scripts/glue/")}
    assert {"scripts/glue/contours_job.py", wheel_url.split("/", 3)[3]} <= keys
    assert job.ensure_job(stack, wheel=wheel[1])["LastModifiedOn"] == described["LastModifiedOn"]


def test_run_through_start_job_run_publishes_every_product(stack, wheel):
    job.ensure_job(stack, wheel=wheel[1])
    began = time.perf_counter()
    result = job.run(stack, job.date_range(DAYS[0], DAYS[-1]), deadline_s=300)
    print(f"StartJobRun for 3 days: {time.perf_counter() - began:.1f} s "
          f"(job {result['duration_s']} s)")

    assert result["state"] == "SUCCEEDED", result["error"]
    assert result["run_id"].startswith("jr_") and result["error"] is None
    expected = sorted(products.key(kind, variable, day) for kind in products.KINDS
                      for variable in products.SHORT_NAMES for day in DAYS)
    assert result["products"] == expected
    logs = stack.client("logs").get_log_events(
        logGroupName="/aws-glue/jobs/output", logStreamName=result["run_id"], startFromHead=True)
    lines = [event["message"] for event in logs["events"]]
    assert any(line.startswith("summary: 3 days: 3 published, 0 skipped, 0 failed; 24 objects")
               for line in lines), lines


def test_crawler_catalogs_what_the_run_wrote(stack):
    catalog.ensure_crawler(stack)
    assert catalog.run_crawler(stack, deadline_s=120, delay_s=0.2)["status"] == "SUCCEEDED"

    tables = catalog.describe_tables(stack)

    print(json.dumps(tables, default=str)[:1500])
    assert [(t["name"], t["partition_keys"]) for t in tables] == [
        ("contours", ["variable", "date"])]
    assert tables[0]["partitions"] == [[v, d.isoformat()] for v in ("t2m", "tp") for d in DAYS]
    assert [name for name, _ in tables[0]["columns"]] == list(products.CATALOG_COLUMNS)
    catalog.delete_crawler(stack)
    catalog.delete_database(stack)


def test_a_changed_definition_updates_the_job(stack, wheel):
    changed = job.ensure_job(stack, wheel=wheel[1], workers=3)
    assert changed["NumberOfWorkers"] == 3
    assert job.ensure_job(stack, wheel=wheel[1])["NumberOfWorkers"] == 2


def test_second_run_of_all_new_days_writes_nothing(stack, wheel):
    job.ensure_job(stack, wheel=wheel[1])
    result = job.run(stack, deadline_s=300)
    assert (result["state"], result["products"]) == ("SUCCEEDED", [])


def test_a_run_cannot_swap_the_jobs_code(stack, wheel):
    job.ensure_job(stack, wheel=wheel[1])
    bucket, marker = stack.names.input_bucket, "scripts/glue/swapped.txt"
    buckets.publish(stack, bucket, "scripts/glue/evil.py",
                    f"import boto3\nboto3.client('s3').put_object(Bucket='{bucket}', "
                    f"Key='{marker}', Body=b'x')\n".encode())
    glue = stack.client("glue")
    run_id = glue.start_job_run(JobName=stack.names.glue_job, Arguments={
        "--scriptLocation": f"s3://{bucket}/scripts/glue/evil.py",
        "--additional-python-modules": f"s3://{bucket}/scripts/glue/evil.py",
        "--dates": job.date_range(DAYS[0], DAYS[0])})["JobRunId"]

    done = job.wait_run(stack, run_id, deadline_s=300)

    assert done["JobRunState"] == "SUCCEEDED", done.get("ErrorMessage")
    logs = stack.client("logs").get_log_events(
        logGroupName="/aws-glue/jobs/output", logStreamName=run_id, startFromHead=True)
    assert any(event["message"].startswith("summary: 1 day: ")  # the job's own script ran
               for event in logs["events"])
    assert buckets.list_objects(stack, bucket, marker) == []
    stack.client("s3").delete_object(Bucket=bucket, Key="scripts/glue/evil.py")


def test_a_failed_day_fails_the_run_with_its_summary(stack, wheel):
    job.ensure_job(stack, wheel=wheel[1])
    bad_key = f"raw/{DEMO_DATASET}/2023/09/04.nc"
    buckets.publish(stack, stack.names.input_bucket, bad_key, b"CDF\x01 truncated")

    result = job.run(stack, deadline_s=300)

    assert result["state"] == "FAILED"
    assert result["error"].startswith("JobFailed: 1 of 4 days failed: 2023-09-04 (corrupt raw file "
                                      f"s3://{stack.names.input_bucket}/{bad_key}: ")
    stack.client("s3").delete_object(Bucket=stack.names.input_bucket, Key=bad_key)


def test_delete_job_says_whether_it_existed(stack, wheel):
    job.ensure_job(stack, wheel=wheel[1])
    assert job.delete_job(stack) is True
    assert job.get_job(stack) is None
    assert job.delete_job(stack) is False
