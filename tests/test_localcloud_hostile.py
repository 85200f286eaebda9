"""Hostile requests against a running embedded cloud that holds the real stack. Each one goes
over plain HTTP, the way a web page or curl would send it. Each is refused with AWS's status and
error code, and afterwards no bucket, object, secret or function has changed. Real clients still
get in: boto3, the AWS CLI through `picsel cloud env`, a presigned URL opened with urllib, and a
presigned POST form."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from picsel_nb import pipeline
from picsel_nb.localcloud.auth import ADMIN_ARN
from picsel_nb.localcloud.cloudtrail import FLUSH_PATH
from picsel_nb.localcloud.credentials import AccessKey, admin_key
from picsel_nb.settings import LOCAL_ACCOUNT_ID, ResourceNames, get_settings
from picsel_nb.stack import buckets, trail
from picsel_nb.stack.context import Stack
from tests.cloud_fixtures import REGION, cloud, poll  # noqa: F401

BIN = os.path.dirname(sys.executable)  # the venv's bin: python, picsel, aws
RAW_KEY, RAW_BODY = "raw/reanalysis-era5-land/2023/09/01.nc", b"a private download"
SCRIPT_KEY = "scripts/glue/contours_job.py"  # code the Glue job runs: what a page would replace
OBJECTS = {  # bucket kind -> key -> body, besides what provisioning stores
    "input": {RAW_KEY: RAW_BODY, SCRIPT_KEY: b"print('the real job')\n"},
    "output": {"products/geojson/t2m/2023-09-01.geojson": b'{"type": "FeatureCollection"}',
               "catalog/contours/variable=t2m/date=2023-09-01/part-0.json": b'{"level": 1}\n'},
}
LOG_FILE = re.compile(rf"cloudtrail/AWSLogs/{LOCAL_ACCOUNT_ID}/CloudTrail/{REGION}/"
                      r"\d{4}/\d\d/\d\d/[\w-]+\.json\.gz")
SIGV2_QUERY = "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=c2lnbmVk&Expires=9999999999"
JSON_1_1 = "application/x-amz-json-1.1"


def bucket_of(names: ResourceNames, kind: str) -> str:
    return {"input": names.input_bucket, "output": names.output_bucket,
            "trail": names.trail_bucket}[kind]


def holdings(stack: Stack) -> dict[str, Any]:
    """What an attacker would want to change: every object of the three buckets with its ETag,
    the secret's versions, stages and policy (metadata only: the administrator may not read the
    value), and the function's code and last change."""
    names = stack.names
    objects = {kind: {item["Key"]: item["ETag"]
                      for item in buckets.list_objects(stack, bucket_of(names, kind))}
               for kind in ("input", "output", "trail")}
    secrets_manager = stack.client("secretsmanager")
    described = secrets_manager.describe_secret(SecretId=names.secret)
    versions = secrets_manager.list_secret_version_ids(SecretId=names.secret)["Versions"]
    function = stack.client("lambda").get_function_configuration(
        FunctionName=names.lambda_function)
    return {"objects": objects,
            "secret": {"stages": described["VersionIdsToStages"],
                       "changed": described.get("LastChangedDate"),
                       "versions": sorted((v["VersionId"], sorted(v["VersionStages"]))
                                          for v in versions),
                       "policy": secrets_manager.get_resource_policy(
                           SecretId=names.secret)["ResourcePolicy"]},
            "function": {key: function[key]
                         for key in ("CodeSha256", "CodeSize", "LastModified", "Role")}}


@pytest.fixture(scope="module")
def deployed(cloud) -> SimpleNamespace:  # noqa: F811
    """The real stack of its own prefix (buckets, the CDS secret, the ingest function and its
    role, the trail) with a few objects in each bucket, the trail's first log files delivered,
    and a snapshot of its holdings taken before any hostile request."""
    settings = dataclasses.replace(get_settings(), prefix="hostile")
    stack = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                  client_factory=cloud.client)
    pipeline.ensure_ingest(stack)
    trail.ensure_trail(stack)
    for kind, objects in OBJECTS.items():
        for key, body in objects.items():
            buckets.publish(stack, bucket_of(stack.names, kind), key, body)
    assert cloud.control("POST", FLUSH_PATH).status_code == 200
    log_files = poll(lambda: trail.log_file_keys(stack))
    return SimpleNamespace(stack=stack, before=holdings(stack), log_file=log_files[0],
                           token=pipeline.cds_credentials(stack)[1])


