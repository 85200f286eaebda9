"""Glue jobs that run: ``StartJobRun`` executes the job's script from S3, on Spark or as Python.

moto stores jobs (CreateJob, GetJob, BatchGetJobs pass through to it) but its runs report
SUCCEEDED without running anything, and it lacks UpdateJob (answered here: the JobUpdate
definition replaces moto's stored job, as on Glue). Here a run downloads
``Command.ScriptLocation`` from the embedded S3 and runs it: a ``glueetl`` job with
``spark-submit`` on a local Apache Spark (``glue_spark``), a ``pythonshell`` job with this
interpreter, with the job's ``DefaultArguments`` overlaid by the run's ``Arguments`` (then
``NonOverridableArguments``) as ``--key value`` argv plus Glue's own ``--JOB_ID``/``--JOB_RUN_ID``/
``--JOB_NAME``, and reports the real state: STARTING → RUNNING → SUCCEEDED | FAILED | TIMEOUT |
STOPPED.

Local stand-ins, documented in the README's "local vs AWS" table:
- ``awsglue`` is the hand-written shim in ``glue_runtime/`` (``getResolvedOptions`` only).
- ``--extra-py-files`` and S3 wheels in ``--additional-python-modules`` are downloaded and put on
  ``PYTHONPATH``; a package *name* there is accepted only when already installed in this venv
  (the venv stands in for Glue's preinstalled libraries; nothing is pip-installed).
- Logs stream line by line, stream = run id, as Glue writes them: a Spark job's stdout and stderr
  to ``/aws-glue/jobs/output`` and Spark's log4j lines to ``/aws-glue/jobs/error`` (Glue 5.0's
  layout); a Python shell job's stdout to the first, its stderr to the second.
- Each finished run emits ``Glue``/``JobRunsSucceeded`` or ``JobRunsFailed`` (FAILED or TIMEOUT),
  dimension ``JobName``, value 1: a local convenience metric for alarms. On AWS one alarms on
  EventBridge "Glue Job State Change" events or on the job's ``glue.driver.*`` metrics instead.
- A Timeout minute lasts ``PICSEL_GLUE_MINUTE_SECONDS`` seconds (default 60; tests shorten it).
"""

from __future__ import annotations

import atexit
import hashlib
import inspect
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath

from moto.core.exceptions import JsonRESTError
from moto.core.serialize import XFormedAttributePicker, get_serializer_class
from moto.core.utils import camelcase_to_underscores, get_service_model
from moto.glue.exceptions import JobNotFoundException
from moto.glue.models import FakeJob
from moto.s3.exceptions import MissingBucket
from packaging.requirements import InvalidRequirement, Requirement

from picsel_nb.localcloud import authorization, backends, glue_spark, role_sessions
from picsel_nb.localcloud.router import AwsRequest, AwsResponse, Router

RUNTIME_PATH = Path(__file__).with_name("glue_runtime")
LOG_GROUP = "/aws-glue/jobs"
OUTPUT_LOG_GROUP = "/aws-glue/jobs/output"
ERROR_LOG_GROUP = "/aws-glue/jobs/error"
METRIC_NAMESPACE = "Glue"
GLUE_SESSION_NAME = "GlueJobRunnerSession"  # the session name Glue gives job runs
DEFAULT_TIMEOUT_MINUTES = 2880  # Glue's default job timeout (48 h)
ACTIVE_STATES = ("STARTING", "RUNNING", "STOPPING", "WAITING")
FAILURE_STATES = ("FAILED", "TIMEOUT")
SPARK_COMMAND = "glueetl"

_runs: dict[str, JobRun] = {}
_lock = threading.RLock()  # guards _runs and every run's mutable fields


def install(router: Router) -> None:
    """Answer the job-run operations of Glue; everything else about jobs stays in moto."""
    router.intercept("glue", "StartJobRun", start_job_run)
    router.intercept("glue", "GetJobRun", get_job_run)
    router.intercept("glue", "GetJobRuns", get_job_runs)
    router.intercept("glue", "BatchStopJobRun", batch_stop_job_run)
    router.intercept("glue", "UpdateJob", update_job)


