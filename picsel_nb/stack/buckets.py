"""The S3 buckets of the pipeline: a private input bucket and an output bucket that publishes
`products/` to the world, read-only; plus publishing, listing, emptying and describing them.

Layout: input `raw/` (downloads, expire), `scripts/` (Glue code), `tmp/` (Glue temp dir, expire);
output `products/` (public read), `catalog/` (private, crawled).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit, urlunsplit

from botocore.utils import check_dns_name, is_valid_ipv4_endpoint_url, is_valid_ipv6_endpoint_url

from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import StackError, explain, tolerate
from picsel_nb.stack.roles import policy_values, render_policy

RAW_PREFIX = "raw/"
SCRIPTS_PREFIX = "scripts/"
TEMP_PREFIX = "tmp/"
PUBLIC_PREFIX = "products/"
CATALOG_PREFIX = "catalog/"
RAW_EXPIRY_DAYS = 7  # raw downloads are kept only until the job has turned them into products
TEMP_EXPIRY_DAYS = 1
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys

# One mapping from file suffix to Content-Type, for everything the pipeline publishes or uploads.
CONTENT_TYPES = {
    ".geojson": "application/geo+json",
    ".json": "application/json",
    ".ndjson": "application/x-ndjson",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".py": "text/x-python; charset=utf-8",
    ".nc": "application/x-netcdf",
    ".zip": "application/zip",
    ".whl": "application/zip",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"

PRIVATE_ACCESS_BLOCK = {
    "BlockPublicAcls": True, "IgnorePublicAcls": True,
    "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
}
# ACLs stay blocked; only a public *policy* (ours: GetObject on products/*) may take effect.
PUBLIC_POLICY_ACCESS_BLOCK = {**PRIVATE_ACCESS_BLOCK, "BlockPublicPolicy": False,
                              "RestrictPublicBuckets": False}
ENCRYPTION = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
ABORT_INCOMPLETE_UPLOADS = {
    "ID": "abort-incomplete-multipart-uploads", "Filter": {"Prefix": ""}, "Status": "Enabled",
    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
}
CORS_RULES = [{
    "AllowedMethods": ["GET", "HEAD"], "AllowedOrigins": ["*"], "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag", "Content-Length", "Content-Type"], "MaxAgeSeconds": 3600,
}]
# What get_bucket_* answers when that configuration was never set.
_NOT_CONFIGURED = ("NoSuchPublicAccessBlockConfiguration", "ServerSideEncryptionConfigurationNotFoundError",
                   "NoSuchBucketPolicy", "NoSuchLifecycleConfiguration", "NoSuchCORSConfiguration",
                   "OwnershipControlsNotFoundError")


def expire_rule(prefix: str, days: int) -> dict:
    """A lifecycle rule deleting objects under `prefix` `days` after their creation."""
    return {"ID": f"expire-{prefix.strip('/')}", "Filter": {"Prefix": prefix}, "Status": "Enabled",
            "Expiration": {"Days": days}}


def bucket_policy(stack: Stack, bucket: str, *templates: str, **values: str) -> dict:
    """The bucket's policy: deny non-TLS access, plus the statements of infra/policies/`templates`."""
    filled = policy_values(stack, Bucket=bucket, **values)
    statements = [statement for name in ("bucket-tls-only", *templates)
                  for statement in render_policy(name, filled)["Statement"]]
    return {"Version": "2012-10-17", "Statement": statements}


