"""S3 on the embedded cloud decides anonymous access, public-access blocks and CORS as AWS does."""

from __future__ import annotations

import json
import uuid

import boto3
import botocore
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from picsel_nb.localcloud.policy import ANONYMOUS, Principal, evaluate, is_public
from tests.cloud_fixtures import cloud  # noqa: F401

REGION = "sa-east-1"
FULL_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
              "RestrictPublicBuckets": True}
NO_BLOCK = dict.fromkeys(FULL_BLOCK, False)
ORIGIN = "https://maps.example.org"


def public_prefix_policy(bucket: str, prefix: str = "public/") -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/{prefix}*"}]}


def tls_only_statement(bucket: str) -> dict:
    return {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


@pytest.fixture
def s3(cloud):  # noqa: F811
    return cloud.client("s3")


@pytest.fixture
def anonymous(cloud):  # noqa: F811
    """An S3 client that does not sign its requests."""
    return boto3.session.Session().client(
        "s3", endpoint_url=cloud.endpoint_url, region_name=REGION,
        config=Config(signature_version=botocore.UNSIGNED))


def new_bucket(s3, block: dict | None = None) -> str:
    name = f"access-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block or NO_BLOCK)
    return name


@pytest.fixture
def public_prefix_bucket(s3):
    """A bucket whose policy lets anyone read ``public/*`` (BPA allows public policies)."""
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="public/map.geojson", Body=b'{"type": "FeatureCollection"}')
    s3.put_object(Bucket=bucket, Key="private/raw.nc", Body=b"CDF")
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_prefix_policy(bucket)))
    return bucket


@pytest.fixture
def private_bucket(s3):
    """A bucket with Block Public Access fully on and a TLS-only policy, like the input bucket."""
    bucket = new_bucket(s3, FULL_BLOCK)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [tls_only_statement(bucket)]}))
    s3.put_object(Bucket=bucket, Key="raw/day.nc", Body=b"CDF")
    return bucket


def error_code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


def test_anonymous_get_under_a_public_prefix_succeeds(cloud, anonymous, public_prefix_bucket):  # noqa: F811
    url = f"{cloud.endpoint_url}/{public_prefix_bucket}/public/map.geojson"
    assert requests.get(url, timeout=30).content == b'{"type": "FeatureCollection"}'
    body = anonymous.get_object(Bucket=public_prefix_bucket, Key="public/map.geojson")["Body"]
    assert body.read() == b'{"type": "FeatureCollection"}'


def test_anonymous_get_outside_the_public_prefix_is_denied(cloud, anonymous, public_prefix_bucket):  # noqa: F811
    answer = requests.get(f"{cloud.endpoint_url}/{public_prefix_bucket}/private/raw.nc", timeout=30)
    assert answer.status_code == 403
    assert "<Code>AccessDenied</Code>" in answer.text
    with pytest.raises(ClientError) as refused:
        anonymous.get_object(Bucket=public_prefix_bucket, Key="private/raw.nc")
    assert error_code(refused.value) == "AccessDenied"


def test_a_missing_public_key_is_403_without_list_permission(cloud, public_prefix_bucket):  # noqa: F811
    answer = requests.get(f"{cloud.endpoint_url}/{public_prefix_bucket}/public/none.json",
                          timeout=30)
    assert answer.status_code == 403


def test_anonymous_head_is_refused_without_a_body(cloud, public_prefix_bucket):  # noqa: F811
    answer = requests.head(f"{cloud.endpoint_url}/{public_prefix_bucket}/private/raw.nc",
                           timeout=30)
    assert (answer.status_code, answer.content) == (403, b"")
    allowed = requests.head(f"{cloud.endpoint_url}/{public_prefix_bucket}/public/map.geojson",
                            timeout=30)
    assert allowed.status_code == 200


def test_anonymous_put_into_a_private_bucket_is_denied_and_stores_nothing(
        cloud, s3, anonymous, private_bucket):  # noqa: F811
    with pytest.raises(ClientError) as refused:
        anonymous.put_object(Bucket=private_bucket, Key="raw/evil.nc", Body=b"x")
    assert error_code(refused.value) == "AccessDenied"
    plain = requests.put(f"{cloud.endpoint_url}/{private_bucket}/raw/evil2.nc", data=b"x",
                         timeout=30)
    assert plain.status_code == 403
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=private_bucket)["Contents"]]
    assert keys == ["raw/day.nc"]