def glue_response(operation: str, result: dict) -> AwsResponse:
    """A Glue API answer serialised exactly as moto serialises its own (shapes, timestamps)."""
    model = get_service_model("glue")
    serializer = get_serializer_class("glue", model.protocol)(
        operation_model=model.operation_model(operation), value_picker=XFormedAttributePicker()
    )
    out = serializer.serialize(result)
    return AwsResponse(out["status_code"], dict(out["headers"]), out["body"].encode())


def glue_error(error: JsonRESTError) -> AwsResponse:
    """One of moto's Glue exceptions as the error answer Glue gives."""
    return AwsResponse.json_error(error.error_type, error.message, error.code)


def update_job(req: AwsRequest) -> AwsResponse:
    """Replace the job's definition with ``JobUpdate``, as Glue does: what it omits is reset to
    CreateJob's defaults; name, CreatedOn, tags and runs stay, LastModifiedOn is now."""
    glue, name = backends.backend("glue", req.region), req.params.get("JobName")
    current = glue.jobs.get(name)
    if current is None:
        return glue_error(JobNotFoundException(name))
    given = {camelcase_to_underscores(k): v for k, v in (req.params.get("JobUpdate") or {}).items()}
    settings = set(inspect.signature(FakeJob).parameters) - {"name", "tags", "backend"}
    job = FakeJob(name=name, tags=None, backend=glue, **{key: given.get(key) for key in settings})
    job.created_on, job.job_runs = current.created_on, current.job_runs
    glue.jobs[name] = job
    return glue_response("UpdateJob", {"JobName": name})


class JobSetupError(Exception):
    """The run could not start (script or library missing): the run FAILS with this message."""


@dataclass
class JobRun:
    """One run of a Glue job, as GetJobRun reports it, plus the process executing it."""

    id: str
    job_name: str
    region: str
    endpoint: str  # the embedded cloud's URL, which the script's boto3 clients call back
    arguments: dict[str, str]  # the run's own Arguments (what AWS reports)
    resolved: dict[str, str]  # DefaultArguments < Arguments < NonOverridableArguments
    script_location: str | None
    command_name: str  # glueetl (Spark) | pythonshell | …
    role: str  # the job's Role (name or ARN): the script runs as a session of it
    timeout: int  # minutes
    max_retries: int
    attempt: int = 0
    previous_run_id: str | None = None
    worker_type: str | None = None
    number_of_workers: int | None = None
    max_capacity: float | None = None
    glue_version: str | None = None
    execution_class: str | None = None
    state: str = "STARTING"
    error_message: str | None = None
    started_on: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_modified_on: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed_on: datetime | None = None
    running_since: float | None = None  # time.monotonic() when the process started
    execution_time: int = 0
    process: subprocess.Popen | None = None
    stop_requested: bool = False

    def set_state(self, state: str, message: str | None = None) -> None:
        """Move to ``state`` (under the lock), stamping the modification time."""
        self.state, self.error_message = state, message
        self.last_modified_on = datetime.now(UTC)

    def as_dict(self) -> dict:
        """The JobRun structure of GetJobRun."""
        elapsed = self.execution_time
        if self.running_since is not None and self.state in ACTIVE_STATES:
            elapsed = math.ceil(time.monotonic() - self.running_since)
        return {
            "Id": self.id, "Attempt": self.attempt, "PreviousRunId": self.previous_run_id,
            "JobName": self.job_name, "JobMode": "SCRIPT", "StartedOn": self.started_on,
            "LastModifiedOn": self.last_modified_on, "CompletedOn": self.completed_on,
            "JobRunState": self.state, "Arguments": self.arguments,
            "ErrorMessage": self.error_message, "PredecessorRuns": [],
            "ExecutionTime": elapsed, "Timeout": self.timeout, "MaxCapacity": self.max_capacity,
            "WorkerType": self.worker_type, "NumberOfWorkers": self.number_of_workers,
            "LogGroupName": LOG_GROUP, "GlueVersion": self.glue_version,
            "ExecutionClass": self.execution_class,
        }


