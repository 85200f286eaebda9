"""Glue jobs on the embedded cloud run their script, driven by boto3 as a notebook drives them."""

from __future__ import annotations

import io
import re
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from picsel_nb.localcloud.glue_jobs import RUNTIME_PATH
from tests import cloud_fixtures

cloud = cloud_fixtures.cloud  # the shared embedded-cloud fixture

TERMINAL = {"SUCCEEDED", "FAILED", "TIMEOUT", "STOPPED", "ERROR", "EXPIRED"}

WRITER = """
import sys
import boto3
from awsglue.utils import getResolvedOptions

args = getResolvedOptions(sys.argv, ["JOB_NAME", "bucket", "key", "greeting"])
print("job", args["JOB_NAME"], "run", args["JOB_RUN_ID"])
print("greeting", args["greeting"])
print("a warning on stderr", file=sys.stderr)
boto3.client("s3").put_object(Bucket=args["bucket"], Key=args["key"], Body=args["greeting"].encode())
"""

FAILING = """
import sys
from awsglue.utils import getResolvedOptions

args = getResolvedOptions(sys.argv, ["day"])
print("checking", args["day"])
raise ValueError(f"no data for day {args['day']}")
"""

WAITING = """
import time
print("started", flush=True)
while True:
    time.sleep(0.05)
"""


def new_bucket(cloud) -> str:
    name = f"glue-{uuid.uuid4().hex[:10]}"
    cloud.client("s3").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "sa-east-1"}
    )
    return name


@pytest.fixture
def bucket(cloud) -> str:
    return new_bucket(cloud)


@pytest.fixture
def short_minute_cloud(monkeypatch, tmp_path) -> Iterator[cloud_fixtures.Cloud]:
    """A second embedded cloud whose Glue Timeout minute lasts 0.5 s (PICSEL_GLUE_MINUTE_SECONDS)."""
    monkeypatch.setenv("PICSEL_GLUE_MINUTE_SECONDS", "0.5")
    local = cloud_fixtures.LocalCloud(cloud_fixtures.free_port(), tmp_path)
    local.start()
    try:
        yield cloud_fixtures.Cloud(local)
    finally:
        local.stop()


GLUE_PERMISSIONS = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
     "Resource": ["arn:aws:s3:::glue-*", "arn:aws:s3:::glue-*/*"]}]}


def make_job(cloud, bucket: str, script: str, **options) -> str:
    """Upload ``script`` and create a Python shell job running it; the job's name."""
    name = f"job-{uuid.uuid4().hex[:10]}"
    cloud.client("s3").put_object(Bucket=bucket, Key=f"scripts/{name}.py", Body=script.encode())
    cloud.client("glue").create_job(
        Name=name,
        Role=cloud.role("picsel-test-glue", GLUE_PERMISSIONS, "glue.amazonaws.com"),
        Command={"Name": "pythonshell", "ScriptLocation": f"s3://{bucket}/scripts/{name}.py",
                 "PythonVersion": "3.9"},
        **options,
    )
    return name


