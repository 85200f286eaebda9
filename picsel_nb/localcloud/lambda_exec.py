"""Lambda ``Invoke`` that runs the deployed code, where moto (without Docker) only stores it.

The zip moto keeps for the function, and those of its layers, are unpacked once per content hash
under the state directory; each invocation is a fresh ``python -I -S`` process running
``lambda_runtime.py`` with the function's code, its layers and a directory exposing only the
packages AWS's python3.11 runtime ships. The process gets the function's environment, AWS's
reserved variables, temporary credentials of the function's role (from moto's STS) and
``AWS_ENDPOINT_URL``, so a plain ``boto3.client(...)`` in the handler reaches this endpoint as
code inside AWS reaches AWS. Output goes to ``/aws/lambda/<name>`` with START/END/REPORT lines,
metrics to ``AWS/Lambda``; timeouts, errors, throttles and ``LogType=Tail`` answer as AWS does.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import importlib.metadata
import io
import json
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from moto.awslambda.exceptions import LambdaClientError

from picsel_nb.localcloud import backends, lambda_runtime, role_sessions
from picsel_nb.localcloud.router import AwsRequest, AwsResponse
from picsel_nb.settings import get_settings

# What AWS's python3.11 runtime ships besides the standard library (pip distribution names).
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil",
                         "urllib3", "six")
RUNTIME_VERSION = "python3.11"
INIT_LIMIT_SECONDS = 10.0  # AWS gives the init phase 10 s before the timeout clock runs anyway
TAIL_BYTES = 4096  # LogType=Tail returns the last 4 KB of the log

_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()
_concurrency: dict[str, int] = {}


def install(router) -> None:
    """Answer Lambda ``Invoke`` (and the legacy ``InvokeAsync``) by running the function."""
    router.intercept("lambda", "Invoke", handle_invoke)
    router.intercept("lambda", "InvokeAsync", handle_invoke_async)
    atexit.register(_kill_running)


def handle_invoke(req: AwsRequest) -> AwsResponse:
    """``POST /2015-03-31/functions/{name}/invocations``: RequestResponse, Event or DryRun."""
    invocation_type = req.headers.get("x-amz-invocation-type", "RequestResponse")
    try:
        invocation = _prepare(req)
    except InvokeError as error:
        return error.response
    if invocation_type == "DryRun":
        return AwsResponse(204, {"x-amzn-RequestId": req.request_id}, b"")
    if invocation_type == "Event":
        threading.Thread(target=run, args=(invocation,), daemon=True).start()
        return AwsResponse(202, {"x-amzn-RequestId": req.request_id}, b"")
    outcome = run(invocation)
    if outcome.throttled:
        return _throttled_response()
    headers = {"Content-Type": "application/json", "x-amzn-RequestId": req.request_id,
               "X-Amz-Executed-Version": invocation.version}
    if outcome.failed:
        headers["X-Amz-Function-Error"] = "Unhandled"
    if req.headers.get("x-amz-log-type") == "Tail":
        headers["X-Amz-Log-Result"] = base64.b64encode(outcome.log_tail).decode()
    return AwsResponse(200, headers, outcome.payload)


def handle_invoke_async(req: AwsRequest) -> AwsResponse:
    """The deprecated ``InvokeAsync``: an Event invocation answered with ``{"Status": 202}``."""
    event = replace(req, headers=req.headers | {"x-amz-invocation-type": "Event"})
    response = handle_invoke(event)
    return AwsResponse.json({"Status": 202}, 202) if response.status == 202 else response


class InvokeError(Exception):
    """An invocation AWS would refuse, with the response it would give."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.response = AwsResponse.json_error(code, message, status)


@dataclass
class Invocation:
    """Everything one invocation needs, read from moto's function while the request is handled."""

    request_id: str
    region: str
    function_name: str
    function_arn: str
    version: str
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    role: str
    environment: dict[str, str]
    code_paths: list[str]  # sys.path entries: the task root first, then the layers' python dirs
    reserved_concurrency: int | None
    event: str
    endpoint_url: str
    client_context: dict | None
    log_stream: str

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.function_name}"


