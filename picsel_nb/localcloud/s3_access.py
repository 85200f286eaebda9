"""S3 access as AWS decides it: bucket policies, ACLs, Block Public Access and CORS.

moto stores bucket policies, ACLs, Block Public Access (BPA) settings and CORS rules but does not
enforce them (anonymous PUTs into private buckets succeed) — or enforces them wrongly: its own
policy check denies *signed* requests on any bucket with a ``Deny … aws:SecureTransport=false``
statement, and moto's server answers every CORS preflight for every origin. This module makes
the one access decision before moto sees an S3 request and switches moto's check off.

The policy language is evaluated by the small hand-written functions below (``evaluate`` →
``statement_applies`` → principal / action / resource / condition matchers): no library in the
environment evaluates resource policies (``parliament`` lints them; moto's ``IAMPolicy`` mishandles
conditions and principals).

Decisions that differ from AWS (see the README's "Local vs AWS" table):
- The endpoint speaks plain http; it stands for AWS's TLS-terminated https, so
  ``aws:SecureTransport`` is ``true`` (a TLS-only ``Deny`` never fires).
- Signed requests are callers of the account itself: only explicit ``Deny`` statements of the
  bucket policy apply to them (identity policies are moto's IAM business, off by default).
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from moto.iam.access_control import PermissionResult
from moto.s3.models import FakeBucket
from moto.s3control.models import s3control_backends
from moto.sts.models import sts_backends

from picsel_nb.localcloud.backends import s3_backend
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

# Condition keys that, compared with fixed values, make an Allow to "*" non-public (AWS's rule).
RESTRICTING_KEYS = {
    "aws:sourcearn", "aws:sourceaccount", "aws:sourceowner", "aws:sourcevpc", "aws:sourcevpce",
    "aws:sourceorgid", "aws:sourceorgpaths", "aws:principalorgid", "aws:principalorgpaths",
    "aws:principalaccount", "aws:principalarn", "aws:userid", "aws:sourceip",
    "s3:dataaccesspointarn", "s3:dataaccesspointaccount",
}
FIXED_VALUE_OPERATORS = {"stringequals", "stringequalsignorecase", "stringlike", "arnequals",
                         "arnlike", "ipaddress"}

CORS_DENIED = ("CORSResponse: This CORS request is not allowed. This is usually because the "
               "evalution of Origin, request method / Access-Control-Request-Method or "
               "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")


@dataclass(frozen=True)
class Principal:
    """Who a request is evaluated as: anonymous, an identity of an account, or an AWS service."""

    arn: str | None = None  # caller ARN (IAM user, assumed-role session, account root)
    account: str | None = None
    service: str | None = None  # e.g. "cloudtrail.amazonaws.com"

    @property
    def anonymous(self) -> bool:
        return self.arn is None and self.service is None


ANONYMOUS = Principal()


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
# The policy language


def evaluate(policy: dict | None, principal: Principal, action: str, resource: str,
             context: dict[str, object]) -> str | None:
    """``"Deny"`` when a statement denies, else ``"Allow"`` when one allows, else None (implicit)."""
    verdict = None
    for statement in _statements(policy):
        if statement_applies(statement, principal, action, resource, context):
            if statement.get("Effect") == "Deny":
                return "Deny"
            verdict = "Allow"
    return verdict


def statement_applies(statement: dict, principal: Principal, action: str, resource: str,
                      context: dict[str, object]) -> bool:
    """Whether one statement covers this principal, action and resource under its conditions."""
    return (principal_matches(statement, principal)
            and _element_matches(statement, "Action", action, ignore_case=True)
            and _element_matches(statement, "Resource", resource, ignore_case=False)
            and conditions_hold(statement.get("Condition") or {}, context))


def principal_matches(statement: dict, principal: Principal) -> bool:
    """Principal / NotPrincipal of a resource-policy statement against the caller."""
    if "NotPrincipal" in statement:
        return not _principal_in(statement["NotPrincipal"], principal)
    return _principal_in(statement.get("Principal"), principal)


def _principal_in(element: object, principal: Principal) -> bool:
    if element == "*":
        return True
    if not isinstance(element, dict):
        return False
    if principal.service and principal.service in _as_list(element.get("Service")):
        return True
    return any(_aws_principal_matches(value, principal) for value in _as_list(element.get("AWS")))


def _aws_principal_matches(value: str, principal: Principal) -> bool:
    """One ``"AWS"`` principal value: ``*``, an account (id or root ARN), a role or a user ARN."""
    if value == "*":
        return True
    if principal.arn is None:
        return False
    account = value if value.isdigit() else _arn_part(value, 4)
    if value.isdigit() or value.endswith(":root"):
        return principal.account == account
    if ":role/" in value:  # a role ARN also names every session of that role
        role = value.rsplit("/", 1)[-1]
        session_arn = f"arn:aws:sts::{account}:assumed-role/{role}/"
        return principal.arn == value or principal.arn.startswith(session_arn)
    return principal.arn == value


def _element_matches(statement: dict, name: str, value: str, *, ignore_case: bool) -> bool:
    """Action/NotAction or Resource/NotResource with IAM wildcards (``*``, ``?``)."""
    if f"Not{name}" in statement:
        return not any(_glob(p, value, ignore_case) for p in _as_list(statement[f"Not{name}"]))
    return any(_glob(p, value, ignore_case) for p in _as_list(statement.get(name)))


def conditions_hold(conditions: dict, context: dict[str, object]) -> bool:
    """Every ``{operator: {key: values}}`` block holds for the request context (keys any case).

    A key missing from the context fails positive operators, satisfies negated ones
    (``StringNotEquals``, ``NotIpAddress`` …) and any ``…IfExists`` operator, as in IAM.
    """
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, block in conditions.items():
        for key, expected in block.items():
            if not _condition_holds(operator, lowered.get(key.lower()), _as_list(expected)):
                return False
    return True


def _condition_holds(operator: str, actual: object, expected: list) -> bool:
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    if op == "Null":
        return (actual is None) == (str(expected[0]).lower() == "true")
    negated = "Not" in op
    if actual is None:
        return if_exists or negated
    test = _comparison(op.replace("Not", ""))
    values = actual if isinstance(actual, list) else [actual]
    if qualifier == "ForAllValues":
        matched = all(any(test(v, e) for e in expected) for v in values)
    else:
        matched = any(test(v, e) for v in values for e in expected)
    return not matched if negated else matched


def _comparison(op: str) -> Callable[[object, object], bool]:
    """The value test of a (non-negated) condition operator."""
    def number(x: object) -> float:
        return float(x)

    def date(x: object) -> float:
        text = str(x)
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        return datetime.fromisoformat(text).timestamp()

    ordered = {"Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b,
               "LessThanEquals": lambda a, b: a <= b, "GreaterThan": lambda a, b: a > b,
               "GreaterThanEquals": lambda a, b: a >= b}
    for family, convert in (("Numeric", number), ("Date", date)):
        if op.startswith(family):
            compare = ordered[op.removeprefix(family)]
            return lambda a, b, c=compare, f=convert: c(f(a), f(b))
    return {
        "StringEquals": lambda a, b: str(a) == str(b),
        "StringEqualsIgnoreCase": lambda a, b: str(a).lower() == str(b).lower(),
        "StringLike": lambda a, b: _glob(str(b), str(a), False),
        "ArnEquals": lambda a, b: str(a) == str(b),
        "ArnLike": lambda a, b: _glob(str(b), str(a), False),
        "Bool": lambda a, b: str(a).lower() == str(b).lower(),
        "IpAddress": lambda a, b: ipaddress.ip_address(str(a)) in ipaddress.ip_network(
            str(b), strict=False),
    }.get(op, lambda a, b: False)


def is_public(policy: dict | None) -> bool:
    """AWS's definition: some Allow reaches ``*`` without a fixed-value restricting condition."""
    for statement in _statements(policy):
        if statement.get("Effect") != "Allow":
            continue
        wildcard = "NotPrincipal" in statement or principal_matches(statement, ANONYMOUS)
        if wildcard and not _restricted(statement.get("Condition") or {}):
            return True
    return False


