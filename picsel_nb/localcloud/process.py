"""The embedded cloud as a background process: start it, find it, ask what it holds, stop it.

One server per port. It writes its pid file once it is listening and removes it when it stops;
its output goes to a log file beside the pid file in the state directory. Whether a server is
running is decided by asking it (``/_picsel/health`` answers the administrator's signed request
with its pid), never by the pid file alone, so a stale pid file or a reused pid cannot mislead
``stop``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from picsel_nb.localcloud.credentials import (
    PROFILE,
    admin_headers,
    admin_key,
    credentials_path,
    write_config,
)
from picsel_nb.settings import get_settings

HEALTH_PATH = "/_picsel/health"
STATUS_PATH = "/_picsel/status"
SERVER_MODULE = "picsel_nb.localcloud.server"

# Loopback requests must not go through an HTTP proxy configured in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Servers started by this process, kept referenced so that Python does not warn that a
# (deliberately) still-running child was garbage-collected.
_started: list[subprocess.Popen] = []


class CloudError(RuntimeError):
    """The embedded cloud could not be started or stopped."""


@dataclass(frozen=True)
class LocalCloud:
    """The embedded cloud server of one port and state directory."""

    port: int
    state_dir: Path

    @classmethod
    def from_settings(cls) -> LocalCloud:
        """The server the current settings point at (PICSEL_CLOUD_PORT, PICSEL_STATE_DIR)."""
        settings = get_settings()
        return cls(settings.cloud_port, settings.state_dir)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"cloud-{self.port}.pid"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"cloud-{self.port}.log"

    def client_env(self) -> dict[str, str]:
        """The variables with which boto3, the AWS CLI or any SDK reach this cloud as its admin.

        They name the credentials and config files of the state directory (made here if
        missing), never the key itself.
        """
        region = get_settings().region
        admin_key(self.state_dir)
        return {"AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_SHARED_CREDENTIALS_FILE": str(credentials_path(self.state_dir)),
                "AWS_CONFIG_FILE": str(write_config(self.state_dir, self.endpoint_url, region)),
                "AWS_PROFILE": PROFILE, "AWS_REGION": region, "AWS_DEFAULT_REGION": region}

    def health(self, timeout: float = 1.0) -> dict | None:
        """What the server says of itself ({"pid", "port", "started"}); None when none answers."""
        return self._get(HEALTH_PATH, timeout)

    def status(self, timeout: float = 5.0) -> dict | None:
        """Health plus the counts of what the server holds, or None when it is not running."""
        return self._get(STATUS_PATH, timeout)

    def is_running(self) -> bool:
        return self.health() is not None

    def start(self, timeout: float = 15.0) -> bool:
        """Start the server in the background; False when one already answers on the port.

        Raises CloudError (with the end of the log) when the server exits or stays silent.
        """
        if self.is_running():
            return False
        self._remove_stale_pid_file()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = os.environ | {"PICSEL_CLOUD_PORT": str(self.port),
                            "PICSEL_STATE_DIR": str(self.state_dir)}
        command = [sys.executable, "-m", SERVER_MODULE, "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _started.append(process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health(timeout=0.5)
            if health and health.get("pid") == process.pid:
                return True
            if process.poll() is not None:
                if self.is_running():  # another caller started one first; ours lost the port
                    return False
                raise CloudError(f"the embedded cloud exited with code {process.returncode} while "
                                 f"starting on port {self.port}:\n{self.log_tail()}")
            time.sleep(0.05)
        process.kill()
        raise CloudError(f"the embedded cloud did not answer on port {self.port} within "
                         f"{timeout} s:\n{self.log_tail()}")

    def ensure_running(self) -> None:
        """Start the server unless one already answers on the port."""
        self.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); False when none ran."""
        health = self.health()
        if health is None:
            self._remove_stale_pid_file()
            return False
        pid = int(health["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        # The server removes its pid file as it finishes; an exited server that nobody has
        # reaped yet (a zombie, when it was started by another process) counts as stopped.
        while _alive(pid) and self.pid_path.exists():
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        self.pid_path.unlink(missing_ok=True)
        return True

    def log_tail(self, size: int = 4000) -> str:
        """The end of the server's log."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(max(0, self.log_path.stat().st_size - size))
            return log.read().decode("utf-8", "replace")

    def _get(self, path: str, timeout: float) -> dict | None:
        url = self.endpoint_url + path
        headers = admin_headers("GET", url, admin_key(self.state_dir), get_settings().region)
        try:
            request = urllib.request.Request(url, headers=headers)
            with _DIRECT.open(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return payload if isinstance(payload, dict) and "pid" in payload else None

    def _remove_stale_pid_file(self) -> None:
        """Drop a pid file left by a server that no longer answers (crashed, killed, rebooted)."""
        self.pid_path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (reaping it when it is our own exited child)."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
