"""CloudTrail for the pipeline: a trail delivering to its own private bucket, and the account's
events read back — from the event history (LookupEvents) and from the trail's log files.

The event history holds the last 90 days of *management* events (creating a bucket, reading a
secret, starting a job) whether or not a trail exists. *Data* events (object reads and writes,
Lambda invocations) are recorded only by a trail whose event selectors ask for them, and only in
its log files: this trail asks for those of the two pipeline buckets and of the ingest function.
CloudTrail delivers a file every ~5 minutes on AWS (every few seconds on the embedded cloud), so
readers poll the bucket with a deadline.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from picsel_nb.stack import buckets
from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import tolerate
from picsel_nb.stack.waiters import DeadlineError

KEY_PREFIX = "cloudtrail"  # log files go to <trail bucket>/cloudtrail/AWSLogs/<account>/…
LOG_FILE_DAYS = 365  # delivered log files expire after a year
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # CloudTrail's eventTime: whole seconds, UTC
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"  # what CloudTrail writes in place of secret values
SECRET_FIELDS = {"secretstring", "secretbinary"}
DENIED_CODES = re.compile(r"AccessDenied|Unauthorized|Forbidden")


# --- the trail and its bucket --------------------------------------------------------------------


def trail_arn(stack: Stack) -> str:
    """The trail's ARN (known before it exists: the bucket policy names it)."""
    return (f"arn:{stack.partition}:cloudtrail:{stack.region}:{stack.account_id}:trail/"
            f"{stack.names.trail}")


def trail_bucket_policy(stack: Stack) -> dict:
    """TLS only, plus what CloudTrail requires: the service may read the bucket ACL and write
    under ``cloudtrail/AWSLogs/<account>/`` with ``bucket-owner-full-control``, for this trail
    only (``aws:SourceArn``)."""
    return buckets.bucket_policy(stack, stack.names.trail_bucket, "trail-bucket",
                                 KeyPrefix=KEY_PREFIX)


def ensure_trail_bucket(stack: Stack) -> dict:
    """The trail's private bucket (Block Public Access, SSE-S3, TLS only, CloudTrail's statements,
    log files expiring after LOG_FILE_DAYS); its posture."""
    rules = [buckets.expire_rule(f"{KEY_PREFIX}/", LOG_FILE_DAYS), buckets.ABORT_INCOMPLETE_UPLOADS]
    return buckets.ensure_private_bucket(stack, stack.names.trail_bucket,
                                         policy=trail_bucket_policy(stack), lifecycle_rules=rules)


def trail_settings(stack: Stack) -> dict:
    """The trail as create_trail/update_trail take it (without its name): this region only, with
    IAM's global events, digest files to validate the logs."""
    return {"S3BucketName": stack.names.trail_bucket, "S3KeyPrefix": KEY_PREFIX,
            "IncludeGlobalServiceEvents": True, "IsMultiRegionTrail": False,
            "EnableLogFileValidation": True}


def event_selectors(stack: Stack) -> list[dict]:
    """Every management event, plus the data events of the two pipeline buckets' objects and of
    the ingest function's invocations."""
    names, partition = stack.names, stack.partition
    function_arn = (f"arn:{partition}:lambda:{stack.region}:{stack.account_id}:function:"
                    f"{names.lambda_function}")
    return [{"ReadWriteType": "All", "IncludeManagementEvents": True, "DataResources": [
        {"Type": "AWS::S3::Object", "Values": [f"arn:{partition}:s3:::{bucket}/"
                                               for bucket in (names.input_bucket,
                                                              names.output_bucket)]},
        {"Type": "AWS::Lambda::Function", "Values": [function_arn]},
    ]}]


def get_trail(stack: Stack) -> dict | None:
    """The trail as CloudTrail describes it, or None when it does not exist."""
    with tolerate("TrailNotFoundException"):
        return stack.client("cloudtrail").get_trail(Name=stack.names.trail)["Trail"]
    return None


def _differs(current: dict, wanted: dict) -> bool:
    renamed = {"EnableLogFileValidation": "LogFileValidationEnabled"}
    return any(current.get(renamed.get(key, key)) != value for key, value in wanted.items())


def ensure_trail(stack: Stack) -> dict:
    """The trail's bucket, the trail (created, or updated where it differs), its event selectors,
    logging on; its description."""
    ensure_trail_bucket(stack)
    cloudtrail, name = stack.client("cloudtrail"), stack.names.trail
    wanted, current = trail_settings(stack), get_trail(stack)
    if current is None:
        cloudtrail.create_trail(Name=name, **wanted)
    elif _differs(current, wanted):
        cloudtrail.update_trail(Name=name, **wanted)
    cloudtrail.put_event_selectors(TrailName=name, EventSelectors=event_selectors(stack))
    cloudtrail.start_logging(Name=name)
    return describe_trail(stack)


