"""Lambda Invoke on the embedded cloud runs the deployed zip as AWS's python3.11 runtime would."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.cloud_fixtures import cloud, poll, zip_files  # noqa: F401

WRITER = """
import os
import boto3

def handler(event, context):
    print("writing", event["key"])
    boto3.client("s3").put_object(Bucket=event["bucket"], Key=event["key"], Body=b"from lambda")
    return {"written": event["key"], "function": context.function_name}
"""

INTROSPECT = """
import os
import boto3

def handler(event, context):
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env": {k: v for k, v in os.environ.items()},
        "caller": boto3.client("sts").get_caller_identity()["Arn"],
    }
"""



@pytest.fixture(scope="module")
def bucket(cloud):  # noqa: F811
    name = "lambda-test-bucket"
    cloud.client("s3").create_bucket(Bucket=name,
                                     CreateBucketConfiguration={"LocationConstraint": "sa-east-1"})
    return name


def _invoke(cloud, name: str, event: dict | None = None, **kwargs) -> tuple[dict, object]:  # noqa: F811
    response = cloud.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event or {}),
                                             **kwargs)
    return response, json.loads(response["Payload"].read() or b"null")


def _log_messages(cloud, name: str) -> list[str]:  # noqa: F811
    logs = cloud.client("logs")
    events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
    return [event["message"] for event in events]


def test_handler_writes_to_s3_and_logs_like_aws(cloud, bucket):  # noqa: F811
    cloud.deploy_function("writer", {"app.py": WRITER})
    response, payload = _invoke(cloud, "writer", {"bucket": bucket, "key": "out/hello.txt"})
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert payload == {"written": "out/hello.txt", "function": "writer"}
    body = cloud.client("s3").get_object(Bucket=bucket, Key="out/hello.txt")["Body"].read()
    assert body == b"from lambda"
    request_id = response["ResponseMetadata"]["RequestId"]
    messages = _log_messages(cloud, "writer")
    assert f"START RequestId: {request_id} Version: $LATEST" in messages
    assert "writing out/hello.txt" in messages
    assert f"END RequestId: {request_id}" in messages
    report = next(m for m in messages if m.startswith(f"REPORT RequestId: {request_id}"))
    assert re.search(r"Duration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB\t"
                     r"Max Memory Used: \d+ MB", report)
    streams = cloud.client("logs").describe_log_streams(logGroupName="/aws/lambda/writer")
    assert all(re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", s["logStreamName"])
               for s in streams["logStreams"])


def test_aws_cli_invokes_and_lists_what_the_function_wrote(cloud, bucket, tmp_path):  # noqa: F811
    cloud.deploy_function("writer-cli", {"app.py": WRITER})
    out = tmp_path / "out.json"
    event = json.dumps({"bucket": bucket, "key": "cli/written.txt"})
    result = cloud.aws("lambda", "invoke", "--function-name", "writer-cli", "--payload", event,
                       str(out))
    assert json.loads(result.stdout)["StatusCode"] == 200
    assert json.loads(out.read_text())["written"] == "cli/written.txt"
    assert "written.txt" in cloud.aws("s3", "ls", f"s3://{bucket}/cli/").stdout


def test_context_environment_and_role_credentials(cloud):  # noqa: F811
    arn = cloud.deploy_function("introspect", {"app.py": INTROSPECT}, MemorySize=256, Timeout=7,
                                Environment={"Variables": {"STAGE": "test"}})
    response, payload = _invoke(cloud, "introspect")
    assert payload["function_name"] == "introspect"
    assert payload["function_version"] == "$LATEST"
    assert payload["memory_limit_in_mb"] == "256"
    assert payload["invoked_function_arn"] == arn
    assert payload["aws_request_id"] == response["ResponseMetadata"]["RequestId"]
    assert payload["log_group_name"] == "/aws/lambda/introspect"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", payload["log_stream_name"])
    assert 0 < payload["remaining_ms"] <= 7000
    env = payload["env"]
    assert env["STAGE"] == "test"
    assert env["AWS_REGION"] == "sa-east-1" and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_ENDPOINT_URL"] == cloud.endpoint_url
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and env["AWS_SESSION_TOKEN"]
    assert payload["caller"].endswith(":assumed-role/picsel-test-lambda-role/introspect")


def test_handler_exception_comes_back_as_unhandled_function_error(cloud):  # noqa: F811
    code = "def handler(event, context):\n    raise ValueError('bad date: 2023-13-01')\n"
    cloud.deploy_function("raiser", {"app.py": code})
    response, payload = _invoke(cloud, "raiser")
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "bad date: 2023-13-01"
    assert payload["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert "raise ValueError" in "".join(payload["stackTrace"])
    assert any(m.startswith("[ERROR] ValueError: bad date: 2023-13-01\nTraceback")
               for m in _log_messages(cloud, "raiser"))


def test_timeout_kills_the_handler_as_aws_reports_it(cloud):  # noqa: F811
    code = "import time\ndef handler(event, context):\n    time.sleep(30)\n"
    cloud.deploy_function("sleeper", {"app.py": code}, Timeout=1)
    began = time.monotonic()
    response, payload = _invoke(cloud, "sleeper")
    assert time.monotonic() - began < 10
    assert response["FunctionError"] == "Unhandled"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [0-9a-f-]{36} "
                        r"Task timed out after 1\.00 seconds", payload["errorMessage"])
    assert payload["errorMessage"] in _log_messages(cloud, "sleeper")


def test_log_type_tail_returns_the_end_of_the_log(cloud):  # noqa: F811
    code = "def handler(event, context):\n    print('tail me')\n    return 1\n"
    cloud.deploy_function("tailed", {"app.py": code})
    response, payload = _invoke(cloud, "tailed", LogType="Tail")
    tail = base64.b64decode(response["LogResult"]).decode()
    assert payload == 1
    assert tail.startswith("START RequestId:") and "tail me\n" in tail
    assert "REPORT RequestId:" in tail


def test_event_invocation_returns_202_and_runs_in_the_background(cloud, bucket):  # noqa: F811
    cloud.deploy_function("writer-event", {"app.py": WRITER})
    response = cloud.client("lambda").invoke(
        FunctionName="writer-event", InvocationType="Event",
        Payload=json.dumps({"bucket": bucket, "key": "event/done.txt"}))
    assert response["StatusCode"] == 202
    s3 = cloud.client("s3")
    poll(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="event/").get("KeyCount"))


def test_non_runtime_package_needs_a_layer(cloud):  # noqa: F811
    code = "import numpy\ndef handler(event, context):\n    return numpy.__version__\n"
    cloud.deploy_function("needs-layer", {"app.py": code})
    response, payload = _invoke(cloud, "needs-layer")
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ImportModuleError"
    assert payload["errorMessage"] == "Unable to import module 'app': No module named 'numpy'"

    lam = cloud.client("lambda")
    layer = lam.publish_layer_version(
        LayerName="tiny-numpy", CompatibleRuntimes=["python3.11"],
        Content={"ZipFile": zip_files({"python/numpy.py": "__version__ = 'tiny-layer'\n"})})
    lam.update_function_configuration(FunctionName="needs-layer", Layers=[layer["LayerVersionArn"]])
    response, payload = _invoke(cloud, "needs-layer")
    assert "FunctionError" not in response and payload == "tiny-layer"


def test_runtime_ships_boto3_but_not_the_hosts_packages(cloud):  # noqa: F811
    code = ("import importlib.util\ndef handler(event, context):\n"
            "    return {m: importlib.util.find_spec(m) is not None for m in event['modules']}\n")
    cloud.deploy_function("runtime-probe", {"app.py": code})
    modules = ["boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six",
               "moto", "xarray", "picsel_nb", "requests"]
    _, payload = _invoke(cloud, "runtime-probe", {"modules": modules})
    assert payload == {m: m in modules[:7] for m in modules}


def test_unknown_function_is_404_resource_not_found(cloud):  # noqa: F811
    with pytest.raises(ClientError) as caught:
        cloud.client("lambda").invoke(FunctionName="no-such-function")
    error = caught.value.response
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "function:no-such-function" in error["Error"]["Message"]


def test_invalid_json_payload_is_rejected(cloud):  # noqa: F811
    cloud.deploy_function("json-only", {"app.py": "def handler(e, c):\n    return e\n"})
    with pytest.raises(ClientError) as caught:
        cloud.client("lambda").invoke(FunctionName="json-only", Payload=b"{not json")
    assert caught.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_invocations_run_in_parallel(cloud):  # noqa: F811
    code = "import time\ndef handler(event, context):\n    time.sleep(1)\n    return event['n']\n"
    cloud.deploy_function("parallel", {"app.py": code})
    began = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: _invoke(cloud, "parallel", {"n": n})[1], range(4)))
    assert results == [0, 1, 2, 3]
    assert time.monotonic() - began < 4  # serially it would take 4 s of sleeping alone


def test_reserved_concurrency_zero_throttles(cloud):  # noqa: F811
    cloud.deploy_function("throttled", {"app.py": "def handler(e, c):\n    return 1\n"})
    lam = cloud.client("lambda", config=_no_retries())
    lam.put_function_concurrency(FunctionName="throttled", ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName="throttled")


def test_invocations_emit_aws_lambda_metrics(cloud):  # noqa: F811
    cloud.deploy_function("measured", {"app.py": "def handler(e, c):\n    return 1\n"})
    for _ in range(2):
        _invoke(cloud, "measured")
    cloudwatch = cloud.client("cloudwatch")
    now = time.time()
    stats = {}
    for metric in ("Invocations", "Errors", "Duration"):
        datapoints = cloudwatch.get_metric_statistics(
            Namespace="AWS/Lambda", MetricName=metric, StartTime=now - 600, EndTime=now + 60,
            Period=3600, Statistics=["Sum", "SampleCount"],
            Dimensions=[{"Name": "FunctionName", "Value": "measured"}])["Datapoints"]
        stats[metric] = datapoints[0]
    assert stats["Invocations"]["Sum"] == 2 and stats["Errors"]["Sum"] == 0
    assert stats["Duration"]["SampleCount"] == 2 and stats["Duration"]["Unit"] == "Milliseconds"


def _no_retries():
    from botocore.config import Config

    return Config(retries={"max_attempts": 1, "mode": "standard"})


def test_exiting_handler_is_a_runtime_exit_error(cloud):  # noqa: F811
    cloud.deploy_function("exiter", {"app.py": "import sys\ndef handler(e, c):\n    sys.exit(2)\n"})
    response, payload = _invoke(cloud, "exiter")
    assert response["FunctionError"] == "Unhandled"
    assert payload["errorType"] == "Runtime.ExitError"
    assert payload["errorMessage"].endswith("Error: Runtime exited with error: exit status 2")


def test_dry_run_checks_without_running(cloud):  # noqa: F811
    cloud.deploy_function("dry", {"app.py": "def handler(e, c):\n    raise SystemExit(1)\n"})
    response = cloud.client("lambda").invoke(FunctionName="dry", InvocationType="DryRun")
    assert response["StatusCode"] == 204


@pytest.mark.parametrize(("code", "handler", "error_type", "message"), [
    ("def handler(e, c):\n    return 1\n", "app.missing", "Runtime.HandlerNotFound",
     "Handler 'missing' missing on module 'app'"),
    ("def handler(e, c)\n    return 1\n", "app.handler", "Runtime.UserCodeSyntaxError",
     "Syntax error in module 'app': expected ':' (app.py, line 1)"),
    ("def handler(e, c):\n    return 1\n", "handler", "Runtime.MalformedHandlerName",
     "Bad handler 'handler': not enough values to unpack (expected 2, got 1)"),
    ("raise KeyError('CDS_API_KEY')\n", "app.handler", "KeyError", "'CDS_API_KEY'"),
])
def test_init_errors_are_reported_as_aws_does(cloud, code, handler, error_type, message):  # noqa: F811
    cloud.deploy_function("broken", {"app.py": code}, handler=handler)
    response, payload = _invoke(cloud, "broken")
    assert response["FunctionError"] == "Unhandled"
    assert (payload["errorType"], payload["errorMessage"]) == (error_type, message)


def test_code_from_s3_and_updated_code_both_run(cloud, bucket):  # noqa: F811
    s3, lam = cloud.client("s3"), cloud.client("lambda")
    s3.put_object(Bucket=bucket, Key="code/v1.zip",
                  Body=zip_files({"app.py": "def handler(e, c):\n    return 'v1'\n"}))
    lam.create_function(FunctionName="from-s3", Runtime="python3.11", Role=cloud.lambda_role(),
                        Handler="app.handler", Code={"S3Bucket": bucket, "S3Key": "code/v1.zip"})
    assert _invoke(cloud, "from-s3")[1] == "v1"
    lam.update_function_code(FunctionName="from-s3",
                             ZipFile=zip_files({"app.py": "def handler(e, c):\n    return 'v2'\n"}))
    assert _invoke(cloud, "from-s3")[1] == "v2"


def test_embedded_metric_format_lines_become_metrics(cloud):  # noqa: F811
    """On AWS, CloudWatch Logs turns EMF log lines (what powertools Metrics prints) into metrics."""
    code = (
        "import json\n"
        "def handler(event, context):\n"
        "    print(json.dumps({'_aws': {'Timestamp': 0, 'CloudWatchMetrics': [{\n"
        "        'Namespace': 'emf-test', 'Dimensions': [['service']],\n"
        "        'Metrics': [{'Name': 'Widgets', 'Unit': 'Count'}]}]},\n"
        "        'service': 'shop', 'Widgets': [2, 3]}))\n"
    )
    cloud.deploy_function("emf-writer", {"app.py": code})
    cloud.client("lambda").invoke(FunctionName="emf-writer", Payload=b"{}")

    metrics = cloud.client("cloudwatch").list_metrics(Namespace="emf-test")["Metrics"]
    assert metrics == [{"Namespace": "emf-test", "MetricName": "Widgets",
                        "Dimensions": [{"Name": "service", "Value": "shop"}]}]
