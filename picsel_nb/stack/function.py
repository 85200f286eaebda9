"""The ERA5 ingest Lambda: its deployment package, the function itself, and invoking it per day.

The package is two zips, both deterministic (sorted entries, fixed timestamps) and cached under
``build_dir/lambda`` by the hash of what goes in, so a rebuild is instant:
- the function zip: ``infra/lambda/handler.py`` at the root plus the ``picsel_nb`` sources (the
  science ships with the handler);
- the layer zip: ``python/`` with the third-party packages of ``infra/lambda/requirements.txt``,
  installed by pip for python3.11 on x86_64 Amazon Linux 2 whatever machine builds it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from botocore.config import Config
from tqdm.auto import tqdm

from picsel_nb.era5 import parse_date
from picsel_nb.settings import Settings, get_settings
from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import StackError, retry_while_role_propagates, tolerate

REPO = Path(__file__).resolve().parents[2]
LAMBDA_DIR = REPO / "infra" / "lambda"
REQUIREMENTS = LAMBDA_DIR / "requirements.txt"
PACKAGE_DIR = REPO / "picsel_nb"

RUNTIME, ARCHITECTURE, HANDLER = "python3.11", "x86_64", "handler.handler"
SERVICE_NAME = "era5-ingest"
DESCRIPTION = "picsel-nb: downloads one day of ERA5 from the CDS into the input bucket"
# Lambda runs python3.11 on Amazon Linux 2 (glibc 2.26): manylinux2014 wheels only.
PIP_TARGET = ("--platform", "manylinux2014_x86_64", "--implementation", "cp",
              "--python-version", "3.11", "--only-binary=:all:")
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer")  # the runtime has them; never in the layer
PRUNED_DIRS = ("tests", "bin")  # test suites and console scripts are dead weight
UNZIPPED_LIMIT = 250 * 1024 * 1024  # function + layers, unzipped
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
LAYER_S3_PREFIX = "scripts/lambda/"


@dataclass(frozen=True)
class Package:
    """The two zips of one build; their names carry the hash of their inputs."""

    function_zip: Path
    layer_zip: Path

    @property
    def code_sha256(self) -> str:
        """The function zip's hash as Lambda reports it (CodeSha256: base64 of the sha256)."""
        digest = hashlib.sha256(self.function_zip.read_bytes()).digest()
        return base64.b64encode(digest).decode()

    @property
    def layer_key(self) -> str:
        """The hash of the layer's inputs, stored in the layer version's description."""
        return self.layer_zip.stem.removeprefix("layer-")

    def sizes(self) -> dict[str, int]:
        """Zipped and unzipped bytes of both zips (Lambda allows 250 MB unzipped in all)."""
        return {"function_zip": self.function_zip.stat().st_size,
                "function_unzipped": unzipped_size(self.function_zip),
                "layer_zip": self.layer_zip.stat().st_size,
                "layer_unzipped": unzipped_size(self.layer_zip)}


def _digest(parts: Iterable[bytes]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(hashlib.sha256(part).digest())
    return sha.hexdigest()


def _tree(root: Path, prefix: str, bytecode: bool = False) -> Iterator[tuple[str, Path]]:
    """(zip name, path) of every file under `root`; bytecode caches only when asked for."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and (bytecode or "__pycache__" not in relative.parts):
            yield prefix + relative.as_posix(), path


def write_zip(path: Path, files: Iterable[tuple[str, Path]]) -> Path:
    """A deterministic zip (sorted entries, fixed time and modes), written atomically."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, source in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if source.stat().st_mode & 0o111 else 0o644) << 16
            with source.open("rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    partial.replace(path)
    return path


def unzipped_size(path: Path) -> int:
    """The bytes a zip unpacks to."""
    with zipfile.ZipFile(path) as archive:
        return sum(info.file_size for info in archive.infolist())


def build_function_zip(out_dir: Path) -> Path:
    """handler.py at the root plus the picsel_nb sources; cached by their content."""
    files = [("handler.py", LAMBDA_DIR / "handler.py"), *_tree(PACKAGE_DIR, "picsel_nb/")]
    key = _digest(part for name, path in files for part in (name.encode(), path.read_bytes()))
    path = out_dir / f"function-{key[:16]}.zip"
    return path if path.exists() else write_zip(path, files)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        raise StackError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def _prune(site: Path) -> None:
    """Drop test suites, console scripts and anything the Lambda runtime already provides."""
    for path in sorted(site.rglob("*"), reverse=True):
        if path.is_dir() and path.name in PRUNED_DIRS:
            shutil.rmtree(path)
    for name in RUNTIME_PACKAGES:
        for path in (*site.glob(name), *site.glob(f"{name}-*.dist-info")):
            shutil.rmtree(path)


def build_layer_zip(out_dir: Path) -> Path:
    """python/ with requirements.txt installed for python3.11 x86_64; cached by its inputs."""
    key = _digest([REQUIREMENTS.read_bytes(), " ".join(PIP_TARGET).encode(),
                   " ".join(PRUNED_DIRS + RUNTIME_PACKAGES).encode()])
    path = out_dir / f"layer-{key[:16]}.zip"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(dir=out_dir, prefix="layer-build-") as tmp:
        site = Path(tmp) / "python"
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
              "--disable-pip-version-check", *PIP_TARGET, "--target", str(site),
              "-r", str(REQUIREMENTS)], "pip install of the layer's requirements")
        _prune(site)
        # Bytecode that does not depend on file times (the zip's are fixed), with /opt paths.
        _run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
              "unchecked-hash", "-s", tmp, "-p", "/opt", str(site)], "compileall of the layer")
        return write_zip(path, _tree(site, "python/", bytecode=True))