def _restricted(conditions: dict) -> bool:
    for operator, block in conditions.items():
        if operator.lower() not in FIXED_VALUE_OPERATORS:
            continue
        for key, values in block.items():
            if key.lower() in RESTRICTING_KEYS and all(_fixed(key, v) for v in _as_list(values)):
                return True
    return False


def _fixed(key: str, value: object) -> bool:
    """A value that names something specific: no wildcard, and no IP range wider than /8."""
    text = str(value)
    if "*" in text or "?" in text:
        return False
    if key.lower() == "aws:sourceip":
        return ipaddress.ip_network(text, strict=False).prefixlen >= 8
    return True


@lru_cache(maxsize=4096)
def _glob_regex(pattern: str, ignore_case: bool) -> re.Pattern:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _glob(pattern: str, value: str, ignore_case: bool) -> bool:
    return _glob_regex(pattern, ignore_case).fullmatch(value) is not None


def _statements(policy: dict | None) -> list[dict]:
    return _as_list((policy or {}).get("Statement"))


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _arn_part(arn: str, index: int) -> str:
    parts = arn.split(":")
    return parts[index] if len(parts) > index else ""


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


def caller(request: AwsRequest) -> Principal:
    """The principal a request is evaluated as (moto's view of the access key, as STS reports it)."""
    if not request.signed:
        return ANONYMOUS
    _, arn, account = sts_backends[ACCOUNT_ID]["aws"].get_caller_identity(
        request.access_key, request.region)
    return Principal(arn=arn, account=account)


