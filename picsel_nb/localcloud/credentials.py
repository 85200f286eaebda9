"""The embedded cloud's administrator credentials: made once, kept in the state directory.

The first start (or the first client) creates a random access key pair and writes it as an AWS
shared credentials file with mode 0600, beside a config file naming the endpoint and region, both
under one profile. Every real client reaches the cloud through those two files: boto3 and the AWS
CLI by ``AWS_SHARED_CREDENTIALS_FILE`` / ``AWS_CONFIG_FILE`` / ``AWS_PROFILE`` (what
``picsel cloud env`` prints), ``picsel_nb.clients`` by reading them. The secret key is never
printed and never put in an environment variable.
"""

from __future__ import annotations

import configparser
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PROFILE = "picsel-local"
ADMIN_USER = "picsel-admin"
CREDENTIALS_FILE = "credentials"
CONFIG_FILE = "config"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True)
class AccessKey:
    """One access key pair (an optional session token for STS-issued keys)."""

    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"AccessKey({self.access_key_id!r}, secret_access_key=<hidden>)"


def credentials_path(state_dir: Path) -> Path:
    return Path(state_dir) / CREDENTIALS_FILE


def config_path(state_dir: Path) -> Path:
    return Path(state_dir) / CONFIG_FILE


def admin_key(state_dir: Path) -> AccessKey:
    """The administrator's key pair of this state directory, created on first use."""
    path = credentials_path(state_dir)
    if not path.exists():
        _create(path)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    section = parser[PROFILE]
    return AccessKey(section["aws_access_key_id"], section["aws_secret_access_key"])


def write_config(state_dir: Path, endpoint_url: str, region: str) -> Path:
    """The profile's config file (endpoint, region, SigV4 presigning), rewritten on change."""
    path = config_path(state_dir)
    text = (f"[profile {PROFILE}]\nregion = {region}\nendpoint_url = {endpoint_url}\n"
            "output = json\ns3 =\n    signature_version = s3v4\n")  # S3 refuses SigV2
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(text)
        os.replace(staging, path)
    return path


def _create(path: Path) -> None:
    """Write a new random key pair, mode 0600, complete before it appears (first writer wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key_id = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"[{PROFILE}]\naws_access_key_id = {key_id}\n"
                     f"aws_secret_access_key = {secret}\n")
    try:
        os.link(staging, path)
    except FileExistsError:  # another process created it first: use theirs
        pass
    finally:
        staging.unlink()


def admin_headers(method: str, url: str, key: AccessKey, region: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a request to ``url`` signed (SigV4) with the administrator's key.

    For the endpoint's own routes (health, status, CloudTrail flush, the CDS's token admin),
    which only the administrator may call; AWS API calls go through boto3 instead.
    """
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    SigV4Auth(Credentials(key.access_key_id, key.secret_access_key), "picsel",
              region).add_auth(request)
    return dict(request.headers.items())
