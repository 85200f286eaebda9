"""Least privilege, proven by running code: on the real stack, a probe runs under each of the
pipeline's roles the way AWS runs it. For the Lambda role that is a function deployed with it; for
the Glue role, a Glue job run with it; for the crawler role, which only Glue may assume, the
administrator assumes it after a temporary trust grant. Each probe tries what its policy must not
allow. Then enforcement bites: with a narrowed policy a real invoke of the ingest function fails
with AccessDenied in its log and in CloudTrail, and once the stack's own policy is back the same
invoke passes."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json

import pytest
from botocore.exceptions import ClientError

from picsel_nb import pipeline
from picsel_nb.clients import client_config
from picsel_nb.localcloud.auth import ADMIN_ARN
from picsel_nb.localcloud.cloudtrail import FLUSH_PATH
from picsel_nb.localcloud.glue_jobs import OUTPUT_LOG_GROUP
from picsel_nb.settings import LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack import buckets, function, roles, secret, trail
from picsel_nb.stack.context import Stack
from tests.cloud_fixtures import cloud, poll, zip_files  # noqa: F401

PREFIX = "leastpriv"
OTHER_SECRET = f"{PREFIX}/another-secret"
RAW_KEY = "raw/reanalysis-era5-land/2023/08/31.nc"
PRODUCT_KEY = "products/geojson/t2m/2023-08-31.geojson"
CATALOG_KEY = "catalog/contours/variable=t2m/date=2023-08-31/part-0.json"
DAY = "2023-09-02"  # the day the ingest function is invoked for (not stored before)
DENIED_S3, DENIED_SECRET = "AccessDenied", "AccessDeniedException"


def outcomes(client, calls: list) -> dict[str, str]:
    """What each call ``[label, service, operation, params]`` gets: "allowed" or its error code.

    Runs here and, shipped as source, inside the probes (``client`` makes a boto3 client)."""
    from botocore.exceptions import ClientError

    result = {}
    for label, service, operation, params in calls:
        try:
            getattr(client(service), operation)(**params)
        except ClientError as error:
            result[label] = error.response["Error"]["Code"]
        else:
            result[label] = "allowed"
    return result


def probe_source(main: str) -> str:
    """A probe's Python source: ``outcomes`` followed by ``main``."""
    return f"{inspect.getsource(outcomes)}\n\n{main}"


@pytest.fixture(scope="module")
def stack(cloud) -> Stack:  # noqa: F811
    """The real stack of its own prefix: buckets, the CDS secret, the ingest function with its
    role, the Glue job's and the crawler's roles, the trail; plus a second secret and objects
    for the probes to aim at."""
    settings = dataclasses.replace(get_settings(), prefix=PREFIX)
    stack = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                  client_factory=cloud.client)
    pipeline.ensure_ingest(stack)
    roles.ensure_glue_job_role(stack)
    roles.ensure_crawler_role(stack)
    trail.ensure_trail(stack)
    stack.client("secretsmanager").create_secret(Name=OTHER_SECRET, SecretString="another key")
    names = stack.names
    for bucket, key in ((names.input_bucket, RAW_KEY), (names.output_bucket, PRODUCT_KEY),
                        (names.output_bucket, CATALOG_KEY)):
        buckets.publish(stack, bucket, key, b"{}")
    return stack


def put(bucket: str, key: str) -> list:
    return ["s3", "put_object", {"Bucket": bucket, "Key": key, "Body": "probe"}]


def get(bucket: str, key: str) -> list:
    return ["s3", "get_object", {"Bucket": bucket, "Key": key}]


def read_secret(secret_id: str) -> list:
    return ["secretsmanager", "get_secret_value", {"SecretId": secret_id}]


