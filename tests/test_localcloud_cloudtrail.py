"""CloudTrail on the embedded cloud: calls become events; lookups; trails deliver log files."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import time
import uuid
from datetime import timedelta

import botocore.model
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from picsel_nb.localcloud.credentials import admin_key
from tests.cloud_fixtures import cloud  # noqa: F401

REGION = "sa-east-1"
ACCOUNT = "123456789012"
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"
LOG_KEY = re.compile(
    rf"trail-logs/AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/\d{{4}}/\d{{2}}/\d{{2}}/"
    rf"{ACCOUNT}_CloudTrail_{REGION}_\d{{8}}T\d{{4}}Z_[0-9a-f]{{16}}\.json\.gz")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def lookup(cloud, **kwargs) -> list[dict]:  # noqa: F811
    """Every event LookupEvents returns for these arguments, through boto3's paginator."""
    pages = cloud.client("cloudtrail").get_paginator("lookup_events").paginate(**kwargs)
    return [event for page in pages for event in page["Events"]]


def by(key: str, value: str) -> dict:
    return {"LookupAttributes": [{"AttributeKey": key, "AttributeValue": value}]}


def record(event: dict) -> dict:
    return json.loads(event["CloudTrailEvent"])


def make_bucket(cloud, name: str | None = None) -> str:  # noqa: F811
    name = name or unique("trail-test")
    cloud.client("s3").create_bucket(Bucket=name,
                                     CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def trail_bucket_policy(bucket: str, trail: str, prefix: str = "trail-logs") -> dict:
    """The bucket policy AWS documents for a trail's bucket."""
    source = {"aws:SourceArn": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/{trail}"}
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AWSCloudTrailAclCheck", "Effect": "Allow",
         "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "s3:GetBucketAcl",
         "Resource": f"arn:aws:s3:::{bucket}", "Condition": {"StringEquals": source}},
        {"Sid": "AWSCloudTrailWrite", "Effect": "Allow",
         "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/{prefix}/AWSLogs/{ACCOUNT}/*",
         "Condition": {"StringEquals": source | {"s3:x-amz-acl": "bucket-owner-full-control"}}},
    ]}


def flush(cloud) -> list[str]:  # noqa: F811
    answer = cloud.control("POST", "/_picsel/cloudtrail/flush")
    answer.raise_for_status()
    return answer.json()["Delivered"]


def delivered_records(cloud, bucket: str) -> list[dict]:  # noqa: F811
    """Every record of every log file in the trail bucket (checking each file's key layout)."""
    s3 = cloud.client("s3")
    records = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            assert LOG_KEY.fullmatch(item["Key"]), item["Key"]
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            records += json.loads(gzip.decompress(body))["Records"]
    return records


@pytest.fixture
def trail(cloud):  # noqa: F811
    """A logging trail (default selectors) writing under ``trail-logs/`` of its own bucket."""
    name, bucket = unique("picsel-trail"), make_bucket(cloud)
    cloud.client("s3").put_bucket_policy(Bucket=bucket,
                                         Policy=json.dumps(trail_bucket_policy(bucket, name)))
    client = cloud.client("cloudtrail")
    client.create_trail(Name=name, S3BucketName=bucket, S3KeyPrefix="trail-logs")
    client.start_logging(Name=name)
    yield name, bucket
    client.delete_trail(Name=name)


# ---- recording and LookupEvents -----------------------------------------------------------


