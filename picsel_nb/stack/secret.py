"""The CDS API key in Secrets Manager, as JSON {"url": ..., "key": ...}.

Only `get_cds_credentials` / `load_cds_credentials` (used by the Lambda handler) return the value;
every other function returns metadata, so the key never reaches a notebook output or a log.
Rotation is `put_secret_value` (AWSCURRENT moves, AWSPREVIOUS keeps the old key): `rotate_secret`
needs a rotation Lambda and, without one, breaks the secret.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdsapi.api import read_config

from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import tolerate

CDS_URL = "https://cds.climate.copernicus.eu/api"
TOKEN_PAGE = "https://cds.climate.copernicus.eu/profile"
RECOVERY_WINDOW_DAYS = 7


def check_cds_credentials(url: str, key: str) -> tuple[str, str]:
    """(url, key) cleaned, or a ValueError saying what the current CDS expects (never the key)."""
    url, key = url.strip().rstrip("/"), key.strip()
    if not key:
        raise ValueError(f"the CDS key is empty; accepted: your personal access token from {TOKEN_PAGE}")
    if ":" in key:
        raise ValueError("this CDS key has the 'UID:KEY' form of the removed CDS API v2; the current "
                         f"CDS wants a personal access token (from {TOKEN_PAGE}) as the key")
    if url.endswith("/v2"):
        raise ValueError(f"the CDS URL {url!r} is the removed CDS API v2; accepted: {CDS_URL}")
    return url, key


def read_cds_credentials(ask: Callable[[str], str] = getpass.getpass) -> tuple[str, str]:
    """The reader's CDS (url, key): CDSAPI_URL/CDSAPI_KEY, else ~/.cdsapirc, else asked without echo."""
    rc_path = Path(os.environ.get("CDSAPI_RC", "~/.cdsapirc")).expanduser()
    config = read_config(rc_path) if rc_path.is_file() else {}
    url = os.environ.get("CDSAPI_URL") or config.get("url") or CDS_URL
    key = (os.environ.get("CDSAPI_KEY") or config.get("key")
           or ask(f"CDS personal access token (from {TOKEN_PAGE}): "))
    return check_cds_credentials(url, key)


def _metadata(description: dict) -> dict[str, Any]:
    """What describe_secret says, without anything of the value."""
    stages = description.get("VersionIdsToStages", {})
    by_stage = {stage: version for version, names in stages.items() for stage in names}
    return {
        "name": description["Name"],
        "arn": description["ARN"],
        "current_version": by_stage.get("AWSCURRENT"),
        "previous_version": by_stage.get("AWSPREVIOUS"),
        "versions": stages,
        "created": description.get("CreatedDate"),
        "last_changed": description.get("LastChangedDate"),
        "deleted": description.get("DeletedDate"),
    }


def describe_secret(stack: Stack) -> dict[str, Any] | None:
    """The secret's ARN, name, versions and their stages (no value); None when it does not exist."""
    with tolerate("ResourceNotFoundException"):
        return _metadata(stack.client("secretsmanager").describe_secret(SecretId=stack.names.secret))
    return None


def ensure_secret(stack: Stack, url: str, key: str) -> dict[str, Any]:
    """Store the CDS credentials: create the secret, or add a version when the value differs."""
    url, key = check_cds_credentials(url, key)
    secrets = stack.client("secretsmanager")
    name, value = stack.names.secret, json.dumps({"url": url, "key": key})
    existing = describe_secret(stack)
    if existing is None:
        secrets.create_secret(Name=name, SecretString=value,
                              Description="picsel-nb: Copernicus CDS API url and personal access token")
        return describe_secret(stack)
    if existing["deleted"]:  # scheduled for deletion: bring it back before writing to it
        secrets.restore_secret(SecretId=name)
    if secrets.get_secret_value(SecretId=name)["SecretString"] != value:
        secrets.put_secret_value(SecretId=name, SecretString=value)
    return describe_secret(stack)


def secret_arn(stack: Stack) -> str:
    """The full ARN of the secret (with the 6-character suffix Secrets Manager appends)."""
    metadata = describe_secret(stack)
    if metadata is None:
        raise LookupError(f"secret {stack.names.secret!r} does not exist; run ensure_secret first")
    return metadata["arn"]


def rotate_cds_key(stack: Stack, new_key: str) -> dict[str, Any]:
    """Store a new key as a new version: AWSCURRENT moves to it, AWSPREVIOUS keeps the old one."""
    return ensure_secret(stack, get_cds_credentials(stack)["url"], new_key)


def load_cds_credentials(secrets: Any, secret_id: str) -> dict[str, str]:
    """{"url", "key"} read with a Secrets Manager client: for the Lambda handler, nothing else."""
    return json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])


def get_cds_credentials(stack: Stack) -> dict[str, str]:
    """{"url", "key"} of the stack's secret (the only function here that returns the value)."""
    return load_cds_credentials(stack.client("secretsmanager"), stack.names.secret)


def delete_secret(stack: Stack, force: bool = True) -> bool:
    """Delete the secret, at once (`force`) or after a recovery window; False when it did not exist
    (asked first: a forced delete of a missing secret is no error on AWS)."""
    if describe_secret(stack) is None:
        return False
    window = ({"ForceDeleteWithoutRecovery": True} if force
              else {"RecoveryWindowInDays": RECOVERY_WINDOW_DAYS})
    stack.client("secretsmanager").delete_secret(SecretId=stack.names.secret, **window)
    return True
