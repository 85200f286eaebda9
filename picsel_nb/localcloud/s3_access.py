"""S3 access as AWS decides it: bucket policies, ACLs, Block Public Access and CORS.

moto stores bucket policies, ACLs, Block Public Access (BPA) settings and CORS rules but does not
enforce them (anonymous PUTs into private buckets succeed) — or enforces them wrongly: its own
policy check denies *signed* requests on any bucket with a ``Deny … aws:SecureTransport=false``
statement, and moto's server answers every CORS preflight for every origin. This module makes
the one access decision before moto sees an S3 request and switches moto's check off.

The policy language itself lives in ``policy``.

Signed callers are decided by ``authorization`` (installed before this module): identity
policies and the bucket policy together. This module decides anonymous callers, the public-access
blocks and CORS.

Decisions that differ from AWS (see the README's "Local vs AWS" table):
- The endpoint speaks plain http; it stands for AWS's TLS-terminated https, so
  ``aws:SecureTransport`` is ``true`` (a TLS-only ``Deny`` never fires).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from moto.iam.access_control import PermissionResult
from moto.s3.models import FakeBucket
from moto.s3control.models import s3control_backends

from picsel_nb.localcloud.backends import s3_backend
from picsel_nb.localcloud.policy import ANONYMOUS, evaluate, glob, global_context, is_public
from picsel_nb.localcloud.router import ACCOUNT_ID, AwsRequest, AwsResponse, Router

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
PUBLIC_CANNED_ACLS = {"public-read", "public-read-write", "authenticated-read"}

# S3 operations whose IAM action is not simply "s3:" + the operation name.
ACTIONS = {
    "HeadObject": "s3:GetObject",
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListBuckets": "s3:ListAllMyBuckets",
    "DeleteObjects": "s3:DeleteObject",
    "CopyObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "ListParts": "s3:ListMultipartUploadParts",
    "GetBucketCors": "s3:GetBucketCORS",
    "PutBucketCors": "s3:PutBucketCORS",
    "DeleteBucketCors": "s3:PutBucketCORS",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "PutBucketNotificationConfiguration": "s3:PutBucketNotification",
}

CORS_DENIED = ("CORSResponse: This CORS request is not allowed. This is usually because the "
               "evalution of Origin, request method / Access-Control-Request-Method or "
               "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")




def install(router: Router) -> None:
    """Enforce anonymous access, public-access blocks and CORS on every S3 request."""
    FakeBucket.get_permission = _decided_here
    router.intercept("s3", "*", check_request)
    router.intercept("s3", "PutBucketPolicy", refuse_public_policy)
    router.intercept("s3", "GetBucketPolicyStatus", policy_status)
    for operation in ("PutBucketAcl", "PutObjectAcl", "PutObject", "CopyObject",
                      "CreateMultipartUpload"):
        router.intercept("s3", operation, refuse_public_acl)
    router.observe(apply_cors_headers)


def _decided_here(self: FakeBucket, action: str, resource: str) -> PermissionResult:
    """moto's own bucket-policy check, switched off: ``check_request`` already decided."""
    return PermissionResult.PERMITTED


# ---------------------------------------------------------------------------------------------
# What moto stores about a bucket


@dataclass(frozen=True)
class BlockPublicAccess:
    """The effective Block Public Access settings: bucket-level OR account-level."""

    block_public_acls: bool = False
    ignore_public_acls: bool = False
    block_public_policy: bool = False
    restrict_public_buckets: bool = False


def block_public_access(bucket: FakeBucket) -> BlockPublicAccess:
    """Bucket and account settings combined, as S3 applies them."""
    blocks = [bucket.public_access_block,
              s3control_backends[ACCOUNT_ID]["aws"].public_access_block]
    blocks = [b for b in blocks if b is not None]
    return BlockPublicAccess(*(any(getattr(b, name) for b in blocks) for name in (
        "block_public_acls", "ignore_public_acls", "block_public_policy",
        "restrict_public_buckets")))


def bucket_policy(bucket: FakeBucket) -> dict | None:
    """The bucket policy as a dict, None when there is none (or it is unreadable)."""
    if not bucket.policy:
        return None
    try:
        return json.loads(bucket.policy)
    except ValueError:
        return None


def find_bucket(name: str | None) -> FakeBucket | None:
    """moto's bucket of that name, None when it does not exist."""
    return s3_backend().buckets.get(name) if name else None


# ---------------------------------------------------------------------------------------------
# The access decision


def check_request(request: AwsRequest) -> AwsResponse | None:
    """Answer an S3 request that AWS would refuse (or a CORS preflight); None lets it through."""
    if request.path.startswith(("/moto-api", "/_picsel")):
        return None
    bucket_name = request.params.get("Bucket") or bucket_from_path(request.path)
    if request.method == "OPTIONS":
        return preflight(request, find_bucket(bucket_name))
    if not request.principal.anonymous or is_browser_post(request):
        return None  # authenticated: ``authorization`` decided
    return _check_anonymous(request, bucket_name)