def create_bucket(stack: Stack, bucket: str) -> str:
    """Create the bucket in the stack's region unless this account already owns it."""
    s3 = stack.client("s3")
    location = ({} if stack.region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": stack.region}})
    taken = (f"The bucket name {bucket!r} is taken by another AWS account (bucket names are global). "
             "Choose another suffix: export PICSEL_SUFFIX=<something unique>, then run again.")
    with tolerate("BucketAlreadyOwnedByYou"), explain("BucketAlreadyExists", taken):
        s3.create_bucket(Bucket=bucket, **location)
    s3.get_waiter("bucket_exists").wait(Bucket=bucket)
    return bucket


def _configure(stack: Stack, bucket: str, access_block: dict, policy: dict,
               lifecycle_rules: list[dict]) -> None:
    """Bring a bucket to its declared state; the access block goes first, as AWS rejects a public
    policy while BlockPublicPolicy is on."""
    s3 = stack.client("s3")
    s3.put_bucket_ownership_controls(
        Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=access_block)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTION)
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                          LifecycleConfiguration={"Rules": lifecycle_rules})
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})


def ensure_private_bucket(stack: Stack, bucket: str, policy: dict | None = None,
                          lifecycle_rules: list[dict] | None = None) -> dict:
    """A bucket nobody outside the account can reach: Block Public Access on, SSE-S3, TLS only
    (or `policy`), no versioning; returns `describe_bucket`."""
    create_bucket(stack, bucket)
    _configure(stack, bucket, PRIVATE_ACCESS_BLOCK, policy or bucket_policy(stack, bucket),
               lifecycle_rules or [ABORT_INCOMPLETE_UPLOADS])
    return describe_bucket(stack, bucket)


def ensure_input_bucket(stack: Stack, raw_expiry_days: int = RAW_EXPIRY_DAYS) -> dict:
    """The private input bucket; raw downloads expire after `raw_expiry_days`."""
    rules = [expire_rule(RAW_PREFIX, raw_expiry_days), expire_rule(TEMP_PREFIX, TEMP_EXPIRY_DAYS),
             ABORT_INCOMPLETE_UPLOADS]
    return ensure_private_bucket(stack, stack.names.input_bucket, lifecycle_rules=rules)


def ensure_output_bucket(stack: Stack) -> dict:
    """The output bucket: anyone may GET `products/*` (no listing, no writing), browsers via CORS."""
    bucket = create_bucket(stack, stack.names.output_bucket)
    blocked = (f"AWS denied configuring the public-read bucket {bucket}. If the account's own Block "
               "Public Access settings block public policies (S3 console, 'Block Public Access "
               "settings for this account'), turn BlockPublicPolicy and RestrictPublicBuckets off "
               "there; otherwise check the caller's S3 permissions.")
    with explain("AccessDenied", blocked):
        _configure(stack, bucket, PUBLIC_POLICY_ACCESS_BLOCK,
                   bucket_policy(stack, bucket, "bucket-public-products"), [ABORT_INCOMPLETE_UPLOADS])
    stack.client("s3").put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": CORS_RULES})
    return describe_bucket(stack, bucket)


def content_type(key: str) -> str:
    """The Content-Type of an object, from its file suffix."""
    return CONTENT_TYPES.get(PurePosixPath(key).suffix.lower(), DEFAULT_CONTENT_TYPE)


def publish(stack: Stack, bucket: str, key: str, body: bytes | str | Path) -> dict:
    """Upload bytes, text or a file (multipart when large) with the Content-Type of its suffix."""
    s3 = stack.client("s3")
    media_type = content_type(key)
    if isinstance(body, Path):
        s3.upload_file(str(body), bucket, key, ExtraArgs={"ContentType": media_type})
    else:
        data = body.encode() if isinstance(body, str) else body
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=media_type)
    return {"bucket": bucket, "key": key, "content_type": media_type}


def public_url(stack: Stack, bucket: str, key: str) -> str:
    """The anonymous URL of an object, addressed as botocore would: virtual-hosted
    (https://<bucket>.s3.<region>.amazonaws.com/<key>) unless the S3 host is an IP address, the
    client asks for path style, or the bucket name is not DNS-compatible."""
    s3 = stack.client("s3")
    base = s3.meta.endpoint_url
    scheme, host = urlsplit(base)[:2]
    path_style = (is_valid_ipv4_endpoint_url(base) or is_valid_ipv6_endpoint_url(base)
                  or (s3.meta.config.s3 or {}).get("addressing_style") == "path"
                  or not check_dns_name(bucket))
    if path_style:
        return urlunsplit((scheme, host, f"/{bucket}/{quote(key)}", "", ""))
    return urlunsplit((scheme, f"{bucket}.{host}", f"/{quote(key)}", "", ""))


