"""The embedded cloud server: `picsel cloud start|stop|status`, clients, start-up time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from picsel_nb import clients
from picsel_nb.localcloud.process import LocalCloud
from tests.cloud_fixtures import cloud, free_port  # noqa: F401

PICSEL = Path(sys.executable).with_name("picsel")


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> LocalCloud:
    """Settings pointing at a free port and an empty state directory; its server stopped after."""
    local = LocalCloud(free_port(), tmp_path / "state")
    monkeypatch.setenv("PICSEL_BACKEND", "local")
    monkeypatch.setenv("PICSEL_CLOUD_PORT", str(local.port))
    monkeypatch.setenv("PICSEL_STATE_DIR", str(local.state_dir))
    yield local
    local.stop()


def _picsel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PICSEL), *args], capture_output=True, text=True, timeout=60,
                          env=os.environ.copy(), check=False)


def test_cli_start_status_stop(isolated):
    started = _picsel("cloud", "start")
    assert started.returncode == 0, started.stderr
    assert f"running at {isolated.endpoint_url}" in started.stdout
    assert isolated.pid_path.read_text().strip() == str(isolated.health()["pid"])

    again = _picsel("cloud", "start")
    assert again.returncode == 0 and "already running" in again.stdout

    status = _picsel("cloud", "status")
    assert status.returncode == 0
    assert f"endpoint: {isolated.endpoint_url}" in status.stdout
    assert f"pid:      {isolated.health()['pid']}" in status.stdout
    assert f"log:      {isolated.log_path}" in status.stdout
    assert "0 buckets, 0 functions" in status.stdout

    stopped = _picsel("cloud", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not isolated.pid_path.exists() and not isolated.is_running()
    assert _picsel("cloud", "status").returncode == 3
    assert "nothing to stop" in _picsel("cloud", "stop").stdout
    assert "stopped" in isolated.log_path.read_text()


def test_stale_pid_file_is_replaced(isolated):
    isolated.state_dir.mkdir(parents=True)
    isolated.pid_path.write_text("999999\n")
    assert not isolated.is_running()
    assert isolated.start()
    assert isolated.pid_path.read_text().strip() == str(isolated.health()["pid"])


def test_client_starts_the_local_cloud_when_needed(isolated):
    assert not isolated.is_running()
    s3 = clients.client("s3")
    assert s3.meta.endpoint_url == isolated.endpoint_url
    assert s3.list_buckets()["Buckets"] == []
    assert isolated.is_running()


def test_aws_backend_gets_a_plain_boto3_client(monkeypatch):
    monkeypatch.setenv("PICSEL_BACKEND", "aws")
    monkeypatch.setenv("PICSEL_REGION", "sa-east-1")
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):  # the cloud's profile
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PICSEL_CLOUD_PORT", str(free_port()))  # nothing may start there
    s3 = clients.client("s3")
    assert s3.meta.endpoint_url == "https://s3.sa-east-1.amazonaws.com"
    assert clients.resource("s3").meta.client.meta.region_name == "sa-east-1"
    assert not LocalCloud.from_settings().is_running()


def test_status_counts_what_the_cloud_holds(cloud):  # noqa: F811
    cloud.client("s3").create_bucket(Bucket="status-counted",
                                     CreateBucketConfiguration={"LocationConstraint": "sa-east-1"})
    assert "status-counted" in cloud.aws("s3", "ls").stdout
    assert cloud.local.status()["holdings"]["buckets"] >= 1


def test_server_listens_on_loopback_only(cloud):  # noqa: F811
    if shutil.which("ss") is None:
        pytest.skip("needs iproute2's ss to list listening sockets")
    pid = cloud.local.health()["pid"]
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    ours = [line for line in listening.splitlines() if f"pid={pid}," in line]
    assert ours and all(f"127.0.0.1:{cloud.local.port}" in line for line in ours)
