"""The CDS key secret: idempotent, rotated with put_secret_value, readable by the Lambda role only,
never read back or shown."""

from __future__ import annotations

import dataclasses
import json
import logging

import boto3
import pytest
from botocore.stub import Stubber

from picsel_nb.stack import roles, secret
from picsel_nb.stack.errors import StackError
from tests import test_stack_buckets

moto_stack = test_stack_buckets.moto_stack  # the shared moto-backed Stack fixture
URL = "https://cds.climate.copernicus.eu/api"
KEY = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
NEW_KEY = "99999999-8888-7777-6666-555555555555"


def value_id(stack, key: str, generation: int = 0) -> str:
    """The id ensure_secret gives the `generation`-th version holding the credentials (URL, key)."""
    return secret.version_id(stack, json.dumps({"url": URL, "key": key}), generation)


def lambda_reads(stack) -> dict[str, str]:
    """What the Lambda handler reads (moto in-process does not enforce the resource policy)."""
    return secret.load_cds_credentials(stack.client("secretsmanager"), stack.names.secret)


def test_ensure_secret_is_idempotent_and_returns_metadata_only(moto_stack):
    first = secret.ensure_secret(moto_stack, URL, KEY)
    again = secret.ensure_secret(moto_stack, URL, KEY)
    assert again["current_version"] == first["current_version"] == value_id(moto_stack, KEY)
    assert list(again["versions"]) == [first["current_version"]]  # no new version
    assert again["arn"].startswith(
        f"arn:aws:secretsmanager:sa-east-1:{moto_stack.account_id}:secret:{moto_stack.names.secret}-")
    assert len(again["arn"].rsplit("-", 1)[1]) == 6  # the suffix Secrets Manager appends
    assert secret.secret_arn(moto_stack) == again["arn"]
    assert KEY not in repr(first) + repr(again) + repr(secret.describe_secret(moto_stack))
    assert KEY not in first["current_version"]
    assert lambda_reads(moto_stack) == {"url": URL, "key": KEY}


def test_ensure_secret_never_reads_the_value(moto_stack):
    secret.ensure_secret(moto_stack, URL, KEY)
    calls: list[str] = []
    moto_stack.client("secretsmanager").meta.events.register(
        "before-call.secretsmanager.*", lambda model, **kw: calls.append(model.name))
    for key in (KEY, NEW_KEY, KEY):
        secret.ensure_secret(moto_stack, URL, key)
    assert calls and "GetSecretValue" not in calls


def test_rotation_moves_awscurrent_and_keeps_the_old_key_as_awsprevious(moto_stack):
    before = secret.ensure_secret(moto_stack, URL, KEY)
    after = secret.ensure_secret(moto_stack, URL, NEW_KEY)
    assert after["previous_version"] == before["current_version"] == value_id(moto_stack, KEY)
    assert after["current_version"] == value_id(moto_stack, NEW_KEY)
    assert after["versions"][after["current_version"]] == ["AWSCURRENT"]
    assert after["versions"][after["previous_version"]] == ["AWSPREVIOUS"]
    assert lambda_reads(moto_stack)["key"] == NEW_KEY


def test_going_back_to_an_older_key_writes_it_as_a_new_version_once(moto_stack):
    secret.ensure_secret(moto_stack, URL, KEY)
    secret.ensure_secret(moto_stack, URL, NEW_KEY)
    back = secret.ensure_secret(moto_stack, URL, KEY)
    assert (back["current_version"], back["previous_version"]) == (
        value_id(moto_stack, KEY, 1), value_id(moto_stack, NEW_KEY))
    assert secret.ensure_secret(moto_stack, URL, KEY)["versions"] == back["versions"]
    assert lambda_reads(moto_stack)["key"] == KEY


def test_resource_policy_denies_the_value_to_all_but_the_lambda_role(moto_stack):
    secret.ensure_secret(moto_stack, URL, KEY)
    secret.ensure_secret(moto_stack, URL, NEW_KEY)
    attached = moto_stack.client("secretsmanager").get_resource_policy(
        SecretId=moto_stack.names.secret)["ResourcePolicy"]
    [statement] = json.loads(attached)["Statement"]
    lambda_role = f"arn:aws:iam::{moto_stack.account_id}:role/{moto_stack.names.lambda_role}"
    assert statement == {
        "Sid": "DenyReadingTheValueToAllButTheLambdaRole", "Effect": "Deny", "Principal": "*",
        "Action": "secretsmanager:GetSecretValue", "Resource": "*",
        "Condition": {"StringNotEquals": {"aws:PrincipalArn": lambda_role}}}
    assert roles.role_arn(moto_stack, moto_stack.names.lambda_role) == lambda_role
    assert json.loads(attached) == secret.secret_policy(moto_stack)