@dataclass
class Target:
    """What a hostile request aims at, and what an attacker could know or forge."""

    endpoint: str
    port: int
    names: ResourceNames
    admin: AccessKey
    s3: Any  # the administrator's client, which makes the real presigned URLs and forms
    log_file: str  # a delivered trail log file

    def url(self, kind: str, key: str = "", query: str = "") -> str:
        """The path-style URL of an object (or of the bucket when ``key`` is empty)."""
        return f"{self.endpoint}/{bucket_of(self.names, kind)}/{key}" + (
            f"?{query}" if query else "")

    @cached_property
    def expired(self) -> tuple[str, dict]:
        """A real presigned GET URL and a real presigned POST form, both expired by now."""
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.names.input_bucket, "Key": RAW_KEY},
            ExpiresIn=1)
        form = self.s3.generate_presigned_post(self.names.input_bucket, "raw/incoming/late.nc",
                                               ExpiresIn=1)
        time.sleep(2)  # the one wait of this module: both expire 1 s after they were made
        return url, form

    def presigned(self, operation: str, key: str) -> str:
        return self.s3.generate_presigned_url(
            operation, Params={"Bucket": self.names.input_bucket, "Key": key}, ExpiresIn=300)


@pytest.fixture(scope="module")
def target(cloud, deployed) -> Target:  # noqa: F811
    return Target(cloud.endpoint_url, cloud.local.port, deployed.stack.names,
                  admin_key(cloud.local.state_dir), cloud.client("s3"), deployed.log_file)


# --- how the requests are made -------------------------------------------------------------------


def signed(method: str, url: str, key_id: str, secret: str, service: str = "s3",
           body: bytes = b"", headers: dict[str, str] | None = None) -> requests.Response:
    """A request SigV4-signed in its headers by botocore with the key given, sent by requests."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    signer = S3SigV4Auth if service == "s3" else SigV4Auth
    signer(Credentials(key_id, secret), service, REGION).add_auth(request)
    return requests.request(method, url, data=body, headers=dict(request.headers.items()),
                            timeout=30)


def forged_query(key_id: str) -> str:
    """A presigned-URL query string with a made-up SigV4 signature."""
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return urlencode({"X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                      "X-Amz-Credential": f"{key_id}/{now[:8]}/{REGION}/s3/aws4_request",
                      "X-Amz-Date": now, "X-Amz-Expires": "3600", "X-Amz-SignedHeaders": "host",
                      "X-Amz-Signature": secrets.token_hex(32)})


def form_post(url: str, fields: dict[str, str], name: str = "evil.py") -> requests.Response:
    """A multipart form POST (the upload a web page's <form> or fetch can send cross-site)."""
    return requests.post(url, data=fields, files={"file": (name, b"import os  # evil\n")},
                         timeout=30)


def cross_site_delete(t: Target, query: str = "") -> requests.Response:
    """``POST ?delete`` naming a trail log file, as a no-cors fetch sends it (text/plain)."""
    body = f"<Delete><Object><Key>{t.log_file}</Key></Object></Delete>".encode()
    return requests.post(f"{t.endpoint}/{t.names.trail_bucket}?delete" + (
        f"&{query}" if query else ""), data=body, headers={"Content-Type": "text/plain"},
        timeout=30)


def get_secret_value(t: Target, **sign) -> requests.Response:
    """Secrets Manager GetSecretValue of the CDS secret (JSON protocol); signed when ``sign``
    gives key_id and secret."""
    body = json.dumps({"SecretId": t.names.secret}).encode()
    headers = {"X-Amz-Target": "secretsmanager.GetSecretValue", "Content-Type": JSON_1_1}
    if sign:
        return signed("POST", f"{t.endpoint}/", service="secretsmanager", body=body,
                      headers=headers, **sign)
    return requests.post(f"{t.endpoint}/", data=body, headers=headers, timeout=30)


def post_policy_outside(t: Target) -> requests.Response:
    form = t.s3.generate_presigned_post(
        t.names.input_bucket, "raw/incoming/${filename}",
        Conditions=[["starts-with", "$key", "raw/incoming/"]], ExpiresIn=300)
    return form_post(form["url"], form["fields"] | {"key": SCRIPT_KEY})


def post_policy_expired(t: Target) -> requests.Response:
    form = t.expired[1]
    return form_post(form["url"], form["fields"], "late.nc")


def replayed_put(t: Target) -> requests.Response:
    url = t.presigned("put_object", "raw/incoming/allowed.nc")
    return requests.put(url.replace("raw/incoming/allowed.nc", SCRIPT_KEY), data=b"evil",
                        timeout=30)


def rebinding_signed(t: Target) -> requests.Response:
    """A valid administrator signature over a page's rebinding Host."""
    host = f"attacker.example:{t.port}"
    return signed("GET", t.url("input", RAW_KEY), t.admin.access_key_id,
                  t.admin.secret_access_key, headers={"Host": host})


def cors_preflight(t: Target) -> requests.Response:
    """A browser's preflight before a cross-origin Secrets Manager call."""
    return requests.options(f"{t.endpoint}/", timeout=30, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-amz-target",
        "X-Amz-Target": "secretsmanager.GetSecretValue"})