def wait_run(glue, job: str, run_id: str, states=TERMINAL, seconds: float = 60) -> dict:
    """Poll GetJobRun until the run reaches one of ``states``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = glue.get_job_run(JobName=job, RunId=run_id)["JobRun"]
        if run["JobRunState"] in states:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run['JobRunState']} after {seconds} s")


def log_lines(cloud, group: str, stream: str) -> list[str]:
    events = cloud.client("logs").get_log_events(logGroupName=group, logStreamName=stream,
                                                 startFromHead=True)["events"]
    return [e["message"] for e in events]


def wait_log_line(cloud, group: str, stream: str, text: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if text in log_lines(cloud, group, stream):
                return
        except ClientError:
            pass  # the stream appears with its first line
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never reached {group}/{stream}")


def test_run_executes_the_script_with_overlaid_arguments_and_logs_its_output(cloud, bucket):
    job = make_job(cloud, bucket, WRITER, GlueVersion="3.0", MaxCapacity=0.0625, DefaultArguments={
        "--bucket": bucket, "--key": "out/default.txt", "--greeting": "default"})
    glue = cloud.client("glue")
    arguments = {"--greeting": "hello", "--key": "out/run.txt"}
    run_id = glue.start_job_run(JobName=job, Arguments=arguments)["JobRunId"]
    assert re.fullmatch(r"jr_[0-9a-f]{64}", run_id)

    run = wait_run(glue, job, run_id)

    assert run["JobRunState"] == "SUCCEEDED", run.get("ErrorMessage")
    assert run["ExecutionTime"] >= 1
    assert run["StartedOn"] <= run["CompletedOn"] and run["LastModifiedOn"] >= run["StartedOn"]
    assert run["Arguments"] == arguments
    assert (run["Attempt"], run["GlueVersion"], run["MaxCapacity"]) == (0, "3.0", 0.0625)
    assert run["LogGroupName"] == "/aws-glue/jobs"
    body = cloud.client("s3").get_object(Bucket=bucket, Key="out/run.txt")["Body"].read()
    assert body == b"hello"
    assert log_lines(cloud, "/aws-glue/jobs/output", run_id) == [f"job {job} run {run_id}",
                                                                 "greeting hello"]
    assert log_lines(cloud, "/aws-glue/jobs/error", run_id) == ["a warning on stderr"]
    assert [r["Id"] for r in glue.get_job_runs(JobName=job)["JobRuns"]] == [run_id]


def test_failing_script_fails_the_run_with_the_exception_and_a_metric(cloud, bucket):
    job = make_job(cloud, bucket, FAILING, MaxRetries=1)
    glue = cloud.client("glue")
    run_id = glue.start_job_run(JobName=job, Arguments={"--day": "2023-09-01"})["JobRunId"]

    run = wait_run(glue, job, run_id)

    assert run["JobRunState"] == "FAILED"
    assert run["ErrorMessage"] == "ValueError: no data for day 2023-09-01"
    assert "Traceback (most recent call last):" in log_lines(cloud, "/aws-glue/jobs/error", run_id)
    metrics = cloud.client("cloudwatch").list_metrics(Namespace="Glue", MetricName="JobRunsFailed",
                                                      Dimensions=[{"Name": "JobName", "Value": job}])
    assert len(metrics["Metrics"]) == 1
    deadline = time.monotonic() + 30  # MaxRetries=1: Glue starts attempt 1 of the same run
    while len(runs := glue.get_job_runs(JobName=job)["JobRuns"]) < 2:
        assert time.monotonic() < deadline, "no retry attempt"
        time.sleep(0.1)
    retry = wait_run(glue, job, runs[0]["Id"])
    assert (retry["Attempt"], retry["PreviousRunId"], retry["JobRunState"]) == (1, run_id, "FAILED")


def test_output_streams_while_running_and_batch_stop_job_run_stops_the_run(cloud, bucket):
    job = make_job(cloud, bucket, WAITING, ExecutionProperty={"MaxConcurrentRuns": 1})
    glue = cloud.client("glue")
    run_id = glue.start_job_run(JobName=job)["JobRunId"]
    wait_log_line(cloud, "/aws-glue/jobs/output", run_id, "started")
    assert glue.get_job_run(JobName=job, RunId=run_id)["JobRun"]["JobRunState"] == "RUNNING"
    with pytest.raises(ClientError) as second:
        glue.start_job_run(JobName=job)
    assert second.value.response["Error"]["Code"] == "ConcurrentRunsExceededException"

    answer = glue.batch_stop_job_run(JobName=job, JobRunIds=[run_id, "jr_" + "0" * 64])

    assert answer["SuccessfulSubmissions"] == [{"JobName": job, "JobRunId": run_id}]
    assert answer["Errors"][0]["ErrorDetail"]["ErrorCode"] == "EntityNotFoundException"
    assert wait_run(glue, job, run_id)["JobRunState"] == "STOPPED"
    again = glue.batch_stop_job_run(JobName=job, JobRunIds=[run_id])
    assert again["Errors"][0]["ErrorDetail"]["ErrorCode"] == "InvalidInputException"


def test_run_longer_than_the_job_timeout_times_out(short_minute_cloud):
    cloud = short_minute_cloud
    job = make_job(cloud, new_bucket(cloud), WAITING, Timeout=1)
    glue = cloud.client("glue")
    run_id = glue.start_job_run(JobName=job)["JobRunId"]

    run = wait_run(glue, job, run_id)

    assert run["JobRunState"] == "TIMEOUT"
    assert run["Timeout"] == 1
    assert "timed out" in run["ErrorMessage"]


def _wheel(name: str, source: str) -> bytes:
    """A minimal pure-Python wheel holding package ``name``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", source)
        info = f"{name}-1.0.dist-info"
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return buffer.getvalue()


def test_extra_py_files_and_additional_modules_are_importable(cloud, bucket):
    s3 = cloud.client("s3")
    s3.put_object(Bucket=bucket, Key="libs/greetlib-1.0-py3-none-any.whl",
                  Body=_wheel("greetlib", "def hello():\n    return 'hello from a wheel'\n"))
    s3.put_object(Bucket=bucket, Key="libs/helpers.py", Body=b"ANSWER = 42\n")
    script = "import boto3, greetlib, helpers\nprint(greetlib.hello(), helpers.ANSWER)\n"
    job = make_job(cloud, bucket, script, DefaultArguments={
        "--extra-py-files": f"s3://{bucket}/libs/greetlib-1.0-py3-none-any.whl,"
                            f"s3://{bucket}/libs/helpers.py",
        "--additional-python-modules": "boto3>=1.20",  # installed in the venv: accepted
    })
    glue = cloud.client("glue")
    run_id = glue.start_job_run(JobName=job)["JobRunId"]

    run = wait_run(glue, job, run_id)

    assert run["JobRunState"] == "SUCCEEDED", run.get("ErrorMessage")
    assert log_lines(cloud, "/aws-glue/jobs/output", run_id) == ["hello from a wheel 42"]


