"""nbval runs of the notebooks: point their kernels at an embedded cloud of their own.

A kernel inherits the environment of the moment it starts, so just before each notebook's cells
run, PICSEL_CLOUD_PORT (a free port) and PICSEL_STATE_DIR (a temporary directory) are set here:
the notebooks then start and use a fresh cloud that neither a reader's cloud nor the tests' (whose
fixture points the environment at its own) can disturb. It is stopped when the run ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from picsel_nb.localcloud.process import LocalCloud

_CLOUD_KEY = pytest.StashKey[LocalCloud]()
_SAVED_KEY = pytest.StashKey[dict]()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(cloud: LocalCloud) -> dict[str, str]:
    return {"PICSEL_BACKEND": "local", "PICSEL_CLOUD_PORT": str(cloud.port),
            "PICSEL_STATE_DIR": str(cloud.state_dir)}


def pytest_configure(config: pytest.Config) -> None:
    """Choose the notebooks' cloud: a free port and a temporary state directory."""
    if config.getoption("nbval", default=False) or config.getoption("nbval_lax", default=False):
        state_dir = Path(tempfile.mkdtemp(prefix="picsel-nbval-"))
        config.stash[_CLOUD_KEY] = LocalCloud(_free_port(), state_dir)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a notebook's kernel starts, point the environment at the notebooks' cloud."""
    cloud = item.config.stash.get(_CLOUD_KEY, None)
    if cloud is None or item.path.suffix != ".ipynb":
        return
    wanted = _environment(cloud)
    item.config.stash.setdefault(_SAVED_KEY, {name: os.environ.get(name) for name in wanted})
    os.environ.update(wanted)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the notebooks' cloud (started by the first kernel that needed it) and clean up."""
    cloud = config.stash.get(_CLOUD_KEY, None)
    if cloud is None:
        return
    cloud.stop()
    shutil.rmtree(cloud.state_dir, ignore_errors=True)
    for name, value in config.stash.get(_SAVED_KEY, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