@dataclass(frozen=True)
class Refused:
    """The refusal AWS answers: HTTP status, error code, and words of its message."""

    status: int
    code: str
    says: str = ""


Send = Callable[[Target], requests.Response]
HOSTILE: list = [pytest.param(send, refused, id=name) for name, send, refused in [
    ("unsigned-form-post-input-scripts-evil-py",
     lambda t: form_post(t.url("input"), {"key": "scripts/evil.py"}),
     Refused(403, "AccessDenied")),
    ("unsigned-form-post-output-products",
     lambda t: form_post(t.url("output"), {"key": "products/index.html"}),
     Refused(403, "AccessDenied")),
    ("unsigned-form-post-trail",
     lambda t: form_post(t.url("trail"), {"key": t.log_file}), Refused(403, "AccessDenied")),
    ("unsigned-put-object-input",
     lambda t: requests.put(t.url("input", SCRIPT_KEY), data=b"evil", timeout=30),
     Refused(403, "AccessDenied")),
    ("unsigned-get-private-object",
     lambda t: requests.get(t.url("input", RAW_KEY), timeout=30), Refused(403, "AccessDenied")),
    ("sigv2-query-get",
     lambda t: requests.get(t.url("input", RAW_KEY, SIGV2_QUERY), timeout=30),
     Refused(400, "InvalidRequest", "AWS4-HMAC-SHA256")),
    ("sigv2-query-put",
     lambda t: requests.put(t.url("input", SCRIPT_KEY, SIGV2_QUERY), data=b"evil", timeout=30),
     Refused(400, "InvalidRequest", "AWS4-HMAC-SHA256")),
    ("sigv2-authorization-header",
     lambda t: requests.get(t.url("input", RAW_KEY), timeout=30, headers={
         "Authorization": f"AWS {t.admin.access_key_id}:c2lnbmVk"}),
     Refused(400, "InvalidRequest", "AWS4-HMAC-SHA256")),
    ("made-up-sigv4-query-get",
     lambda t: requests.get(t.url("input", RAW_KEY, forged_query("AKIAFORGEDFORGED0000")),
                            timeout=30),
     Refused(403, "InvalidAccessKeyId")),
    ("made-up-sigv4-query-put-with-the-admins-key-id",
     lambda t: requests.put(t.url("input", SCRIPT_KEY, forged_query(t.admin.access_key_id)),
                            data=b"evil", timeout=30),
     Refused(403, "SignatureDoesNotMatch")),
    ("expired-presigned-get",
     lambda t: requests.get(t.expired[0], timeout=30),
     Refused(403, "AccessDenied", "Request has expired")),
    ("presigned-put-replayed-to-another-key", replayed_put, Refused(403, "SignatureDoesNotMatch")),
    ("presigned-get-sent-as-put",
     lambda t: requests.put(t.presigned("get_object", SCRIPT_KEY), data=b"evil", timeout=30),
     Refused(403, "SignatureDoesNotMatch")),
    ("wrong-secret-key",
     lambda t: signed("GET", t.url("input", RAW_KEY), t.admin.access_key_id, "not-the-secret"),
     Refused(403, "SignatureDoesNotMatch")),
    ("unknown-access-key",
     lambda t: signed("GET", t.url("input", RAW_KEY), "AKIAUNKNOWNUNKNOWN00", "secret"),
     Refused(403, "InvalidAccessKeyId")),
    ("old-dummy-testing-credentials",
     lambda t: signed("PUT", t.url("input", SCRIPT_KEY), "testing", "testing", body=b"evil"),
     Refused(403, "InvalidAccessKeyId")),
    ("cross-site-delete-on-trail-unsigned", cross_site_delete, Refused(403, "AccessDenied")),
    ("cross-site-delete-on-trail-fake-credential",
     lambda t: cross_site_delete(t, forged_query("AKIAFORGEDFORGED0000")),
     Refused(403, "InvalidAccessKeyId")),
    ("moto-api-state-read",
     lambda t: requests.get(f"{t.endpoint}/moto-api/data.json", timeout=30),
     Refused(403, "AccessDenied")),
    ("moto-api-reset",
     lambda t: requests.post(f"{t.endpoint}/moto-api/reset", timeout=30),
     Refused(403, "AccessDenied")),
    ("picsel-status-unsigned",
     lambda t: requests.get(f"{t.endpoint}/_picsel/status", timeout=30),
     Refused(403, "AccessDenied")),
    ("rebinding-host-unsigned",
     lambda t: requests.get(t.url("input", RAW_KEY), timeout=30,
                            headers={"Host": f"attacker.example:{t.port}"}),
     Refused(421, "InvalidHostHeader")),
    ("rebinding-host-on-a-validly-signed-request", rebinding_signed,
     Refused(421, "InvalidHostHeader")),
    ("cors-preflight-from-a-foreign-origin-on-secrets-manager", cors_preflight,
     Refused(403, "MissingAuthenticationTokenException")),
    ("unsigned-secrets-manager-get-secret-value", get_secret_value,
     Refused(403, "MissingAuthenticationTokenException")),
    ("administrator-get-secret-value",
     lambda t: get_secret_value(t, key_id=t.admin.access_key_id,
                                secret=t.admin.secret_access_key),
     Refused(400, "AccessDeniedException", "explicit deny in a resource-based policy")),
    ("post-policy-key-outside-starts-with", post_policy_outside,
     Refused(403, "AccessDenied", "Policy Condition failed")),
    ("post-policy-expired", post_policy_expired, Refused(403, "AccessDenied", "Policy expired")),
]]


