"""The ``cloud`` fixture: one embedded cloud server per test session, in its own process.

A separate process, as ``picsel cloud start`` runs it: Lambda and Glue executors start
subprocesses that call back over HTTP, and the test process stays free of moto's state. The
session's environment points ``picsel_nb`` (PICSEL_CLOUD_PORT, PICSEL_STATE_DIR) and plain boto3
or the AWS CLI (what ``picsel cloud env`` prints: the endpoint, and the administrator's profile in
the state directory) at it, so nothing reaches AWS.

Use it with ``from tests.cloud_fixtures import cloud  # noqa: F401``.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests

from picsel_nb.clients import client_config
from picsel_nb.localcloud.auth import ADMIN_ARN
from picsel_nb.localcloud.credentials import admin_headers, admin_key
from picsel_nb.localcloud.process import LocalCloud

REGION = "sa-east-1"
AWS_CLI = Path(sys.executable).with_name("aws")


def zip_files(files: dict[str, str | bytes]) -> bytes:
    """A zip archive holding ``files`` (archive path -> content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return buffer.getvalue()


def poll(check, timeout: float = 30.0, interval: float = 0.1):
    """``check()``'s first truthy result, polling until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Cloud:
    """A running embedded cloud, as the tests see it."""

    local: LocalCloud

    @property
    def endpoint_url(self) -> str:
        return self.local.endpoint_url

    @property
    def log_path(self) -> Path:
        return self.local.log_path

    @property
    def session_env(self) -> dict[str, str]:
        """What the test session's environment gets: picsel_nb pointed at this cloud. No AWS
        profile, so plain boto3 under moto's in-process mock stays with moto."""
        return {"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "PICSEL_BACKEND": "local",
                "PICSEL_CLOUD_PORT": str(self.local.port),
                "PICSEL_STATE_DIR": str(self.local.state_dir)}

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3, the AWS CLI and picsel_nb in a subprocess at
        this cloud, as its administrator (what ``picsel cloud env`` prints)."""
        return self.session_env | self.local.client_env() | {"AWS_REGION": REGION,
                                                             "AWS_DEFAULT_REGION": REGION}

    def session(self) -> boto3.Session:
        """A boto3 session of the cloud's administrator (sa-east-1)."""
        key = admin_key(self.local.state_dir)
        return boto3.Session(aws_access_key_id=key.access_key_id,
                             aws_secret_access_key=key.secret_access_key, region_name=REGION)

    def client(self, name: str, **kwargs):
        """A boto3 client of service ``name`` on this cloud, as its administrator."""
        kwargs["config"] = client_config(name, kwargs.get("config"))
        return self.session().client(name, endpoint_url=self.endpoint_url, **kwargs)

    def control(self, method: str, path: str) -> requests.Response:
        """Call one of the endpoint's own routes (``/_picsel/…``) as its administrator."""
        url = self.endpoint_url + path
        headers = admin_headers(method, url, admin_key(self.local.state_dir), REGION)
        return requests.request(method, url, headers=headers, timeout=30)

    def deploy_function(self, name: str, files: dict[str, str | bytes],
                        handler: str = "app.handler", **config) -> str:
        """Create (or replace) a python3.11 function from ``files``; returns its ARN."""
        lam = self.client("lambda")
        try:
            lam.delete_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass
        return lam.create_function(FunctionName=name, Runtime="python3.11", Role=self.lambda_role(),
                                   Handler=handler, Code={"ZipFile": zip_files(files)},
                                   **config)["FunctionArn"]

    def lambda_role(self, name: str = "picsel-test-lambda-role") -> str:
        """The ARN of a role Lambda may assume, which reads and writes the ``lambda-test-*``
        buckets (nothing else: it is held to its policy as on AWS)."""
        return self.role(name, {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
             "Resource": ["arn:aws:s3:::lambda-test-*", "arn:aws:s3:::lambda-test-*/*"]}]},
            "lambda.amazonaws.com")

    def role(self, name: str, permissions: dict, service: str | None = None) -> str:
        """A role with ``permissions`` as its one inline policy (replaced when it exists); its
        ARN. Trusted by ``service`` (e.g. "glue.amazonaws.com"), else by the administrator, who
        may then ``assume()`` it."""
        principal = {"Service": service} if service else {"AWS": ADMIN_ARN}
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]}
        iam = self.client("iam")
        try:
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        except iam.exceptions.NoSuchEntityException:
            arn = iam.create_role(RoleName=name,
                                  AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="permissions",
                            PolicyDocument=json.dumps(permissions))
        return arn

    def assume(self, role_arn: str, session_name: str = "test-session") -> boto3.Session:
        """A boto3 session of a role the administrator may assume."""
        credentials = self.client("sts").assume_role(
            RoleArn=role_arn, RoleSessionName=session_name)["Credentials"]
        return boto3.Session(aws_access_key_id=credentials["AccessKeyId"],
                             aws_secret_access_key=credentials["SecretAccessKey"],
                             aws_session_token=credentials["SessionToken"], region_name=REGION)

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the AWS CLI against this cloud; stdout and stderr captured as text."""
        return subprocess.run([str(AWS_CLI), *args], env=_without_keys(os.environ) | self.env,
                              capture_output=True, text=True, check=check, timeout=120)


def _without_keys(environ) -> dict[str, str]:
    """The environment without credentials that would win over the cloud's profile."""
    return {k: v for k, v in environ.items()
            if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """An embedded cloud on a free port for the whole session, stopped at its end."""
    local = LocalCloud(free_port(), tmp_path_factory.mktemp("cloud-state"))
    local.start()
    running = Cloud(local)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in running.session_env.items():
            patch.setenv(name, value)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        try:
            yield running
        finally:
            local.stop()
