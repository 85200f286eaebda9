"""glueetl jobs on the embedded cloud run on Apache Spark, and log as Glue 5.0 does."""

from __future__ import annotations

import uuid

import pytest

from picsel_nb.localcloud import glue_spark
from tests import cloud_fixtures
from tests.test_localcloud_glue import GLUE_PERMISSIONS, log_lines, new_bucket, wait_run

cloud = cloud_fixtures.cloud  # the shared embedded-cloud fixture
pytestmark = pytest.mark.spark

SPARK_SCRIPT = """
import sys
import boto3
from awsglue.utils import getResolvedOptions
from pyspark import SparkContext

args = getResolvedOptions(sys.argv, ["JOB_NAME", "bucket", "TempDir"])
sc = SparkContext.getOrCreate()
conf = dict(sc.getConf().getAll())
print("master", sc.master)
print("ui", conf.get("spark.ui.enabled"), "host", conf.get("spark.driver.host"))
print("scratch", conf.get("spark.local.dir"))
print("tempdir", args["TempDir"])

def put(n):
    boto3.client("s3").put_object(Bucket=args["bucket"], Key=f"out/{n}.txt", Body=str(n * n).encode())
    return n * n

print("sum", sum(sc.parallelize(range(4), 4).map(put).collect()))
print("a note on stderr", file=sys.stderr)
"""

FAILING_SPARK_SCRIPT = """
from pyspark import SparkContext

def check(n):
    if n == 2:
        raise ValueError(f"day {n} is corrupt")
    return n

SparkContext.getOrCreate().parallelize(range(3), 3).map(check).collect()
"""


def spark_job(cloud, bucket: str, script: str, **options) -> str:
    """Upload ``script`` and create a Glue 5.0 Spark job running it; the job's name."""
    name = f"spark-{uuid.uuid4().hex[:10]}"
    cloud.client("s3").put_object(Bucket=bucket, Key=f"scripts/{name}.py", Body=script.encode())
    cloud.client("glue").create_job(
        Name=name, Role=cloud.role("picsel-test-glue", GLUE_PERMISSIONS, "glue.amazonaws.com"),
        Command={"Name": "glueetl", "ScriptLocation": f"s3://{bucket}/scripts/{name}.py",
                 "PythonVersion": "3"},
        GlueVersion="5.0", WorkerType="G.1X", NumberOfWorkers=2, **options)
    return name


def test_spark_job_runs_on_local_spark_with_glue_arguments_and_glue_5_logs(cloud):
    bucket = new_bucket(cloud)
    job = spark_job(cloud, bucket, SPARK_SCRIPT, DefaultArguments={
        "--bucket": bucket, "--TempDir": f"s3://{bucket}/tmp/"})
    glue = cloud.client("glue")
    run_id = glue.start_job_run(JobName=job)["JobRunId"]

    run = wait_run(glue, job, run_id, seconds=120)

    assert run["JobRunState"] == "SUCCEEDED", run.get("ErrorMessage")
    output = log_lines(cloud, "/aws-glue/jobs/output", run_id)
    slots = glue_spark.task_slots("G.1X", 2)
    assert f"master local[{slots}]" in output
    assert "ui false host 127.0.0.1" in output
    assert f"tempdir s3://{bucket}/tmp/" in output
    assert "sum 14" in output and "a note on stderr" in output  # stdout and stderr, one group
    scratch = next(line for line in output if line.startswith("scratch "))
    assert scratch.endswith("/spark-local") and run_id[:11] in scratch  # under the run's dir
    keys = cloud.client("s3").list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]
    assert len(keys) == 4  # written by the executors themselves
    spark_log = log_lines(cloud, "/aws-glue/jobs/error", run_id)
    assert any("Running Spark version 3.5." in line for line in spark_log)
    assert not any(line in output for line in spark_log)  # log4j never in the script's output


def test_failing_spark_script_ends_failed_with_its_error_in_the_output_log(cloud):
    bucket = new_bucket(cloud)
    job = spark_job(cloud, bucket, FAILING_SPARK_SCRIPT)
    glue = cloud.client("glue")
    run_id = glue.start_job_run(JobName=job)["JobRunId"]

    run = wait_run(glue, job, run_id, seconds=120)

    assert run["JobRunState"] == "FAILED"
    assert "day 2 is corrupt" in run["ErrorMessage"]
    output = "\n".join(log_lines(cloud, "/aws-glue/jobs/output", run_id))
    assert "Traceback (most recent call last):" in output
    assert "ValueError: day 2 is corrupt" in output


def test_task_slots_follow_the_workers_capped_at_the_cores():
    assert glue_spark.task_slots("G.1X", 2, cores=64) == 4  # one worker hosts the driver
    assert glue_spark.task_slots("G.2X", 5, cores=64) == 32
    assert glue_spark.task_slots("G.1X", 10, cores=2) == 2
    assert glue_spark.task_slots(None, None, cores=64) == 4


def test_spark_without_java_is_refused_naming_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))

    with pytest.raises(glue_spark.SparkUnavailable, match="needs Java.*openjdk-17-jre-headless"):
        glue_spark.environment(tmp_path)
