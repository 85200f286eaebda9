"""The CDS API key in Secrets Manager, as JSON {"url": ..., "key": ...}.

Only the Lambda handler reads the value (`load_cds_credentials`); the secret's resource policy
(infra/policies/secret-lambda-only.json) denies `GetSecretValue` to every other principal, the
administrator included, who may still describe, write, restore and delete it. Nothing here reads
the value back: a write is idempotent because the version ids of a value are derived from it
(`version_id`), so the current version's id tells whether it holds the value. Rotation is writing
the new key the same way (AWSCURRENT moves, AWSPREVIOUS keeps the old key): `rotate_secret`
needs a rotation Lambda and, without one, breaks the secret.
"""

from __future__ import annotations

import getpass
import itertools
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from cdsapi.api import read_config

from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import StackError, error_code, tolerate
from picsel_nb.stack.roles import policy_values, render_policy

CDS_URL = "https://cds.climate.copernicus.eu/api"
TOKEN_PAGE = "https://cds.climate.copernicus.eu/profile"
RECOVERY_WINDOW_DAYS = 7
POLICY_TEMPLATE = "secret-lambda-only"


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


def version_id(stack: Stack, value: str, generation: int = 0) -> str:
    """The id (ClientRequestToken) of the `generation`-th version holding `value`: a UUID derived
    from the secret's name, the generation and the value, which does not give the value back."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stack.names.secret}\0{generation}\0{value}"))


def _version_ids(stack: Stack) -> set[str]:
    """Every version id of the secret, deprecated ones included (metadata, never a value)."""
    secrets, ids, page_token = stack.client("secretsmanager"), set(), {}
    while True:
        page = secrets.list_secret_version_ids(SecretId=stack.names.secret, IncludeDeprecated=True,
                                               **page_token)
        ids |= {version["VersionId"] for version in page["Versions"]}
        if not page.get("NextToken"):
            return ids
        page_token = {"NextToken": page["NextToken"]}


def _make_current(stack: Stack, value: str, current: str | None) -> None:
    """Make `value` the AWSCURRENT version without reading any: nothing when the current id is one
    of `value`'s, else a new version under `value`'s first unused id (a write under a used id and
    the same value is ignored by Secrets Manager, so an older version is never reused)."""
    taken = _version_ids(stack)
    for generation in itertools.count():
        token = version_id(stack, value, generation)
        if token == current:
            return
        if token not in taken:
            stack.client("secretsmanager").put_secret_value(
                SecretId=stack.names.secret, SecretString=value, ClientRequestToken=token)
            return


def secret_policy(stack: Stack) -> dict:
    """The secret's resource policy: GetSecretValue denied to every principal but the Lambda role."""
    return render_policy(POLICY_TEMPLATE, policy_values(stack))


def ensure_secret_policy(stack: Stack) -> None:
    """Attach `secret_policy` unless it is attached already; BlockPublicPolicy makes Secrets
    Manager refuse it if it ever granted broad access."""
    secrets, wanted = stack.client("secretsmanager"), secret_policy(stack)
    attached = secrets.get_resource_policy(SecretId=stack.names.secret).get("ResourcePolicy")
    if attached is None or json.loads(attached) != wanted:
        secrets.put_resource_policy(SecretId=stack.names.secret, ResourcePolicy=json.dumps(wanted),
                                    BlockPublicPolicy=True)


def ensure_secret(stack: Stack, url: str, key: str) -> dict[str, Any]:
    """Store the CDS credentials as the current version and attach the resource policy; the
    secret's metadata. Creates the secret, restores it if scheduled for deletion, and never reads
    the stored value: a repeated value adds nothing, a new key (a rotation) adds a version."""
    url, key = check_cds_credentials(url, key)
    value = json.dumps({"url": url, "key": key})
    existing = describe_secret(stack)
    if existing is None:
        stack.client("secretsmanager").create_secret(
            Name=stack.names.secret, SecretString=value, ClientRequestToken=version_id(stack, value),
            Description="picsel-nb: Copernicus CDS API url and personal access token")
    else:
        if existing["deleted"]:  # scheduled for deletion: bring it back before writing to it
            stack.client("secretsmanager").restore_secret(SecretId=stack.names.secret)
        _make_current(stack, value, existing["current_version"])
    ensure_secret_policy(stack)
    return describe_secret(stack)


def secret_arn(stack: Stack) -> str:
    """The full ARN of the secret (with the 6-character suffix Secrets Manager appends)."""
    metadata = describe_secret(stack)
    if metadata is None:
        raise LookupError(f"secret {stack.names.secret!r} does not exist; run ensure_secret first")
    return metadata["arn"]


def value_refusal(stack: Stack) -> dict[str, str]:
    """The error code and message GetSecretValue answers the stack's own caller, who must be
    refused; a StackError (naming no value) when the value came back instead."""
    try:
        stack.client("secretsmanager").get_secret_value(SecretId=stack.names.secret)
    except ClientError as exc:
        if error_code(exc) != "AccessDeniedException":
            raise
        return {"code": error_code(exc), "message": exc.response["Error"].get("Message", "")}
    raise StackError(f"GetSecretValue on {stack.names.secret} was allowed to this caller: the "
                     "secret's resource policy is missing or not enforced; run ensure_secret")


def load_cds_credentials(secrets: Any, secret_id: str) -> dict[str, str]:
    """{"url", "key"} read with a Secrets Manager client: for the Lambda handler, nothing else."""
    return json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])


def delete_secret(stack: Stack, force: bool = True) -> bool:
    """Delete the secret, at once (`force`) or after a recovery window; False when it did not exist
    (asked first: a forced delete of a missing secret is no error on AWS)."""
    if describe_secret(stack) is None:
        return False
    window = ({"ForceDeleteWithoutRecovery": True} if force
              else {"RecoveryWindowInDays": RECOVERY_WINDOW_DAYS})
    stack.client("secretsmanager").delete_secret(SecretId=stack.names.secret, **window)
    return True