def test_value_refusal_reports_access_denied_and_fails_when_the_value_comes_back(moto_stack):
    secret.ensure_secret(moto_stack, URL, KEY)
    with pytest.raises(StackError, match="resource policy is missing or not enforced") as allowed:
        secret.value_refusal(moto_stack)  # moto in-process enforces no resource policy
    assert KEY not in str(allowed.value)
    client = boto3.client("secretsmanager", region_name="sa-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("get_secret_value", "AccessDeniedException", "explicit deny")
        refused = secret.value_refusal(
            dataclasses.replace(moto_stack, client_factory=lambda s: client))
    assert refused == {"code": "AccessDeniedException", "message": "explicit deny"}


def test_the_key_never_reaches_outputs_or_logs(moto_stack, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="picsel_nb")
    print(secret.ensure_secret(moto_stack, URL, KEY))
    print(secret.ensure_secret(moto_stack, URL, NEW_KEY))
    print(secret.describe_secret(moto_stack))
    print(secret.delete_secret(moto_stack, force=True))
    with pytest.raises(ValueError) as legacy:
        secret.ensure_secret(moto_stack, URL, f"12345:{KEY}")
    print(legacy.value)
    out, err = capsys.readouterr()
    for value in (KEY, NEW_KEY):
        assert value not in out + err + caplog.text


def test_legacy_cds_v2_credentials_are_refused_with_what_to_use():
    with pytest.raises(ValueError, match="personal access token"):
        secret.check_cds_credentials(URL, f"12345:{KEY}")
    with pytest.raises(ValueError, match="removed CDS API v2"):
        secret.check_cds_credentials("https://cds.climate.copernicus.eu/api/v2", KEY)
    with pytest.raises(ValueError, match="empty"):
        secret.check_cds_credentials(URL, "  ")
    assert secret.check_cds_credentials(f" {URL}/ ", f" {KEY}\n") == (URL, KEY)


def test_read_cds_credentials_from_env_then_cdsapirc_then_asks(monkeypatch, tmp_path):
    rc = tmp_path / ".cdsapirc"
    monkeypatch.setenv("CDSAPI_RC", str(rc))
    monkeypatch.delenv("CDSAPI_URL", raising=False)
    monkeypatch.delenv("CDSAPI_KEY", raising=False)
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return KEY

    assert secret.read_cds_credentials(ask) == (URL, KEY)  # nothing configured: asked
    assert len(prompts) == 1 and "personal access token" in prompts[0]

    rc.write_text(f"url: {URL}\nkey: {NEW_KEY}\n")
    assert secret.read_cds_credentials(ask) == (URL, NEW_KEY)

    monkeypatch.setenv("CDSAPI_KEY", KEY)
    assert secret.read_cds_credentials(ask) == (URL, KEY)
    rc.write_text(f"url: {URL}/v2\nkey: 123:{KEY}\n")
    monkeypatch.delenv("CDSAPI_KEY")
    with pytest.raises(ValueError, match="UID:KEY"):
        secret.read_cds_credentials(ask)
    assert len(prompts) == 1


def test_delete_secret_and_ensure_brings_a_scheduled_secret_back(moto_stack):
    secret.ensure_secret(moto_stack, URL, KEY)
    assert secret.delete_secret(moto_stack, force=False) is True
    assert secret.describe_secret(moto_stack)["deleted"] is not None
    restored = secret.ensure_secret(moto_stack, URL, NEW_KEY)
    assert restored["deleted"] is None
    assert restored["current_version"] == value_id(moto_stack, NEW_KEY)
    assert lambda_reads(moto_stack)["key"] == NEW_KEY
    assert secret.delete_secret(moto_stack, force=True) is True
    assert secret.describe_secret(moto_stack) is None
    assert secret.delete_secret(moto_stack) is False