def _check_anonymous(request: AwsRequest, bucket_name: str | None) -> AwsResponse | None:
    if request.operation is None or bucket_name is None:
        return access_denied(request)
    bucket = find_bucket(bucket_name)
    if bucket is None:  # S3 answers NoSuchBucket to anyone; creating one needs an account
        return access_denied(request) if request.operation == "CreateBucket" else None
    action, resource = action_and_resource(request)
    context = request_context(request)
    if not anonymous_allowed(bucket, action, resource, context):
        return access_denied(request)
    # Without s3:ListBucket S3 does not reveal that a key is missing: 403, not 404.
    if (action == "s3:GetObject" and request.params.get("Key") not in bucket.keys
            and not anonymous_allowed(bucket, "s3:ListBucket", f"arn:aws:s3:::{bucket.name}",
                                      context)):
        return access_denied(request)
    return None


def anonymous_allowed(bucket: FakeBucket, action: str, resource: str,
                      context: dict[str, object]) -> bool:
    """Whether an anonymous caller may do ``action`` on ``resource`` of ``bucket``.

    The bucket policy first (an explicit Deny wins; an Allow counts unless the policy is public
    and RestrictPublicBuckets is on), then ACLs granting AllUsers (unless IgnorePublicAcls or
    ACLs are disabled by BucketOwnerEnforced object ownership).
    """
    policy = bucket_policy(bucket)
    blocks = block_public_access(bucket)
    verdict = evaluate(policy, ANONYMOUS, action, resource, context)
    if verdict == "Deny":
        return False
    if verdict == "Allow" and not (blocks.restrict_public_buckets and is_public(policy)):
        return True
    if blocks.ignore_public_acls or "BucketOwnerEnforced" in str(bucket.ownership_rule or ""):
        return False
    return _acl_allows(bucket, action, resource)


def _acl_allows(bucket: FakeBucket, action: str, resource: str) -> bool:
    """ACL grants to AllUsers: the object's ACL for reading it, the bucket's ACL otherwise
    (READ lists the bucket, WRITE puts and deletes objects)."""
    wanted = {"s3:GetObject": "READ", "s3:GetObjectAcl": "READ_ACP", "s3:ListBucket": "READ",
              "s3:GetBucketAcl": "READ_ACP", "s3:PutObject": "WRITE",
              "s3:DeleteObject": "WRITE"}.get(action)
    if action in ("s3:GetObject", "s3:GetObjectAcl"):
        key = bucket.keys.get(resource.split("/", 1)[-1])
        acl = key.acl if key is not None else None
    else:
        acl = bucket.acl
    return wanted is not None and acl is not None and any(
        grantee.uri == ALL_USERS and {wanted, "FULL_CONTROL"} & set(grant.permissions)
        for grant in acl.grants for grantee in grant.grantees)


def action_and_resource(request: AwsRequest) -> tuple[str, str]:
    """The IAM action of an S3 request and the bucket or object ARN it acts on."""
    operation = request.operation or ""
    action = ACTIONS.get(operation, f"s3:{operation}")
    bucket, key = request.params.get("Bucket"), request.params.get("Key")
    if bucket is None:
        return action, "*"
    object_level = key is not None and action not in ("s3:ListBucket",)
    return action, f"arn:aws:s3:::{bucket}/{key}" if object_level else f"arn:aws:s3:::{bucket}"


def request_context(request: AwsRequest) -> dict[str, object]:
    """The condition keys an S3 request carries: the global ones and S3's own."""
    context = global_context(request.principal, request.source_ip, request.user_agent,
                             request.region)
    optional = {
        "aws:Referer": request.headers.get("referer"),
        "s3:prefix": request.query.get("prefix", [None])[0],
        "s3:delimiter": request.query.get("delimiter", [None])[0],
        "s3:x-amz-acl": request.headers.get("x-amz-acl"),
        "s3:x-amz-server-side-encryption": request.headers.get("x-amz-server-side-encryption"),
    }
    context.update({k: v for k, v in optional.items() if v is not None})
    return context


def access_denied(request: AwsRequest, message: str = "Access Denied") -> AwsResponse:
    """S3's 403 AccessDenied (no body for HEAD, as S3 answers)."""
    response = AwsResponse.xml_error("AccessDenied", message, 403)
    if request.method == "HEAD":
        response.body = b""
    return response


def bucket_from_path(path: str) -> str | None:
    """The bucket of a path-style S3 URL."""
    return path.lstrip("/").split("/", 1)[0] or None


def is_browser_post(request: AwsRequest) -> bool:
    """An HTML-form POST upload carries its own signature in the form fields."""
    return (request.method == "POST" and request.operation is None
            and request.headers.get("content-type", "").startswith("multipart/form-data"))


# ---------------------------------------------------------------------------------------------
# Refusing public policies and ACLs (BlockPublicPolicy, BlockPublicAcls)