def build_package(settings: Settings | None = None) -> Package:
    """The function zip and the layer zip, built or taken from the cache; within Lambda's limit."""
    out_dir = (settings or get_settings()).build_dir / "lambda"
    out_dir.mkdir(parents=True, exist_ok=True)
    package = Package(build_function_zip(out_dir), build_layer_zip(out_dir))
    sizes = package.sizes()
    total = sizes["function_unzipped"] + sizes["layer_unzipped"]
    if total > UNZIPPED_LIMIT:
        raise StackError(f"the function and its layer unzip to {total / 2**20:.0f} MiB, over "
                         f"Lambda's {UNZIPPED_LIMIT / 2**20:.0f} MiB: trim {REQUIREMENTS}")
    return package


def layer_name(stack: Stack) -> str:
    """The layer holding the function's third-party packages."""
    return f"{stack.names.lambda_function}-deps"


def _layer_versions(stack: Stack) -> Iterator[dict]:
    pages = stack.client("lambda").get_paginator("list_layer_versions")
    for page in pages.paginate(LayerName=layer_name(stack)):
        yield from page["LayerVersions"]


def ensure_layer(stack: Stack, package: Package, bucket: str) -> str:
    """The ARN of a layer version holding `package`'s layer, published (via S3) when missing."""
    description = f"picsel-nb ERA5 ingest dependencies {package.layer_key}"
    for version in _layer_versions(stack):
        if version.get("Description") == description:
            return version["LayerVersionArn"]
    key = f"{LAYER_S3_PREFIX}{package.layer_zip.name}"  # > 50 MB: AWS takes it only from S3
    stack.client("s3").upload_file(str(package.layer_zip), bucket, key)
    return stack.client("lambda").publish_layer_version(
        LayerName=layer_name(stack), Description=description,
        Content={"S3Bucket": bucket, "S3Key": key}, CompatibleRuntimes=[RUNTIME],
        CompatibleArchitectures=[ARCHITECTURE])["LayerVersionArn"]


def _assumable(call, **kwargs) -> dict:
    """`call(**kwargs)`, retried while Lambda says the (new) role cannot be assumed yet."""
    return retry_while_role_propagates(call, "InvalidParameterValueException", "cannot be assumed",
                                       **kwargs)


