"""CloudTrail: every API call becomes an event record; trails deliver them to S3; LookupEvents.

moto stores trails (CreateTrail, StartLogging, selectors) but records nothing and does not
implement LookupEvents. Here the router's observer turns each request with its response into a
CloudTrail record (eventVersion 1.11) with secret values redacted, keeps the account's events in
memory from server start (LookupEvents serves the management events), and hands each event to
the trails that are logging and whose event selectors want it; a daemon thread (and
``flush()`` / ``POST /_picsel/cloudtrail/flush``) writes their gzipped log files to the trail
bucket directly in moto's state, so a delivery is not itself an API call.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from moto.cloudtrail.models import Trail, cloudtrail_backends
from moto.core.exceptions import JsonRESTError
from moto.sts.models import sts_backends

from picsel_nb.localcloud import s3_access
from picsel_nb.localcloud.auth import ADMIN_USER_ID
from picsel_nb.localcloud.backends import write_object
from picsel_nb.localcloud.policy import Principal, evaluate
from picsel_nb.localcloud.router import ACCOUNT_ID, AwsRequest, AwsResponse, Router

log = logging.getLogger(__name__)

EVENT_VERSION = "1.11"
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"
STORE_LIMIT = 100_000  # events kept in memory (oldest dropped first)
DELIVERY_INTERVAL_S = 5.0
MAX_PARAMETERS_CHARS = 32_000  # larger requestParameters are replaced by their size
FLUSH_PATH = "/_picsel/cloudtrail/flush"
MAX_LOOKUP_RESULTS = 50

READ_ONLY_PREFIXES = ("Get", "List", "Describe", "Head", "Lookup", "BatchGet", "Filter")
S3_BUCKET_DATA_OPERATIONS = {"ListObjects", "ListObjectsV2", "ListObjectVersions",
                             "ListMultipartUploads", "DeleteObjects"}
LAMBDA_DATA_OPERATIONS = {"Invoke", "InvokeAsync", "InvokeWithResponseStream"}
GLOBAL_SERVICES = {"iam"}  # their events are delivered to single-region trails too
LOOKUP_KEYS = {"EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName",
               "EventSource", "AccessKeyId"}

# Parameter names whose values are never recorded (the secret's *name* — SecretId — is kept).
SENSITIVE_KEY = re.compile(
    r"secret(?!(id|arn|name|ids|arns|names)$)|password|passphrase|token|credential|"
    r"private.?key|key.?material|api.?key|zipfile|authorization|plaintext|ciphertext",
    re.IGNORECASE)
RESPONSE_KEY = re.compile(r"(Arn|ARN|Name|Id|Location|State|Status)$")
MIN_SECRET_CHARS = 6  # redacted values scrubbed from every other field: not shorter than this,
MAX_SECRET_CHARS = 8192  # nor longer (a deployment zip is hidden, not remembered)

# Request parameters naming the resource of a call, per service: (parameter, resource type).
RESOURCE_PARAMETERS = {
    "s3": (("Bucket", "AWS::S3::Bucket"),),
    "lambda": (("FunctionName", "AWS::Lambda::Function"),),
    "secretsmanager": (("SecretId", "AWS::SecretsManager::Secret"),
                       ("Name", "AWS::SecretsManager::Secret")),
    "glue": (("JobName", "AWS::Glue::Job"), ("CrawlerName", "AWS::Glue::Crawler"),
             ("DatabaseName", "AWS::Glue::Database"), ("TableName", "AWS::Glue::Table")),
    "iam": (("RoleName", "AWS::IAM::Role"), ("UserName", "AWS::IAM::User"),
            ("PolicyArn", "AWS::IAM::Policy"), ("InstanceProfileName",
                                                "AWS::IAM::InstanceProfile")),
    "sts": (("RoleArn", "AWS::IAM::Role"),),
    "logs": (("logGroupName", "AWS::Logs::LogGroup"),),
    "monitoring": (("AlarmName", "AWS::CloudWatch::Alarm"),
                   ("AlarmNames", "AWS::CloudWatch::Alarm"),
                   ("DashboardName", "AWS::CloudWatch::Dashboard")),
    "cloudtrail": (("Name", "AWS::CloudTrail::Trail"), ("TrailName", "AWS::CloudTrail::Trail")),
    "events": (("Name", "AWS::Events::Rule"), ("Rule", "AWS::Events::Rule")),
}
GLUE_KINDS = ("Crawler", "Job", "Table", "Database")  # what a Glue call's "Name" names
ARN_TEMPLATES = {
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::S3::Object": "arn:aws:s3:::{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::SecretsManager::Secret": "arn:aws:secretsmanager:{region}:{account}:secret:{name}",
    "AWS::Glue::Job": "arn:aws:glue:{region}:{account}:job/{name}",
    "AWS::Glue::Crawler": "arn:aws:glue:{region}:{account}:crawler/{name}",
    "AWS::Glue::Database": "arn:aws:glue:{region}:{account}:database/{name}",
    "AWS::Glue::Table": "arn:aws:glue:{region}:{account}:table/{name}",
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
    "AWS::IAM::User": "arn:aws:iam::{account}:user/{name}",
    "AWS::IAM::InstanceProfile": "arn:aws:iam::{account}:instance-profile/{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}",
    "AWS::CloudWatch::Alarm": "arn:aws:cloudwatch:{region}:{account}:alarm:{name}",
    "AWS::CloudWatch::Dashboard": "arn:aws:cloudwatch::{account}:dashboard/{name}",
    "AWS::CloudTrail::Trail": "arn:aws:cloudtrail:{region}:{account}:trail/{name}",
    "AWS::Events::Rule": "arn:aws:events:{region}:{account}:rule/{name}",
}
STATUS_ERRORS = {400: "BadRequest", 403: "AccessDenied", 404: "NotFound", 405: "MethodNotAllowed",
                 409: "Conflict", 500: "InternalError"}


@dataclass(frozen=True)
class Resource:
    """A resource an event touched, as LookupEvents and the record's ``resources`` list it."""

    type: str
    name: str
    arn: str