def start_job_run(req: AwsRequest) -> AwsResponse | None:
    """Register a run and execute it in the background; ConcurrentRunsExceeded like Glue."""
    job = backends.backend("glue", req.region).jobs.get(req.params.get("JobName"))
    if job is None:
        return None  # moto answers EntityNotFoundException
    with _lock:
        active = [r for r in _runs.values() if r.region == req.region
                  and r.job_name == job.name and r.state in ACTIVE_STATES]
        if len(active) >= (job.execution_property or {}).get("MaxConcurrentRuns", 1):
            return AwsResponse.json_error("ConcurrentRunsExceededException",
                                          f"Concurrent runs exceeded for {job.name}")
        previous = _runs.get(req.params.get("JobRunId") or "")
        run = _new_run(job, req.region, f"http://{req.headers.get('host')}", req.params, previous)
        _runs[run.id] = run
    _launch(run)
    return glue_response("StartJobRun", {"JobRunId": run.id})


def get_job_run(req: AwsRequest) -> AwsResponse | None:
    """The real state of a run; EntityNotFoundException for an id this job never had."""
    with _lock:
        run = _find(req.region, req.params.get("JobName"), req.params.get("RunId"))
        if run is not None:
            return glue_response("GetJobRun", {"JobRun": run.as_dict()})
    if req.params.get("JobName") not in backends.backend("glue", req.region).jobs:
        return None  # moto answers EntityNotFoundException for the job
    return AwsResponse.json_error("EntityNotFoundException",
                                  f"Job run {req.params.get('RunId')} not found")


def get_job_runs(req: AwsRequest) -> AwsResponse | None:
    """The job's runs, newest first, paginated with MaxResults/NextToken."""
    name = req.params.get("JobName")
    if name not in backends.backend("glue", req.region).jobs:
        return None
    start = int(req.params.get("NextToken") or 0)
    size = int(req.params.get("MaxResults") or 100)
    with _lock:
        runs = sorted((r for r in _runs.values() if r.region == req.region and r.job_name == name),
                      key=lambda r: r.started_on, reverse=True)
        page = [r.as_dict() for r in runs[start:start + size]]
    token = str(start + size) if start + size < len(runs) else None
    return glue_response("GetJobRuns", {"JobRuns": page, "NextToken": token})


def batch_stop_job_run(req: AwsRequest) -> AwsResponse:
    """Stop runs by killing their process (→ STOPPED); per-run errors like Glue's."""
    name = req.params.get("JobName")
    stopped, errors = [], []
    for run_id in req.params.get("JobRunIds") or []:
        with _lock:
            run = _find(req.region, name, run_id)
            if run is None or run.state not in ACTIVE_STATES:
                code, message = (("EntityNotFoundException", f"Job run {run_id} not found")
                                 if run is None else ("InvalidInputException",
                                 f"Job run {run_id} cannot be stopped in state {run.state}"))
                errors.append({"JobName": name, "JobRunId": run_id,
                               "ErrorDetail": {"ErrorCode": code, "ErrorMessage": message}})
                continue
            run.stop_requested = True
            run.set_state("STOPPING")
            if run.process is not None:
                _kill(run.process)
        stopped.append({"JobName": name, "JobRunId": run_id})
    return glue_response("BatchStopJobRun", {"SuccessfulSubmissions": stopped, "Errors": errors})


def _find(region: str, job_name: str | None, run_id: str | None) -> JobRun | None:
    run = _runs.get(run_id or "")
    return run if run is not None and run.region == region and run.job_name == job_name else None


