"""The contours Glue job: its code in the input bucket, the job definition, runs and their products.

The job is a Glue 5.0 Spark ETL job running ``infra/glue/contours_job.py``. Its code reaches Glue
as the script plus a wheel of ``picsel_nb`` (the science ships with the script), both under the
input bucket's ``scripts/glue/``; the wheel is built once per content hash under
``build_dir/glue``. Glue installs the wheel and the third-party packages it lacks with pip, without
dependencies (``--no-deps``): the wheel's own requirements are the whole walkthrough's (moto,
cartopy, …), which the job does not need; the packages it does need are listed, pinned to the
versions of the environment that deploys it (so Glue runs what the tests ran).

What decides which code runs — the script (``--scriptLocation``, which Glue lets an argument
override ``Command.ScriptLocation`` with), the modules and pip's options — is the job's
``NonOverridableArguments``: Glue resolves a run's arguments as DefaultArguments, then the run's
Arguments, then NonOverridableArguments, so a ``StartJobRun`` cannot swap the code.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from datetime import date
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from picsel_nb import products
from picsel_nb.settings import DEMO_DATASET, Settings, get_settings
from picsel_nb.stack.buckets import SCRIPTS_PREFIX, TEMP_PREFIX, list_objects, publish
from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import StackError, explain, tolerate
from picsel_nb.stack.roles import ensure_glue_job_role
from picsel_nb.stack.waiters import wait_for_job_run

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "glue" / "contours_job.py"
CODE_PREFIX = f"{SCRIPTS_PREFIX}glue/"
GLUE_VERSION, WORKER_TYPE, NUMBER_OF_WORKERS = "5.0", "G.1X", 2
TIMEOUT_MINUTES = 30
# What the job imports beyond Glue 5.0's own packages (numpy 1.26, pandas 2.2, matplotlib 3.9,
# certifi…): xarray wants packaging>=24.2 (Glue has 24.1) and the contours contourpy>=1.3 (Glue
# has 1.2.1); netCDF4 (with cftime) reads the downloads; orjson and shapely write the products.
GLUE_PACKAGES = ("xarray", "packaging", "netCDF4", "cftime", "contourpy", "orjson", "shapely",
                 "pyproj")
LEVELS_DEFAULT = "default"
DESCRIPTION = "picsel-nb: daily ERA5 fields -> contour bands, isolines, plots and catalog rows"


def pinned_packages() -> list[str]:
    """GLUE_PACKAGES as ``name==version`` of this environment."""
    return [f"{name}=={metadata.version(name)}" for name in GLUE_PACKAGES]


def _sources() -> list[Path]:
    """What goes into the wheel: pyproject.toml and every file of picsel_nb but bytecode."""
    package = sorted(p for p in (REPO / "picsel_nb").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    return [REPO / "pyproject.toml", *package]


def _sources_digest(files: list[Path]) -> str:
    """A hash of the files' paths and contents."""
    sha = hashlib.sha256()
    for path in files:
        sha.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()[:16]


def _can_build_offline() -> bool:
    """Whether this environment holds the build backend pyproject.toml asks for, so pip can build
    without fetching it (``--no-build-isolation``)."""
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in requires:
        requirement = Requirement(text)
        try:
            if not requirement.specifier.contains(metadata.version(requirement.name), True):
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


def build_wheel(settings: Settings | None = None) -> Path:
    """The wheel of picsel_nb, cached under build_dir/glue/<content hash>/.

    pip builds it from a copy of the sources (no stale build/ or egg-info in the repo), offline
    when this environment holds the build backend, else in pip's isolated build environment.
    """
    files = _sources()
    out_dir = (settings or get_settings()).build_dir / "glue" / _sources_digest(files)
    if wheels := sorted(out_dir.glob("*.whl")):
        return wheels[0]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    isolation = ["--no-build-isolation"] if _can_build_offline() else []
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix="wheel-build-") as tmp:
        source, dist = Path(tmp) / "source", Path(tmp) / "dist"
        for path in files:
            target = source / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet",
             "--disable-pip-version-check", str(source), "-w", str(dist)],
            check=False, capture_output=True, text=True)
        if done.returncode:
            raise StackError(f"pip wheel of picsel_nb failed (exit {done.returncode}):\n"
                             f"{done.stderr[-3000:]}")
        try:
            dist.replace(out_dir)  # atomic: a cache entry is complete or absent
        except OSError:
            if not any(out_dir.glob("*.whl")):  # else another process built the same wheel first
                raise
    return next(out_dir.glob("*.whl"))