@dataclass
class Event:
    """One recorded API call: the CloudTrail record plus what lookups and selectors need."""

    seq: int
    time: float
    record: dict
    resources: list[Resource]
    username: str | None

    @property
    def management(self) -> bool:
        return self.record["managementEvent"]

    @property
    def read_only(self) -> bool:
        return self.record["readOnly"]

    @property
    def region(self) -> str:
        return self.record["awsRegion"]

    @property
    def data_resource(self) -> Resource | None:
        """The resource data-event selectors match (an S3 object or a Lambda function)."""
        if self.management:
            return None
        return next((r for r in self.resources if r.type in ("AWS::S3::Object",
                                                             "AWS::Lambda::Function")), None)


@dataclass
class DeliveryStatus:
    """What GetTrailStatus reports about a trail's log-file deliveries."""

    attempt: float | None = None
    delivered: float | None = None
    error: str | None = None


@dataclass
class _State:
    """Events, the trails' undelivered events and delivery statuses, behind one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    events: deque = field(default_factory=lambda: deque(maxlen=STORE_LIMIT))
    seq: int = 0
    pending: dict = field(default_factory=lambda: defaultdict(list))
    statuses: dict = field(default_factory=dict)
    secrets: set = field(default_factory=set)
    delivery_thread: threading.Thread | None = None


_STATE = _State()


def install(router: Router) -> None:
    """Record every call, serve LookupEvents and trail status, deliver trail log files."""
    router.observe(record_call)
    router.intercept("cloudtrail", "LookupEvents", lookup_events)
    router.intercept("cloudtrail", "GetTrailStatus", trail_status)
    router.intercept("cloudtrail", "CreateTrail", check_trail_bucket)
    router.intercept("cloudtrail", "UpdateTrail", check_trail_bucket)
    router.mount(FLUSH_PATH, flush_endpoint)
    _start_delivery_thread()


# ---------------------------------------------------------------------------------------------
# Recording


def record_call(request: AwsRequest, response: AwsResponse) -> None:
    """Router observer: turn one API call into an event (internal paths are not API calls)."""
    if request.path.startswith(("/moto-api", "/_picsel")):
        if request.path.startswith("/moto-api/reset") and request.method == "POST":
            _reset()
        return
    if request.operation is None:
        return
    now = time.time()
    record, resources, username = build_record(request, response, now)
    with _STATE.lock:
        _STATE.seq += 1
        event = Event(_STATE.seq, now, record, resources, username)
        _STATE.events.append(event)
        for trail in _trails():
            if trail_wants(trail, event):
                _STATE.pending[trail.arn].append(event)


def build_record(request: AwsRequest, response: AwsResponse, now: float
                 ) -> tuple[dict, list[Resource], str | None]:
    """The CloudTrail record of a call (secrets redacted), its resources and its user name."""
    identity, username = user_identity(request)
    resources = resources_of(request)
    data = is_data_event(request)
    read_only = (request.operation or "").startswith(READ_ONLY_PREFIXES)
    hidden: set[str] = set()
    parameters = _limit(sanitize(request_parameters(request), hidden))
    record: dict = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": identity,
        "eventTime": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": f"{request.service}.amazonaws.com",
        "eventName": request.operation,
        "awsRegion": request.region,
        "sourceIPAddress": request.source_ip,
        "userAgent": request.user_agent,
    }
    if response.status >= 400:
        record["errorCode"] = response.error_code or STATUS_ERRORS.get(response.status, "Error")
        record["errorMessage"] = response.error_message or ""
    record |= {
        "requestParameters": parameters or None,
        "responseElements": None if data or read_only else response_elements(response, hidden),
        "requestID": _request_id(request, response),
        "eventID": str(uuid.uuid4()),
        "readOnly": read_only,
        **({"resources": [{"accountId": request.account_id, "type": r.type, "ARN": r.arn}
                          for r in resources]} if resources else {}),
        "eventType": "AwsApiCall",
        "managementEvent": not data,
        "recipientAccountId": request.account_id,
        "eventCategory": "Data" if data else "Management",
    }
    return scrub(record, _remember_secrets(hidden)), resources, username


def is_data_event(request: AwsRequest) -> bool:
    """S3 object-level calls and Lambda invocations are data events; the rest management."""
    if request.service == "s3":
        return "Key" in request.params or request.operation in S3_BUCKET_DATA_OPERATIONS
    return request.service == "lambda" and request.operation in LAMBDA_DATA_OPERATIONS


def user_identity(request: AwsRequest) -> tuple[dict, str | None]:
    """The record's ``userIdentity`` and the user name LookupEvents shows, from who signed it.

    Role sessions are AssumedRole identities with their session issuer; the administrator is
    the IAM user it stands for; unsigned calls are anonymous.
    """
    principal = request.principal
    if principal.anonymous:
        return {"type": "AWSAccount", "principalId": "", "accountId": "ANONYMOUS_PRINCIPAL"}, None
    if principal.role_arn is not None:
        role = sts_backends[ACCOUNT_ID]["aws"].get_assumed_role_from_access_key(
            principal.access_key)
        principal_id = role.user_id if role is not None else principal.session_name
        issuer = {"type": "Role", "principalId": principal_id.split(":")[0],
                  "arn": principal.role_arn, "accountId": principal.account,
                  "userName": principal.role_arn.rsplit("/", 1)[-1]}
        return {"type": "AssumedRole", "principalId": principal_id, "arn": principal.arn,
                "accountId": principal.account, "accessKeyId": principal.access_key,
                "sessionContext": {"sessionIssuer": issuer,
                                   "attributes": {"mfaAuthenticated": "false"}}
                }, principal.session_name
    name = principal.arn.rsplit("/", 1)[-1]
    return {"type": "IAMUser", "principalId": ADMIN_USER_ID, "arn": principal.arn,
            "accountId": principal.account, "accessKeyId": principal.access_key,
            "userName": name}, name


def resources_of(request: AwsRequest) -> list[Resource]:
    """The resources a call names (bucket and object, function, job, secret, role …)."""
    params = request.params
    pairs = list(RESOURCE_PARAMETERS.get(request.service, ()))
    if request.service == "glue":
        kind = next((k for k in GLUE_KINDS if k in (request.operation or "")), None)
        if kind:
            pairs.append(("Name", f"AWS::Glue::{kind}"))
            nested = params.get(f"{kind}Input")
            params = params | ({"Name": nested["Name"]} if isinstance(nested, dict)
                               and "Name" in nested else {})
    found = []
    for name, kind in pairs:
        values = params.get(name)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and value:
                found.append(_resource(kind, value, request))
    if request.service == "s3" and "Bucket" in params and is_data_event(request):
        found.insert(0, _resource("AWS::S3::Object", f"{params['Bucket']}/{params.get('Key', '')}",
                                  request))
    return list(dict.fromkeys(found))


def _resource(kind: str, name: str, request: AwsRequest) -> Resource:
    arn = name if name.startswith("arn:") else ARN_TEMPLATES[kind].format(
        region=request.region, account=request.account_id, name=name)
    return Resource(kind, name, arn)


def request_parameters(request: AwsRequest) -> dict:
    """The call's parameters as the router decoded them (never a PutObject or Invoke body)."""
    params = dict(request.params)
    if params.get("Action") == request.operation:  # query protocol: Action and Version
        params.pop("Action")
        params.pop("Version", None)
    return params


