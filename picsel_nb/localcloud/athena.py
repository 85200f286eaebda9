"""Athena that runs queries: workgroups, query executions and their results over the Glue catalog.

moto's Athena stores queries and "succeeds" on any SQL without reading data. Here
StartQueryExecution runs the SQL on DuckDB (``athena_sql``) in a background thread as the caller:
QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED. A query that succeeds has its results written to
its output location (the workgroup's when the workgroup enforces its configuration, else the
request's, else the workgroup's) as ``<id>.csv`` and ``<id>.csv.metadata``, both or neither;
GetQueryResults pages them (header row first, ColumnInfo). Workgroups live in moto's Athena backend
(so ListWorkGroups and tags keep working); their Create/Get/Update/Delete are answered here with
Athena's errors. The ``athena:*`` actions are authorized on the workgroup's ARN, the catalog and S3
reads of the data as the caller, the results' PutObject as the caller too.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field

from moto.athena.models import WorkGroup

from picsel_nb.localcloud import athena_sql, authorization, backends
from picsel_nb.localcloud.authorization import Check
from picsel_nb.localcloud.policy import Principal
from picsel_nb.localcloud.router import AwsRequest, AwsResponse, Router

PRIMARY = "primary"
MAX_RESULTS = 1000  # GetQueryResults' page limit
MAX_LISTED = 50  # ListQueryExecutions' and BatchGetQueryExecution's
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")
NO_OUTPUT = ("No output location provided. An output location is required either through the "
             "Workgroup result configuration setting or as an API input.")
ENGINE = {"SelectedEngineVersion": "AUTO", "EffectiveEngineVersion": "Athena engine version 3"}


@dataclass
class Execution:
    """One query execution and, once it succeeded, its results."""

    id: str
    query: str
    workgroup: str
    region: str
    output: str  # s3://bucket/prefix/<id>.csv
    context: dict
    principal: Principal
    state: str = "QUEUED"
    reason: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    completed: float | None = None
    scanned: int = 0
    result: athena_sql.Result | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> dict:
        """The QueryExecution as GetQueryExecution shows it."""
        status = {"State": self.state, "SubmissionDateTime": self.submitted}
        if self.completed is not None:
            status["CompletionDateTime"] = self.completed
        if self.reason:
            status["StateChangeReason"] = self.reason
        if self.state == "FAILED":
            status["AthenaError"] = {"ErrorCategory": 2, "Retryable": False,
                                     "ErrorMessage": self.reason}
        running_ms = int(((self.completed or time.time()) - (self.started or self.submitted))
                         * 1000)
        queued_ms = int(((self.started or time.time()) - self.submitted) * 1000)
        return {
            "QueryExecutionId": self.id, "Query": self.query, "StatementType": "DML",
            "SubstatementType": "SELECT", "ResultConfiguration": {"OutputLocation": self.output},
            "QueryExecutionContext": self.context, "Status": status,
            "Statistics": {"EngineExecutionTimeInMillis": running_ms,
                           "DataScannedInBytes": self.scanned,
                           "TotalExecutionTimeInMillis": running_ms + queued_ms,
                           "QueryQueueTimeInMillis": queued_ms},
            "WorkGroup": self.workgroup, "EngineVersion": ENGINE,
        }


_executions: dict[str, Execution] = {}
_tokens: dict[str, str] = {}  # ClientRequestToken -> execution id (StartQueryExecution is idempotent)
_created: dict[tuple[str, str], float] = {}
_lock = threading.Lock()


class InvalidRequest(Exception):
    """Athena's InvalidRequestException."""


def install(router: Router) -> None:
    """Answer Athena's workgroup and query operations; authorize them on the workgroup's ARN."""
    authorization.MAPPERS["athena"] = checks
    for operation, handler in HANDLERS.items():
        router.intercept("athena", operation, _answering(handler))


def _answering(handler):
    def answer(request: AwsRequest) -> AwsResponse:
        try:
            return AwsResponse.json(handler(request))
        except InvalidRequest as exc:
            return AwsResponse.json_error("InvalidRequestException", str(exc))
    return answer