def upload_code(stack: Stack, wheel: Path | None = None) -> dict[str, str]:
    """Put the script and the wheel under the input bucket's scripts/glue/; their S3 URLs.

    The wheel's key carries its content hash, so a job whose code changed gets a new
    ``--additional-python-modules`` and Glue installs the new wheel.
    """
    wheel = wheel or build_wheel(stack.settings)
    bucket = stack.names.input_bucket
    script_key = f"{CODE_PREFIX}{SCRIPT.name}"
    wheel_key = f"{CODE_PREFIX}{wheel.parent.name}/{wheel.name}"
    publish(stack, bucket, script_key, SCRIPT)
    if not list_objects(stack, bucket, wheel_key):
        publish(stack, bucket, wheel_key, wheel)
    return {"script": f"s3://{bucket}/{script_key}", "wheel": f"s3://{bucket}/{wheel_key}"}


def code_arguments(code: dict[str, str]) -> dict[str, str]:
    """The job's NonOverridableArguments: where its script and modules come from, and how pip
    installs them (a run's ``--python-modules-installer-option`` could point pip elsewhere)."""
    return {
        "--scriptLocation": code["script"],
        "--additional-python-modules": ",".join([code["wheel"], *pinned_packages()]),
        "--python-modules-installer-option": "--no-deps",
    }


def job_arguments(stack: Stack, dataset: str = DEMO_DATASET) -> dict[str, str]:
    """The job's DefaultArguments: Glue's own options and every argument of the script."""
    names = stack.names
    return {
        "--job-language": "python",
        "--enable-continuous-cloudwatch-log": "true",
        "--TempDir": f"s3://{names.input_bucket}/{TEMP_PREFIX}",
        "--input_bucket": names.input_bucket,
        "--output_bucket": names.output_bucket,
        "--dataset": dataset,
        "--dates": products.ALL_NEW,
        "--redo": "false",
        "--t2m_levels": LEVELS_DEFAULT,
        "--tp_levels": LEVELS_DEFAULT,
    }


def job_definition(stack: Stack, role_arn: str, code: dict[str, str], *,
                   dataset: str = DEMO_DATASET, workers: int = NUMBER_OF_WORKERS,
                   timeout_minutes: int = TIMEOUT_MINUTES) -> dict:
    """The job as create_job / update_job (JobUpdate) take it, without its name."""
    return {
        "Description": DESCRIPTION,
        "Role": role_arn,
        "Command": {"Name": "glueetl", "ScriptLocation": code["script"], "PythonVersion": "3"},
        "DefaultArguments": job_arguments(stack, dataset),
        "NonOverridableArguments": code_arguments(code),
        "GlueVersion": GLUE_VERSION,
        "WorkerType": WORKER_TYPE,
        "NumberOfWorkers": workers,
        "Timeout": timeout_minutes,
        "MaxRetries": 0,
        "ExecutionProperty": {"MaxConcurrentRuns": 1},
    }


def get_job(stack: Stack) -> dict | None:
    """The job as Glue describes it, or None when it does not exist."""
    with tolerate("EntityNotFoundException"):
        return stack.client("glue").get_job(JobName=stack.names.glue_job)["Job"]
    return None


def _differs(current: object, wanted: object) -> bool:
    """Whether `current` differs from `wanted` in any key `wanted` sets (Glue adds its own)."""
    if isinstance(wanted, dict):
        return not isinstance(current, dict) or any(_differs(current.get(k), v)
                                                    for k, v in wanted.items())
    return current != wanted