def sanitize(value: object, hidden: set[str], key: str = "") -> object:
    """A JSON-safe copy with sensitive values replaced by HIDDEN (collected into ``hidden``).

    Sensitive: values of keys matching SENSITIVE_KEY, every value under ``Variables``
    (Lambda environment), binary blobs.
    """
    if SENSITIVE_KEY.search(key):
        _collect(value, hidden)
        return HIDDEN
    if isinstance(value, dict):
        if key == "Variables":  # hidden in place, as AWS does; not secrets to scrub elsewhere
            return dict.fromkeys(value, HIDDEN)
        return {k: sanitize(v, hidden, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitize(v, hidden, key) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, bytes | bytearray):
        return HIDDEN
    return value


def _collect(value: object, hidden: set[str]) -> None:
    """Every string inside a redacted value (and inside a JSON secret string) worth scrubbing."""
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, hidden)
    elif isinstance(value, list):
        for item in value:
            _collect(item, hidden)
    elif isinstance(value, str) and MIN_SECRET_CHARS <= len(value) <= MAX_SECRET_CHARS:
        hidden.add(value)
        if value.lstrip().startswith(("{", "[")):
            try:
                _collect(json.loads(value), hidden)
            except ValueError:
                pass


def _remember_secrets(hidden: set[str]) -> set[str]:
    """Add this call's redacted values to those already seen; return them all."""
    with _STATE.lock:
        _STATE.secrets |= hidden
        return set(_STATE.secrets)