# ---------------------------------------------------------------------------------------------
# The access decision


def check_request(request: AwsRequest) -> AwsResponse | None:
    """Answer an S3 request that AWS would refuse (or a CORS preflight); None lets it through."""
    if request.path.startswith(("/moto-api", "/_picsel")):
        return None
    bucket_name = request.params.get("Bucket") or _bucket_from_path(request.path)
    if request.method == "OPTIONS":
        return preflight(request, find_bucket(bucket_name))
    if request.signed or _is_browser_post(request):
        bucket = find_bucket(bucket_name)
        return _deny_signed(request, bucket) if bucket else None
    return _check_anonymous(request, bucket_name)


def _check_anonymous(request: AwsRequest, bucket_name: str | None) -> AwsResponse | None:
    if request.operation is None or bucket_name is None:
        return access_denied(request)
    bucket = find_bucket(bucket_name)
    if bucket is None:  # S3 answers NoSuchBucket to anyone; creating one needs an account
        return access_denied(request) if request.operation == "CreateBucket" else None
    action, resource = _action_and_resource(request)
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


def _deny_signed(request: AwsRequest, bucket: FakeBucket) -> AwsResponse | None:
    """A signed caller is refused only by an explicit Deny of the bucket policy."""
    policy = bucket_policy(bucket)
    if request.operation is None or policy is None:
        return None
    action, resource = _action_and_resource(request)
    principal = caller(request)
    verdict = evaluate(policy, principal, action, resource, request_context(request, principal))
    return access_denied(request) if verdict == "Deny" else None


def _action_and_resource(request: AwsRequest) -> tuple[str, str]:
    operation = request.operation or ""
    action = ACTIONS.get(operation, f"s3:{operation}")
    bucket, key = request.params.get("Bucket"), request.params.get("Key")
    if bucket is None:
        return action, "*"
    object_level = key is not None and action not in ("s3:ListBucket",)
    return action, f"arn:aws:s3:::{bucket}/{key}" if object_level else f"arn:aws:s3:::{bucket}"


def request_context(request: AwsRequest, principal: Principal = ANONYMOUS) -> dict[str, object]:
    """The condition keys a request carries (http here stands for AWS's https: SecureTransport)."""
    now = time.time()
    context: dict[str, object] = {
        "aws:SecureTransport": "true",
        "aws:SourceIp": request.source_ip,
        "aws:UserAgent": request.user_agent,
        "aws:CurrentTime": datetime.fromtimestamp(now, UTC).isoformat(),
        "aws:EpochTime": str(int(now)),
        "aws:RequestedRegion": request.region,
    }
    optional = {
        "aws:Referer": request.headers.get("referer"),
        "s3:prefix": request.query.get("prefix", [None])[0],
        "s3:delimiter": request.query.get("delimiter", [None])[0],
        "s3:x-amz-acl": request.headers.get("x-amz-acl"),
        "s3:x-amz-server-side-encryption": request.headers.get("x-amz-server-side-encryption"),
        "aws:PrincipalAccount": principal.account,
        "aws:PrincipalArn": _role_of_session(principal.arn) if principal.arn else None,
    }
    context.update({k: v for k, v in optional.items() if v is not None})
    return context


def access_denied(request: AwsRequest, message: str = "Access Denied") -> AwsResponse:
    """S3's 403 AccessDenied (no body for HEAD, as S3 answers)."""
    response = AwsResponse.xml_error("AccessDenied", message, 403)
    if request.method == "HEAD":
        response.body = b""
    return response


def _role_of_session(arn: str) -> str:
    """aws:PrincipalArn of an assumed-role session is the role's ARN, not the session's."""
    match = re.fullmatch(r"arn:aws:sts::(\d+):assumed-role/([^/]+)/.+", arn)
    return f"arn:aws:iam::{match.group(1)}:role/{match.group(2)}" if match else arn


def _bucket_from_path(path: str) -> str | None:
    return path.lstrip("/").split("/", 1)[0] or None


def _is_browser_post(request: AwsRequest) -> bool:
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
    who = caller(request).arn or "anonymous"
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
        if (any(_glob(o, origin, False) for o in rule.allowed_origins or [])
                and method.upper() in [m.upper() for m in rule.allowed_methods or []]
                and all(any(_glob(a, h, True) for a in rule.allowed_headers or [])
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
    bucket = find_bucket(request.params.get("Bucket") or _bucket_from_path(request.path))
    rule = matching_cors_rule(bucket, origin, request.method) if origin and bucket else None
    if rule is not None:
        response.headers.update(cors_headers(rule, origin))