def test_lambda_role_reads_only_its_secret_writes_only_raw_and_reads_no_private_output(
        cloud, stack):  # noqa: F811
    """A probe function deployed with the ingest function's real role. Published products are
    public to everyone (the output bucket's policy), so the role reads them as anyone would."""
    names = stack.names
    inp, out = names.input_bucket, names.output_bucket
    calls = {"its secret": read_secret(names.secret), "a second secret": read_secret(OTHER_SECRET),
             "write raw/": put(inp, "raw/probe/lambda.txt"),
             "write scripts/": put(inp, "scripts/glue/contours_job.py"),
             "write tmp/": put(inp, "tmp/probe/lambda.txt"),
             "write the output bucket": put(out, "products/index.html"),
             "read the output bucket's catalog/": get(out, CATALOG_KEY),
             "list the output bucket": ["s3", "list_objects_v2", {"Bucket": out}],
             "read a published product": get(out, PRODUCT_KEY)}
    lam, name = stack.client("lambda"), f"{PREFIX}-probe"
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="probe.handler",
                        Role=roles.role_arn(stack, names.lambda_role),
                        Code={"ZipFile": zip_files({"probe.py": probe_source(
                            "import boto3\n\n\ndef handler(event, context):\n"
                            "    return outcomes(boto3.client, event['calls'])\n")})})
    try:
        answer = lam.invoke(FunctionName=name, Payload=json.dumps(
            {"calls": [[label, *call] for label, call in calls.items()]}).encode())
        result = json.loads(answer["Payload"].read())
        assert "FunctionError" not in answer, result
    finally:
        lam.delete_function(FunctionName=name)
    assert result == {"its secret": "allowed", "a second secret": DENIED_SECRET,
                      "write raw/": "allowed", "write scripts/": DENIED_S3,
                      "write tmp/": DENIED_S3, "write the output bucket": DENIED_S3,
                      "read the output bucket's catalog/": DENIED_S3,
                      "list the output bucket": DENIED_S3, "read a published product": "allowed"}


def test_glue_role_cannot_read_the_secret_or_write_raw(cloud, stack):  # noqa: F811
    """A probe Glue job run with the contours job's real role; it prints what it got."""
    names = stack.names
    inp = names.input_bucket
    calls = [["the CDS secret", *read_secret(names.secret)],
             ["write raw/", *put(inp, "raw/probe/glue.txt")],
             ["write its own code", *put(inp, "scripts/glue/contours_job.py")],
             ["read raw/", *get(inp, RAW_KEY)],
             ["write tmp/", *put(inp, "tmp/probe/glue.txt")]]
    key, job = "scripts/glue/least_privilege_probe.py", f"{PREFIX}-probe"
    buckets.publish(stack, inp, key, probe_source(
        f"import json\n\nimport boto3\n\ncalls = json.loads({json.dumps(calls)!r})\n"
        "print(json.dumps(outcomes(boto3.client, calls)))\n"))
    glue = stack.client("glue")
    glue.create_job(Name=job, Role=roles.role_arn(stack, names.glue_role),
                    Command={"Name": "pythonshell", "ScriptLocation": f"s3://{inp}/{key}",
                             "PythonVersion": "3.9"})
    try:
        run_id = glue.start_job_run(JobName=job)["JobRunId"]

        def finished() -> dict | None:
            run = glue.get_job_run(JobName=job, RunId=run_id)["JobRun"]
            return None if run["JobRunState"] in ("STARTING", "RUNNING") else run

        run = poll(finished, timeout=60)
        assert run["JobRunState"] == "SUCCEEDED", run.get("ErrorMessage")
    finally:
        glue.delete_job(JobName=job)
    events = stack.client("logs").get_log_events(logGroupName=OUTPUT_LOG_GROUP,
                                                 logStreamName=run_id)["events"]
    assert json.loads(events[-1]["message"]) == {
        "the CDS secret": DENIED_SECRET, "write raw/": DENIED_S3,
        "write its own code": DENIED_S3, "read raw/": "allowed", "write tmp/": "allowed"}