def error_code(response: requests.Response) -> str | None:
    """The AWS error code of a response: its x-amzn-ErrorType header, XML <Code> or JSON type."""
    if code := response.headers.get("x-amzn-ErrorType"):
        return code.split(":")[0]
    if match := re.search(r"<Code>([^<]+)</Code>", response.text):
        return match.group(1)
    try:
        return response.json().get("__type")
    except ValueError:
        return None


def test_boto3_as_the_administrator_reads_what_it_stored(cloud, deployed):  # noqa: F811
    names = deployed.stack.names
    s3 = cloud.client("s3")
    assert s3.get_object(Bucket=names.input_bucket, Key=RAW_KEY)["Body"].read() == RAW_BODY
    assert cloud.client("sts").get_caller_identity()["Arn"] == ADMIN_ARN


def test_aws_cli_reaches_the_cloud_through_picsel_cloud_env(cloud, deployed):  # noqa: F811
    """As a reader would: eval what `picsel cloud env` prints, then run the AWS CLI."""
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ["HOME"]} | {
        name: value for name, value in cloud.env.items() if name.startswith("PICSEL_")}
    script = ('lines="$(picsel cloud env)" && eval "$lines" && printf "%s\\n---\\n" "$lines" '
              "&& aws s3 ls && echo --- && aws sts get-caller-identity")
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    printed, listing, identity = done.stdout.split("---\n")
    assert "AWS_ENDPOINT_URL=" in printed and "AWS_PROFILE=" in printed
    assert admin_key(cloud.local.state_dir).secret_access_key not in done.stdout + done.stderr
    names = deployed.stack.names
    assert {names.input_bucket, names.output_bucket, names.trail_bucket} <= {
        line.split()[-1] for line in listing.splitlines()}
    assert json.loads(identity)["Arn"] == ADMIN_ARN


def test_presigned_get_url_opens_with_urllib(target):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(target.presigned("get_object", RAW_KEY), timeout=30) as answer:
        assert (answer.status, answer.read()) == (200, RAW_BODY)


def test_presigned_post_form_uploads_with_requests(target):
    bucket, key = target.names.input_bucket, "raw/incoming/upload.nc"
    form = target.s3.generate_presigned_post(
        bucket, "raw/incoming/${filename}",
        Conditions=[["starts-with", "$key", "raw/incoming/"]], ExpiresIn=300)
    try:
        response = requests.post(form["url"], data=form["fields"],
                                 files={"file": ("upload.nc", b"uploaded by a form")}, timeout=30)
        assert response.status_code == 204, response.text
        stored = target.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert stored == b"uploaded by a form"
    finally:
        target.s3.delete_object(Bucket=bucket, Key=key)


@pytest.mark.parametrize("send, refused", HOSTILE)
def test_hostile_request_is_refused_as_aws_refuses_it(deployed, target, send: Send,
                                                      refused: Refused):
    response = send(target)
    assert (response.status_code, error_code(response)) == (refused.status, refused.code), \
        response.text[:600]
    assert refused.says in response.text
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert deployed.token not in response.text


def test_after_the_hostile_requests_nothing_has_changed(deployed):
    """Listings and ETags, the secret's versions and stages, the function's code: as before
    (the trail bucket only gained the log files CloudTrail delivered since)."""
    before, after = deployed.before, holdings(deployed.stack)
    assert after["secret"] == before["secret"]
    assert after["function"] == before["function"]
    assert after["objects"]["input"] == before["objects"]["input"]
    assert after["objects"]["output"] == before["objects"]["output"]
    old, new = before["objects"]["trail"], after["objects"]["trail"]
    assert {key: new.get(key) for key in old} == old
    assert [key for key in set(new) - set(old) if not LOG_FILE.fullmatch(key)] == []