def scrub(value: object, secrets: set[str]) -> object:
    """Replace every occurrence of a known secret value in any string of ``value``."""
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, HIDDEN)
    return value


def _limit(parameters: object) -> object:
    """Large parameter sets (log batches, metric data) are recorded by size only."""
    size = len(json.dumps(parameters, default=str))
    return {"omitted": True, "originalSize": size} if size > MAX_PARAMETERS_CHARS else parameters


def response_elements(response: AwsResponse, hidden: set[str]) -> dict | None:
    """A small summary of a successful write's JSON response: its ARNs, names, ids, states."""
    if response.status >= 400 or not response.body.lstrip().startswith(b"{"):
        return None
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    picked = {k: v for k, v in body.items()
              if RESPONSE_KEY.search(k) and isinstance(v, str | int | float | bool)}
    return sanitize(picked, hidden) or None


def _request_id(request: AwsRequest, response: AwsResponse) -> str:
    headers = {k.lower(): v for k, v in response.headers.items()}
    return headers.get("x-amzn-requestid") or headers.get("x-amz-request-id") or request.request_id


def _reset() -> None:
    """moto's state was reset: forget the events and deliveries too."""
    with _STATE.lock:
        _STATE.events.clear()
        _STATE.pending.clear()
        _STATE.statuses.clear()
        _STATE.secrets.clear()


# ---------------------------------------------------------------------------------------------
# Trails: which events they log


def _trails() -> list[Trail]:
    """Every trail of the account, in every region moto has a CloudTrail backend for."""
    return [trail for backend in list(cloudtrail_backends[ACCOUNT_ID].values())
            for trail in list(backend.trails.values())]


def trail_wants(trail: Trail, event: Event) -> bool:
    """Whether a trail logs this event: logging now, region covered, selected by its selectors."""
    stopping = (event.record["eventName"] == "StopLogging" and "errorCode" not in event.record
                and (event.record["requestParameters"] or {}).get("Name") in (trail.trail_name,
                                                                             trail.arn))
    if not (trail.status.is_logging or stopping):
        return False
    if not (trail.is_multi_region or event.region == trail.region_name
            or (event.record["eventSource"].split(".")[0] in GLOBAL_SERVICES
                and trail.include_global_service_events)):
        return False
    if trail.event_selectors:
        return any(basic_selector_wants(s, event) for s in trail.event_selectors)
    if trail.advanced_event_selectors:
        return any(advanced_selector_wants(s, event) for s in trail.advanced_event_selectors)
    return event.management  # a new trail logs all management events, no data events