def function_settings(stack: Stack, role_arn: str, secret_id: str, input_bucket: str,
                      layer_arn: str, timeout: int, memory_mb: int, log_level: str) -> dict:
    """The function's configuration as update_function_configuration takes it (no secret value)."""
    return {
        "Role": role_arn, "Handler": HANDLER, "Runtime": RUNTIME, "Description": DESCRIPTION,
        "Timeout": timeout, "MemorySize": memory_mb, "Layers": [layer_arn],
        "Environment": {"Variables": {
            "INPUT_BUCKET": input_bucket, "CDS_SECRET_NAME": secret_id,
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": stack.metrics_namespace, "LOG_LEVEL": log_level}},
    }


def _current_settings(config: dict) -> dict:
    """The same keys as `function_settings`, read from get_function_configuration."""
    return {
        "Role": config["Role"], "Handler": config.get("Handler"), "Runtime": config.get("Runtime"),
        "Description": config.get("Description", ""), "Timeout": config["Timeout"],
        "MemorySize": config["MemorySize"],
        "Layers": [layer["Arn"] for layer in config.get("Layers", [])],
        "Environment": {"Variables": config.get("Environment", {}).get("Variables", {})},
    }


def get_function(stack: Stack) -> dict | None:
    """The function's configuration, or None when it does not exist."""
    with tolerate("ResourceNotFoundException"):
        return stack.client("lambda").get_function_configuration(
            FunctionName=stack.names.lambda_function)
    return None


def ensure_function(stack: Stack, role_arn: str, secret_id: str, input_bucket: str, *,
                    timeout: int = 300, memory_mb: int = 1024, log_level: str = "INFO",
                    package: Package | None = None) -> dict:
    """Create the function, or update its code/configuration where they differ; its configuration.

    `secret_id` is the CDS secret's name or ARN: the function gets the name, never the value.
    """
    package = package or build_package(stack.settings)
    lam, name = stack.client("lambda"), stack.names.lambda_function
    layer_arn = ensure_layer(stack, package, input_bucket)
    wanted = function_settings(stack, role_arn, secret_id, input_bucket, layer_arn, timeout,
                               memory_mb, log_level)
    current = get_function(stack)
    if current is None:
        _assumable(lam.create_function, FunctionName=name, **wanted,
                   Code={"ZipFile": package.function_zip.read_bytes()},
                   Architectures=[ARCHITECTURE], Publish=False)
        lam.get_waiter("function_active_v2").wait(FunctionName=name)
        return get_function(stack)
    if current["CodeSha256"] != package.code_sha256:
        lam.update_function_code(FunctionName=name, ZipFile=package.function_zip.read_bytes(),
                                 Architectures=[ARCHITECTURE])
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    if _current_settings(current) != wanted:
        _assumable(lam.update_function_configuration, FunctionName=name, **wanted)
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    return get_function(stack)


@dataclass(frozen=True)
class DayResult:
    """What one invocation for one day gave: the handler's result or its error."""

    day: date
    payload: dict
    function_error: str | None = None  # "Unhandled" when the handler raised

    @property
    def ok(self) -> bool:
        return self.function_error is None

    @property
    def error_type(self) -> str | None:
        return None if self.ok else self.payload.get("errorType")

    @property
    def error_message(self) -> str | None:
        return None if self.ok else self.payload.get("errorMessage")


# A RequestResponse invoke lasts as long as the function (up to its Timeout): wait that long, and
# never resend it (botocore's 60 s read timeout would retry a long invoke and run it twice).
INVOKE_CONFIG = Config(read_timeout=960, retries={"total_max_attempts": 1})


def invoke_day(stack: Stack, day: str | date, **event: Any) -> DayResult:
    """Invoke the function once (RequestResponse) for `day`; extra event fields pass through."""
    day = parse_date(day)
    return _invoke(stack, day, {"date": day.isoformat(), **event})


def invoke_block(stack: Stack, first: date, last: date) -> DayResult:
    """Invoke the function once for the days `first`..`last` as one CDS request (a block of
    ``era5.request_blocks``); the result carries the first day."""
    return _invoke(stack, first, {"start": first.isoformat(), "end": last.isoformat()})


def _invoke(stack: Stack, day: date, event: dict) -> DayResult:
    """One RequestResponse invocation with `event`; a payload that is no object is wrapped."""
    answer = stack.client("lambda", INVOKE_CONFIG).invoke(
        FunctionName=stack.names.lambda_function, InvocationType="RequestResponse",
        Payload=json.dumps(event).encode())
    payload = json.loads(answer["Payload"].read() or b"null")
    return DayResult(day, payload if isinstance(payload, dict) else {"result": payload},
                     answer.get("FunctionError"))


def invoke_range(stack: Stack, start: str | date, end: str | date, **event: Any) -> list[DayResult]:
    """One invocation per day from `start` to `end` (inclusive), with a progress bar.

    A failed day does not stop the others; each failure is printed as it happens and kept in the
    results (day, error type, error message).
    """
    first, last = parse_date(start), parse_date(end)
    if last < first:
        raise ValueError(f"end {last} is before start {first}; accepted: end on or after start")
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    results = []
    for day in (bar := tqdm(days, desc="ingest", unit="day")):
        bar.set_postfix_str(day.isoformat())
        result = invoke_day(stack, day, **event)
        if not result.ok:
            tqdm.write(f"{day}: {result.error_type}: {result.error_message}")
        results.append(result)
    return results


def delete_function(stack: Stack) -> bool:
    """Delete the function and every version of its layer; False when the function did not exist."""
    lam = stack.client("lambda")
    for version in list(_layer_versions(stack)):
        lam.delete_layer_version(LayerName=layer_name(stack), VersionNumber=version["Version"])
    with tolerate("ResourceNotFoundException"):
        lam.delete_function(FunctionName=stack.names.lambda_function)
        return True
    return False
