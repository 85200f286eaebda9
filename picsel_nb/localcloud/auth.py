"""Authentication as AWS does it: every request's SigV4 signature checked before anything runs.

The expected signature is computed with botocore's own signers (``SigV4Auth`` and its S3 and
presigned-URL variants) over the request as received: its raw path and query, the headers it
says it signed, its body (or the payload hash it declares), at the time it says it was signed.
A key is valid when it is the administrator's (``credentials.admin_key``) or one that this
cloud's STS issued (role sessions of the Lambda, the Glue job, the crawler, ``AssumeRole``
callers) and not expired. Failures answer with the codes and messages AWS uses per protocol.

Unsigned requests are anonymous: S3 decides what they may do (``s3_access``: only what bucket
policies grant to ``*``, and CORS preflights); every other service refuses them. Browser form
uploads (POST object) carry their signature in a POST policy and are checked here too. The
endpoint's own control routes (``/moto-api``, ``/_picsel``) need the administrator, and a
``Host`` other than the loopback names on the cloud's port is refused (DNS rebinding).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.sts.models import sts_backends
from werkzeug.formparser import parse_form_data

from picsel_nb.localcloud.credentials import ADMIN_USER, AccessKey
from picsel_nb.localcloud.policy import ANONYMOUS, Principal
from picsel_nb.localcloud.router import ACCOUNT_ID, AwsRequest, AwsResponse, protocol

ADMIN_ARN = f"arn:aws:iam::{ACCOUNT_ID}:user/{ADMIN_USER}"
ADMIN_USER_ID = "AIDAPICSELADMINUSER01"  # IAM user ids start with AIDA
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 15 * 60  # AWS refuses a header-signed request more than 15 minutes off
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
CONTROL_PREFIXES = ("/moto-api", "/_picsel")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_HEADER = re.compile(r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
                     r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]+)")
_UNSIGNED_PAYLOADS = ("UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")


def install(router) -> None:
    """Answer the administrator's GetCallerIdentity (moto knows nothing of its key)."""
    router.intercept("sts", "GetCallerIdentity", caller_identity)


def caller_identity(request: AwsRequest) -> AwsResponse | None:
    """STS GetCallerIdentity of the administrator: its IAM user (role sessions: moto answers)."""
    if not request.principal.admin:
        return None
    body = ('<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<GetCallerIdentityResult><Arn>{ADMIN_ARN}</Arn><UserId>{ADMIN_USER_ID}</UserId>"
            f"<Account>{ACCOUNT_ID}</Account></GetCallerIdentityResult><ResponseMetadata>"
            f"<RequestId>{request.request_id}</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>")
    return AwsResponse(200, {"Content-Type": "text/xml"}, body.encode())