def _new_run(job, region: str, endpoint: str, params: dict, previous: JobRun | None) -> JobRun:
    """A run of moto's ``job`` with StartJobRun ``params`` (a retry when ``previous`` is given).

    As on Glue, a run argument that a NonOverridableArgument also sets is silently replaced by
    it (not refused), and ``--scriptLocation`` overrides ``Command.ScriptLocation``.
    """
    arguments = dict(params.get("Arguments") or {})
    resolved = {**(job.default_arguments or {}), **arguments,
                **(job.non_overridable_arguments or {})}
    return JobRun(
        id=f"jr_{secrets.token_hex(32)}",
        job_name=job.name,
        region=region,
        endpoint=endpoint,
        arguments=arguments,
        resolved=resolved,
        script_location=resolved.get("--scriptLocation") or (job.command or {}).get("ScriptLocation"),
        command_name=(job.command or {}).get("Name") or SPARK_COMMAND,
        role=job.role,
        timeout=params.get("Timeout") or job.timeout or DEFAULT_TIMEOUT_MINUTES,
        max_retries=job.max_retries or 0,
        attempt=previous.attempt + 1 if previous else 0,
        previous_run_id=previous.id if previous else None,
        worker_type=params.get("WorkerType") or job.worker_type,
        number_of_workers=params.get("NumberOfWorkers") or job.number_of_workers,
        max_capacity=params.get("MaxCapacity") or job.max_capacity,
        glue_version=job.glue_version,
        execution_class=params.get("ExecutionClass") or job.execution_class,
    )


def _launch(run: JobRun) -> None:
    threading.Thread(target=_execute, args=(run,), name=f"glue-{run.id[:11]}", daemon=True).start()


