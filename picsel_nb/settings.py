"""Where the walkthrough runs and what its resources are called, from the environment with safe defaults.

The same notebooks run on the embedded local cloud (``PICSEL_BACKEND=local``, the default) and on a
real AWS account (``PICSEL_BACKEND=aws``); only these settings differ.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

BACKENDS = ("local", "aws")
LOCAL_ACCOUNT_ID = "123456789012"  # the account moto answers for

# The original pipeline's defaults, kept as the demo's.
DEMO_DATASET = "reanalysis-era5-land"
DEMO_AREA = (-9.0, -60.0, -24.0, -40.0)  # [N, W, S, E], central-eastern Brazil
DEMO_START = date(2023, 9, 1)
DEMO_END = date(2023, 9, 3)


@dataclass(frozen=True)
class Settings:
    """Backend, region and naming of one walkthrough deployment."""

    backend: str
    region: str
    prefix: str
    cloud_port: int
    state_dir: Path
    build_dir: Path
    suffix_override: str | None = None

    @property
    def endpoint_url(self) -> str | None:
        """The embedded cloud's URL on the local backend; None on AWS (boto3 picks the real one)."""
        return f"http://127.0.0.1:{self.cloud_port}" if self.backend == "local" else None

    def suffix(self, account_id: str) -> str:
        """A short per-account suffix: bucket names are global, so two accounts must not collide."""
        if self.suffix_override:
            return self.suffix_override
        return hashlib.sha256(f"{account_id}:{self.region}".encode()).hexdigest()[:8]

    def names(self, account_id: str) -> ResourceNames:
        """Every resource name of this deployment for one account."""
        p, s = self.prefix, self.suffix(account_id)
        return ResourceNames(
            input_bucket=f"{p}-input-{s}",
            output_bucket=f"{p}-output-{s}",
            trail_bucket=f"{p}-trail-{s}",
            secret=f"{p}/cds-api-key",
            lambda_function=f"{p}-era5-ingest",
            lambda_role=f"{p}-era5-ingest-role",
            glue_job=f"{p}-era5-contours",
            glue_role=f"{p}-era5-contours-role",
            crawler=f"{p}-contours-crawler",
            crawler_role=f"{p}-contours-crawler-role",
            database=f"{p.replace('-', '_')}_contours",
            trail=f"{p}-trail",
            workgroup=f"{p}-contours",
        )


@dataclass(frozen=True)
class ResourceNames:
    """The names of everything the walkthrough creates."""

    input_bucket: str
    output_bucket: str
    trail_bucket: str
    secret: str
    lambda_function: str
    lambda_role: str
    glue_job: str
    glue_role: str
    crawler: str
    crawler_role: str
    database: str
    trail: str
    workgroup: str


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() else None


@cache
def _cached(environ_key: tuple) -> Settings:
    env = dict(environ_key)
    backend = env.get("PICSEL_BACKEND", "local")
    if backend not in BACKENDS:
        raise ValueError(f"PICSEL_BACKEND={backend!r} is not valid; accepted: {', '.join(BACKENDS)}")
    port_text = env.get("PICSEL_CLOUD_PORT", "4566")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"PICSEL_CLOUD_PORT={port_text!r} is not valid; accepted: a port 1..65535")
    root = _repo_root()
    default_build = (root or Path.cwd()) / "build"
    return Settings(
        backend=backend,
        region=env.get("PICSEL_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        or "sa-east-1",
        prefix=env.get("PICSEL_PREFIX", "picsel"),
        cloud_port=int(port_text),
        state_dir=Path(env.get("PICSEL_STATE_DIR", Path.home() / ".cache" / "picsel-nb")),
        build_dir=Path(env.get("PICSEL_BUILD_DIR", default_build)),
        suffix_override=env.get("PICSEL_SUFFIX") or None,
    )


_KEYS = ("PICSEL_BACKEND", "PICSEL_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "PICSEL_PREFIX",
         "PICSEL_CLOUD_PORT", "PICSEL_STATE_DIR", "PICSEL_BUILD_DIR", "PICSEL_SUFFIX")


def get_settings() -> Settings:
    """The settings in force, read from the environment (re-read when it changes)."""
    return _cached(tuple((k, os.environ[k]) for k in _KEYS if k in os.environ))