def test_lookup_finds_management_events_by_attribute(cloud):  # noqa: F811
    bucket = make_bucket(cloud)
    secret = unique("picsel/cds-api-key")
    manager = cloud.client("secretsmanager")
    manager.create_secret(Name=secret, SecretString="not-the-point-here")
    manager.put_secret_value(SecretId=secret, SecretString="still-not-the-point")

    created = lookup(cloud, **by("ResourceName", bucket))
    assert [e["EventName"] for e in created] == ["CreateBucket"]
    event = created[0]
    assert event["EventSource"] == "s3.amazonaws.com" and event["ReadOnly"] == "false"
    assert event["Resources"] == [{"ResourceType": "AWS::S3::Bucket", "ResourceName": bucket}]
    assert event["AccessKeyId"] == admin_key(cloud.local.state_dir).access_key_id
    assert event["Username"] == "picsel-admin"
    full = record(event)
    assert full["eventVersion"] == "1.11" and full["eventType"] == "AwsApiCall"
    assert full["eventCategory"] == "Management" and full["managementEvent"] is True
    assert full["requestParameters"]["Bucket"] == bucket
    assert full["userIdentity"]["type"] == "IAMUser"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", full["eventTime"])

    names = [e["EventName"] for e in lookup(cloud, **by("ResourceName", secret))]
    assert names == ["PutSecretValue", "CreateSecret"]  # newest first
    secret_events = lookup(cloud, **by("ResourceType", "AWS::SecretsManager::Secret"))
    assert {"CreateSecret", "PutSecretValue"} <= {e["EventName"] for e in secret_events}
    assert record(lookup(cloud, **by("EventId", full["eventID"]))[0]) == full
    writes = lookup(cloud, **by("EventSource", "secretsmanager.amazonaws.com"))
    assert all(e["EventSource"] == "secretsmanager.amazonaws.com" for e in writes)
    create = record(lookup(cloud, **by("ResourceName", secret))[1])
    assert create["responseElements"]["Name"] == secret
    assert create["responseElements"]["ARN"].startswith(
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:")


def test_lookup_pages_newest_first_with_next_token(cloud):  # noqa: F811
    logs, group = cloud.client("logs"), unique("/picsel/paging")
    logs.create_log_group(logGroupName=group)
    for i in range(55):
        logs.create_log_stream(logGroupName=group, logStreamName=f"s{i:02d}")
    client = cloud.client("cloudtrail")
    first = client.lookup_events(**by("ResourceName", group))
    assert len(first["Events"]) == 50 and first["NextToken"]
    second = client.lookup_events(**by("ResourceName", group), NextToken=first["NextToken"])
    assert "NextToken" not in second
    events = first["Events"] + second["Events"]
    streams = [record(e)["requestParameters"].get("logStreamName") for e in events]
    assert streams == [f"s{i:02d}" for i in reversed(range(55))] + [None]
    assert [e["EventName"] for e in events][-1] == "CreateLogGroup"
    small = client.lookup_events(**by("ResourceName", group), MaxResults=7)
    assert [e["EventId"] for e in small["Events"]] == [e["EventId"] for e in events[:7]]
    assert len(lookup(cloud, **by("ResourceName", group))) == 56


def test_lookup_filters_by_time_range(cloud):  # noqa: F811
    logs, group = cloud.client("logs"), unique("/picsel/times")
    logs.create_log_group(logGroupName=group)
    first = lookup(cloud, **by("ResourceName", group))[0]["EventTime"]
    deadline = time.monotonic() + 10
    while True:  # a second call in a later second (event times have whole-second resolution)
        logs.put_retention_policy(logGroupName=group, retentionInDays=1)
        last = lookup(cloud, **by("ResourceName", group))[0]["EventTime"]
        if last > first or time.monotonic() > deadline:
            break
    assert last > first
    early = lookup(cloud, **by("ResourceName", group), EndTime=first)
    assert early[-1]["EventName"] == "CreateLogGroup"
    assert all(e["EventTime"] == first for e in early)
    later = lookup(cloud, **by("ResourceName", group), StartTime=last)
    assert {e["EventName"] for e in later} == {"PutRetentionPolicy"}
    assert all(e["EventTime"] == last for e in later)
    assert lookup(cloud, **by("ResourceName", group), StartTime=last + timedelta(hours=1)) == []


def test_lookup_refuses_what_aws_refuses(cloud):  # noqa: F811
    client = cloud.client("cloudtrail")
    attributes = [{"AttributeKey": "EventName", "AttributeValue": "CreateBucket"},
                  {"AttributeKey": "ReadOnly", "AttributeValue": "false"}]
    for kwargs, code in [
        ({"LookupAttributes": attributes}, "InvalidLookupAttributesException"),
        (by("Colour", "blue"), "InvalidLookupAttributesException"),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"StartTime": 2_000_000_000, "EndTime": 1_000_000_000}, "InvalidTimeRangeException"),
        ({"NextToken": "not-a-token"}, "InvalidNextTokenException"),
    ]:
        with pytest.raises(ClientError) as refused:
            client.lookup_events(**kwargs)
        assert refused.value.response["Error"]["Code"] == code


