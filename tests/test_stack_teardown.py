"""Teardown deletes everything the walkthrough creates, leaves nothing, and can run again."""

from __future__ import annotations

import dataclasses

import pytest

from picsel_nb.settings import get_settings
from picsel_nb.stack import (
    athena,
    buckets,
    catalog,
    function,
    monitoring,
    roles,
    secret,
    teardown,
    trail,
)
from picsel_nb.stack.context import Stack, get_stack
from picsel_nb.stack.waiters import wait_for_job_run
from tests.cloud_fixtures import cloud, zip_files  # noqa: F401

FUNCTION = "def handler(event, context):\n    return {'ok': True}\n"
JOB = "print('nothing to do')\n"


def provision(cloud, stack: Stack) -> None:  # noqa: F811
    """Every kind of resource the walkthrough creates, small: buckets with objects (one of them
    versioned), the secret, the roles, a function with a layer, a job with a run, the database
    and crawler, log groups, alarms, a dashboard and the trail."""
    names = stack.names
    buckets.ensure_input_bucket(stack)
    buckets.ensure_output_bucket(stack)
    buckets.publish(stack, names.output_bucket, "products/a.txt", "a")
    buckets.publish(stack, names.input_bucket, "scripts/job.py", JOB)
    stack.client("s3").put_bucket_versioning(Bucket=names.output_bucket,
                                             VersioningConfiguration={"Status": "Enabled"})
    buckets.publish(stack, names.output_bucket, "products/a.txt", "a, again")
    arn = secret.ensure_secret(stack, "https://cds.climate.copernicus.eu/api", "key-1")["arn"]
    role_arn = roles.ensure_lambda_role(stack, arn)
    roles.ensure_glue_job_role(stack)
    lam = stack.client("lambda")
    layer = lam.publish_layer_version(LayerName=function.layer_name(stack),
                                      Content={"ZipFile": zip_files({"python/dep.py": ""})})["LayerVersionArn"]
    lam.create_function(FunctionName=names.lambda_function, Runtime="python3.11", Role=role_arn,
                        Handler="app.handler", Code={"ZipFile": zip_files({"app.py": FUNCTION})},
                        Layers=[layer])
    glue = stack.client("glue")
    glue.create_job(Name=names.glue_job, Role=role_arn, Command={
        "Name": "pythonshell", "ScriptLocation": f"s3://{names.input_bucket}/scripts/job.py"})
    run_id = glue.start_job_run(JobName=names.glue_job)["JobRunId"]
    wait_for_job_run(glue, names.glue_job, run_id, 60, 0.5)
    catalog.ensure_crawler(stack)
    catalog.run_crawler(stack, 60, 0.5)
    athena.ensure_workgroup(stack)
    lam.invoke(FunctionName=names.lambda_function, Payload=b"{}")
    monitoring.ensure_log_groups(stack)
    monitoring.ensure_alarms(stack)
    monitoring.ensure_dashboard(stack)
    trail.ensure_trail(stack)


@pytest.fixture(scope="module")
def stack(cloud) -> Stack:  # noqa: F811
    stack = get_stack(dataclasses.replace(get_settings(), prefix="tdn"))
    provision(cloud, stack)
    return stack


def test_leftovers_lists_every_kind_the_walkthrough_creates(stack):
    names = stack.names
    found = teardown.leftovers(stack)
    # Glue's shared groups count only while nothing but the walkthrough writes to them
    assert "/aws/lambda/tdn-era5-ingest" in found["log groups"]
    assert set(found["log groups"]) <= set(monitoring.log_groups(stack).values())
    assert found == {
        "trails": ["tdn-trail"],
        "alarms": ["tdn-era5-contours-failures", "tdn-era5-ingest-errors"],
        "dashboards": ["tdn-pipeline"],
        "workgroups": ["tdn-contours"],
        "crawlers": ["tdn-contours-crawler"],
        "databases": ["tdn_contours"],
        "jobs": ["tdn-era5-contours"],
        "functions": ["tdn-era5-ingest"],
        "layers": ["tdn-era5-ingest-deps"],
        "roles": ["tdn-contours-crawler-role", "tdn-era5-contours-role", "tdn-era5-ingest-role"],
        "secrets": ["tdn/cds-api-key"],
        "log groups": found["log groups"],
        "buckets": sorted([names.input_bucket, names.output_bucket, names.trail_bucket]),
    }


def test_teardown_leaves_nothing_and_can_run_again(stack):
    said: list[str] = []
    deleted = teardown.teardown(stack, said.append)

    assert deleted["trail"] == ["tdn-trail"] and deleted["trail bucket"] == [
        stack.names.trail_bucket]
    assert deleted["workgroup"] == ["tdn-contours"]
    assert deleted["roles"] == ["tdn-era5-ingest-role", "tdn-era5-contours-role",
                                "tdn-contours-crawler-role"]
    assert "/aws/lambda/tdn-era5-ingest" in deleted["logs"]
    assert monitoring.crawler_log(stack) == []  # its stream in Glue's shared group is gone too
    assert len(said) == len(deleted)
    left = teardown.leftovers(stack)
    assert not any(left.values()), left
    assert function.get_function(stack) is None and secret.describe_secret(stack) is None

    again = teardown.teardown(stack)
    assert again.keys() == deleted.keys() and not any(again.values()), again