class Refusal(Exception):
    """A request AWS would refuse before running it: ``code`` and message per protocol."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.detail = detail

    def response(self, request: AwsRequest) -> AwsResponse:
        code, status, message = _answer(self.kind, request)
        return AwsResponse.error(request, code, message + self.detail, status)


# (S3 code, S3 status, S3 message), (JSON code, query code, status, message) per kind.
_S3 = {
    "sigv2": ("InvalidRequest", 400, ("The authorization mechanism you have provided is not "
              "supported. Please use AWS4-HMAC-SHA256.")),
    "malformed": ("AuthorizationHeaderMalformed", 400, "The authorization header is malformed."),
    "unknown-key": ("InvalidAccessKeyId", 403,
                    "The AWS Access Key Id you provided does not exist in our records."),
    "bad-token": ("InvalidToken", 400, "The provided token is malformed or otherwise invalid."),
    "expired-token": ("ExpiredToken", 400, "The provided token has expired."),
    "expired-url": ("AccessDenied", 403, "Request has expired"),
    "skewed": ("RequestTimeTooSkewed", 403,
               "The difference between the request time and the current time is too large."),
    "signature": ("SignatureDoesNotMatch", 403, ("The request signature we calculated does not "
                  "match the signature you provided. Check your key and signing method.")),
    "payload": ("XAmzContentSHA256Mismatch", 400, ("The provided 'x-amz-content-sha256' header "
                "does not match what was computed.")),
    "control": ("AccessDenied", 403, "Access Denied"),
    "post-policy": ("AccessDenied", 403, "Invalid according to Policy: "),
}
_OTHER = {
    "sigv2": ("IncompleteSignatureException", "IncompleteSignature", 400,
              "Signature Version 2 is not supported: sign requests with AWS4-HMAC-SHA256."),
    "malformed": ("IncompleteSignatureException", "IncompleteSignature", 400,
                  "The request signature does not conform to AWS standards."),
    "anonymous": ("MissingAuthenticationTokenException", "MissingAuthenticationToken", 403,
                  "Missing Authentication Token"),
    "unknown-key": ("UnrecognizedClientException", "InvalidClientTokenId", 403,
                    "The security token included in the request is invalid."),
    "bad-token": ("UnrecognizedClientException", "InvalidClientTokenId", 403,
                  "The security token included in the request is invalid."),
    "expired-token": ("ExpiredTokenException", "ExpiredToken", 403,
                      "The security token included in the request is expired"),
    "expired-url": ("InvalidSignatureException", "SignatureDoesNotMatch", 403,
                    "Signature expired"),
    "skewed": ("InvalidSignatureException", "SignatureDoesNotMatch", 403, ("Signature expired: "
               "the request time is more than 15 minutes from the current time.")),
    "signature": ("InvalidSignatureException", "SignatureDoesNotMatch", 403,
                  ("The request signature we calculated does not match the signature you "
                  "provided. Check your AWS Secret Access Key and signing method. Consult the "
                  "service documentation for details.")),
    "control": ("AccessDeniedException", "AccessDenied", 403,
                "Only the embedded cloud's administrator may use this route."),
}


def _answer(kind: str, request: AwsRequest) -> tuple[str, int, str]:
    if request.service == "s3":
        return _S3[kind]
    json_code, query_code, status, message = _OTHER[kind]
    return (query_code if protocol(request) == "query" else json_code), status, message


@dataclass(frozen=True)
class Signature:
    """What a request says about its signature."""

    access_key: str
    date: str  # YYYYMMDD of the scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str  # X-Amz-Date, YYYYMMDDTHHMMSSZ
    token: str | None
    expires: int | None  # presigned URLs only

    @property
    def presigned(self) -> bool:
        return self.expires is not None


class Authenticator:
    """Decide who sent each request: the administrator, a role session, or nobody."""

    def __init__(self, admin: AccessKey, port: int | None = None) -> None:
        self.admin = admin
        self.port = port

    def hosts(self) -> set[str]:
        """The ``Host`` values a request may carry: the loopback names on the cloud's port."""
        return {f"{name}:{self.port}" for name in LOOPBACK_NAMES}

    def check_host(self, environ: dict) -> bool:
        return self.port is None or environ.get("HTTP_HOST", "") in self.hosts()

    def control_refusal(self, request: AwsRequest) -> AwsResponse:
        """The answer to a control route called by anyone but the administrator."""
        return Refusal("control").response(request)

    def authenticate(self, request: AwsRequest, environ: dict,
                     public: bool = False) -> AwsResponse | None:
        """Set ``request.principal``; answer the refusal when AWS would refuse the request.

        On a ``public`` route (the loopback CDS, with tokens of its own) an ``Authorization``
        that is not AWS's belongs to that service and the caller stays anonymous.
        """
        try:
            request.principal = self._principal(request, environ, public)
        except Refusal as refusal:
            return refusal.response(request)
        return None

    def _principal(self, request: AwsRequest, environ: dict, public: bool) -> Principal:
        headers, query = request.headers, request.query
        authorization = headers.get("authorization", "")
        if public and not authorization.startswith(("AWS4-", "AWS ")):
            authorization = ""
        if authorization.startswith("AWS ") or {"AWSAccessKeyId", "Signature"} & set(query) \
                or query.get("SignatureVersion", [""])[0] == "2":
            raise Refusal("sigv2")
        if authorization or "X-Amz-Credential" in query or "X-Amz-Signature" in query:
            signature = parse_signature(authorization, query, headers)
            return self._verify(request, environ, signature)
        if form_upload(request):
            return self._verify_post_policy(request)
        if request.service != "s3" and not request.path.startswith(CONTROL_PREFIXES):
            raise Refusal("anonymous")
        return ANONYMOUS

    def _verify(self, request: AwsRequest, environ: dict, sig: Signature) -> Principal:
        secret, principal = self._key(sig.access_key, sig.token)
        now = time.time()
        signed_at = _epoch(sig.timestamp)
        if sig.presigned:
            if not 1 <= sig.expires <= MAX_PRESIGN_SECONDS:
                raise Refusal("malformed")
            if now > signed_at + sig.expires:
                raise Refusal("expired-url")
        elif abs(now - signed_at) > MAX_SKEW_SECONDS:
            raise Refusal("skewed")
        if not hmac.compare_digest(expected_signature(request, environ, sig, secret),
                                   sig.signature):
            raise Refusal("signature")
        declared = request.headers.get("x-amz-content-sha256")
        if (request.service == "s3" and declared and declared not in _UNSIGNED_PAYLOADS
                and not declared.startswith("STREAMING-")
                and declared != hashlib.sha256(request.body).hexdigest()):
            raise Refusal("payload")
        if declared and declared.startswith("STREAMING-AWS4-HMAC-SHA256"):
            raise Refusal("signature", " (signed streaming payloads are not accepted here)")
        return principal

    def _verify_post_policy(self, request: AwsRequest) -> Principal:
        """A browser form upload: its POST policy signed with SigV4, its fields within it."""
        fields, size = form_fields(request)
        names = {k.lower(): v for k, v in fields.items()}
        if "x-amz-signature" not in names or "policy" not in names:
            if "signature" in names or "awsaccesskeyid" in names:
                raise Refusal("sigv2")
            raise Refusal("control")  # S3 answers an unsigned form POST with 403 AccessDenied
        scope = names.get("x-amz-credential", "").split("/")
        if len(scope) != 5 or scope[4] != "aws4_request" or scope[3] != "s3":
            raise Refusal("malformed")
        secret, principal = self._key(scope[0], names.get("x-amz-security-token"))
        key = signing_key(secret, scope[1], scope[2], scope[3])
        expected = hmac.new(key, names["policy"].encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, names["x-amz-signature"]):
            raise Refusal("signature")
        check_post_policy(names["policy"], fields, size, _bucket_of(request.path))
        return principal

    def _key(self, access_key: str, token: str | None) -> tuple[str, Principal]:
        """The secret of a key and who it belongs to; refused when unknown, wrong or expired."""
        if hmac.compare_digest(access_key, self.admin.access_key_id):
            if token:
                raise Refusal("bad-token")
            return self.admin.secret_access_key, admin_principal(access_key)
        role = sts_backends[ACCOUNT_ID]["aws"].get_assumed_role_from_access_key(access_key)
        if role is None:
            raise Refusal("unknown-key")
        if not token or not hmac.compare_digest(token, role.session_token):
            raise Refusal("bad-token")
        if role.expiration.replace(tzinfo=UTC) <= datetime.now(UTC):
            raise Refusal("expired-token")
        return role.secret_access_key, Principal(
            arn=role.arn, account=role.account_id, role_arn=role.role_arn,
            access_key=access_key, session_name=role.session_name)