@dataclass
class Outcome:
    """What an invocation produced."""

    payload: bytes
    failed: bool
    log_tail: bytes = b""
    throttled: bool = False


def _prepare(req: AwsRequest) -> Invocation:
    """Find the function and validate the request as AWS does before running anything."""
    lam = backends.backend("awslambda", req.region)
    try:
        fn = lam.get_function(req.params["FunctionName"], req.params.get("Qualifier"))
    except LambdaClientError as error:  # unknown function, alias or version: moto's answer
        raise InvokeError(error.error_type, error.message, error.code) from None
    if fn.package_type != "Zip":
        raise InvokeError("InvalidParameterValueException",
                          "the embedded cloud runs zip-packaged functions only", 400)
    if not str(fn.run_time or "").startswith("python3"):
        raise InvokeError("InvalidRuntimeException",
                          f"The runtime parameter of {fn.run_time} is not supported by the "
                          f"embedded cloud (python3.x only).", 502)
    event = req.body.decode("utf-8", "replace") if req.body.strip() else "{}"
    try:
        json.loads(event)
    except ValueError as error:
        raise InvokeError("InvalidRequestContentException",
                          f"Could not parse request body into json: {error}", 400) from None
    layers = [lam.layers_versions_by_arn(layer["Arn"]).code_bytes for layer in fn.layers]
    try:
        code_paths = _code_paths(fn.code_bytes, layers)
    except zipfile.BadZipFile:  # AWS refuses such a package at CreateFunction; moto stores it
        raise InvokeError("InvalidZipFileException",
                          "Lambda was not able to unzip the deployment package.", 502) from None
    version = str(fn.version)
    return Invocation(
        request_id=req.request_id,
        region=req.region,
        function_name=fn.function_name,
        function_arn=fn.function_arn,
        version=version,
        handler=fn.handler,
        runtime=fn.run_time,
        timeout=int(fn.timeout),
        memory_size=int(fn.memory_size),
        role=fn.role,
        environment=dict(fn.environment_vars or {}),
        code_paths=code_paths,
        reserved_concurrency=(None if fn.reserved_concurrency is None
                              else int(fn.reserved_concurrency)),
        event=event,
        endpoint_url=f"http://{req.headers['host']}" if "host" in req.headers
        else get_settings().endpoint_url,
        client_context=_client_context(req.headers.get("x-amz-client-context")),
        log_stream=_log_stream_name(version),
    )


def _client_context(header: str | None) -> dict | None:
    """The ``X-Amz-Client-Context`` header: base64 of a JSON object (None when absent)."""
    return json.loads(base64.b64decode(header)) if header else None


def _log_stream_name(version: str) -> str:
    """A stream named as AWS names them: ``YYYY/MM/DD/[$LATEST]<32 hex>``."""
    return f"{datetime.now(UTC):%Y/%m/%d}/[{version}]{secrets.token_hex(16)}"


def _throttled_response() -> AwsResponse:
    response = AwsResponse.json_error("TooManyRequestsException", "Rate Exceeded.", 429)
    body = json.loads(response.body)
    body["Reason"] = "ReservedFunctionConcurrentInvocationLimitExceeded"
    response.body = json.dumps(body).encode()
    return response


def run(invocation: Invocation) -> Outcome:
    """Run one invocation to its end (or its timeout); log it and emit its metrics."""
    if not _acquire(invocation):
        _metrics(invocation, Throttles=1)
        return Outcome(b"", failed=False, throttled=True)
    try:
        return _run(invocation)
    finally:
        _release(invocation)


def _acquire(invocation: Invocation) -> bool:
    """Take one unit of the function's reserved concurrency (always granted without one)."""
    with _running_lock:
        in_flight = _concurrency.get(invocation.function_name, 0)
        limit = invocation.reserved_concurrency
        if limit is not None and in_flight >= limit:
            return False
        _concurrency[invocation.function_name] = in_flight + 1
        return True


def _release(invocation: Invocation) -> None:
    with _running_lock:
        _concurrency[invocation.function_name] -= 1