def basic_selector_wants(selector: dict, event: Event) -> bool:
    """An EventSelector: read/write type, management events, S3/Lambda data resources."""
    kind = selector.get("ReadWriteType", "All")
    if (kind == "ReadOnly" and not event.read_only) or (kind == "WriteOnly" and event.read_only):
        return False
    if event.management:
        return (selector.get("IncludeManagementEvents", True)
                and event.record["eventSource"] not in selector.get(
                    "ExcludeManagementEventSources", []))
    resource = event.data_resource
    return resource is not None and any(
        wanted.get("Type") == resource.type and any(
            _data_value_matches(resource, value) for value in wanted.get("Values", []))
        for wanted in selector.get("DataResources", []))


def _data_value_matches(resource: Resource, value: str) -> bool:
    """S3 values are ARN prefixes (``arn:aws:s3:::bucket/prefix``); Lambda values whole ARNs."""
    if resource.type == "AWS::S3::Object":
        return resource.arn.startswith(value)
    return value.rstrip(":") == "arn:aws:lambda" or resource.arn == value


def advanced_selector_wants(selector: dict, event: Event) -> bool:
    """An AdvancedEventSelector: every field selector holds."""
    return all(field_selector_holds(fs, _field_values(event, fs.get("Field", "")))
               for fs in selector.get("FieldSelectors", []))


def field_selector_holds(selector: dict, values: list[str]) -> bool:
    """Some value meets a positive operator (if any), and none meets a negative one."""
    tests = {"Equals": str.__eq__, "StartsWith": str.startswith, "EndsWith": str.endswith}

    def hit(op: str, wanted: str) -> bool:
        return any(tests[op](value, wanted) for value in values)

    positive = [(op, w) for op in tests for w in selector.get(op, [])]
    negative = [(op, w) for op in tests for w in selector.get(f"Not{op}", [])]
    return ((not positive or any(hit(op, w) for op, w in positive))
            and not any(hit(op, w) for op, w in negative))


def _field_values(event: Event, name: str) -> list[str]:
    resource = event.data_resource
    if name == "resources.type":
        return [resource.type] if resource else []
    if name == "resources.ARN":
        return [resource.arn] if resource else []
    value: object = event.record
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return [str(value).lower()]
    return [] if value is None else [str(value)]


# ---------------------------------------------------------------------------------------------
# Trails: delivery of log files


def flush() -> list[str]:
    """Deliver every trail's pending events now; the S3 keys written (``bucket/key``)."""
    with _STATE.lock:
        pending, _STATE.pending = _STATE.pending, defaultdict(list)
    trails = {trail.arn: trail for trail in _trails()}
    written = []
    for arn, events in pending.items():
        if arn in trails:
            written += deliver(trails[arn], events)
    return written


def deliver(trail: Trail, events: list[Event]) -> list[str]:
    """Write one gzipped ``{"Records": [...]}`` file per region to the trail's bucket."""
    now = time.time()
    status = _STATE.statuses.setdefault(trail.arn, DeliveryStatus())
    status.attempt = now
    status.error = delivery_error(trail)
    if status.error:
        log.warning("trail %s: delivery to %s failed: %s", trail.trail_name, trail.bucket_name,
                    status.error)
        return []
    by_region: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_region[event.region].append(event.record)
    written = []
    for region, records in by_region.items():
        key = log_file_key(trail, region, now)
        body = gzip.compress(json.dumps({"Records": records}).encode())
        write_object(trail.bucket_name, key, body, content_type="application/x-gzip")
        written.append(f"{trail.bucket_name}/{key}")
    status.delivered = now
    return written


def log_file_key(trail: Trail, region: str, now: float) -> str:
    """``[prefix/]AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_
    <YYYYMMDDTHHmmZ>_<unique>.json.gz``, as CloudTrail names its files."""
    stamp = datetime.fromtimestamp(now, UTC)
    prefix = f"{trail.s3_key_prefix}/" if trail.s3_key_prefix else ""
    return (f"{prefix}AWSLogs/{ACCOUNT_ID}/CloudTrail/{region}/{stamp:%Y/%m/%d}/"
            f"{ACCOUNT_ID}_CloudTrail_{region}_{stamp:%Y%m%dT%H%MZ}_{uuid.uuid4().hex[:16]}.json.gz")


