"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from picsel_nb.settings import LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack.context import Stack

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The real ERA5 / ERA5-Land files of ../shared/data/era5-samples (skip when absent)."""
    path = SHARED / "data" / "era5-samples"
    if not path.is_dir():
        pytest.skip(f"real ERA5 samples not found at {path}: clone the repo beside ../shared")
    return path


@pytest.fixture(scope="session")
def natural_earth_dir() -> Path:
    """Offline Natural Earth shapefiles for cartopy (skip when absent)."""
    path = SHARED / "data" / "natural_earth"
    if not path.is_dir():
        pytest.skip(f"Natural Earth data not found at {path}: clone the repo beside ../shared")
    return path


@pytest.fixture
def offline_stack() -> Stack:
    """A stack for definitions only: making any client fails the test."""
    settings = get_settings()
    return Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                 client_factory=lambda service, **_: pytest.fail(f"made a {service} client"))