def describe_trail(stack: Stack) -> dict[str, Any]:
    """Where the trail delivers, what it records, and whether it is logging."""
    cloudtrail, name = stack.client("cloudtrail"), stack.names.trail
    trail = cloudtrail.get_trail(Name=name)["Trail"]
    status = cloudtrail.get_trail_status(Name=name)
    selectors = cloudtrail.get_event_selectors(TrailName=name).get("EventSelectors", [])
    return {
        "name": trail["Name"], "arn": trail["TrailARN"], "bucket": trail["S3BucketName"],
        "key_prefix": trail.get("S3KeyPrefix"), "multi_region": trail["IsMultiRegionTrail"],
        "global_service_events": trail["IncludeGlobalServiceEvents"],
        "log_file_validation": trail["LogFileValidationEnabled"],
        "logging": status["IsLogging"],
        "management_events": [s["ReadWriteType"] for s in selectors
                              if s.get("IncludeManagementEvents")],
        "data_events": [f"{resource['Type']} {value}" for s in selectors
                        for resource in s.get("DataResources", []) for value in resource["Values"]],
    }


def delete_trail(stack: Stack) -> bool:
    """Stop logging and delete the trail (its bucket stays); False when it did not exist."""
    cloudtrail = stack.client("cloudtrail")
    with tolerate("TrailNotFoundException"):
        cloudtrail.stop_logging(Name=stack.names.trail)
        cloudtrail.delete_trail(Name=stack.names.trail)
        return True
    return False


# --- events --------------------------------------------------------------------------------------


def _arn_name(arn: str) -> str:
    """The resource an ARN names: ``bucket/key`` for S3, else the name after the type
    (``function:f`` → ``f``, ``role/r`` → ``r``)."""
    if ":::" in arn:
        return arn.split(":::", 1)[1]
    resource = arn.split(":", 5)[-1]
    return re.split(r"[:/]", resource, maxsplit=1)[-1]


def _who(identity: dict) -> str:
    """Who made a call, in a few words: a user, a role (the role, not its session), anonymous."""
    kind = identity.get("type", "")
    if kind == "AssumedRole":
        issuer = identity.get("sessionContext", {}).get("sessionIssuer", {})
        return f"role {issuer.get('userName', '?')}"
    if kind == "IAMUser":
        return f"user {identity.get('userName')}"
    if kind == "AWSService":
        return identity.get("invokedBy", "an AWS service")
    if identity.get("accountId") == "ANONYMOUS_PRINCIPAL":
        return "anonymous"
    return kind.lower() or "unknown"


@dataclass(frozen=True)
class TrailEvent:
    """One CloudTrail record and the names of the resources it touched."""

    record: dict
    resources: tuple[str, ...]

    @property
    def time(self) -> str:
        return self.record["eventTime"]

    @property
    def name(self) -> str:
        return self.record["eventName"]

    @property
    def error(self) -> str | None:
        return self.record.get("errorCode")

    @property
    def denied(self) -> bool:
        """Whether the call was refused for lack of permission."""
        return bool(self.error and DENIED_CODES.search(self.error))

    def row(self) -> dict[str, str]:
        """The event as one row of a table (the access key cut to its kind: AKIA… a user's,
        ASIA… temporary credentials)."""
        identity = self.record.get("userIdentity", {})
        key = identity.get("accessKeyId")
        return {"time": self.time, "event": self.name,
                "service": self.record["eventSource"].removesuffix(".amazonaws.com"),
                "who": _who(identity), "access key": f"{key[:4]}…" if key else "-",
                "source IP": self.record.get("sourceIPAddress", "-"),
                "resources": ", ".join(self.resources) or "-", "error": self.error or "-"}


def event_rows(events: list[TrailEvent]) -> list[dict[str, str]]:
    """The events as table rows, newest first (events of the same second keep their order)."""
    return [event.row() for event in sorted(events, key=lambda e: e.time, reverse=True)]


def next_second() -> datetime:
    """The next whole second, once it has come. CloudTrail's event times have whole seconds, so
    an event stamped at or after it was caused after this call (a mark for `since`)."""
    now = time.time()
    time.sleep(math.floor(now) + 1 - now)
    return datetime.fromtimestamp(math.floor(now) + 1, UTC)


def lookup(stack: Stack, since: datetime | None = None, until: datetime | None = None,
           **attribute: str) -> list[TrailEvent]:
    """Management events of the event history, newest first, from `since` to `until`, matching
    at most one lookup attribute (e.g. ``EventName="CreateBucket"``, ``ResourceName=…``)."""
    if len(attribute) > 1:
        raise ValueError(f"LookupEvents takes one attribute, not {sorted(attribute)}")
    params: dict[str, Any] = {"LookupAttributes": [{"AttributeKey": key, "AttributeValue": value}
                                                   for key, value in attribute.items()]}
    if since is not None:
        params["StartTime"] = since
    if until is not None:
        params["EndTime"] = until
    pages = stack.client("cloudtrail").get_paginator("lookup_events").paginate(**params)
    return [TrailEvent(json.loads(event["CloudTrailEvent"]),
                       tuple(r["ResourceName"] for r in event.get("Resources", [])))
            for page in pages for event in page["Events"]]