def _execute(run: JobRun) -> None:
    """The whole life of a run: fetch script and libraries, run, supervise, record the end."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{run.id[:11]}-"))
    try:
        script, pythonpath = _prepare(run, workdir)
        launch = _spark_launch(run, script, workdir) if run.command_name == SPARK_COMMAND else \
            _Launch([sys.executable, str(script), *_argv(run)], {}, None)
        process = _spawn(run, launch, pythonpath, workdir)
        if process is None:
            _finish(run, "STOPPED")
        else:
            _finish(run, *_supervise(run, process, launch.log_pipe))
    except (JobSetupError, glue_spark.SparkUnavailable) as exc:
        _finish(run, "FAILED", str(exc))
    except Exception as exc:  # noqa: BLE001 — the run must end, never hang in RUNNING
        _finish(run, "FAILED", f"Internal error of the embedded cloud: {exc!r}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare(run: JobRun, workdir: Path) -> tuple[Path, list[str]]:
    """Download the script and the run's extra Python files; the PYTHONPATH they need."""
    if not run.script_location:
        raise JobSetupError("The job's Command has no ScriptLocation")
    script = _download(run.script_location, workdir, run.role)
    libdir = workdir / "pylib"
    pythonpath = [str(RUNTIME_PATH)]
    for location in _csv(run.resolved.get("--extra-py-files")):
        pythonpath.append(_importable(_download(location, libdir, run.role)))
    for item in _csv(run.resolved.get("--additional-python-modules")):
        if item.startswith("s3://"):
            pythonpath.append(_importable(_download(item, libdir, run.role)))
        else:
            _require_installed(item)
    return script, list(dict.fromkeys(pythonpath))


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _download(location: str, directory: Path, role: str) -> Path:
    """Copy ``s3://bucket/key`` from the embedded S3 into ``directory``, as Glue does: with the
    job role's permissions (a role that may not read its own script fails the run)."""
    if not location.startswith("s3://"):
        raise JobSetupError(f"{location} is not an S3 path (s3://bucket/key)")
    bucket, _, key = location[5:].partition("/")
    session = authorization.role_session(role, GLUE_SESSION_NAME)
    try:
        authorization.require(session, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")
    except authorization.AccessDeniedException as denied:
        raise JobSetupError(f"{location} cannot be read by the job's role: {denied}") from None
    try:
        body = backends.read_object(bucket, key)
    except (KeyError, MissingBucket):
        raise JobSetupError(f"{location} does not exist") from None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PurePosixPath(key).name
    path.write_bytes(body)
    return path


def _importable(path: Path) -> str:
    """What goes on sys.path for a library file: a zip/wheel/egg itself, a .py its folder."""
    return str(path.parent if path.suffix == ".py" else path)


def _require_installed(spec: str) -> None:
    """Accept a requirement already satisfied by this venv (Glue would pip-install it)."""
    try:
        requirement = Requirement(spec)
    except InvalidRequirement:
        raise JobSetupError(f"--additional-python-modules: {spec!r} is not a valid requirement") \
            from None
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        installed = None
    if installed is None or not requirement.specifier.contains(installed, prereleases=True):
        raise JobSetupError(
            f"--additional-python-modules: {spec} is not installed in the local environment "
            f"(found {installed or 'none'}); the embedded cloud installs nothing, add it to the venv"
        )


@dataclass
class _Launch:
    """How a run's process starts: its command, what it adds to the environment, and (Spark) the
    pipe that log4j writes to, as (read end, write end)."""

    command: list[str]
    env: dict[str, str]
    log_pipe: tuple[int, int] | None


def _spark_launch(run: JobRun, script: Path, workdir: Path) -> _Launch:
    """spark-submit of the script on ``local[N]``; SparkUnavailable before anything starts."""
    env = glue_spark.environment(workdir)
    read_end, write_end = os.pipe()
    slots = glue_spark.task_slots(run.worker_type, run.number_of_workers)
    command = glue_spark.submit_command(script, _argv(run), name=run.job_name, slots=slots,
                                        workdir=workdir, log_fd=write_end)
    return _Launch(command, env, (read_end, write_end))


def _spawn(run: JobRun, launch: _Launch, pythonpath: list[str], workdir: Path):
    """Start the script as Glue would (argv, environment); None when stopped before starting.

    The environment is allow-listed: nothing of the host's (a real ``CDSAPI_KEY``, AWS
    profiles, proxies) reaches the script, only the job role's session and the endpoint.
    """
    env = {name: os.environ[name] for name in role_sessions.HOST_COMPATIBILITY
           if name in os.environ}
    env.update(role_sessions.credentials(run.role, GLUE_SESSION_NAME, run.region))
    env.update({
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "AWS_ENDPOINT_URL": run.endpoint, "AWS_REGION": run.region,
        "AWS_DEFAULT_REGION": run.region, "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(pythonpath), **launch.env,
    })
    keep = launch.log_pipe[1:] if launch.log_pipe else ()
    with _lock:
        if run.stop_requested:
            for fd in launch.log_pipe or ():
                os.close(fd)
            return None
        run.process = subprocess.Popen(
            launch.command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=keep,
            start_new_session=True,
        )
        for fd in keep:  # only the child writes to the log pipe: EOF when Spark exits
            os.close(fd)
        run.running_since = time.monotonic()
        run.set_state("RUNNING")
        return run.process


def _argv(run: JobRun) -> list[str]:
    """The job arguments as ``--key value`` pairs, then the ones Glue itself adds."""
    args = {key if key.startswith("--") else f"--{key}": value for key, value in run.resolved.items()}
    args.setdefault("--job-bookmark-option", "job-bookmark-disable")
    job_id = "j_" + hashlib.sha256(f"{run.region}:{run.job_name}".encode()).hexdigest()
    args.update({"--JOB_ID": job_id, "--JOB_RUN_ID": run.id, "--JOB_NAME": run.job_name})
    return [part for pair in args.items() for part in pair]


def _supervise(run: JobRun, process: subprocess.Popen,
               log_pipe: tuple[int, int] | None) -> tuple[str, str | None]:
    """Stream the output to CloudWatch Logs until the process ends or times out; the outcome.

    With a log pipe (Spark) the script's stderr goes to the output group beside its stdout and
    the pipe's log4j lines to the error group, as in Glue 5.0. Spark merges the script's stderr
    into its stdout, so there the error is looked for in both.
    """
    stderr_tail: deque[str] = deque(maxlen=200)
    streams = [(process.stdout, OUTPUT_LOG_GROUP, stderr_tail if log_pipe else None),
               (process.stderr, OUTPUT_LOG_GROUP if log_pipe else ERROR_LOG_GROUP, stderr_tail)]
    if log_pipe:
        streams.append((os.fdopen(log_pipe[0], "rb"), ERROR_LOG_GROUP, None))
    pumps = [threading.Thread(target=_pump, args=(stream, run, group, tail))
             for stream, group, tail in streams]
    for pump in pumps:
        pump.start()
    limit = run.timeout * float(os.environ.get("PICSEL_GLUE_MINUTE_SECONDS", "60"))
    timed_out = False
    try:
        code = process.wait(timeout=max(0.0, limit - (time.monotonic() - run.running_since)))
    except subprocess.TimeoutExpired:
        _kill(process)
        code, timed_out = process.wait(), True
    for pump in pumps:
        pump.join()
    if run.stop_requested:
        return "STOPPED", None
    if timed_out:
        return "TIMEOUT", f"Job run timed out after {run.timeout} minutes (the job's Timeout)"
    if code == 0:
        return "SUCCEEDED", None
    return "FAILED", _error_line(stderr_tail) or f"Command failed with exit code {code}"


_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Failed)(: |$)")


