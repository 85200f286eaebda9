"""The buckets: declared security posture, idempotency, publishing, emptying and deleting.

Runs on moto in-process with AWS-like settings and plain boto3 clients injected into the Stack:
the same stack code runs on real AWS.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from moto.iam.access_control import PermissionResult
from moto.s3.models import FakeBucket

from picsel_nb.settings import get_settings
from picsel_nb.stack import buckets
from picsel_nb.stack.context import Stack, get_stack
from picsel_nb.stack.errors import StackError, error_code
from tests import cloud_fixtures

REGION = "sa-east-1"
cloud = cloud_fixtures.cloud  # the shared embedded-cloud fixture


def aws_settings():
    """Settings as on a real AWS account (no local endpoint anywhere)."""
    return dataclasses.replace(get_settings(), backend="aws", region=REGION, prefix="picsel",
                               suffix_override=None)


@pytest.fixture
def moto_stack(monkeypatch) -> Iterator[Stack]:
    """A Stack over moto in-process, with plain boto3 clients injected (shared by test_stack_*).

    moto 5.2.5 treats a bucket-policy statement whose Condition it cannot evaluate as a Deny, so our
    TLS-only Deny would refuse every object call: its bucket-policy check is switched off here, as
    the embedded cloud's s3_access module does (it decides access itself).
    """
    monkeypatch.setattr(FakeBucket, "get_permission",
                        lambda self, action, resource: PermissionResult.NEUTRAL)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # moto's in-process mock
        monkeypatch.setenv(name, "testing")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield get_stack(aws_settings(), lambda service: boto3.client(service, region_name=REGION))


def test_input_bucket_is_private_encrypted_tls_only_and_expires_raw(moto_stack):
    first = buckets.ensure_input_bucket(moto_stack)
    assert buckets.ensure_input_bucket(moto_stack) == first  # idempotent
    s3, bucket = moto_stack.client("s3"), moto_stack.names.input_bucket

    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == buckets.PRIVATE_ACCESS_BLOCK and all(block.values())
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    [deny] = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert sorted(deny["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    lifecycle = {rule["ID"]: rule for rule in
                 s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert lifecycle["expire-raw"]["Filter"] == {"Prefix": "raw/"}
    assert lifecycle["expire-raw"]["Expiration"] == {"Days": buckets.RAW_EXPIRY_DAYS}
    assert lifecycle["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"]
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled"
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_cors(Bucket=bucket)
    assert error_code(caught.value) == "NoSuchCORSConfiguration"
    assert first["region"] == REGION and first["object_ownership"] == ["BucketOwnerEnforced"]


def test_raw_expiry_is_configurable_and_versioning_is_suspended(moto_stack):
    s3, bucket = moto_stack.client("s3"), moto_stack.names.input_bucket
    buckets.create_bucket(moto_stack, bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    posture = buckets.ensure_input_bucket(moto_stack, raw_expiry_days=2)
    assert posture["versioning"] == "Suspended"
    assert any(line.startswith("expire-raw") and "'Days': 2" in line for line in posture["lifecycle"])


def test_output_bucket_publishes_products_read_only_with_cors(moto_stack):
    calls: list[str] = []
    moto_stack.client("s3").meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name))
    posture = buckets.ensure_output_bucket(moto_stack)
    assert calls.index("PutPublicAccessBlock") < calls.index("PutBucketPolicy")  # AWS needs this order
    assert buckets.ensure_output_bucket(moto_stack) == posture
    s3, bucket = moto_stack.client("s3"), moto_stack.names.output_bucket

    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                     "BlockPublicPolicy": False, "RestrictPublicBuckets": False}
    statements = {s["Sid"]: s for s in json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]}
    assert statements["DenyInsecureTransport"]["Effect"] == "Deny"
    allows = [s for s in statements.values() if s["Effect"] == "Allow"]
    assert allows == [{"Sid": "PublicReadOfPublishedProductsOnly", "Effect": "Allow", "Principal": "*",
                       "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/products/*"}]
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    [cors] = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert sorted(cors["AllowedMethods"]) == ["GET", "HEAD"] and cors["AllowedOrigins"] == ["*"]
    assert set(cors["ExposeHeaders"]) == {"ETag", "Content-Length", "Content-Type"}
    assert cors["MaxAgeSeconds"] > 0
    assert any("PublicReadOfPublishedProductsOnly" in line for line in posture["policy"])


def test_a_bucket_name_taken_by_another_account_asks_for_a_suffix(moto_stack):
    s3 = boto3.client("s3", region_name=REGION)
    stubber = Stubber(s3)
    stubber.add_client_error("create_bucket", service_error_code="BucketAlreadyExists",
                             http_status_code=409)
    stack = dataclasses.replace(moto_stack, client_factory=lambda service: s3)
    with stubber, pytest.raises(StackError, match="PICSEL_SUFFIX"):
        buckets.create_bucket(stack, "picsel-input-taken")


def test_publish_sets_the_content_type_of_the_suffix(moto_stack, tmp_path):
    bucket = moto_stack.names.output_bucket
    buckets.ensure_output_bucket(moto_stack)
    page = tmp_path / "map.html"
    page.write_text("<html></html>")
    bodies = {"products/geojson/t2m/2023-09-01.geojson": '{"type": "FeatureCollection"}',
              "products/png/t2m/2023-09-01.png": b"\x89PNG",
              "products/maps/2023-09-01.html": page,
              "catalog/contours/part.ndjson": b"{}\n",
              "products/other.bin": b"?"}
    for key, body in bodies.items():
        buckets.publish(moto_stack, bucket, key, body)
    head = {key: moto_stack.client("s3").head_object(Bucket=bucket, Key=key)["ContentType"]
            for key in bodies}
    assert head == {"products/geojson/t2m/2023-09-01.geojson": "application/geo+json",
                    "products/png/t2m/2023-09-01.png": "image/png",
                    "products/maps/2023-09-01.html": "text/html; charset=utf-8",
                    "catalog/contours/part.ndjson": "application/x-ndjson",
                    "products/other.bin": "application/octet-stream"}


def test_public_url_is_virtual_hosted_on_aws_and_path_style_on_an_ip_host(moto_stack):
    key = "products/png/t2m/2023-09-01 a.png"
    assert (buckets.public_url(moto_stack, "picsel-output-x", key)
            == "https://picsel-output-x.s3.sa-east-1.amazonaws.com/products/png/t2m/2023-09-01%20a.png")
    on_ip = dataclasses.replace(moto_stack, client_factory=lambda service: boto3.client(
        service, region_name=REGION, endpoint_url="http://127.0.0.1:9"))
    assert (buckets.public_url(on_ip, "picsel-output-x", key)
            == "http://127.0.0.1:9/picsel-output-x/products/png/t2m/2023-09-01%20a.png")


def test_list_empty_and_delete_cover_pages_and_versions(moto_stack):
    s3, bucket = moto_stack.client("s3"), moto_stack.names.input_bucket
    buckets.create_bucket(moto_stack, bucket)
    for index in range(1003):  # more than one page of 1000
        s3.put_object(Bucket=bucket, Key=f"raw/x/{index:04d}.nc", Body=b"")
    assert len(buckets.list_objects(moto_stack, bucket, "raw/")) == 1003
    assert buckets.list_objects(moto_stack, bucket, "products/") == []

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="scripts/job.py", Body=b"1")
    s3.put_object(Bucket=bucket, Key="scripts/job.py", Body=b"2")
    s3.delete_object(Bucket=bucket, Key="scripts/job.py")  # a delete marker
    assert buckets.empty_bucket(moto_stack, bucket) == 1003 + 3
    assert s3.list_object_versions(Bucket=bucket).get("Versions") is None

    s3.put_object(Bucket=bucket, Key="raw/left.nc", Body=b"")
    assert buckets.delete_bucket(moto_stack, bucket) is True
    assert buckets.delete_bucket(moto_stack, bucket) is False
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=bucket)


def test_on_the_embedded_cloud_only_products_are_public_and_read_only(cloud, monkeypatch):
    monkeypatch.setenv("PICSEL_PREFIX", "picsel-stacktest")  # apart from other tests' buckets
    stack = get_stack()  # the project's own clients, as notebooks get them
    inputs = buckets.ensure_input_bucket(stack)["bucket"]
    outputs = buckets.ensure_output_bucket(stack)["bucket"]
    product = "products/png/t2m/2023-09-01.png"
    buckets.publish(stack, outputs, product, b"\x89PNG")
    buckets.publish(stack, outputs, "catalog/contours/part-0000.json", b"{}")
    buckets.publish(stack, inputs, "raw/reanalysis-era5-land/2023/09/01.nc", b"CDF")

    got = requests.get(buckets.public_url(stack, outputs, product),
                       headers={"Origin": "https://maps.example.org"}, timeout=30)
    assert got.status_code == 200 and got.content == b"\x89PNG"
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers.get("Access-Control-Allow-Origin") == "*"
    refused = {
        "catalog (not published)": requests.get(
            buckets.public_url(stack, outputs, "catalog/contours/part-0000.json"), timeout=30),
        "listing the output bucket": requests.get(buckets.public_url(stack, outputs, ""), timeout=30),
        "writing products": requests.put(
            buckets.public_url(stack, outputs, "products/png/t2m/x.png"), data=b"x", timeout=30),
        "reading input": requests.get(
            buckets.public_url(stack, inputs, "raw/reanalysis-era5-land/2023/09/01.nc"), timeout=30),
        "writing input": requests.put(
            buckets.public_url(stack, inputs, "raw/evil.nc"), data=b"x", timeout=30),
    }
    assert {what: answer.status_code for what, answer in refused.items()} == dict.fromkeys(refused, 403)