def _run(invocation: Invocation) -> Outcome:
    log = _InvocationLog(invocation)
    log.write(f"START RequestId: {invocation.request_id} Version: {invocation.version}")
    with tempfile.TemporaryDirectory(prefix="invoke-", dir=_root()) as scratch:
        result_path = Path(scratch) / "result.json"
        process, init_ms, began, timed_out, peak_mb = _execute(invocation, result_path, log)
        duration_ms = (time.perf_counter() - began) * 1000
        if timed_out:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            message = (f"{stamp} {invocation.request_id} "
                       f"Task timed out after {invocation.timeout:.2f} seconds")
            log.write(message)
            payload, failed = json.dumps({"errorMessage": message}), True
        elif result_path.exists():
            result = json.loads(result_path.read_text())
            payload, failed, peak_mb = result["payload"], result["failed"], result["max_memory_mb"]
        else:
            payload, failed = json.dumps(_exit_error(invocation, process.returncode)), True
    log.finish(duration_ms, init_ms, peak_mb, timed_out)
    _metrics(invocation, Invocations=1, Errors=int(failed), Duration=duration_ms)
    return Outcome(payload.encode(), failed, log.tail())


def _execute(invocation: Invocation, result_path: Path,
             log: _InvocationLog) -> tuple[subprocess.Popen, float, float, bool, float]:
    """Run the runtime process: (process, init ms, perf_counter at ready, timed out, peak MB)."""
    ready_read, ready_write = os.pipe()
    spec = {"handler": invocation.handler, "code_paths": invocation.code_paths,
            "runtime_path": str(_runtime_dir(_root())), "request_id": invocation.request_id,
            "invoked_function_arn": invocation.function_arn, "timeout_s": invocation.timeout,
            "event": invocation.event, "client_context": invocation.client_context,
            "ready_fd": ready_write, "result_path": str(result_path)}
    spec_path = result_path.with_name("spec.json")
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-I", "-S", "-u", "-X", "utf8", lambda_runtime.__file__,
               str(spec_path)]
    spawned = time.perf_counter()
    process = subprocess.Popen(command, cwd=invocation.code_paths[0], env=_environment(invocation),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, pass_fds=(ready_write,),
                               start_new_session=True)
    os.close(ready_write)
    with _running_lock:
        _running.add(process)
    reader = threading.Thread(target=log.follow, args=(process.stdout,), daemon=True)
    reader.start()
    try:
        select.select([ready_read], [], [], INIT_LIMIT_SECONDS)
    finally:
        os.close(ready_read)
    began = time.perf_counter()
    init_ms = (began - spawned) * 1000
    timed_out, peak_mb = False, 0.0
    try:
        process.wait(timeout=invocation.timeout)
    except subprocess.TimeoutExpired:
        timed_out, peak_mb = True, _peak_memory_mb(process.pid)
    finally:
        _end_sandbox(process)
    reader.join()
    return process, init_ms, began, timed_out, peak_mb


def _exit_error(invocation: Invocation, returncode: int) -> dict:
    """AWS's payload when the runtime process ends without a result (sys.exit, crash)."""
    reason = f"signal: {-returncode}" if returncode < 0 else f"exit status {returncode}"
    message = f"RequestId: {invocation.request_id} Error: Runtime exited with error: {reason}"
    return {"errorType": "Runtime.ExitError", "errorMessage": message}