def test_anonymous_list_and_delete_are_denied(cloud, s3, anonymous, private_bucket):  # noqa: F811
    with pytest.raises(ClientError) as listing:
        anonymous.list_objects_v2(Bucket=private_bucket)
    assert error_code(listing.value) == "AccessDenied"
    assert requests.get(f"{cloud.endpoint_url}/{private_bucket}", timeout=30).status_code == 403
    assert requests.get(f"{cloud.endpoint_url}/", timeout=30).status_code == 403  # ListBuckets
    created = f"anon-{uuid.uuid4().hex[:12]}"
    assert requests.put(f"{cloud.endpoint_url}/{created}", timeout=30).status_code == 403
    assert created not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError):
        anonymous.delete_object(Bucket=private_bucket, Key="raw/day.nc")
    assert s3.head_object(Bucket=private_bucket, Key="raw/day.nc")["ContentLength"] == 3


def test_the_aws_cli_lists_signed_but_not_unsigned(cloud, private_bucket):  # noqa: F811
    signed = cloud.aws("s3", "ls", f"s3://{private_bucket}/raw/")
    assert "day.nc" in signed.stdout
    unsigned = cloud.aws("s3", "ls", f"s3://{private_bucket}/", "--no-sign-request", check=False)
    assert unsigned.returncode != 0 and "AccessDenied" in unsigned.stderr


def test_signed_requests_pass_a_tls_only_policy(cloud, s3, private_bucket):  # noqa: F811
    s3.put_object(Bucket=private_bucket, Key="raw/next.nc", Body=b"CDF2")
    assert s3.get_object(Bucket=private_bucket, Key="raw/next.nc")["Body"].read() == b"CDF2"
    assert s3.list_objects_v2(Bucket=private_bucket)["KeyCount"] == 2
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": private_bucket,
                                                                "Key": "raw/day.nc"})
    assert requests.get(presigned, timeout=30).content == b"CDF"


def test_an_explicit_deny_applies_to_signed_callers(s3):
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="keep/me", Body=b"x")
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:DeleteObject",
        "Resource": f"arn:aws:s3:::{bucket}/keep/*"}]}))
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key="keep/me")
    assert error_code(refused.value) == "AccessDenied"
    assert s3.head_object(Bucket=bucket, Key="keep/me")["ContentLength"] == 1


def test_restrict_public_buckets_blocks_a_public_policy(cloud, s3, public_prefix_bucket):  # noqa: F811
    s3.put_public_access_block(Bucket=public_prefix_bucket, PublicAccessBlockConfiguration={
        **NO_BLOCK, "RestrictPublicBuckets": True})
    url = f"{cloud.endpoint_url}/{public_prefix_bucket}/public/map.geojson"
    assert requests.get(url, timeout=30).status_code == 403


def test_a_public_policy_is_refused_under_block_public_policy(s3):
    bucket = new_bucket(s3, FULL_BLOCK)
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_prefix_policy(bucket)))
    assert error_code(refused.value) == "AccessDenied"
    assert "because public policies are blocked by the BlockPublicPolicy block public access " \
           "setting" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        s3.get_bucket_policy(Bucket=bucket)
    # A restricted Allow to "*" (fixed aws:SourceArn) is not public, so it is accepted.
    restricted = public_prefix_policy(bucket)
    restricted["Statement"][0]["Condition"] = {
        "ArnEquals": {"aws:SourceArn": "arn:aws:cloudfront::123456789012:distribution/EX"}}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(restricted))


def test_a_public_acl_is_refused_under_block_public_acls(s3):
    bucket = new_bucket(s3, FULL_BLOCK)
    for call in (lambda: s3.put_object(Bucket=bucket, Key="a", Body=b"x", ACL="public-read"),
                 lambda: s3.put_bucket_acl(Bucket=bucket, ACL="public-read")):
        with pytest.raises(ClientError) as refused:
            call()
        assert error_code(refused.value) == "AccessDenied"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="a")
    s3.put_object(Bucket=bucket, Key="b", Body=b"x", ACL="private")


def test_a_public_read_acl_grants_anonymous_reads_unless_ignored(cloud, s3):  # noqa: F811
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="open.txt", Body=b"hi", ACL="public-read")
    s3.put_object(Bucket=bucket, Key="closed.txt", Body=b"no")
    url = f"{cloud.endpoint_url}/{bucket}"
    assert requests.get(f"{url}/open.txt", timeout=30).content == b"hi"
    assert requests.get(f"{url}/closed.txt", timeout=30).status_code == 403
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        **NO_BLOCK, "IgnorePublicAcls": True})
    assert requests.get(f"{url}/open.txt", timeout=30).status_code == 403


def test_policy_status_follows_the_aws_public_rule(s3, public_prefix_bucket):
    assert s3.get_bucket_policy_status(Bucket=public_prefix_bucket)["PolicyStatus"]["IsPublic"]
    bucket = new_bucket(s3)
    tls_conditioned = public_prefix_policy(bucket)
    tls_conditioned["Statement"][0]["Condition"] = {"Bool": {"aws:SecureTransport": "true"}}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_conditioned))
    assert s3.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True


