"""The CDS key secret: idempotent, rotated with put_secret_value, never shown."""

from __future__ import annotations

import json
import logging

import pytest

from picsel_nb.stack import secret
from tests import test_stack_buckets

moto_stack = test_stack_buckets.moto_stack  # the shared moto-backed Stack fixture
URL = "https://cds.climate.copernicus.eu/api"
KEY = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
NEW_KEY = "99999999-8888-7777-6666-555555555555"


def test_ensure_secret_is_idempotent_and_returns_metadata_only(moto_stack):
    first = secret.ensure_secret(moto_stack, URL, KEY)
    again = secret.ensure_secret(moto_stack, URL, KEY)
    assert again["current_version"] == first["current_version"]  # no new version for the same value
    assert list(again["versions"]) == [first["current_version"]]
    assert again["arn"].startswith(
        f"arn:aws:secretsmanager:sa-east-1:{moto_stack.account_id}:secret:{moto_stack.names.secret}-")
    assert len(again["arn"].rsplit("-", 1)[1]) == 6  # the suffix Secrets Manager appends
    assert secret.secret_arn(moto_stack) == again["arn"]
    assert KEY not in repr(first) + repr(again) + repr(secret.describe_secret(moto_stack))
    assert secret.get_cds_credentials(moto_stack) == {"url": URL, "key": KEY}


def test_rotation_moves_awscurrent_and_keeps_the_old_key_as_awsprevious(moto_stack):
    before = secret.ensure_secret(moto_stack, URL, KEY)
    after = secret.rotate_cds_key(moto_stack, NEW_KEY)
    assert after["previous_version"] == before["current_version"]
    assert after["current_version"] != before["current_version"]
    assert after["versions"][after["current_version"]] == ["AWSCURRENT"]
    assert after["versions"][after["previous_version"]] == ["AWSPREVIOUS"]
    assert secret.get_cds_credentials(moto_stack)["key"] == NEW_KEY
    previous = moto_stack.client("secretsmanager").get_secret_value(
        SecretId=moto_stack.names.secret, VersionStage="AWSPREVIOUS")
    assert json.loads(previous["SecretString"])["key"] == KEY


def test_the_key_never_reaches_outputs_or_logs(moto_stack, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="picsel_nb")
    print(secret.ensure_secret(moto_stack, URL, KEY))
    print(secret.rotate_cds_key(moto_stack, NEW_KEY))
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
    assert secret.get_cds_credentials(moto_stack)["key"] == NEW_KEY
    assert secret.delete_secret(moto_stack, force=True) is True
    assert secret.describe_secret(moto_stack) is None
    assert secret.delete_secret(moto_stack) is False