def admin_principal(access_key: str | None = None) -> Principal:
    """The administrator, as policies and CloudTrail see it."""
    return Principal(arn=ADMIN_ARN, account=ACCOUNT_ID, admin=True, access_key=access_key,
                     session_name=None)


def parse_signature(authorization: str, query: dict, headers: dict) -> Signature:
    """The SigV4 fields of an ``Authorization`` header or a presigned query string."""
    if authorization:
        match = _HEADER.fullmatch(authorization.strip())
        if not match:
            raise Refusal("malformed")
        credential, signed, value = match.group("credential", "signed", "signature")
        timestamp = headers.get("x-amz-date", "")
        token, expires = headers.get("x-amz-security-token"), None
    else:
        def one(name: str) -> str:
            return query.get(name, [""])[0]
        if one("X-Amz-Algorithm") != ALGORITHM or not one("X-Amz-Expires").isdigit():
            raise Refusal("malformed")
        credential, signed, value = (one("X-Amz-Credential"), one("X-Amz-SignedHeaders"),
                                     one("X-Amz-Signature"))
        timestamp, token = one("X-Amz-Date"), one("X-Amz-Security-Token") or None
        expires = int(one("X-Amz-Expires"))
    scope = credential.split("/")
    if (len(scope) != 5 or scope[4] != "aws4_request" or not re.fullmatch(r"\d{8}T\d{6}Z",
                                                                          timestamp)
            or timestamp[:8] != scope[1] or not re.fullmatch(r"[0-9a-f]{64}", value)):
        raise Refusal("malformed")
    return Signature(scope[0], scope[1], scope[2], scope[3], tuple(signed.split(";")), value,
                     timestamp, token, expires)