def test_the_aws_cli_looks_up_events(cloud):  # noqa: F811
    bucket = make_bucket(cloud)
    answer = cloud.aws("cloudtrail", "lookup-events", "--lookup-attributes",
                       f"AttributeKey=ResourceName,AttributeValue={bucket}", "--output", "json")
    events = json.loads(answer.stdout)["Events"]
    assert [e["EventName"] for e in events] == ["CreateBucket"]
    assert json.loads(events[0]["CloudTrailEvent"])["requestParameters"]["Bucket"] == bucket


def test_failed_and_anonymous_calls_carry_error_codes(cloud):  # noqa: F811
    name = unique("anon-create")
    assert requests.put(f"{cloud.endpoint_url}/{name}", timeout=30).status_code == 403
    anonymous = record(lookup(cloud, **by("ResourceName", name))[0])
    assert anonymous["eventName"] == "CreateBucket" and anonymous["errorCode"] == "AccessDenied"
    assert anonymous["userIdentity"] == {"type": "AWSAccount", "principalId": "",
                                         "accountId": "ANONYMOUS_PRINCIPAL"}
    missing = unique("picsel/missing")
    with pytest.raises(ClientError):
        cloud.client("secretsmanager").describe_secret(SecretId=missing)
    failed = record(lookup(cloud, **by("ResourceName", missing))[0])
    assert failed["errorCode"] == "ResourceNotFoundException" and failed["errorMessage"]
    assert failed["readOnly"] is True and failed["responseElements"] is None


