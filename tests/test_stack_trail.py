"""CloudTrail for the pipeline: the trail bucket's policy, the trail with its data-event selectors,
events looked up and read from the delivered files — and never a secret in them."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import requests
from botocore.exceptions import ClientError

from picsel_nb import pipeline
from picsel_nb.settings import get_settings
from picsel_nb.stack import buckets, secret, trail
from picsel_nb.stack.context import Stack, get_stack
from tests.cloud_fixtures import cloud  # noqa: F401

FUNCTION = "def handler(event, context):\n    return {'ok': True}\n"
CDS_URL = "https://cds.climate.copernicus.eu/api"


@pytest.fixture(scope="module")
def stack(cloud) -> Stack:  # noqa: F811
    """A stack of its own prefix with its buckets, a CDS secret, a small ingest function and the
    trail logging."""
    stack = get_stack(dataclasses.replace(get_settings(), prefix="trl"))
    buckets.ensure_input_bucket(stack)
    buckets.ensure_output_bucket(stack)
    secret.ensure_secret(stack, CDS_URL, f"key-{uuid.uuid4()}")
    cloud.deploy_function(stack.names.lambda_function, {"app.py": FUNCTION})
    trail.ensure_trail(stack)
    return stack


def test_trail_bucket_policy_has_the_statements_cloudtrail_requires(stack):
    policy = trail.trail_bucket_policy(stack)
    statements = {s["Sid"]: s for s in policy["Statement"]}
    bucket, arn = stack.names.trail_bucket, trail.trail_arn(stack)
    assert arn == "arn:aws:cloudtrail:sa-east-1:123456789012:trail/trl-trail"
    acl, write = statements["CloudTrailAclCheck"], statements["CloudTrailWrite"]
    assert acl["Principal"] == write["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
    assert (acl["Action"], acl["Resource"]) == ("s3:GetBucketAcl", f"arn:aws:s3:::{bucket}")
    assert acl["Condition"] == {"StringEquals": {"aws:SourceArn": arn}}
    assert (write["Action"], write["Resource"]) == (
        "s3:PutObject", f"arn:aws:s3:::{bucket}/cloudtrail/AWSLogs/123456789012/*")
    assert write["Condition"] == {"StringEquals": {
        "s3:x-amz-acl": "bucket-owner-full-control", "aws:SourceArn": arn}}
    assert "DenyInsecureTransport" in statements


def test_create_trail_is_refused_without_cloudtrails_bucket_policy(stack):
    bare = f"trl-bare-{uuid.uuid4().hex[:8]}"
    buckets.ensure_private_bucket(stack, bare)  # TLS-only policy: nothing for CloudTrail
    with pytest.raises(ClientError) as refused:
        stack.client("cloudtrail").create_trail(Name=f"trl-bare-{uuid.uuid4().hex[:6]}",
                                                S3BucketName=bare)
    assert refused.value.response["Error"]["Code"] == "InsufficientS3BucketPolicyException"
    buckets.delete_bucket(stack, bare)


def test_ensure_trail_is_idempotent_and_logs_data_events_of_the_pipeline(stack):
    first = trail.ensure_trail(stack)
    assert trail.ensure_trail(stack) == first
    assert (first["name"], first["bucket"], first["key_prefix"]) == (
        "trl-trail", stack.names.trail_bucket, "cloudtrail")
    assert first["logging"] and first["global_service_events"] and not first["multi_region"]
    assert first["data_events"] == [
        f"AWS::S3::Object arn:aws:s3:::{stack.names.input_bucket}/",
        f"AWS::S3::Object arn:aws:s3:::{stack.names.output_bucket}/",
        "AWS::Lambda::Function arn:aws:lambda:sa-east-1:123456789012:function:trl-era5-ingest"]
    posture = buckets.describe_bucket(stack, stack.names.trail_bucket)
    assert posture["public_access_block"] == buckets.PRIVATE_ACCESS_BLOCK
    assert posture["encryption"] == ["AES256"]


def test_delivered_files_hold_invocations_and_denied_anonymous_requests(stack):
    since = trail.next_second()
    stack.client("lambda").invoke(FunctionName=stack.names.lambda_function, Payload=b"{}")
    key = "raw/private.txt"
    buckets.publish(stack, stack.names.input_bucket, key, "private")
    url = buckets.public_url(stack, stack.names.input_bucket, key)
    assert requests.get(url, timeout=30).status_code == 403

    events = trail.wait_for_delivery(stack, lambda e: e.denied, since, deadline_s=60, delay_s=0.5)

    assert all(event.time >= since.strftime(trail.TIME_FORMAT) for event in events)
    invoke = next(e for e in events if e.name == "Invoke")
    assert invoke.resources == ("trl-era5-ingest",) and invoke.row()["who"] == "user picsel-admin"
    denied = next(e for e in events if e.denied)
    assert denied.row() | {"time": "-"} == {
        "time": "-", "event": "GetObject", "service": "s3", "who": "anonymous",
        "access key": "-", "source IP": "127.0.0.1", "error": "AccessDenied",
        "resources": f"{stack.names.input_bucket}/{key}, {stack.names.input_bucket}"}
    assert trail.event_rows(events)[0]["time"] >= trail.event_rows(events)[-1]["time"]


def test_lookup_finds_the_bucket_creations_by_resource_name(stack):
    found = trail.lookup(stack, ResourceName=stack.names.input_bucket)
    assert any(e.name == "CreateBucket" and not e.error for e in found)
    created = trail.bucket_creations(stack)
    assert {r for e in created for r in e.resources} >= {
        stack.names.input_bucket, stack.names.output_bucket, stack.names.trail_bucket}
    assert all(e.name == "CreateBucket" and e.error is None for e in created)
    with pytest.raises(ValueError, match="one attribute"):
        trail.lookup(stack, EventName="CreateBucket", ResourceName="x")


def test_secret_events_name_the_calls_and_never_the_value(stack):
    since = trail.next_second()
    secret.describe_secret(stack)
    events = trail.secret_events(stack, since)
    assert [e.name for e in events] == ["DescribeSecret"]
    everything = trail.lookup(stack) + trail.delivered(stack)
    check = trail.secret_exposures(everything, [pipeline.cds_credentials(stack)[1]])
    assert check["events scanned"] == len(everything) > 0
    assert check["events containing the key"] == 0
    assert any(e.name == "CreateSecret" for e in trail.secret_events(stack))


def test_secret_exposures_would_find_a_leaked_key_or_an_unredacted_value():
    key = "a-key-that/needs+escaping\\"
    leaked = trail.TrailEvent({"eventTime": "x", "requestParameters": {"k": json.dumps(key)}}, ())
    unredacted = trail.TrailEvent({"eventTime": "x", "requestParameters": {
        "secretId": "s", "secretString": "plain"}}, ())
    redacted = trail.TrailEvent({"eventTime": "x", "requestParameters": {
        "secretId": "s", "secretString": trail.HIDDEN}}, ())
    found = trail.secret_exposures([leaked, unredacted, redacted], [key])
    assert found == {"events scanned": 3, "events containing the key": 2}


def test_delete_trail_tolerates_a_missing_trail(stack):
    other = dataclasses.replace(stack, names=dataclasses.replace(stack.names, trail="trl-none"))
    assert trail.delete_trail(other) is False