def list_objects(stack: Stack, bucket: str, prefix: str = "") -> list[dict]:
    """Every object under `prefix` (Key, Size, LastModified, ETag…), across pages."""
    pages = stack.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item for page in pages for item in page.get("Contents", [])]


def empty_bucket(stack: Stack, bucket: str) -> int:
    """Delete every object version and delete marker, 1000 per request; how many were deleted.

    Everything is listed before anything is deleted, so no page marker points at a deleted key.
    """
    s3 = stack.client("s3")
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
    targets = [{"Key": item["Key"], "VersionId": item["VersionId"]} for page in pages
               for item in page.get("Versions", []) + page.get("DeleteMarkers", [])]
    for start in range(0, len(targets), DELETE_BATCH):
        batch = targets[start:start + DELETE_BATCH]
        errors = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True}).get("Errors")
        if errors:
            raise StackError(f"could not empty {bucket}: {errors[0]['Key']}: {errors[0]['Message']}")
    return len(targets)


def delete_bucket(stack: Stack, bucket: str) -> bool:
    """Empty and delete the bucket; False when it did not exist."""
    s3 = stack.client("s3")
    with tolerate("NoSuchBucket"):
        empty_bucket(stack, bucket)
        s3.delete_bucket(Bucket=bucket)
        s3.get_waiter("bucket_not_exists").wait(Bucket=bucket)
        return True
    return False


def _read(call, **kwargs) -> dict:
    """A get_bucket_* answer, or {} when that configuration is not set."""
    with tolerate(*_NOT_CONFIGURED):
        return call(**kwargs)
    return {}


def _statement_summary(statement: dict) -> str:
    actions = statement.get("Action", statement.get("NotAction"))
    text = (f"{statement.get('Sid', '-')}: {statement['Effect']} {actions} "
            f"to {statement.get('Principal', '')} on {statement.get('Resource', [])}")
    return f"{text} when {statement['Condition']}" if "Condition" in statement else text


def _rule_summary(rule: dict) -> str:
    prefix = rule.get("Filter", {}).get("Prefix") or "every object"
    actions = ", ".join(f"{name} {value}" for name, value in rule.items()
                        if name not in ("ID", "Filter", "Prefix", "Status"))
    return f"{rule.get('ID', '-')} ({rule['Status']}) on {prefix}: {actions}"


def describe_bucket(stack: Stack, bucket: str) -> dict:
    """The bucket's security posture in a small dict, for notebooks to show."""
    s3 = stack.client("s3")
    encryption = _read(s3.get_bucket_encryption, Bucket=bucket).get(
        "ServerSideEncryptionConfiguration", {}).get("Rules", [])
    ownership = _read(s3.get_bucket_ownership_controls, Bucket=bucket).get(
        "OwnershipControls", {}).get("Rules", [])
    policy = json.loads(_read(s3.get_bucket_policy, Bucket=bucket).get("Policy", "{}"))
    return {
        "bucket": bucket,
        "region": s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] or "us-east-1",
        "public_access_block": _read(s3.get_public_access_block, Bucket=bucket).get(
            "PublicAccessBlockConfiguration", {}),
        "object_ownership": [rule["ObjectOwnership"] for rule in ownership],
        "encryption": [rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for rule in encryption],
        "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled"),
        "policy": [_statement_summary(statement) for statement in policy.get("Statement", [])],
        "lifecycle": [_rule_summary(rule) for rule in
                      _read(s3.get_bucket_lifecycle_configuration, Bucket=bucket).get("Rules", [])],
        "cors": _read(s3.get_bucket_cors, Bucket=bucket).get("CORSRules", []),
    }