def bucket_creations(stack: Stack) -> list[TrailEvent]:
    """The successful CreateBucket calls of the walkthrough's three buckets, newest first."""
    names = stack.names
    ours = {names.input_bucket, names.output_bucket, names.trail_bucket}
    return [event for event in lookup(stack, EventName="CreateBucket")
            if not event.error and ours & set(event.resources)]


def secret_events(stack: Stack, since: datetime | None = None) -> list[TrailEvent]:
    """Every Secrets Manager call that named the CDS secret, by name or by ARN, from `since`,
    newest first."""
    name = stack.names.secret
    arn_start = (f"arn:{stack.partition}:secretsmanager:{stack.region}:{stack.account_id}:"
                 f"secret:{name}-")
    return [event for event in lookup(stack, since, EventSource="secretsmanager.amazonaws.com")
            if any(r == name or r.startswith(arn_start) for r in event.resources)]


def run_starts(stack: Stack, since: datetime | None = None) -> list[TrailEvent]:
    """StartJobRun of the contours job and StartCrawler of the crawler from `since`, newest
    first."""
    names = stack.names
    events = [event for name, resource in (("StartJobRun", names.glue_job),
                                           ("StartCrawler", names.crawler))
              for event in lookup(stack, since, EventName=name) if resource in event.resources]
    return sorted(events, key=lambda e: e.time, reverse=True)


def log_file_keys(stack: Stack, since: datetime | None = None) -> list[str]:
    """The keys of the trail's log files (digests left out) delivered at or after `since`, in
    the order of their delivery."""
    prefix = f"{KEY_PREFIX}/AWSLogs/{stack.account_id}/CloudTrail/"
    floor = since.replace(microsecond=0) if since else None  # S3 times have whole seconds
    files = [item for item in buckets.list_objects(stack, stack.names.trail_bucket, prefix)
             if floor is None or item["LastModified"] >= floor]
    return [item["Key"] for item in sorted(files, key=lambda i: (i["LastModified"], i["Key"]))]


def read_log_file(stack: Stack, key: str) -> list[TrailEvent]:
    """The events of one delivered log file (gzipped ``{"Records": [...]}``), in file order."""
    body = stack.client("s3").get_object(Bucket=stack.names.trail_bucket, Key=key)["Body"].read()
    return [TrailEvent(record, tuple(_arn_name(r["ARN"]) for r in record.get("resources", [])))
            for record in json.loads(gzip.decompress(body))["Records"]]


def delivered(stack: Stack, since: datetime | None = None) -> list[TrailEvent]:
    """Every event delivered to the trail's bucket that happened at or after `since`, newest
    first (management and data events)."""
    floor = since.astimezone(UTC).strftime(TIME_FORMAT) if since else ""
    events = [event for key in log_file_keys(stack, since) for event in read_log_file(stack, key)
              if event.time >= floor]
    events.reverse()  # newest first within a second too (the sort below is stable)
    return sorted(events, key=lambda e: e.time, reverse=True)


def _unredacted(value: object) -> bool:
    """Whether a record holds a secret value field whose value is not CloudTrail's HIDDEN."""
    if isinstance(value, dict):
        return any((k.lower() in SECRET_FIELDS and v not in (HIDDEN, None)) or _unredacted(v)
                   for k, v in value.items())
    return isinstance(value, list) and any(_unredacted(item) for item in value)


def wait_for_delivery(stack: Stack, wanted: Callable[[TrailEvent], bool], since: datetime,
                      deadline_s: float = 1200, delay_s: float = 2.0) -> list[TrailEvent]:
    """The events delivered from `since` (as ``delivered``), once one of them is `wanted`;
    DeadlineError when none is within `deadline_s` (AWS delivers every ~5 minutes)."""
    deadline = time.monotonic() + deadline_s
    while True:
        events = delivered(stack, since)
        if any(wanted(event) for event in events):
            return events
        if time.monotonic() >= deadline:
            raise DeadlineError(f"no wanted event among the {len(events)} delivered to "
                                f"{stack.names.trail_bucket} after {deadline_s:g} s (the deadline)")
        time.sleep(delay_s)


def secret_exposures(events: list[TrailEvent], keys: Iterable[str] = ()) -> dict[str, int]:
    """How many of `events` show a secret value: a ``secretString``/``secretBinary`` field that
    CloudTrail did not replace by HIDDEN_DUE_TO_SECURITY_REASONS, or any of the `keys` the caller
    stored (as text or JSON-escaped). Nobody reads the secret back for this check."""
    needles = {n for key in keys for n in (key, json.dumps(key)[1:-1]) if n}
    hits = sum(_unredacted(event.record) or any(n in json.dumps(event.record) for n in needles)
               for event in events)
    return {"events scanned": len(events), "events containing the key": hits}
