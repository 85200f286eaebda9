"""Authentication in-process: requests signed by botocore, checked by the Authenticator before
any handler, including what a running server cannot show quickly (an expired session token)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws
from moto.sts.models import sts_backends
from werkzeug.test import EnvironBuilder

from picsel_nb.localcloud.auth import ADMIN_ARN, Authenticator
from picsel_nb.localcloud.credentials import AccessKey
from picsel_nb.localcloud.router import ACCOUNT_ID, AwsResponse, parse_request

ADMIN = AccessKey("AKIAADMINEXAMPLE0001", "admin-secret-of-this-test-only-0000000000")
PORT = 4599
URL = f"http://127.0.0.1:{PORT}/"
TARGET = {"X-Amz-Target": "secretsmanager.ListSecrets",
          "Content-Type": "application/x-amz-json-1.1"}


def signed(credentials: Credentials, service: str = "secretsmanager",
           headers: dict | None = None, when: datetime | None = None) -> AWSRequest:
    """A request signed by botocore's SigV4Auth, optionally at another time than now."""
    request = AWSRequest(method="POST", url=URL, data=b"{}", headers=headers or TARGET)
    signer = SigV4Auth(credentials, service, "sa-east-1")
    if when is None:
        signer.add_auth(request)
    else:
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        signer._modify_request_before_signing(request)
        signature = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request)
        signer._inject_signature_to_request(request, signature)
    return request


def authenticate(request: AWSRequest, host: str = f"127.0.0.1:{PORT}"
                 ) -> tuple[AwsResponse | None, object]:
    """Run a botocore request through the Authenticator as the server would receive it."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    environ = EnvironBuilder(method=request.method, path="/", headers=headers,
                             data=request.body or b"").get_environ()
    environ.update(HTTP_HOST=host, RAW_URI="/", REQUEST_URI="/",
                   **{"wsgi.input": io.BytesIO(request.body or b"")})
    received = parse_request(environ)
    refusal = Authenticator(ADMIN, PORT).authenticate(received, environ)
    return refusal, received.principal


def code(response: AwsResponse | None) -> str | None:
    return None if response is None else response.error_code


@pytest.fixture
def session():
    """A role session issued by moto's STS, as the cloud's STS issues them."""
    with mock_aws():
        yield sts_backends[ACCOUNT_ID]["aws"].assume_role(
            region_name="sa-east-1", role_session_name="probe", role_arn=(
                f"arn:aws:iam::{ACCOUNT_ID}:role/probe"), policy=None, duration=900,
            external_id=None)


def test_the_administrators_signature_is_the_administrator():
    refusal, principal = authenticate(signed(Credentials(ADMIN.access_key_id,
                                                         ADMIN.secret_access_key)))
    assert refusal is None and principal.admin and principal.arn == ADMIN_ARN


def test_a_role_session_is_its_assumed_role(session):
    refusal, principal = authenticate(signed(Credentials(
        session.access_key_id, session.secret_access_key, session.session_token)))
    assert refusal is None and not principal.admin
    assert principal.arn == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/probe/probe"
    assert principal.principal_arn == f"arn:aws:iam::{ACCOUNT_ID}:role/probe"


def test_an_expired_session_token_is_expired_token(session):
    session.expiration = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    refusal, _ = authenticate(signed(Credentials(
        session.access_key_id, session.secret_access_key, session.session_token)))
    assert (refusal.status, code(refusal)) == (403, "ExpiredTokenException")


def test_a_session_key_without_its_token_is_refused(session):
    refusal, _ = authenticate(signed(Credentials(session.access_key_id,
                                                 session.secret_access_key)))
    assert code(refusal) == "UnrecognizedClientException"


def test_a_signature_more_than_15_minutes_old_is_refused():
    stale = signed(Credentials(ADMIN.access_key_id, ADMIN.secret_access_key),
                   when=datetime.now(UTC) - timedelta(minutes=16))
    refusal, _ = authenticate(stale)
    assert (refusal.status, code(refusal)) == (403, "InvalidSignatureException")


def test_a_tampered_body_breaks_the_signature():
    request = signed(Credentials(ADMIN.access_key_id, ADMIN.secret_access_key))
    request.data = b'{"MaxResults": 1}'
    refusal, _ = authenticate(request)
    assert code(refusal) == "InvalidSignatureException"


def test_an_unsigned_call_to_a_json_service_is_missing_authentication():
    refusal, principal = authenticate(AWSRequest(method="POST", url=URL, data=b"{}",
                                                 headers=TARGET))
    assert (refusal.status, code(refusal)) == (403, "MissingAuthenticationTokenException")
    assert principal.anonymous


def test_a_foreign_host_is_not_this_endpoint():
    gate = Authenticator(ADMIN, PORT)
    assert not gate.check_host({"HTTP_HOST": f"attacker.example:{PORT}"})
    assert not gate.check_host({"HTTP_HOST": "127.0.0.1:80"})
    assert all(gate.check_host({"HTTP_HOST": host}) for host in gate.hosts())