class _InvocationLog:
    """The invocation's log, streamed to CloudWatch Logs as written; kept for LogType=Tail."""

    def __init__(self, invocation: Invocation) -> None:
        self.invocation = invocation
        self.lines: list[str] = []

    def write(self, message: str) -> None:
        self.lines.append(message)
        backends.write_logs(self.invocation.region, self.invocation.log_group,
                            self.invocation.log_stream, [message])

    def follow(self, stream) -> None:
        """Log each line the runtime prints; ``\\r`` joins the lines of one multi-line record."""
        with stream:
            for raw in stream:
                self.write(raw.decode("utf-8", "replace").rstrip("\n").replace("\r", "\n"))

    def finish(self, duration_ms: float, init_ms: float, peak_mb: float, timed_out: bool) -> None:
        """The END and REPORT lines AWS writes after every invocation."""
        rid, inv = self.invocation.request_id, self.invocation
        self.write(f"END RequestId: {rid}")
        report = (f"REPORT RequestId: {rid}\tDuration: {duration_ms:.2f} ms\t"
                  f"Billed Duration: {math.ceil(duration_ms)} ms\t"
                  f"Memory Size: {inv.memory_size} MB\tMax Memory Used: {math.ceil(peak_mb)} MB\t"
                  f"Init Duration: {init_ms:.2f} ms\t")
        self.write(report + ("Status: timeout" if timed_out else ""))

    def tail(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()[-TAIL_BYTES:]


def _metrics(invocation: Invocation, **values: float) -> None:
    """Emit ``AWS/Lambda`` metrics per function and across all functions, as AWS does."""
    units = {"Duration": "Milliseconds"}
    dimensions = [{"Name": "FunctionName", "Value": invocation.function_name}]
    data = [{"MetricName": name, "Value": float(value), "Unit": units.get(name, "Count"),
             "Dimensions": dims} for name, value in values.items() for dims in (dimensions, [])]
    backends.put_metrics(invocation.region, "AWS/Lambda", data)


def _environment(invocation: Invocation) -> dict[str, str]:
    """The function's variables, then the ones AWS reserves (which a function cannot override)."""
    host = {name: os.environ[name] for name in role_sessions.HOST_COMPATIBILITY
            if name in os.environ}
    session = role_sessions.credentials(invocation.role, invocation.function_name,
                                        invocation.region)
    return host | invocation.environment | session | {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "_HANDLER": invocation.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{invocation.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": invocation.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": invocation.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(invocation.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": invocation.log_group,
        "AWS_LAMBDA_LOG_STREAM_NAME": invocation.log_stream,
        "AWS_REGION": invocation.region,
        "AWS_DEFAULT_REGION": invocation.region,
        "AWS_ENDPOINT_URL": invocation.endpoint_url,
        # No config or credential files inside a Lambda: the host's ~/.aws must not leak in.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "LAMBDA_TASK_ROOT": invocation.code_paths[0],
        "LAMBDA_RUNTIME_DIR": str(_runtime_dir(_root())),
    }


def _code_paths(code: bytes, layers: list[bytes]) -> list[str]:
    """sys.path entries of the function as on AWS: the task root, then each layer's python dirs."""
    paths = [_unpacked("code", code)]
    for layer in reversed(layers):  # a later layer overrides an earlier one, as in /opt
        root = _unpacked("layers", layer)
        paths += [root / "python" / "lib" / RUNTIME_VERSION / "site-packages", root / "python"]
    return [str(path) for path in paths if path.is_dir()]


def _root() -> Path:
    root = get_settings().state_dir / "lambda"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _unpacked(kind: str, archive: bytes) -> Path:
    """The zip ``archive`` extracted once, in a directory named by its sha256."""
    target = _root() / kind / hashlib.sha256(archive).hexdigest()
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    zipfile.ZipFile(io.BytesIO(archive)).extractall(staging)
    try:
        staging.rename(target)
    except OSError:  # a parallel invocation unpacked it first
        shutil.rmtree(staging)
    return target


@cache
def _runtime_dir(root: Path) -> Path:
    """A directory of links to the packages AWS's python3.11 runtime ships, and nothing else."""
    target = root / "runtime" / RUNTIME_VERSION
    target.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_DISTRIBUTIONS:
        distribution = importlib.metadata.distribution(name)
        tops = {Path(entry).parts[0] for entry in distribution.files or ()}
        for top in tops - {"..", "__pycache__"}:
            staging = target / f".{top}.{os.getpid()}"
            staging.unlink(missing_ok=True)
            staging.symlink_to(Path(distribution.locate_file(top)).resolve())
            os.replace(staging, target / top)
    return target


def _peak_memory_mb(pid: int) -> float:
    """Peak resident memory of a running process from /proc (0 where /proc is absent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _end_sandbox(process: subprocess.Popen) -> None:
    """Kill the runtime process and anything it started (AWS freezes the whole sandbox)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    with _running_lock:
        _running.discard(process)


def _kill_running() -> None:
    """Stop the invocations still running when the server exits."""
    for process in list(_running):
        _end_sandbox(process)