@pytest.fixture
def cors_bucket(s3, public_prefix_bucket):
    s3.put_bucket_cors(Bucket=public_prefix_bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600}]})
    return public_prefix_bucket


def test_cors_preflight_answers_from_the_bucket_rules(cloud, s3, cors_bucket):  # noqa: F811
    url = f"{cloud.endpoint_url}/{cors_bucket}/public/map.geojson"

    def preflight(origin: str, method: str = "GET", headers: str = "range"):
        return requests.options(url, timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers})

    allowed = preflight(ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert allowed.headers["Access-Control-Allow-Headers"] == "range"
    assert allowed.headers["Access-Control-Max-Age"] == "600"
    assert preflight("https://evil.example").status_code == 403
    assert preflight(ORIGIN, method="PUT").status_code == 403
    s3.delete_bucket_cors(Bucket=cors_bucket)
    assert preflight(ORIGIN).status_code == 403


def test_browser_gets_carry_cors_headers_only_for_allowed_origins(cloud, cors_bucket):  # noqa: F811
    url = f"{cloud.endpoint_url}/{cors_bucket}/public/map.geojson"
    allowed = requests.get(url, headers={"Origin": ORIGIN}, timeout=30)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Expose-Headers"] == "ETag"
    other = requests.get(url, headers={"Origin": "https://evil.example"}, timeout=30)
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert "Access-Control-Allow-Origin" not in requests.get(url, timeout=30).headers


# ---- the policy language, without a server ------------------------------------------------

CONTEXT = {"aws:SecureTransport": "true", "aws:SourceIp": "10.1.2.3"}


@pytest.mark.parametrize(("statement", "action", "resource", "expected"), [
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:Get*",
      "Resource": "arn:aws:s3:::b/pub/*"}, "s3:GetObject", "arn:aws:s3:::b/pub/x", "Allow"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:Get*",
      "Resource": "arn:aws:s3:::b/pub/*"}, "s3:GetObject", "arn:aws:s3:::b/priv/x", None),
    ({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["s3:PutObject"],
      "Resource": "*"}, "s3:GetObject", "arn:aws:s3:::b/x", None),
    ({"Effect": "Allow", "Principal": "*", "NotAction": "s3:Put*",
      "Resource": "*"}, "s3:getobject", "arn:aws:s3:::b/x", "Allow"),
    ({"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*",
      "Condition": {"Bool": {"aws:SecureTransport": "false"}}}, "s3:GetObject", "*", None),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*",
      "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}, "s3:GetObject", "*", "Allow"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*",
      "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}}}, "s3:GetObject", "*", None),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*",
      "Condition": {"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1"}}},
     "s3:GetObject", "*", "Allow"),
    ({"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*",
      "Condition": {"StringNotEquals": {"aws:SourceVpce": "vpce-1"}}}, "s3:GetObject", "*", "Deny"),
    ({"Effect": "Allow", "Principal": {"Service": "cloudtrail.amazonaws.com"}, "Action": "s3:*",
      "Resource": "*"}, "s3:GetObject", "*", None),
])
def test_evaluate_statements_for_an_anonymous_caller(statement, action, resource, expected):
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    assert evaluate(policy, ANONYMOUS, action, resource, CONTEXT) == expected


def test_role_principals_match_their_sessions_and_accounts_match_everyone_in_them():
    session = Principal(arn="arn:aws:sts::123456789012:assumed-role/ingest/lambda",
                        account="123456789012")
    for principal_value in ("arn:aws:iam::123456789012:role/ingest", "123456789012",
                            "arn:aws:iam::123456789012:root"):
        statement = {"Effect": "Deny", "Principal": {"AWS": principal_value}, "Action": "s3:*",
                     "Resource": "*"}
        assert evaluate({"Statement": statement}, session, "s3:GetObject", "*", {}) == "Deny"
        assert evaluate({"Statement": statement}, ANONYMOUS, "s3:GetObject", "*", {}) is None


def test_is_public_needs_an_unrestricted_allow_to_everyone():
    allow = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}
    assert is_public({"Statement": [allow]})
    assert not is_public({"Statement": [allow | {"Effect": "Deny"}]})
    assert not is_public({"Statement": [allow | {
        "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}}}]})
    assert is_public({"Statement": [allow | {
        "Condition": {"StringLike": {"aws:SourceArn": "arn:aws:cloudfront::*"}}}]})
    assert is_public({"Statement": [allow | {
        "Condition": {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}}]})
    assert not is_public({"Statement": [allow | {
        "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}}]})
    assert not is_public(None)