def checks(request: AwsRequest) -> list[Check] | None:
    """The workgroup ARN each Athena request is authorized on (the query's, by its id)."""
    params, action = request.params, f"athena:{request.operation}"
    if request.operation == "CreateWorkGroup":
        return [Check(action, _arn(request.region, params.get("Name", "")))]
    if request.operation == "BatchGetQueryExecution":
        groups = {e.workgroup for i in params.get("QueryExecutionIds", [])
                  if (e := _executions.get(i)) is not None}
        return [Check(action, _arn(request.region, g)) for g in sorted(groups)] or None
    if (execution := _executions.get(params.get("QueryExecutionId", ""))) is not None:
        return [Check(action, _arn(request.region, execution.workgroup))]
    if request.operation in HANDLERS or "WorkGroup" in params:
        return [Check(action, _arn(request.region, params.get("WorkGroup") or PRIMARY))]
    return None


def _arn(region: str, workgroup: str) -> str:
    return f"arn:aws:athena:{region}:{backends.ACCOUNT_ID}:workgroup/{workgroup}"


def _groups(region: str) -> dict[str, WorkGroup]:
    return backends.backend("athena", region).work_groups


def _group(region: str, name: str) -> WorkGroup:
    group = _groups(region).get(name)
    if group is None:
        raise InvalidRequest(f"WorkGroup {name} is not found.")
    return group


# ---------------------------------------------------------------------------------------------
# Workgroups


def create_work_group(request: AwsRequest) -> dict:
    params, region = request.params, request.region
    name = params["Name"]
    if name == PRIMARY or name in _groups(region):
        raise InvalidRequest(f"WorkGroup {name} is already created")
    _check_output(params.get("Configuration", {}).get("ResultConfiguration", {}))
    backend = backends.backend("athena", region)
    backend.create_work_group(name, dict(params.get("Configuration", {})),
                              params.get("Description", ""), params.get("Tags", []))
    _created[(region, name)] = time.time()
    return {}


def get_work_group(request: AwsRequest) -> dict:
    name = request.params["WorkGroup"]
    group = _group(request.region, name)
    return {"WorkGroup": {"Name": name, "State": group.state, "Description": group.description,
                          "Configuration": group.configuration,
                          "CreationTime": _created.get((request.region, name), 0.0)}}


def update_work_group(request: AwsRequest) -> dict:
    params = request.params
    group = _group(request.region, params["WorkGroup"])
    updates = params.get("ConfigurationUpdates", {})
    result = dict(group.configuration.get("ResultConfiguration", {}))
    changes = updates.get("ResultConfigurationUpdates", {})
    if changes.get("RemoveOutputLocation"):
        result.pop("OutputLocation", None)
    if "OutputLocation" in changes:
        _check_output(changes)
        result["OutputLocation"] = changes["OutputLocation"]
    group.configuration["ResultConfiguration"] = result
    for key in ("EnforceWorkGroupConfiguration", "PublishCloudWatchMetricsEnabled",
                "RequesterPaysEnabled", "EngineVersion"):
        if key in updates:
            group.configuration[key] = updates[key]
    if "Description" in params:
        group.description = params["Description"]
    if "State" in params:
        group.state = params["State"]
    return {}


def delete_work_group(request: AwsRequest) -> dict:
    name = request.params["WorkGroup"]
    if name == PRIMARY:
        raise InvalidRequest("WorkGroup primary cannot be deleted")
    _group(request.region, name)
    del _groups(request.region)[name]
    with _lock:
        for execution_id in [i for i, e in _executions.items() if e.workgroup == name]:
            del _executions[execution_id]
    return {}


def _check_output(result_configuration: dict) -> None:
    location = result_configuration.get("OutputLocation")
    if location is not None and not location.startswith("s3://"):
        raise InvalidRequest(f"outputLocation is not a valid S3 path. Provided {location}")


# ---------------------------------------------------------------------------------------------
# Queries