def delivery_error(trail: Trail) -> str | None:
    """Why CloudTrail could not write to the trail's bucket now (None: it can)."""
    bucket = s3_access.find_bucket(trail.bucket_name)
    if bucket is None:
        return "NoSuchBucket"
    if not bucket_policy_allows(bucket, trail.s3_key_prefix, trail.arn, trail.region_name):
        return "AccessDenied"
    return None


def bucket_policy_allows(bucket, prefix: str | None, trail_arn: str, region: str) -> bool:
    """Whether the bucket policy lets the CloudTrail service check the bucket ACL and write
    ``[prefix/]AWSLogs/<acct>/…`` for this trail (the check AWS makes in CreateTrail)."""
    policy = s3_access.bucket_policy(bucket)
    service = Principal(service="cloudtrail.amazonaws.com")
    context = {"aws:SourceArn": trail_arn, "aws:SourceAccount": ACCOUNT_ID,
               "s3:x-amz-acl": "bucket-owner-full-control", "aws:SecureTransport": "true"}
    key = f"{prefix}/" if prefix else ""
    log_arn = f"arn:aws:s3:::{bucket.name}/{key}AWSLogs/{ACCOUNT_ID}/CloudTrail/{region}/x.json.gz"
    return all(evaluate(policy, service, action, resource, context) == "Allow"
               for action, resource in (("s3:GetBucketAcl", f"arn:aws:s3:::{bucket.name}"),
                                        ("s3:PutObject", log_arn)))


def flush_endpoint(request: AwsRequest) -> AwsResponse:
    """``POST /_picsel/cloudtrail/flush``: deliver now; answers the keys written."""
    if request.method != "POST":
        return AwsResponse.json({"message": "use POST"}, 405)
    return AwsResponse.json({"Delivered": flush()}, headers={"Content-Type": "application/json"})


def _start_delivery_thread() -> None:
    with _STATE.lock:
        if _STATE.delivery_thread is not None:
            return
        _STATE.delivery_thread = threading.Thread(target=_deliver_forever, daemon=True,
                                                  name="cloudtrail-delivery")
    _STATE.delivery_thread.start()


def _deliver_forever() -> None:
    """Deliver every few seconds, as CloudTrail does (every ~5 minutes on AWS)."""
    while True:
        time.sleep(DELIVERY_INTERVAL_S)
        try:
            flush()
        except Exception:  # one failed delivery must not stop the next ones
            log.exception("CloudTrail delivery failed")


# ---------------------------------------------------------------------------------------------
# API operations moto lacks or gets wrong


def check_trail_bucket(request: AwsRequest) -> AwsResponse | None:
    """CreateTrail/UpdateTrail: refuse a bucket whose policy does not let CloudTrail write."""
    params = request.json()
    name = params.get("Name", "")
    trail = _find_trail(request.region, name) if request.operation == "UpdateTrail" else None
    if request.operation == "UpdateTrail" and trail is None:
        return None  # moto answers TrailNotFoundException
    bucket_name = params.get("S3BucketName", trail.bucket_name if trail else None)
    prefix = params.get("S3KeyPrefix", trail.s3_key_prefix if trail else None)
    bucket = s3_access.find_bucket(bucket_name)
    if bucket is None:
        return None  # moto answers S3BucketDoesNotExistException
    arn = trail.arn if trail else _resource("AWS::CloudTrail::Trail", name, request).arn
    if bucket_policy_allows(bucket, prefix, arn, request.region):
        return None
    return AwsResponse.json_error("InsufficientS3BucketPolicyException",
                                  f"Incorrect S3 bucket policy is detected for bucket: "
                                  f"{bucket_name}")


def trail_status(request: AwsRequest) -> AwsResponse:
    """GetTrailStatus with the real delivery times (moto reports "now" whenever logging)."""
    name = request.json().get("Name", "")
    backend = cloudtrail_backends[ACCOUNT_ID][request.region]
    try:
        status = backend.get_trail_status(name)
    except JsonRESTError as error:
        return AwsResponse.json_error(error.error_type, error.message, error.code)
    trail = next(t for t in backend.describe_trails(include_shadow_trails=True)
                 if t.status is status)
    ours = _STATE.statuses.get(trail.arn, DeliveryStatus())
    description = status.description()
    description.pop("LatestDeliveryTime", None)
    description["LatestDeliveryAttemptTime"] = _iso(ours.attempt)
    description["LatestDeliveryAttemptSucceeded"] = _iso(ours.delivered)
    if ours.delivered:
        description["LatestDeliveryTime"] = ours.delivered
    if ours.error:
        description["LatestDeliveryError"] = ours.error
    return AwsResponse.json(description)


