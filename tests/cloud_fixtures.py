"""The ``cloud`` fixture: one embedded cloud server per test session, in its own process.

A separate process, as ``picsel cloud start`` runs it: Lambda and Glue executors start
subprocesses that call back over HTTP, and the test process stays free of moto's state. The
session's environment points ``picsel_nb`` (PICSEL_CLOUD_PORT, PICSEL_STATE_DIR) and plain boto3
or the AWS CLI (AWS_ENDPOINT_URL, dummy credentials, region) at it, so nothing reaches AWS.

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

import pytest

from picsel_nb.clients import local_session
from picsel_nb.localcloud.process import LocalCloud
from picsel_nb.settings import LOCAL_CREDENTIALS

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
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3, the AWS CLI and picsel_nb at this cloud."""
        return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "PICSEL_BACKEND": "local",
                "PICSEL_CLOUD_PORT": str(self.local.port),
                "PICSEL_STATE_DIR": str(self.local.state_dir)}

    def client(self, name: str, **kwargs):
        """A boto3 client of service ``name`` on this cloud (dummy credentials, sa-east-1)."""
        return local_session(REGION).client(name, endpoint_url=self.endpoint_url, **kwargs)

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
        """The ARN of a role Lambda may assume, created on first use."""
        iam = self.client("iam")
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}
        try:
            return iam.get_role(RoleName=name)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
            return role["Role"]["Arn"]

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the AWS CLI against this cloud; stdout and stderr captured as text."""
        return subprocess.run([str(AWS_CLI), "--endpoint-url", self.endpoint_url, *args],
                              env=os.environ | self.env, capture_output=True, text=True,
                              check=check, timeout=120)


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """An embedded cloud on a free port for the whole session, stopped at its end."""
    local = LocalCloud(free_port(), tmp_path_factory.mktemp("cloud-state"))
    local.start()
    running = Cloud(local)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in running.env.items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        try:
            yield running
        finally:
            local.stop()