def test_crawler_role_cannot_write_to_s3(cloud, stack):  # noqa: F811
    """As one would on AWS: trust the administrator for a moment, assume the role, try, restore."""
    names = stack.names
    inp, out = names.input_bucket, names.output_bucket
    calls = [["read catalog/contours/", *get(out, CATALOG_KEY)],
             ["write catalog/contours/", *put(out, "catalog/contours/evil.json")],
             ["delete catalog/contours/", "s3", "delete_object",
              {"Bucket": out, "Key": CATALOG_KEY}],
             ["write products/", *put(out, "products/index.html")],
             ["write the input bucket", *put(inp, "raw/probe/crawler.txt")]]
    iam, arn = stack.client("iam"), roles.role_arn(stack, names.crawler_role)
    trust = iam.get_role(RoleName=names.crawler_role)["Role"]["AssumeRolePolicyDocument"]
    widened = copy.deepcopy(trust)
    widened["Statement"].append({"Sid": "AdministratorForATest", "Effect": "Allow",
                                 "Principal": {"AWS": ADMIN_ARN}, "Action": "sts:AssumeRole"})
    iam.update_assume_role_policy(RoleName=names.crawler_role, PolicyDocument=json.dumps(widened))
    try:
        session = cloud.assume(arn, "least-privilege-probe")
        result = outcomes(lambda service: session.client(
            service, endpoint_url=cloud.endpoint_url, config=client_config(service)), calls)
    finally:
        iam.update_assume_role_policy(RoleName=names.crawler_role,
                                      PolicyDocument=json.dumps(trust))
    assert result == {"read catalog/contours/": "allowed", "write catalog/contours/": DENIED_S3,
                      "delete catalog/contours/": DENIED_S3, "write products/": DENIED_S3,
                      "write the input bucket": DENIED_S3}
    with pytest.raises(ClientError) as untrusted:
        cloud.assume(arn)
    assert untrusted.value.response["Error"]["Code"] == "AccessDenied"


def test_a_narrowed_lambda_policy_fails_a_real_invoke_and_the_stacks_policy_passes_it(
        cloud, stack):  # noqa: F811
    """The ingest function's role without s3:PutObject on raw/*: the download of the day cannot
    be stored, as the function's log and the trail's delivered data events show."""
    names = stack.names
    secret_arn = secret.secret_arn(stack)
    narrowed = copy.deepcopy(roles.role_documents(stack, "lambda", SecretArn=secret_arn)[1])
    [raw] = [s for s in narrowed["Statement"] if s["Sid"] == "WriteAndHeadRawDownloadsOnly"]
    raw["Action"].remove("s3:PutObject")
    since = trail.next_second()
    stack.client("iam").put_role_policy(RoleName=names.lambda_role,
                                        PolicyName=roles.PERMISSIONS_POLICY,
                                        PolicyDocument=json.dumps(narrowed))
    try:
        denied = function.invoke_day(stack, DAY)
    finally:
        roles.ensure_lambda_role(stack, secret_arn)
    key = f"raw/reanalysis-era5-land/{DAY.replace('-', '/')}.nc"
    session = f"arn:aws:sts::{LOCAL_ACCOUNT_ID}:assumed-role/{names.lambda_role}/"
    assert not denied.ok, denied.payload
    assert "(AccessDenied) when calling the PutObject operation" in denied.error_message
    raw_prefix = f"{names.input_bucket}/raw/reanalysis-era5-land/"  # the CDS job's id, or the day
    assert (f"is not authorized to perform: s3:PutObject on resource: "
            f'"arn:aws:s3:::{raw_prefix}') in denied.error_message

    logs = stack.client("logs")
    poll(lambda: [e for e in logs.filter_log_events(
        logGroupName=f"/aws/lambda/{names.lambda_function}",
        startTime=int(since.timestamp() * 1000))["events"] if "AccessDenied" in e["message"]])

    def denied_puts() -> list[trail.TrailEvent]:
        cloud.control("POST", FLUSH_PATH)
        return [e for e in trail.delivered(stack, since) if e.name == "PutObject"
                and e.error == "AccessDenied"
                and any(r.startswith(raw_prefix) for r in e.resources)]

    [event] = poll(denied_puts)
    assert event.record["userIdentity"]["arn"].startswith(session)
    assert event.row()["who"] == f"role {names.lambda_role}"
    assert trail.lookup(stack, since, EventName="PutObject") == []  # a data event, as on AWS

    passed = function.invoke_day(stack, DAY)
    assert passed.ok, passed.payload
    assert (passed.payload["status"], passed.payload["key"]) == ("stored", key)
