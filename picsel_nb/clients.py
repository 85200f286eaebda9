"""boto3 clients for the backend in force: the embedded cloud (started on demand) or AWS.

Everything in ``picsel_nb`` gets its clients here, so a notebook runs unchanged on both
backends: on ``local`` the client points at the embedded cloud with its administrator's key
(``picsel_nb.localcloud.credentials``, kept in the state directory), on
``aws`` it is a plain boto3 client using the default credential chain (profile, SSO, env, role).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from picsel_nb.localcloud.credentials import admin_key
from picsel_nb.localcloud.process import LocalCloud
from picsel_nb.settings import get_settings


def client(service: str, region: str | None = None, **kwargs: Any):
    """A boto3 client of ``service`` for the backend in force (the local cloud started if off)."""
    kwargs["config"] = client_config(service, kwargs.get("config"))
    return _session(region).client(service, **_endpoint(), **kwargs)


def client_config(service: str, config: Config | None = None) -> Config | None:
    """S3 clients presign with SigV4: S3 refuses SigV2 for buckets made since June 2020."""
    if service != "s3":
        return config
    return Config(signature_version="s3v4").merge(config) if config else Config(
        signature_version="s3v4")


def resource(service: str, region: str | None = None, **kwargs: Any):
    """A boto3 resource of ``service`` for the backend in force (the local cloud started if off)."""
    kwargs["config"] = client_config(service, kwargs.get("config"))
    return _session(region).resource(service, **_endpoint(), **kwargs)


def local_session(region: str | None = None) -> boto3.Session:
    """A boto3 session with the embedded cloud's administrator key (created on first use)."""
    settings = get_settings()
    key = admin_key(settings.state_dir)
    return boto3.Session(aws_access_key_id=key.access_key_id,
                         aws_secret_access_key=key.secret_access_key,
                         region_name=region or settings.region)


def _session(region: str | None) -> boto3.Session:
    settings = get_settings()
    if settings.backend == "aws":
        return boto3.Session(region_name=region or settings.region)
    return local_session(region)


def _endpoint() -> dict[str, str]:
    """``endpoint_url`` of the embedded cloud, started when not running; nothing on AWS."""
    settings = get_settings()
    if settings.backend == "aws":
        return {}
    LocalCloud.from_settings().ensure_running()
    return {"endpoint_url": settings.endpoint_url}