def start_query_execution(request: AwsRequest) -> dict:
    params, region = request.params, request.region
    name = params.get("WorkGroup") or PRIMARY
    group = _groups(region).get(name)
    if group is None:
        raise InvalidRequest("WorkGroup is not found.")
    if group.state != "ENABLED":
        raise InvalidRequest(f"WorkGroup {name} is disabled.")
    token = params.get("ClientRequestToken")
    if token and token in _tokens:
        return {"QueryExecutionId": _tokens[token]}
    configured = group.configuration.get("ResultConfiguration", {}).get("OutputLocation")
    asked = (params.get("ResultConfiguration") or {}).get("OutputLocation")
    _check_output({"OutputLocation": asked} if asked else {})
    enforced = group.configuration.get("EnforceWorkGroupConfiguration") and configured
    location = configured if enforced else asked or configured
    if not location:
        raise InvalidRequest(NO_OUTPUT)
    execution_id = str(uuid.uuid4())
    execution = Execution(execution_id, params["QueryString"], name, region,
                          f"{location.rstrip('/')}/{execution_id}.csv",
                          params.get("QueryExecutionContext") or {}, request.principal)
    with _lock:
        _executions[execution_id] = execution
        if token:
            _tokens[token] = execution_id
    threading.Thread(target=_run, args=(execution,), daemon=True,
                     name=f"athena-{execution_id[:8]}").start()
    return {"QueryExecutionId": execution_id}


def _run(execution: Execution) -> None:
    """Run the query and write its results, or record why not; nothing is half-written."""
    execution.state, execution.started = "RUNNING", time.time()
    try:
        result = athena_sql.run(execution.query, execution.context.get("Database"),
                                execution.principal, execution.region, execution.cancelled)
        execution.scanned = result.scanned_bytes
        if not execution.cancelled.is_set():
            _write_results(execution, result)
            execution.result = result
    except athena_sql.QueryFailed as exc:
        execution.reason = str(exc)
    finally:
        execution.completed = time.time()
        if execution.cancelled.is_set():
            execution.state, execution.reason = "CANCELLED", None
        else:
            execution.state = "SUCCEEDED" if execution.result is not None else "FAILED"


def _write_results(execution: Execution, result: athena_sql.Result) -> None:
    """The CSV and its metadata in the output location, as the caller; both or neither."""
    bucket, key = execution.output.removeprefix("s3://").split("/", 1)
    bodies = {key: results_csv(result), f"{key}.metadata": results_metadata(result)}
    written: list[str] = []
    try:
        for name in bodies:
            authorization.require(execution.principal, "s3:PutObject",
                                  f"arn:aws:s3:::{bucket}/{name}")
        if backends.s3_backend().buckets.get(bucket) is None:
            raise KeyError(bucket)
        for name, body in bodies.items():
            content_type = "text/csv" if name == key else "application/octet-stream"
            backends.write_object(bucket, name, body, content_type)
            written.append(name)
    except (authorization.AccessDeniedException, KeyError):
        for name in written:
            backends.s3_backend().delete_object(bucket, name)
        raise athena_sql.QueryFailed(
            f"Access denied when writing output to url: {execution.output} . Please ensure you "
            "are allowed to access the S3 bucket. If you are encrypting query results with KMS "
            "key, please ensure you are allowed to access your KMS key") from None


def results_csv(result: athena_sql.Result) -> bytes:
    """Athena's result file: a header, every value double-quoted, NULL as an empty field."""
    def line(values: list[str | None]) -> str:
        return ",".join("" if v is None else '"' + v.replace('"', '""') + '"' for v in values)
    header = [column["Name"] for column in result.columns]
    return "".join(line(row) + "\n" for row in [header, *result.rows]).encode()


def results_metadata(result: athena_sql.Result) -> bytes:
    """The ``.metadata`` beside the CSV: the ResultSetMetadata (JSON here, binary on AWS)."""
    return json.dumps({"ColumnInfo": result.columns}).encode()


def _execution(request: AwsRequest) -> Execution:
    execution_id = request.params.get("QueryExecutionId", "")
    execution = _executions.get(execution_id)
    if execution is None or execution.region != request.region:
        raise InvalidRequest(f"QueryExecution {execution_id} was not found")
    return execution


def get_query_execution(request: AwsRequest) -> dict:
    return {"QueryExecution": _execution(request).describe()}