def _error_line(tail: deque[str]) -> str | None:
    """The run's ErrorMessage: the last line naming an exception (a Python traceback's last line,
    also when Spark wraps it in a Java stack trace), else the last line written."""
    return next((line for line in reversed(tail) if _EXCEPTION_LINE.match(line)),
                tail[-1] if tail else None)


def _pump(stream, run: JobRun, group: str, tail: deque | None) -> None:
    """Copy each line of ``stream`` to the run's log stream as soon as it is written."""
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                continue
            if tail is not None:
                tail.append(line.strip())
            backends.write_logs(run.region, group, run.id, [line])


def _kill(process: subprocess.Popen) -> None:
    """Kill the script and anything it started (it leads its own process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@atexit.register
def _kill_all() -> None:
    """Kill the scripts still running when the embedded cloud exits (none is left orphaned)."""
    with _lock:
        for run in _runs.values():
            if run.process is not None:
                _kill(run.process)


def _finish(run: JobRun, state: str, message: str | None = None) -> None:
    """Record the end of a run, emit its metric, and retry a failure while MaxRetries allows."""
    with _lock:
        if run.stop_requested and state == "FAILED":
            state, message = "STOPPED", None
        run.set_state(state, message)
        run.completed_on = run.last_modified_on
        if run.running_since is not None:
            run.execution_time = math.ceil(time.monotonic() - run.running_since)
        run.process = None
    if state in ("SUCCEEDED", *FAILURE_STATES):
        metric = "JobRunsSucceeded" if state == "SUCCEEDED" else "JobRunsFailed"
        backends.put_metrics(run.region, METRIC_NAMESPACE, [{
            "MetricName": metric, "Value": 1.0, "Unit": "Count",
            "Dimensions": [{"Name": "JobName", "Value": run.job_name}],
        }])
    if state == "FAILED" and run.attempt < run.max_retries:
        _retry(run)


def _retry(failed: JobRun) -> None:
    """Start the next attempt of a failed run, as Glue does for a job with MaxRetries."""
    job = backends.backend("glue", failed.region).jobs.get(failed.job_name)
    if job is None:
        return
    params = {"Arguments": failed.arguments, "Timeout": failed.timeout}
    with _lock:
        run = _new_run(job, failed.region, failed.endpoint, params, failed)
        _runs[run.id] = run
    _launch(run)