def test_assumed_role_sessions_are_recorded_as_such(cloud):  # noqa: F811
    role_arn = cloud.role("picsel-test-bucket-maker", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:CreateBucket", "Resource": "*"}]})
    session = cloud.assume(role_arn, "ingest-session")
    bucket = unique("as-role")
    session.client("s3", endpoint_url=cloud.endpoint_url).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    event = lookup(cloud, **by("ResourceName", bucket))[0]
    assert event["Username"] == "ingest-session"
    assert event["AccessKeyId"] == session.get_credentials().access_key
    identity = record(event)["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["arn"].endswith(":assumed-role/picsel-test-bucket-maker/ingest-session")
    assert identity["sessionContext"]["sessionIssuer"]["arn"] == role_arn


def test_cloudwatch_metric_data_is_recorded_with_its_parameters(cloud, monkeypatch):  # noqa: F811
    namespace = unique("Picsel/Json")
    cloud.client("cloudwatch").put_metric_data(Namespace=namespace, MetricData=[
        {"MetricName": "Errors", "Value": 1.0, "Dimensions": [{"Name": "Job", "Value": "j"}]}])
    # A client speaking smithy-rpc-v2-cbor (botocore 1.44 prefers JSON for CloudWatch).
    cbor_namespace = unique("Picsel/Cbor")
    monkeypatch.setattr(botocore.model, "PRIORITY_ORDERED_SUPPORTED_PROTOCOLS",
                        ("smithy-rpc-v2-cbor", "json", "query"))
    cbor = cloud.client("cloudwatch")
    assert cbor.meta.service_model.resolved_protocol == "smithy-rpc-v2-cbor"
    with contextlib.suppress(ClientError, ResponseParserError):  # moto does not answer CBOR
        cbor.put_metric_data(Namespace=cbor_namespace,
                             MetricData=[{"MetricName": "Latency", "Value": 2.5}])
    events = {record(e)["requestParameters"]["Namespace"]: record(e)
              for e in lookup(cloud, **by("EventName", "PutMetricData"))[:20]}
    assert events[namespace]["requestParameters"]["MetricData"] == [
        {"MetricName": "Errors", "Value": 1.0, "Dimensions": [{"Name": "Job", "Value": "j"}]}]
    assert events[namespace]["eventSource"] == "monitoring.amazonaws.com"
    assert events[cbor_namespace]["requestParameters"]["MetricData"] == [
        {"MetricName": "Latency", "Value": 2.5}]


# ---- secrets never appear ------------------------------------------------------------------


def test_no_event_anywhere_contains_a_secret_value(cloud, trail):  # noqa: F811
    _, trail_bucket = trail
    first, second = f"cds-{uuid.uuid4()}", f"rotated-{uuid.uuid4()}"
    secret = unique("picsel/cds-api-key")
    manager = cloud.client("secretsmanager")
    manager.create_secret(Name=secret, SecretString=json.dumps(
        {"url": "http://127.0.0.1/api", "key": first}))
    manager.put_secret_value(SecretId=secret, SecretString=second)
    manager.put_secret_value(SecretId=secret, SecretBinary=b"binary-" + second.encode())
    assert manager.get_secret_value(SecretId=secret)["SecretBinary"]
    # The same value passed where no parameter name gives it away is scrubbed too.
    cloud.client("glue").create_job(Name=unique("leaky-job"), Role=cloud.lambda_role(),
                                    Command={"Name": "glueetl", "ScriptLocation": "s3://b/x.py"},
                                    DefaultArguments={"--cds": second})
    cloud.client("lambda").create_function(
        FunctionName=unique("leaky-fn"), Runtime="python3.11", Role=cloud.lambda_role(),
        Handler="app.handler", Code={"ZipFile": b"PK\x05\x06" + bytes(18)},
        Environment={"Variables": {"CDS_KEY": first}})
    flush(cloud)

    events = [e["CloudTrailEvent"] for e in lookup(cloud, **by("ResourceName", secret))]
    events += [e["CloudTrailEvent"] for e in lookup(cloud, **by("EventSource",
                                                                "glue.amazonaws.com"))]
    events += [e["CloudTrailEvent"] for e in lookup(cloud, **by("EventSource",
                                                                "lambda.amazonaws.com"))]
    files = json.dumps(delivered_records(cloud, trail_bucket))
    for text in [*events, files]:
        assert first not in text and second not in text
    created = next(json.loads(e) for e in events if json.loads(e)["eventName"] == "CreateSecret")
    assert created["requestParameters"]["SecretString"] == HIDDEN
    assert created["requestParameters"]["Name"] == secret
    assert HIDDEN in files


# ---- trails --------------------------------------------------------------------------------


def test_a_logging_trail_delivers_gzipped_log_files(cloud, trail):  # noqa: F811
    name, trail_bucket = trail
    client = cloud.client("cloudtrail")
    watched = make_bucket(cloud)
    written = flush(cloud)
    assert written and all(key.startswith(f"{trail_bucket}/trail-logs/AWSLogs/") for key in written)
    records = delivered_records(cloud, trail_bucket)
    names = {(r["eventName"], (r["requestParameters"] or {}).get("Bucket")) for r in records}
    assert ("CreateBucket", watched) in names
    assert ("StartLogging", None) in {(r["eventName"], None) for r in records}
    assert all(r["eventCategory"] == "Management" for r in records)
    status = client.get_trail_status(Name=name)
    assert status["IsLogging"] is True and status["LatestDeliveryTime"]
    assert status["LatestDeliveryAttemptSucceeded"]

    client.stop_logging(Name=name)
    after_stop = make_bucket(cloud)
    flush(cloud)
    names = [(r["eventName"], (r["requestParameters"] or {}).get("Bucket"))
             for r in delivered_records(cloud, trail_bucket)]
    assert ("StopLogging", None) in [(n, None) for n, _ in names]
    assert ("CreateBucket", after_stop) not in names
    assert client.get_trail_status(Name=name)["IsLogging"] is False


def test_delivery_happens_without_being_asked(cloud, trail):  # noqa: F811
    _, trail_bucket = trail
    s3 = cloud.client("s3")
    watched = make_bucket(cloud)
    deadline = time.monotonic() + 30
    seen = 0
    while True:  # the delivery thread runs every 5 s; read the bucket again when it grows
        count = s3.list_objects_v2(Bucket=trail_bucket)["KeyCount"]
        if count > seen:
            seen = count
            records = delivered_records(cloud, trail_bucket)
            if any((r["requestParameters"] or {}).get("Bucket") == watched for r in records):
                break
        assert time.monotonic() < deadline, "no log file delivered within 30 s"
        time.sleep(0.25)  # polling interval


def test_data_events_are_delivered_only_when_selected(cloud, trail):  # noqa: F811
    name, trail_bucket = trail
    client, s3 = cloud.client("cloudtrail"), cloud.client("s3")
    data, other = make_bucket(cloud), make_bucket(cloud)
    function = unique("no-such-function")
    client.put_event_selectors(TrailName=name, EventSelectors=[{
        "ReadWriteType": "All", "IncludeManagementEvents": True, "DataResources": [
            {"Type": "AWS::S3::Object", "Values": [f"arn:aws:s3:::{data}/raw/"]},
            {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]}]}])
    s3.put_object(Bucket=data, Key="raw/day.nc", Body=b"CDF")
    s3.put_object(Bucket=data, Key="tmp/other.nc", Body=b"CDF")
    s3.put_object(Bucket=other, Key="raw/day.nc", Body=b"CDF")
    with pytest.raises(ClientError):
        cloud.client("lambda").invoke(FunctionName=function, Payload=b'{"date": "2023-09-01"}')
    requests.put(f"{cloud.endpoint_url}/{data}/raw/anon.nc", data=b"x", timeout=30)
    flush(cloud)
    records = delivered_records(cloud, trail_bucket)
    objects = {(r["eventName"], r["requestParameters"].get("Bucket"),
                r["requestParameters"].get("Key")): r
               for r in records if r["eventCategory"] == "Data"}
    assert ("PutObject", data, "raw/day.nc") in objects
    assert ("PutObject", data, "tmp/other.nc") not in objects
    assert ("PutObject", other, "raw/day.nc") not in objects
    refused = objects[("PutObject", data, "raw/anon.nc")]
    assert refused["errorCode"] == "AccessDenied"
    assert refused["userIdentity"]["accountId"] == "ANONYMOUS_PRINCIPAL"
    put = objects[("PutObject", data, "raw/day.nc")]
    assert put["resources"][0] == {"accountId": ACCOUNT, "type": "AWS::S3::Object",
                                   "ARN": f"arn:aws:s3:::{data}/raw/day.nc"}
    invoked = [r for r in records if r["eventName"] == "Invoke"
               and r["requestParameters"]["FunctionName"] == function]
    assert invoked and invoked[0]["eventCategory"] == "Data" and invoked[0]["errorCode"]
    assert "Payload" not in invoked[0]["requestParameters"]
    # Data events are not management events: LookupEvents does not return them.
    assert all(e["EventName"] != "PutObject" for e in lookup(cloud, **by("ResourceName", data)))


def test_advanced_selectors_pick_data_events_by_field(cloud, trail):  # noqa: F811
    name, trail_bucket = trail
    data = make_bucket(cloud)
    cloud.client("cloudtrail").put_event_selectors(TrailName=name, AdvancedEventSelectors=[
        {"Name": "management", "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Management"]}]},
        {"Name": "writes under products/", "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Data"]},
            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
            {"Field": "readOnly", "Equals": ["false"]},
            {"Field": "resources.ARN", "StartsWith": [f"arn:aws:s3:::{data}/products/"]}]}])
    s3 = cloud.client("s3")
    s3.put_object(Bucket=data, Key="products/a.geojson", Body=b"{}")
    s3.get_object(Bucket=data, Key="products/a.geojson")["Body"].read()
    s3.put_object(Bucket=data, Key="raw/a.nc", Body=b"CDF")
    flush(cloud)
    picked = {(r["eventName"], r["requestParameters"].get("Key"))
              for r in delivered_records(cloud, trail_bucket)
              if r["eventCategory"] == "Data" and r["requestParameters"].get("Bucket") == data}
    assert picked == {("PutObject", "products/a.geojson")}


def test_create_trail_requires_a_bucket_policy_for_cloudtrail(cloud):  # noqa: F811
    bucket, name = make_bucket(cloud), unique("refused-trail")
    client = cloud.client("cloudtrail")
    with pytest.raises(ClientError) as refused:
        client.create_trail(Name=name, S3BucketName=bucket)
    assert refused.value.response["Error"]["Code"] == "InsufficientS3BucketPolicyException"
    cloud.client("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps(
        trail_bucket_policy(bucket, name, prefix="other")))
    with pytest.raises(ClientError):  # the policy covers another prefix only
        client.create_trail(Name=name, S3BucketName=bucket, S3KeyPrefix="trail-logs")
    client.create_trail(Name=name, S3BucketName=bucket, S3KeyPrefix="other")
    client.delete_trail(Name=name)