def batch_get_query_execution(request: AwsRequest) -> dict:
    found, missing = [], []
    for execution_id in request.params.get("QueryExecutionIds", [])[:MAX_LISTED]:
        execution = _executions.get(execution_id)
        if execution is None or execution.region != request.region:
            missing.append({"QueryExecutionId": execution_id,
                            "ErrorCode": "INVALID_INPUT",
                            "ErrorMessage": f"QueryExecution {execution_id} was not found"})
        else:
            found.append(execution.describe())
    return {"QueryExecutions": found, "UnprocessedQueryExecutionIds": missing}


def stop_query_execution(request: AwsRequest) -> dict:
    execution = _execution(request)
    if execution.state not in FINAL_STATES:
        execution.cancelled.set()
    return {}


def list_query_executions(request: AwsRequest) -> dict:
    name = request.params.get("WorkGroup") or PRIMARY
    _group(request.region, name)
    limit = _limit(request.params.get("MaxResults"), MAX_LISTED)
    ids = [e.id for e in sorted(_executions.values(), key=lambda e: -e.submitted)
           if e.workgroup == name and e.region == request.region]
    start = _offset(request.params.get("NextToken"), "list")
    page = {"QueryExecutionIds": ids[start:start + limit]}
    if start + limit < len(ids):
        page["NextToken"] = _token("list", start + limit)
    return page


def get_query_results(request: AwsRequest) -> dict:
    execution = _execution(request)
    if execution.state in ("QUEUED", "RUNNING"):
        raise InvalidRequest(f"Query has not yet finished. Current state: {execution.state}")
    if execution.result is None:
        raise InvalidRequest(f"Query did not finish successfully. Final query state: "
                             f"{execution.state}")
    _require_results(request.principal, execution)
    result = execution.result
    header = [column["Name"] for column in result.columns]
    rows = [header, *result.rows]
    limit = _limit(request.params.get("MaxResults"), MAX_RESULTS)
    start = _offset(request.params.get("NextToken"), execution.id)
    page = {"UpdateCount": 0, "ResultSet": {
        "Rows": [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]}
                 for row in rows[start:start + limit]],
        "ResultSetMetadata": {"ColumnInfo": result.columns}}}
    if start + limit < len(rows):
        page["NextToken"] = _token(execution.id, start + limit)
    return page


def _require_results(principal: Principal, execution: Execution) -> None:
    """Athena reads the results from S3 as the caller: the object must be there and readable."""
    bucket, key = execution.output.removeprefix("s3://").split("/", 1)
    try:
        authorization.require(principal, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")
        backends.read_object(bucket, key)
    except authorization.AccessDeniedException as exc:
        raise InvalidRequest(f"Access denied when reading the results of the query: {exc}")\
            from None
    except (KeyError, AttributeError):
        raise InvalidRequest(f"Unable to read the query results at {execution.output}: "
                             "the object does not exist") from None


def _limit(value: int | None, most: int) -> int:
    if value is None:
        return most
    if not 1 <= int(value) <= most:
        raise InvalidRequest(f"1 validation error detected: Value '{value}' at 'maxResults' "
                             f"failed to satisfy constraint: Member must have value less than "
                             f"or equal to {most}")
    return int(value)


def _token(scope: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{scope}:{offset}".encode()).decode()


def _offset(token: str | None, scope: str) -> int:
    if not token:
        return 0
    try:
        found, offset = base64.urlsafe_b64decode(token).decode().rsplit(":", 1)
        if found == scope:
            return int(offset)
    except ValueError:
        pass
    raise InvalidRequest("The NextToken is not valid.")


HANDLERS = {
    "CreateWorkGroup": create_work_group, "GetWorkGroup": get_work_group,
    "UpdateWorkGroup": update_work_group, "DeleteWorkGroup": delete_work_group,
    "StartQueryExecution": start_query_execution, "GetQueryExecution": get_query_execution,
    "BatchGetQueryExecution": batch_get_query_execution,
    "StopQueryExecution": stop_query_execution, "ListQueryExecutions": list_query_executions,
    "GetQueryResults": get_query_results,
}