def _find_trail(region: str, name_or_arn: str) -> Trail | None:
    return next((t for t in cloudtrail_backends[ACCOUNT_ID][region].describe_trails(True)
                 if name_or_arn in (t.trail_name, t.arn)), None)


def _iso(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stamp else ""


# ---------------------------------------------------------------------------------------------
# LookupEvents


def lookup_events(request: AwsRequest) -> AwsResponse:
    """LookupEvents over the region's management events, newest first, 50 at most per page.

    Times compare in whole seconds, the resolution of ``eventTime`` and of botocore's JSON
    timestamps.
    """
    params = request.json()
    attributes = params.get("LookupAttributes") or []
    if len(attributes) > 1:
        return AwsResponse.json_error("InvalidLookupAttributesException",
                             "You can specify only one lookup attribute.")
    if attributes and attributes[0].get("AttributeKey") not in LOOKUP_KEYS:
        return AwsResponse.json_error("InvalidLookupAttributesException",
                             f"AttributeKey must be one of: {', '.join(sorted(LOOKUP_KEYS))}")
    limit = params.get("MaxResults", MAX_LOOKUP_RESULTS)
    if not 1 <= limit <= MAX_LOOKUP_RESULTS:
        return AwsResponse.json_error("InvalidMaxResultsException",
                             f"MaxResults must be between 1 and {MAX_LOOKUP_RESULTS}.")
    start, end = _epoch(params.get("StartTime")), _epoch(params.get("EndTime"))
    if start is not None and end is not None and start > end:
        return AwsResponse.json_error("InvalidTimeRangeException", "StartTime must be before EndTime.")
    before = _decode_token(params.get("NextToken"))
    if before == -1:
        return AwsResponse.json_error("InvalidNextTokenException", "Invalid NextToken.")
    if params.get("EventCategory") == "insight":
        return AwsResponse.json({"Events": []})
    with _STATE.lock:
        candidates = list(_STATE.events)
    page = []
    for event in reversed(candidates):
        if (event.management and event.region == request.region
                and (before is None or event.seq < before)
                and (start is None or int(event.time) >= start)
                and (end is None or int(event.time) <= end)
                and (not attributes or _attribute_matches(event, attributes[0]))):
            page.append(event)
            if len(page) > limit:
                break
    result: dict = {"Events": [_summary(e) for e in page[:limit]]}
    if len(page) > limit:
        result["NextToken"] = base64.urlsafe_b64encode(str(page[limit - 1].seq).encode()).decode()
    return AwsResponse.json(result)


def _attribute_matches(event: Event, attribute: dict) -> bool:
    key, value = attribute.get("AttributeKey"), attribute.get("AttributeValue")
    record = event.record
    actual = {
        "EventId": [record["eventID"]],
        "EventName": [record["eventName"]],
        "ReadOnly": [str(record["readOnly"]).lower()],
        "Username": [event.username],
        "EventSource": [record["eventSource"]],
        "AccessKeyId": [record["userIdentity"].get("accessKeyId")],
        "ResourceType": [r.type for r in event.resources],
        "ResourceName": [r.name for r in event.resources] + [r.arn for r in event.resources],
    }[key]
    return value in actual


def _summary(event: Event) -> dict:
    """One entry of LookupEvents' ``Events`` list."""
    record = event.record
    summary = {
        "EventId": record["eventID"],
        "EventName": record["eventName"],
        "ReadOnly": str(record["readOnly"]).lower(),
        "EventTime": int(event.time),  # whole seconds, like the record's eventTime
        "EventSource": record["eventSource"],
        "Resources": [{"ResourceType": r.type, "ResourceName": r.name} for r in event.resources],
        "CloudTrailEvent": json.dumps(record),
    }
    if key := record["userIdentity"].get("accessKeyId"):
        summary["AccessKeyId"] = key
    if event.username:
        summary["Username"] = event.username
    return summary


def _epoch(value: object) -> float | None:
    """A timestamp of a JSON request (epoch seconds; ISO 8601 accepted too)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def _decode_token(token: str | None) -> int | None:
    """The sequence number a NextToken continues below; -1 when the token is not ours."""
    if not token:
        return None
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        return -1
