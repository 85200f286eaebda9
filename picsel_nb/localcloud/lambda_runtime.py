"""The python3.11 Lambda runtime, as the embedded cloud runs it: one fresh process per invocation.

Run by ``lambda_exec`` as ``python -I -S -u -X utf8 lambda_runtime.py <spec.json>``: isolated, with
no site-packages, so the handler sees only its code, its layers and the packages the AWS runtime
ships. Standard library only. It loads the handler (the init phase), signals readiness on the
``ready_fd`` pipe (the caller starts the function's timeout then), runs the handler with an AWS
shaped context, writes the outcome to ``result_path`` and exits without waiting for stray threads
(AWS freezes the sandbox when the handler returns). Logging is set up as the AWS runtime does it.
"""

import importlib
import json
import logging
import os
import resource
import sys
import time
import traceback
from types import SimpleNamespace

LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s"


class LambdaContext:
    """The ``context`` argument of a handler, with the attributes AWS's python runtime provides."""

    def __init__(self, spec, deadline_ms):
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.invoked_function_arn = spec["invoked_function_arn"]
        self.aws_request_id = spec["request_id"]
        self.identity = SimpleNamespace(cognito_identity_id=None, cognito_identity_pool_id=None)
        custom = spec.get("client_context")
        self.client_context = None if custom is None else SimpleNamespace(
            client=custom.get("client"), custom=custom.get("custom"), env=custom.get("env"))
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


class LambdaLogHandler(logging.StreamHandler):
    """Write each log record as one line, so a multi-line record stays one CloudWatch event."""

    def format(self, record):
        return super().format(record).replace("\n", "\r")


def install_logging(request_id):
    """Give the root logger AWS's handler and format; its level stays WARNING as on AWS."""

    class RequestId(logging.Filter):
        def filter(self, record):
            record.aws_request_id = request_id
            return True

    handler = LambdaLogHandler(sys.stdout)
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RequestId())
    logging.getLogger().addHandler(handler)


def failure(error_type, message, request_id, stack=()):
    """The error payload AWS returns, also logged as AWS logs it."""
    lines = [f"[ERROR] {error_type}: {message}"]
    if stack:
        lines += ["Traceback (most recent call last):", *(frame.rstrip("\n") for frame in stack)]
    print("\r".join(lines).replace("\n", "\r"), flush=True)
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id,
            "stackTrace": list(stack)}


def exception_failure(error, request_id):
    """The payload of an exception raised by user code (frames of this runtime left out)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)[1:]
              if not frame.filename.startswith("<frozen ")]
    return failure(type(error).__name__, str(error), request_id, traceback.format_list(frames))


def load_handler(name, request_id):
    """Import ``module.function`` as AWS does: (handler, None) or (None, error payload)."""
    try:
        module_name, function_name = name.rsplit(".", 1)
    except ValueError as error:
        return None, failure("Runtime.MalformedHandlerName", f"Bad handler '{name}': {error}",
                             request_id)
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as error:
        return None, failure("Runtime.ImportModuleError",
                             f"Unable to import module '{module_name}': {error}", request_id)
    except SyntaxError as error:
        return None, failure("Runtime.UserCodeSyntaxError",
                             f"Syntax error in module '{module_name}': {error}", request_id)
    except Exception as error:  # noqa: BLE001 - any init error is the function's failure
        return None, exception_failure(error, request_id)
    handler = getattr(module, function_name, None)
    if handler is None:
        return None, failure("Runtime.HandlerNotFound",
                             f"Handler '{function_name}' missing on module '{module_name}'",
                             request_id)
    return handler, None


def invoke(handler, event, context):
    """Run the handler: (JSON payload, failed)."""
    try:
        result = handler(event, context)
    except Exception as error:  # noqa: BLE001 - reported to the caller like AWS does
        return json.dumps(exception_failure(error, context.aws_request_id)), True
    try:
        return json.dumps(result), False
    except (TypeError, ValueError) as error:
        payload = failure("Runtime.MarshalError", f"Unable to marshal response: {error}",
                          context.aws_request_id)
        return json.dumps(payload), True


def max_rss_mb():
    """Peak resident memory of this process in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def main(spec_path):
    """Run the one invocation ``spec_path`` describes (written by ``lambda_exec``), then exit."""
    with open(spec_path, encoding="utf-8") as file:
        spec = json.load(file)
    sys.path[:0] = spec["code_paths"]
    sys.path.append(spec["runtime_path"])
    request_id = spec["request_id"]
    install_logging(request_id)
    handler, error = load_handler(spec["handler"], request_id)
    os.write(spec["ready_fd"], b"R")
    os.close(spec["ready_fd"])
    if error is None:
        context = LambdaContext(spec, time.time() * 1000 + spec["timeout_s"] * 1000)
        payload, failed = invoke(handler, json.loads(spec["event"]), context)
    else:
        payload, failed = json.dumps(error), True
    outcome = {"payload": payload, "failed": failed, "max_memory_mb": max_rss_mb()}
    with open(spec["result_path"], "w", encoding="utf-8") as file:
        json.dump(outcome, file)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