def expected_signature(request: AwsRequest, environ: dict, sig: Signature, secret: str) -> str:
    """The signature botocore's signer computes for this request with ``secret``."""
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.path
    path, _, query = raw_uri.partition("?")
    if sig.presigned:  # the signature itself is not part of what was signed
        query = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
    url = f"http://{request.headers.get('host', '')}{path}" + (f"?{query}" if query else "")
    headers = {name: _header(request, environ, name) for name in sig.signed_headers}
    aws_request = AWSRequest(method=request.method, url=url, headers=headers, data=request.body)
    aws_request.context["timestamp"] = sig.timestamp
    s3 = sig.service == "s3"
    signer_class = ((S3SigV4QueryAuth if s3 else SigV4QueryAuth) if sig.presigned
                    else (S3SigV4Auth if s3 else SigV4Auth))
    signer = signer_class(Credentials(sig.access_key, secret, sig.token), sig.service,
                          sig.region)
    canonical = signer.canonical_request(aws_request)
    return signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)


def _header(request: AwsRequest, environ: dict, name: str) -> str:
    if name == "content-length":
        return environ.get("CONTENT_LENGTH", "")
    return request.headers.get(name, "")


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's derived key (used for POST policies, which botocore signs without a request)."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def form_upload(request: AwsRequest) -> bool:
    """An HTML-form POST upload (POST object), which carries its auth in the form fields."""
    return (request.method == "POST" and request.service == "s3"
            and request.headers.get("content-type", "").startswith("multipart/form-data"))


def form_fields(request: AwsRequest) -> tuple[dict[str, str], int]:
    """The form's text fields and the size of its file, parsed by werkzeug."""
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": request.headers["content-type"],
               "CONTENT_LENGTH": str(len(request.body)), "wsgi.input": io.BytesIO(request.body)}
    _, form, files = parse_form_data(environ)
    upload = files.get("file")
    size = len(upload.read()) if upload is not None else 0
    return {key: form[key] for key in form}, size


def check_post_policy(encoded: str, fields: dict[str, str], size: int,
                      bucket: str | None) -> None:
    """Refuse an expired POST policy or a form whose fields it does not allow (as S3 does)."""
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
        expiration = datetime.fromisoformat(document["expiration"])
        conditions = list(document.get("conditions", []))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Refusal("post-policy", "the policy is not valid base64 JSON") from None
    if expiration <= datetime.now(UTC):
        raise Refusal("post-policy", "Policy expired.")
    values = {k.lower(): v for k, v in fields.items()} | {"bucket": bucket or ""}
    covered = {"policy", "x-amz-signature", "file", "bucket"}
    for condition in conditions:
        name, check = _condition(condition, size)
        covered.add(name)
        if not check(values.get(name)):
            raise Refusal("post-policy", f"Policy Condition failed: {_short(condition)}")
    extra = [k for k in values if k not in covered and not k.startswith("x-ignore-")]
    if extra:
        raise Refusal("post-policy", f"Extra input fields: {_short(extra[0])}")


def _condition(condition: object, size: int):
    """A POST-policy condition as (field name, test of the submitted value)."""
    if isinstance(condition, dict) and len(condition) == 1:
        (name, expected), = condition.items()
        return name.lower(), lambda value: value == expected
    if isinstance(condition, list) and len(condition) == 3:
        operator, name, expected = condition
        if operator == "content-length-range":
            return "content-length", lambda value: int(name) <= size <= int(expected)
        field = str(name).lstrip("$").lower()
        if operator == "eq":
            return field, lambda value: value == expected
        if operator == "starts-with":
            return field, lambda value: value is not None and str(value).startswith(expected)
    raise Refusal("post-policy", f"Invalid Policy: unknown condition {_short(condition)}")


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _bucket_of(path: str) -> str | None:
    return path.lstrip("/").split("/", 1)[0] or None


def _epoch(timestamp: str) -> float:
    return datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


