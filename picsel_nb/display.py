"""Small tables and texts the notebooks show: tidy, sorted, and free of what must not be published.

A notebook is saved with its outputs, so what it shows must be the same on every run (nbval compares
it) and must not leak: no account id, no random suffixes, no local endpoint with its port (the
embedded cloud's port changes from run to run). These helpers turn boto3 answers into such views.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.etree import ElementTree

import pandas as pd
import requests

from picsel_nb.settings import get_settings

ACCOUNT = "<account-id>"
LOCAL_ENDPOINT = "<local-endpoint>"
STATE_DIR = "<state-dir>"
_ARN = re.compile(r"^(arn:[^:]+:[^:]*:[^:]*:)(\d{12})(:.*)$")
_LOOPBACK_URL = re.compile(r"https?://(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+")
_SECRET_SUFFIX = re.compile(r"(:secret:.+)-[A-Za-z0-9]{6}$")  # Secrets Manager's random suffix


def table(rows: Iterable[Mapping[str, Any]] | Mapping[str, Any], columns: list[str] | None = None,
          sort_by: str | list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of `rows` (dicts; one mapping becomes "name"/"value" rows), index 1..n, sorted
    by `sort_by` (default: the first column; [] keeps the given order)."""
    if isinstance(rows, Mapping):
        rows = [{"name": name, "value": value} for name, value in rows.items()]
    frame = pd.DataFrame([dict(row) for row in rows], columns=columns)
    if frame.empty:
        return frame
    if sort_by is None:
        sort_by = frame.columns[0]
    if sort_by:
        frame = frame.sort_values(sort_by, kind="stable", ignore_index=True)
    frame.index += 1
    return frame


def redact_arn(arn: str) -> str:
    """The ARN with the account id and a secret's random suffix masked (safe to publish)."""
    arn = _ARN.sub(lambda m: f"{m[1]}{ACCOUNT}{m[3]}", arn)
    return _SECRET_SUFFIX.sub(r"\1-??????", arn)


def redact(value: Any) -> Any:
    """`value` with every ARN in it redacted (strings, lists and dicts, recursively)."""
    if isinstance(value, str):
        return redact_arn(value) if value.startswith("arn:") else value
    if isinstance(value, Mapping):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown_url(url: str | None) -> str | None:
    """The URL as a notebook shows it: an endpoint on this machine (the embedded cloud, whose port
    changes between runs) becomes `<local-endpoint>`; real AWS URLs are left as they are."""
    if not url:
        return url
    parts = urlsplit(url)
    if not _is_loopback(parts.hostname or ""):
        return url
    return LOCAL_ENDPOINT + urlunsplit(("", "", parts.path, parts.query, parts.fragment))


def settings_table(settings: Any) -> pd.DataFrame:
    """The settings in force that decide where the walkthrough runs (paths and ports left out:
    they differ per machine and per run)."""
    return table({"backend": settings.backend, "region": settings.region,
                  "prefix": settings.prefix, "endpoint": shown_url(settings.endpoint_url)
                  or "(boto3's default: the real AWS endpoints)"}, sort_by=[])


def names_table(names: Any) -> pd.DataFrame:
    """Every resource name of the deployment, one per row, in declaration order."""
    return table(asdict(names) if is_dataclass(names) else dict(names), sort_by=[])


def _flatten(description: Mapping[str, Any], keys: Iterable[str]) -> dict[str, str]:
    """One text per key; a nested dict gives one per inner key ("outer.inner"), a list joins its
    items with "; ", ARNs are redacted."""
    flat = {}
    for key in keys:
        value = redact(description.get(key, "-"))
        if isinstance(value, Mapping):
            flat.update({f"{key}.{inner}": str(item) for inner, item in value.items()})
        elif isinstance(value, list):
            flat[key] = "; ".join(map(str, value)) or "-"
        else:
            flat[key] = str(value)
    return flat


def compare(descriptions: Mapping[str, Mapping[str, Any]], rows: list[str] | None = None
            ) -> pd.DataFrame:
    """Several dicts side by side, one column each (e.g. the input and the output bucket's
    posture), one row per key of `rows` (default: every key)."""
    keys = rows or list(dict.fromkeys(key for d in descriptions.values() for key in d))
    return pd.DataFrame({label: _flatten(d, keys) for label, d in descriptions.items()}).fillna("-")


def http_outcome(response: requests.Response) -> dict[str, Any]:
    """What an HTTP answer says, compactly: status, reason, content type, the S3 error code of an
    XML error body, and the size of the body."""
    code = None
    if response.headers.get("Content-Type", "").endswith("xml") and response.content:
        try:
            code = ElementTree.fromstring(response.content).findtext("Code")
        except ElementTree.ParseError:
            code = None
    return {"method": response.request.method, "url": shown_url(response.url),
            "status": response.status_code, "reason": response.reason,
            "content_type": response.headers.get("Content-Type"), "error_code": code,
            "bytes": len(response.content)}


def secret_stages(metadata: Mapping[str, Any]) -> pd.DataFrame:
    """The secret's staged versions: which version holds AWSCURRENT and AWSPREVIOUS (no value)."""
    rows = [{"stage": stage, "version_id": version}
            for version, stages in metadata["versions"].items() for stage in stages]
    return table(rows, columns=["stage", "version_id"])


def statements(policy: Mapping[str, Any], service: str | None = None) -> pd.DataFrame:
    """The statements of a policy document (only those naming `service`'s actions, e.g.
    "secretsmanager"), ARNs redacted."""
    def as_list(value: Any) -> list:
        return value if isinstance(value, list) else [value]

    rows = []
    for statement in policy["Statement"]:
        actions = as_list(statement.get("Action", []))
        if service and not any(action.startswith(f"{service}:") for action in actions):
            continue
        rows.append({"sid": statement.get("Sid", "-"), "effect": statement["Effect"],
                     "actions": ", ".join(actions),
                     "resources": ", ".join(redact(as_list(statement.get("Resource", [])))),
                     "condition": statement.get("Condition", "")})
    return table(rows, columns=["sid", "effect", "actions", "resources", "condition"])


def picsel(*args: str) -> None:
    """Run `picsel <args>` as a terminal would, and print what it says (local endpoints and the
    state directory, which differ per machine and run, masked)."""
    done = subprocess.run([sys.executable, "-m", "picsel_nb.cli", *args], capture_output=True,
                          text=True, check=False)
    text = (done.stdout + done.stderr).replace(str(get_settings().state_dir), STATE_DIR)
    print(_LOOPBACK_URL.sub(LOCAL_ENDPOINT, text).rstrip())


def zip_packages(path: Path) -> list[str]:
    """The top-level Python packages and modules in a deployment zip (under `python/` for a
    layer), without metadata, bytecode caches and bundled libraries."""
    with zipfile.ZipFile(path) as archive:
        parts = [PurePosixPath(name).parts for name in archive.namelist()]
    tops = {p[1] if p[0] == "python" and len(p) > 1 else p[0] for p in parts}
    return sorted(name.removesuffix(".py") for name in tops
                  if not name.endswith((".dist-info", ".libs")) and name != "__pycache__")