def refuse_public_policy(request: AwsRequest) -> AwsResponse | None:
    """PutBucketPolicy with a public policy on a bucket that blocks public policies → 403."""
    bucket = find_bucket(request.params.get("Bucket"))
    if bucket is None or not block_public_access(bucket).block_public_policy:
        return None
    try:
        policy = json.loads(request.body)
    except ValueError:
        return None  # moto answers MalformedPolicy
    if not is_public(policy):
        return None
    who = request.principal.arn or "anonymous"
    return access_denied(request, (
        f'User: {who} is not authorized to perform: s3:PutBucketPolicy on resource: '
        f'"arn:aws:s3:::{bucket.name}" because public policies are blocked by the '
        f"BlockPublicPolicy block public access setting."))


def refuse_public_acl(request: AwsRequest) -> AwsResponse | None:
    """A public ACL (canned, grant header or ACL document) on a BlockPublicAcls bucket → 403."""
    bucket = find_bucket(request.params.get("Bucket"))
    if bucket is None or not block_public_access(bucket).block_public_acls:
        return None
    return access_denied(request) if grants_public_acl(request) else None


def grants_public_acl(request: AwsRequest) -> bool:
    """Whether the request sets an ACL that grants AllUsers or AuthenticatedUsers."""
    if request.headers.get("x-amz-acl", "").lower() in PUBLIC_CANNED_ACLS:
        return True
    grants = " ".join(v for k, v in request.headers.items() if k.startswith("x-amz-grant-"))
    document = request.body.decode("utf-8", "replace") if request.operation in (
        "PutBucketAcl", "PutObjectAcl") else ""
    return any(group in text for group in (ALL_USERS, AUTHENTICATED_USERS)
               for text in (grants, document))


def policy_status(request: AwsRequest) -> AwsResponse | None:
    """GetBucketPolicyStatus by AWS's public-policy rule (moto calls any conditional policy private)."""
    bucket = find_bucket(request.params.get("Bucket"))
    policy = bucket_policy(bucket) if bucket else None
    if policy is None:
        return None  # moto answers NoSuchBucket / NoSuchBucketPolicy
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<PolicyStatus><IsPublic>'
            f"{str(is_public(policy)).lower()}</IsPublic></PolicyStatus>")
    return AwsResponse(200, {"Content-Type": "application/xml"}, body.encode())


# ---------------------------------------------------------------------------------------------
# CORS


def preflight(request: AwsRequest, bucket: FakeBucket | None) -> AwsResponse:
    """Answer a CORS preflight from the bucket's CORS rules (the first matching rule wins)."""
    origin = request.headers.get("origin")
    method = request.headers.get("access-control-request-method")
    if not origin or not method:
        return AwsResponse.xml_error(
            "BadRequest", "Insufficient information. Origin request header needed.", 400)
    if bucket is None:
        return AwsResponse.xml_error("AccessForbidden", "CORSResponse: Bucket not found", 403)
    if not bucket.cors:
        return AwsResponse.xml_error(
            "AccessForbidden", "CORSResponse: CORS is not enabled for this bucket.", 403)
    asked = [h.strip().lower() for h in
             request.headers.get("access-control-request-headers", "").split(",") if h.strip()]
    rule = matching_cors_rule(bucket, origin, method, asked)
    if rule is None:
        return AwsResponse.xml_error("AccessForbidden", CORS_DENIED, 403)
    headers = cors_headers(rule, origin)
    if asked:
        headers["Access-Control-Allow-Headers"] = ", ".join(asked)
    if rule.max_age_seconds is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
    return AwsResponse(200, headers, b"")


def matching_cors_rule(bucket: FakeBucket, origin: str, method: str,
                       request_headers: list[str] = ()):
    """The first CORS rule allowing this origin, method and (preflight) request headers."""
    for rule in bucket.cors:
        if (any(glob(o, origin, False) for o in rule.allowed_origins or [])
                and method.upper() in [m.upper() for m in rule.allowed_methods or []]
                and all(any(glob(a, h, True) for a in rule.allowed_headers or [])
                        for h in request_headers)):
            return rule
    return None


def cors_headers(rule, origin: str) -> dict[str, str]:
    """The Access-Control-* headers S3 sends for a matching rule."""
    wildcard = "*" in (rule.allowed_origins or [])
    headers = {
        "Access-Control-Allow-Origin": "*" if wildcard else origin,
        "Access-Control-Allow-Methods": ", ".join(rule.allowed_methods or []),
        "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if not wildcard:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule.exposed_headers:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.exposed_headers)
    return headers


def apply_cors_headers(request: AwsRequest, response: AwsResponse) -> None:
    """Give S3 responses the CORS headers of the bucket's rules, and no others.

    moto's server (flask-cors) adds ``Access-Control-Allow-Origin`` for any origin to every
    response; S3 sends it only when a CORS rule matches the request's Origin and method.
    """
    if (request.service != "s3" or request.method == "OPTIONS"
            or request.path.startswith(("/moto-api", "/_picsel"))):
        return
    for name in [n for n in response.headers if n.lower().startswith("access-control-")]:
        del response.headers[name]
    origin = request.headers.get("origin")
    bucket = find_bucket(request.params.get("Bucket") or bucket_from_path(request.path))
    rule = matching_cors_rule(bucket, origin, request.method) if origin and bucket else None
    if rule is not None:
        response.headers.update(cors_headers(rule, origin))
