"""The same code runs on the embedded cloud and on AWS: only settings differ.

What gets deployed (infra/), the stack modules and the notebooks must not know the local endpoint
or branch on the backend; that knowledge lives in settings.py, clients.py and pipeline.py only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from picsel_nb import clients
from picsel_nb.localcloud.process import LocalCloud
from picsel_nb.settings import LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack import buckets
from picsel_nb.stack.context import Stack

REPO = Path(__file__).resolve().parents[1]

# What code that assumes the embedded cloud looks like. `meta.endpoint_url` (reading where a
# client points, as buckets.public_url does) is allowed; setting an endpoint is not.
LOCAL_ASSUMPTIONS = {
    "loopback address": re.compile(r"127\.0\.0\.1|\blocalhost\b|\[::1\]"),
    "the default cloud port": re.compile(r"\b4566\b"),
    "an endpoint set in code": re.compile(r"\bendpoint_url\s*=(?!=)|AWS_ENDPOINT_URL\s*="),
    "the embedded cloud's modules": re.compile(r"\blocalcloud\b"),
    "a branch on the backend": re.compile(r"\bbackend\s*[!=]=|[!=]=\s*\S*backend\b"),
}
LOCAL_URL = re.compile(r"(127\.0\.0\.1|localhost|\[::1\]):\d+")
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def code_files() -> list[Path]:
    """The stack modules and everything that gets deployed."""
    return sorted([*(REPO / "picsel_nb" / "stack").glob("*.py"),
                   *(p for p in (REPO / "infra").rglob("*") if p.suffix in (".py", ".json"))])


def assumptions(text: str) -> list[str]:
    """The kinds of local assumption found in `text`, with the line that shows each."""
    return [f"{kind}: {line.strip()}" for line in text.splitlines()
            for kind, pattern in LOCAL_ASSUMPTIONS.items() if pattern.search(line)]


def test_the_scan_covers_the_deployed_code_the_stack_and_the_notebooks():
    names = {path.relative_to(REPO).as_posix() for path in code_files()}
    assert {"infra/lambda/handler.py", "infra/glue/contours_job.py", "picsel_nb/stack/buckets.py",
            "picsel_nb/stack/function.py", "picsel_nb/stack/job.py"} <= names
    assert {path.name for path in NOTEBOOKS} >= {"00_overview_and_setup.ipynb",
                                                 "03_lambda_ingest.ipynb"}


@pytest.mark.parametrize("line", [
    'client("s3", endpoint_url="http://127.0.0.1:4566")', "if settings.backend == 'local':",
    "from picsel_nb.localcloud import cds_api", 'url = "http://localhost:8080"',
    '"local" != stack.settings.backend',
])
def test_the_scan_recognises_local_assumptions(line):
    assert assumptions(line)


def test_reading_where_a_client_points_is_not_an_assumption():
    assert not assumptions("base = s3.meta.endpoint_url")


@pytest.mark.parametrize("path", code_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_stack_and_deployed_code_assume_no_local_endpoint(path):
    assert assumptions(path.read_text()) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_assumes_no_local_endpoint(path):
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert assumptions(code) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_file_holds_no_local_url(path):
    """Neither prose nor stored outputs show the embedded cloud's address with its port."""
    assert LOCAL_URL.findall(path.read_text()) == []


@pytest.fixture
def aws_backend(monkeypatch):
    """PICSEL_BACKEND=aws with dummy credentials and no endpoint override; starting the
    embedded cloud fails the test."""
    monkeypatch.setenv("PICSEL_BACKEND", "aws")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "PICSEL_REGION",
                 "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(LocalCloud, "start", lambda *a, **k: pytest.fail("started the cloud"))


@pytest.mark.parametrize(("service", "url"), [
    ("s3", "https://s3.sa-east-1.amazonaws.com"),
    ("lambda", "https://lambda.sa-east-1.amazonaws.com"),
    ("glue", "https://glue.sa-east-1.amazonaws.com"),
    ("secretsmanager", "https://secretsmanager.sa-east-1.amazonaws.com"),
    ("iam", "https://iam.amazonaws.com"),
])
def test_aws_backend_clients_point_at_aws(aws_backend, service, url):
    assert get_settings().endpoint_url is None
    assert clients.client(service).meta.endpoint_url == url


def test_aws_backend_public_urls_are_virtual_hosted_https(aws_backend):
    settings = get_settings()
    stack = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID), clients.client)
    bucket = stack.names.output_bucket
    assert buckets.public_url(stack, bucket, "products/png/tp/2023-09-01.png") == (
        f"https://{bucket}.s3.sa-east-1.amazonaws.com/products/png/tp/2023-09-01.png")