def test_missing_script_or_module_fails_the_run_with_a_clear_message(cloud, bucket):
    glue = cloud.client("glue")
    job = make_job(cloud, bucket, "print('never')\n")
    cloud.client("s3").delete_object(Bucket=bucket, Key=f"scripts/{job}.py")
    run = wait_run(glue, job, glue.start_job_run(JobName=job)["JobRunId"])
    assert run["JobRunState"] == "FAILED"
    assert run["ErrorMessage"] == f"s3://{bucket}/scripts/{job}.py does not exist"

    job = make_job(cloud, bucket, "print('never')\n")
    arguments = {"--additional-python-modules": "surely-not-installed-pkg==1.0"}
    run = wait_run(glue, job, glue.start_job_run(JobName=job, Arguments=arguments)["JobRunId"])
    assert run["JobRunState"] == "FAILED"
    assert "surely-not-installed-pkg==1.0 is not installed" in run["ErrorMessage"]


def test_unknown_run_or_job_is_entity_not_found(cloud, bucket):
    glue = cloud.client("glue")
    job = make_job(cloud, bucket, "print('hi')\n")
    for name, run_id in ((job, "jr_" + "1" * 64), ("no-such-job", "jr_" + "1" * 64)):
        with pytest.raises(ClientError) as error:
            glue.get_job_run(JobName=name, RunId=run_id)
        assert error.value.response["Error"]["Code"] == "EntityNotFoundException"


def test_update_job_replaces_the_definition_and_the_next_run_uses_it(cloud, bucket):
    job = make_job(cloud, bucket, "print('old script')\n", Description="old", Timeout=5,
                   DefaultArguments={"--old": "x"}, Tags={"team": "picsel"})
    glue = cloud.client("glue")
    before = glue.get_job(JobName=job)["Job"]
    key = f"scripts/{job}-v2.py"
    cloud.client("s3").put_object(Bucket=bucket, Key=key, Body=b"print('new script')\n")
    command = {"Name": "pythonshell", "ScriptLocation": f"s3://{bucket}/{key}",
               "PythonVersion": "3.9"}

    answer = glue.update_job(JobName=job, JobUpdate={"Role": before["Role"], "Command": command,
                                                     "MaxRetries": 2})

    assert answer["JobName"] == job
    after = glue.get_job(JobName=job)["Job"]
    assert (after["Command"], after["MaxRetries"]) == (command, 2)
    assert "Description" not in after and "Timeout" not in after  # not given: reset
    assert after["DefaultArguments"] == {}
    assert after["CreatedOn"] == before["CreatedOn"]
    assert after["LastModifiedOn"] >= before["LastModifiedOn"]
    assert glue.get_tags(ResourceArn=f"arn:aws:glue:sa-east-1:123456789012:job/{job}")["Tags"] == {
        "team": "picsel"}
    run_id = glue.start_job_run(JobName=job)["JobRunId"]
    assert wait_run(glue, job, run_id)["JobRunState"] == "SUCCEEDED"
    assert log_lines(cloud, "/aws-glue/jobs/output", run_id) == ["new script"]


def test_update_of_an_unknown_job_is_entity_not_found(cloud):
    with pytest.raises(ClientError) as error:
        cloud.client("glue").update_job(JobName="no-such-job", JobUpdate={"Role": "r"})
    assert error.value.response["Error"]["Code"] == "EntityNotFoundException"
    assert error.value.response["Error"]["Message"] == "Job no-such-job not found."


def test_get_resolved_options_parses_like_glue(monkeypatch):
    monkeypatch.syspath_prepend(str(RUNTIME_PATH))
    monkeypatch.delitem(sys.modules, "awsglue.utils", raising=False)
    from awsglue.utils import GlueArgumentError, getResolvedOptions

    argv = ["script.py", "--JOB_NAME", "j", "--day", "2023-09-01", "--TempDir", "s3://t/",
            "--unrelated", "x", "--JOB_RUN_ID", "jr_1"]
    args = getResolvedOptions(argv, ["JOB_NAME", "day"])
    assert (args["JOB_NAME"], args["day"], args["JOB_RUN_ID"]) == ("j", "2023-09-01", "jr_1")
    assert args["TempDir"] == args["RedshiftTempDir"] == "s3://t/"
    assert args["job_bookmark_option"] == "job-bookmark-disable"
    assert "unrelated" not in args
    with pytest.raises(GlueArgumentError, match="--area"):
        getResolvedOptions(argv, ["area"])
    with pytest.raises(RuntimeError, match="reserved"):
        getResolvedOptions(argv, ["JOB_RUN_ID"])