def ensure_job(stack: Stack, role_arn: str | None = None, wheel: Path | None = None,
               **options) -> dict:
    """Upload the code, then create the job or update it where it differs; its description.

    The role defaults to the job role of ``roles.py``, the wheel to ``build_wheel``'s; `options`
    go to ``job_definition`` (dataset, workers, timeout_minutes).
    """
    glue, name = stack.client("glue"), stack.names.glue_job
    wanted = job_definition(stack, role_arn or ensure_glue_job_role(stack),
                            upload_code(stack, wheel), **options)
    current = get_job(stack)
    if current is None:
        glue.create_job(Name=name, **wanted)
    elif _differs(current, wanted):
        glue.update_job(JobName=name, JobUpdate=wanted)
    return get_job(stack)


def start_run(stack: Stack, dates: str = products.ALL_NEW, redo: bool = False) -> str:
    """Start a run for `dates` ("all-new" or "YYYY-MM-DD:YYYY-MM-DD"); its run id."""
    products.parse_dates(dates)  # a bad value fails here, not minutes later in Glue
    busy = (f"a run of {stack.names.glue_job} is still going (MaxConcurrentRuns 1): wait for it "
            "with wait_run, or stop it, then start again")
    with explain("ConcurrentRunsExceededException", busy):
        return stack.client("glue").start_job_run(
            JobName=stack.names.glue_job,
            Arguments={"--dates": dates, "--redo": "true" if redo else "false"})["JobRunId"]


def wait_run(stack: Stack, run_id: str, deadline_s: float = 1800, delay_s: float = 2.0) -> dict:
    """The run once finished (any final state); DeadlineError naming the run and its last state."""
    return wait_for_job_run(stack.client("glue"), stack.names.glue_job, run_id, deadline_s,
                            delay_s)


def product_versions(stack: Stack, dates: str = products.ALL_NEW) -> dict[str, tuple]:
    """Every product key (public products and catalog rows) of `dates` with its ETag and time."""
    span = products.parse_dates(dates)
    versions = {}
    for prefix in (products.PRODUCTS_PREFIX, products.CATALOG_PREFIX):
        for item in list_objects(stack, stack.names.output_bucket, prefix):
            parsed = products.parse_key(item["Key"])
            if parsed and (span is None or span[0] <= parsed[2] <= span[1]):
                versions[item["Key"]] = (item["ETag"], item["LastModified"])
    return versions


def products_written(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """The keys new or rewritten between two ``product_versions`` listings. Comparing versions,
    not times: S3's whole-second LastModified cannot tell a write just before a run from one by
    it."""
    return sorted(key for key, version in after.items() if before.get(key) != version)


def run(stack: Stack, dates: str = products.ALL_NEW, redo: bool = False,
        deadline_s: float = 1800) -> dict:
    """Run the job for `dates` and wait: state, run id, duration, error, and the product keys that
    run wrote."""
    before = product_versions(stack, dates)
    run_id = start_run(stack, dates, redo)
    job_run = wait_run(stack, run_id, deadline_s)
    started, completed = job_run["StartedOn"], job_run.get("CompletedOn")
    return {
        "state": job_run["JobRunState"], "run_id": run_id,
        "duration_s": (completed - started).total_seconds() if completed else None,
        "error": job_run.get("ErrorMessage"),
        "products": products_written(before, product_versions(stack, dates)),
    }


def date_range(start: date, end: date) -> str:
    """The job's ``--dates`` for the days `start`..`end`."""
    return f"{start.isoformat()}:{end.isoformat()}"


def delete_job(stack: Stack) -> bool:
    """Delete the job definition (its code stays in the input bucket); False when it did not
    exist."""
    if get_job(stack) is None:
        return False
    stack.client("glue").delete_job(JobName=stack.names.glue_job)
    return True
