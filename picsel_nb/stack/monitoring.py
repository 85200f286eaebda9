"""CloudWatch for the pipeline: log groups with retention, reading the logs, the watched metrics,
two alarms and a dashboard.

Every metric the pipeline watches is declared once, in ``WATCHED``; the alarms, the dashboard and
the readers take them from there.

The contours job's alarm watches ``Glue``/``JobRunsFailed`` (dimension ``JobName``), a count of
failed runs that the embedded cloud emits at the end of each run. AWS Glue publishes no such
metric: on AWS a failed run is an EventBridge event (source ``aws.glue``, detail-type "Glue Job
State Change", ``detail.state`` FAILED or TIMEOUT), and the equivalent alarm is an EventBridge rule
matching that event with a notification target (an SNS topic). The code stays the same on both
backends; on AWS this alarm simply stays OK (missing data is not breaching) and the rule does the
work.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from picsel_nb.stack import waiters
from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import tolerate
from picsel_nb.stack.waiters import ALARM_STATES

LOG_RETENTION_DAYS = 14
# Glue's default log groups, shared by every job and crawler of the account and region.
JOB_OUTPUT_LOG_GROUP = "/aws-glue/jobs/output"
JOB_ERROR_LOG_GROUP = "/aws-glue/jobs/error"
CRAWLER_LOG_GROUP = "/aws-glue/crawlers"
SHARED_LOG_GROUPS = (JOB_OUTPUT_LOG_GROUP, JOB_ERROR_LOG_GROUP, CRAWLER_LOG_GROUP)

ALARM_PERIOD_S = 300  # five minutes
DASHBOARD_PERIOD_S = 60
DASHBOARD_HOURS = 1  # how far back plot_dashboard looks by default
MIN_PERIODS_SHOWN = 5  # a short run still reads as a time series
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Watched:
    """A metric the pipeline watches: where it lives, the dimension naming our resource (its value
    is the ResourceNames field `resource`), and the statistic that summarises it."""

    namespace: str
    name: str
    dimension: str
    resource: str
    stat: str

    def metric(self, stack: Stack) -> dict:
        """The metric as CloudWatch APIs take it (Namespace, MetricName, Dimensions)."""
        value = getattr(stack.names, self.resource)
        return {"Namespace": self.namespace, "MetricName": self.name,
                "Dimensions": [{"Name": self.dimension, "Value": value}]}

    def widget_entry(self, stack: Stack) -> list:
        """The metric as a dashboard widget lists it: [namespace, name, dim, value, {options}]."""
        value = getattr(stack.names, self.resource)
        return [self.namespace, self.name, self.dimension, value,
                {"stat": self.stat, "label": self.name}]


WATCHED = {
    "Invocations": Watched("AWS/Lambda", "Invocations", "FunctionName", "lambda_function", "Sum"),
    "Errors": Watched("AWS/Lambda", "Errors", "FunctionName", "lambda_function", "Sum"),
    "Duration": Watched("AWS/Lambda", "Duration", "FunctionName", "lambda_function", "Average"),
    "JobRunsFailed": Watched("Glue", "JobRunsFailed", "JobName", "glue_job", "Sum"),
}
COUNTS = ("Invocations", "Errors", "JobRunsFailed")  # the watched metrics that add up

# alarm name suffix -> (watched metric, description); every alarm fires on a Sum >= 1 in 5 minutes
ALARMS = {
    "errors": ("Errors", "The ERA5 ingest function failed at least once in 5 minutes."),
    "failures": ("JobRunsFailed", "A run of the ERA5 contours job failed in the last 5 minutes."),
}


# --- log groups ----------------------------------------------------------------------------------


def function_log_group(stack: Stack) -> str:
    """The ingest function's own log group."""
    return f"/aws/lambda/{stack.names.lambda_function}"


def log_groups(stack: Stack) -> dict[str, str]:
    """The log groups the pipeline writes to, by role."""
    return {"function": function_log_group(stack), "job output": JOB_OUTPUT_LOG_GROUP,
            "job errors": JOB_ERROR_LOG_GROUP, "crawler": CRAWLER_LOG_GROUP}


def _describe_group(stack: Stack, name: str) -> dict | None:
    pages = stack.client("logs").get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix=name)
    return next((group for page in pages for group in page["logGroups"]
                 if group["logGroupName"] == name), None)


def ensure_log_groups(stack: Stack, retention_days: int = LOG_RETENTION_DAYS) -> list[dict]:
    """Create the pipeline's log groups where missing and keep their events `retention_days`
    (CloudWatch keeps them forever by default, and bills their storage); one row per group."""
    logs = stack.client("logs")
    rows = []
    for role, name in log_groups(stack).items():
        with tolerate("ResourceAlreadyExistsException"):
            logs.create_log_group(logGroupName=name)
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
        rows.append({"log group": name, "written by": role,
                     "retention days": _describe_group(stack, name).get("retentionInDays")})
    return rows


def _streams(stack: Stack, group: str) -> list[str]:
    """The names of every stream of `group` ([] when the group does not exist)."""
    with tolerate("ResourceNotFoundException"):
        pages = stack.client("logs").get_paginator("describe_log_streams").paginate(
            logGroupName=group)
        return [stream["logStreamName"] for page in pages for stream in page["logStreams"]]
    return []


def job_run_ids(stack: Stack) -> list[str]:
    """The ids of every run of the contours job (the names of its log streams)."""
    with tolerate("EntityNotFoundException"):
        pages = stack.client("glue").get_paginator("get_job_runs").paginate(
            JobName=stack.names.glue_job)
        return [run["Id"] for page in pages for run in page["JobRuns"]]
    return []


def own_log_groups(stack: Stack, run_ids: Iterable[str] = ()) -> list[str]:
    """The log groups that hold only the walkthrough's logs: the function's, and each shared Glue
    group that exists and holds no stream but the crawler's and those of `run_ids`."""
    ours = {stack.names.crawler, *run_ids}
    found = [function_log_group(stack)] if _describe_group(stack, function_log_group(stack)) else []
    return found + [group for group in SHARED_LOG_GROUPS
                    if _describe_group(stack, group) and set(_streams(stack, group)) <= ours]


def delete_log_groups(stack: Stack, run_ids: Iterable[str] = ()) -> list[str]:
    """Delete the function's log group; in Glue's shared groups, the crawler's stream and those of
    `run_ids`, then the group when nothing else is left in it. The groups deleted."""
    logs, ours, deleted = stack.client("logs"), {stack.names.crawler, *run_ids}, []
    for group in SHARED_LOG_GROUPS:
        for stream in set(_streams(stack, group)) & ours:
            with tolerate("ResourceNotFoundException"):
                logs.delete_log_stream(logGroupName=group, logStreamName=stream)
    for group in own_log_groups(stack):
        with tolerate("ResourceNotFoundException"):
            logs.delete_log_group(logGroupName=group)
            deleted.append(group)
    return deleted


# --- reading logs --------------------------------------------------------------------------------


def _millis(moment: datetime | None) -> dict:
    return {} if moment is None else {"startTime": int(moment.timestamp() * 1000)}


def read_log(stack: Stack, group: str, since: datetime | None = None,
             streams: list[str] | None = None) -> list[dict]:
    """Every event of `group` (of `streams` only, when given) from `since`, oldest first:
    time (ISO, UTC), stream, message. [] when the group does not exist."""
    params = {"logGroupName": group, **_millis(since)}
    if streams:
        params["logStreamNames"] = streams
    with tolerate("ResourceNotFoundException"):
        pages = stack.client("logs").get_paginator("filter_log_events").paginate(**params)
        events = [event for page in pages for event in page["events"]]
        events.sort(key=lambda event: (event["timestamp"], event.get("ingestionTime", 0)))
        return [{"time": _iso(datetime.fromtimestamp(event["timestamp"] / 1000, UTC)),
                 "stream": event["logStreamName"], "message": event["message"].rstrip("\n")}
                for event in events]
    return []


_REQUEST_LINE = re.compile(r"^(START|END|REPORT) RequestId: (\S+)")
_REPORT_FIELD = re.compile(r"([A-Za-z ]+): ([\d.]+) (ms|MB)")


def parse_lambda_line(message: str) -> dict:
    """What one line of a Lambda log is: kind (START, END, REPORT, a JSON record's level, or
    ERROR for the runtime's "[ERROR] …" lines, else LOG), request id, the JSON record's fields or
    the REPORT's measures."""
    if match := _REQUEST_LINE.match(message):
        kind, request_id = match.groups()
        fields = {name.strip(): float(value) for name, value, _ in _REPORT_FIELD.findall(message)}
        return {"kind": kind, "request_id": request_id, "fields": fields}
    if message.startswith("{"):
        try:
            record = json.loads(message)
        except ValueError:
            record = None
        if isinstance(record, dict):
            return {"kind": str(record.get("level", "LOG")),
                    "request_id": record.get("function_request_id"), "fields": record}
    kind = "ERROR" if message.startswith("[ERROR]") else "LOG"
    return {"kind": kind, "request_id": None, "fields": {"message": message}}


def lambda_log(stack: Stack, since: datetime | None = None) -> list[dict]:
    """The function's log lines from `since`, oldest first, each parsed (``parse_lambda_line``)
    and tied to its invocation: a line without a request id belongs to the invocation between
    the START and END of its stream."""
    current: dict[str, str | None] = {}
    lines = []
    for event in read_log(stack, function_log_group(stack), since):
        line = parse_lambda_line(event["message"])
        stream = event["stream"]
        if line["kind"] == "START":
            current[stream] = line["request_id"]
        request_id = line["request_id"] or current.get(stream)
        if line["kind"] == "END":
            current[stream] = None
        lines.append({**event, **line, "request_id": request_id})
    return lines


def invocations(stack: Stack, since: datetime | None = None) -> list[dict]:
    """One row per invocation from `since`, oldest first: its START time, request id, the day of
    its event (from its JSON records), outcome (ok | error), the first line of its last message
    and the REPORT's duration, billed duration and peak memory."""
    rows: dict[str, dict] = {}
    for line in lambda_log(stack, since):
        if line["request_id"] is None:
            continue
        row = rows.setdefault(line["request_id"], {
            "time": line["time"], "request_id": line["request_id"], "date": None,
            "outcome": "ok", "message": None, "duration_ms": None, "billed_ms": None,
            "max_memory_mb": None})
        fields = line["fields"]
        if line["kind"] == "REPORT":
            row.update(duration_ms=fields.get("Duration"), billed_ms=fields.get("Billed Duration"),
                       max_memory_mb=fields.get("Max Memory Used"))
        elif line["kind"] not in ("START", "END"):
            row["date"] = fields.get("date", row["date"])
            if "message" in fields:
                row["message"] = str(fields["message"]).split("\n", 1)[0]
            if line["kind"] in ("ERROR", "CRITICAL"):
                row["outcome"] = "error"
    return list(rows.values())


def job_run_log(stack: Stack, run_id: str) -> list[dict]:
    """A job run's log, oldest first: its output and error streams (both named by the run id)."""
    rows = [{**event, "group": group} for group in (JOB_OUTPUT_LOG_GROUP, JOB_ERROR_LOG_GROUP)
            for event in read_log(stack, group, streams=[run_id])]
    return sorted(rows, key=lambda row: row["time"])


def crawler_log(stack: Stack, since: datetime | None = None) -> list[dict]:
    """The crawler's log lines from `since`, oldest first."""
    return read_log(stack, CRAWLER_LOG_GROUP, since, streams=[stack.names.crawler])


# --- metrics -------------------------------------------------------------------------------------


def _query(index: int, entry: list, period: int, default_stat: str) -> dict:
    """A GetMetricData query of a dashboard widget's metric entry
    [namespace, name, dimension, value, …, {options}]."""
    options = entry[-1] if isinstance(entry[-1], dict) else {}
    names = entry[:-1] if options else entry
    dimensions = [{"Name": names[k], "Value": names[k + 1]} for k in range(2, len(names), 2)]
    return {"Id": f"m{index}", "Label": options.get("label", names[1]), "ReturnData": True,
            "MetricStat": {"Metric": {"Namespace": names[0], "MetricName": names[1],
                                      "Dimensions": dimensions},
                           "Period": options.get("period", period),
                           "Stat": options.get("stat", default_stat)}}


def _metric_data(stack: Stack, queries: list[dict], start: datetime, end: datetime
                 ) -> pd.DataFrame:
    """The datapoints of `queries` from `start` to `end`: time, metric (the query's label), value.

    The end is rounded up to a whole second, as GetMetricData reads it: the last instant counts.
    """
    end = datetime.fromtimestamp(math.ceil(end.timestamp()), UTC)
    pages = stack.client("cloudwatch").get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending")
    labels = {query["Id"]: query["Label"] for query in queries}
    rows = [{"time": pd.Timestamp(stamp).tz_convert("UTC"), "metric": labels[result["Id"]],
             "value": value}
            for page in pages for result in page["MetricDataResults"]
            for stamp, value in zip(result["Timestamps"], result["Values"])]
    return pd.DataFrame(rows, columns=["time", "metric", "value"]).sort_values(
        ["metric", "time"], ignore_index=True)


def metric_series(stack: Stack, since: datetime, until: datetime | None = None,
                  period: int = DASHBOARD_PERIOD_S) -> pd.DataFrame:
    """Every watched metric from `since` to `until` (default now), one row per datapoint."""
    entries = [watched.widget_entry(stack) for watched in WATCHED.values()]
    queries = [_query(k, entry, period, "Sum") for k, entry in enumerate(entries)]
    return _metric_data(stack, queries, since, until or datetime.now(UTC))


def metric_totals(stack: Stack, since: datetime, until: datetime | None = None) -> dict[str, int]:
    """The counts among the watched metrics (invocations, errors, failed job runs) added up from
    `since` to `until`."""
    series = metric_series(stack, since, until)
    sums = series.groupby("metric")["value"].sum()
    return {name: int(sums.get(name, 0)) for name in COUNTS}


# --- alarms --------------------------------------------------------------------------------------


def alarm_names(stack: Stack) -> dict[str, str]:
    """The alarms' names, by the watched metric they are on."""
    return {watched: f"{getattr(stack.names, WATCHED[watched].resource)}-{suffix}"
            for suffix, (watched, _) in ALARMS.items()}


def alarm_definitions(stack: Stack) -> list[dict]:
    """The alarms as put_metric_alarm takes them: fire on a Sum of at least 1 in one 5-minute
    period; no data (nothing ran) is not a failure. Actions: none (on AWS, add an SNS topic)."""
    names = alarm_names(stack)
    return [{"AlarmName": names[watched], "AlarmDescription": description,
             **WATCHED[watched].metric(stack), "Statistic": "Sum", "Period": ALARM_PERIOD_S,
             "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": 1.0,
             "ComparisonOperator": "GreaterThanOrEqualToThreshold",
             "TreatMissingData": "notBreaching", "ActionsEnabled": False}
            for _, (watched, description) in ALARMS.items()]


def _alarms(stack: Stack, names: list[str]) -> list[dict]:
    pages = stack.client("cloudwatch").get_paginator("describe_alarms").paginate(
        AlarmNames=names, AlarmTypes=["MetricAlarm"])
    return [alarm for page in pages for alarm in page["MetricAlarms"]]


def ensure_alarms(stack: Stack) -> list[dict]:
    """Create the alarms, or update those whose definition differs (an update would otherwise
    restart their history); their states."""
    cloudwatch = stack.client("cloudwatch")
    wanted = alarm_definitions(stack)
    current = {alarm["AlarmName"]: alarm
               for alarm in _alarms(stack, [w["AlarmName"] for w in wanted])}
    for definition in wanted:
        have = current.get(definition["AlarmName"], {})
        if any(have.get(key) != value for key, value in definition.items()):
            cloudwatch.put_metric_alarm(**definition)
    return alarm_states(stack)


_DATAPOINT_TIME = re.compile(r" \(\d\d/\d\d/\d\d \d\d:\d\d:\d\d\)")


def alarm_states(stack: Stack, *names: str) -> list[dict]:
    """The state of each alarm (of `names` only, when given) and AWS's reason for it (the
    datapoints' times left out: they are in `updated` and in the history)."""
    return [{"alarm": alarm["AlarmName"], "metric": f"{alarm['Namespace']} {alarm['MetricName']}",
             "state": alarm["StateValue"],
             "reason": _DATAPOINT_TIME.sub("", alarm.get("StateReason", "")),
             "updated": _iso(alarm["StateUpdatedTimestamp"])}
            for alarm in _alarms(stack, list(names or alarm_names(stack).values()))]


def alarm_history(stack: Stack, since: datetime | None = None) -> list[dict]:
    """The alarms' state changes from `since`, newest first: time, alarm, summary."""
    params = {"HistoryItemType": "StateUpdate", "ScanBy": "TimestampDescending"}
    if since is not None:
        params["StartDate"] = since
    pages = stack.client("cloudwatch").get_paginator("describe_alarm_history")
    rows = [{"time": _iso(item["Timestamp"]), "alarm": item["AlarmName"],
             "summary": item["HistorySummary"]}
            for name in alarm_names(stack).values()
            for page in pages.paginate(AlarmName=name, **params)
            for item in page["AlarmHistoryItems"]]
    return sorted(rows, key=lambda row: row["time"], reverse=True)


def wait_for_alarm_state(stack: Stack, name: str, state: str, deadline_s: float = 900,
                         delay_s: float = 1.0) -> dict:
    """The alarm once it is in `state` (OK | ALARM | INSUFFICIENT_DATA), polled with a boto3
    waiter (CloudWatch has none for states); DeadlineError naming it and its last state."""
    if state not in ALARM_STATES:
        raise ValueError(f"alarm state {state!r} is not valid; accepted: {', '.join(ALARM_STATES)}")
    waiters.wait_for_alarm_state(stack.client("cloudwatch"), name, state, deadline_s, delay_s)
    return _alarms(stack, [name])[0]


def delete_alarms(stack: Stack) -> list[str]:
    """Delete the alarms; the names of those that existed."""
    names = [alarm["AlarmName"] for alarm in _alarms(stack, list(alarm_names(stack).values()))]
    if names:
        stack.client("cloudwatch").delete_alarms(AlarmNames=names)
    return names


# --- dashboard -----------------------------------------------------------------------------------


def dashboard_name(stack: Stack) -> str:
    """The pipeline's dashboard."""
    return f"{stack.settings.prefix}-pipeline"


def _widget(stack: Stack, title: str, metrics: list[str], x: int, y: int) -> dict:
    """A time-series widget of watched metrics, with the alarm thresholds on them as lines."""
    alarms = alarm_names(stack)
    lines = [{"label": alarms[name], "value": 1} for name in metrics if name in alarms]
    return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": {
        "title": title, "view": "timeSeries", "region": stack.region, "stat": "Sum",
        "period": DASHBOARD_PERIOD_S,
        "metrics": [WATCHED[name].widget_entry(stack) for name in metrics],
        **({"annotations": {"horizontal": lines}} if lines else {})}}


def dashboard_body(stack: Stack) -> dict:
    """The dashboard: the ingest function's invocations and errors, its duration, and the
    contours job's failed runs, with the alarm thresholds drawn on them."""
    return {"start": f"-PT{DASHBOARD_HOURS}H", "widgets": [
        _widget(stack, "Ingest function: invocations and errors", ["Invocations", "Errors"], 0, 0),
        _widget(stack, "Ingest function: duration (ms)", ["Duration"], 12, 0),
        _widget(stack, "Contours job: failed runs", ["JobRunsFailed"], 0, 6),
    ]}


def ensure_dashboard(stack: Stack) -> dict:
    """Create or replace the dashboard (PutDashboard is an upsert); its name, ARN and body."""
    name = dashboard_name(stack)
    stack.client("cloudwatch").put_dashboard(DashboardName=name,
                                             DashboardBody=json.dumps(dashboard_body(stack)))
    return get_dashboard(stack)


def get_dashboard(stack: Stack) -> dict:
    """The dashboard as CloudWatch holds it: name, ARN and body (parsed)."""
    answer = stack.client("cloudwatch").get_dashboard(DashboardName=dashboard_name(stack))
    return {"name": answer["DashboardName"], "arn": answer["DashboardArn"],
            "body": json.loads(answer["DashboardBody"])}


def dashboards(stack: Stack) -> list[str]:
    """The names of the dashboards that carry the walkthrough's prefix."""
    pages = stack.client("cloudwatch").get_paginator("list_dashboards").paginate(
        DashboardNamePrefix=f"{stack.settings.prefix}-")
    return [entry["DashboardName"] for page in pages for entry in page["DashboardEntries"]]


def delete_dashboard(stack: Stack) -> bool:
    """Delete the dashboard; False when it did not exist (asked first: DeleteDashboards fails
    on a missing name)."""
    if dashboard_name(stack) not in dashboards(stack):
        return False
    stack.client("cloudwatch").delete_dashboards(DashboardNames=[dashboard_name(stack)])
    return True


def plot_dashboard(stack: Stack, since: datetime | None = None, until: datetime | None = None):
    """Draw the dashboard's metric widgets as CloudWatch holds them (read back with
    get_dashboard), one axes per widget, from `since` (default: the last hour; taken back to
    the start of its period, as CloudWatch aligns datapoints, and to at least five periods
    before `until`) to `until`; the matplotlib Figure
    (made without pyplot: it is shown where it is returned, not wherever a backend decides)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure  # plotting is for notebooks: not loaded by the rest

    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=DASHBOARD_HOURS)
    period = DASHBOARD_PERIOD_S
    start = datetime.fromtimestamp(math.floor(since.timestamp() / period) * period, UTC)
    end = datetime.fromtimestamp(math.ceil(until.timestamp() / period) * period, UTC)
    start = min(start, end - timedelta(seconds=MIN_PERIODS_SHOWN * period))
    widgets = [w for w in get_dashboard(stack)["body"]["widgets"] if w["type"] == "metric"]
    figure = Figure(figsize=(9, 2.6 * len(widgets)), layout="constrained")
    axes = figure.subplots(len(widgets), 1, sharex=True, squeeze=False)
    for ax, widget in zip(axes[:, 0], widgets):
        _draw_widget(stack, ax, widget["properties"], start, until)
    bottom = axes[-1, 0]
    bottom.set_xlim(start, end)
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    bottom.set_xlabel("time (UTC)")
    return figure


def _draw_widget(stack: Stack, ax: Any, properties: dict, since: datetime,
                 until: datetime) -> None:
    """One metric widget: each period's value of each metric a bar (side by side within the
    period), each horizontal annotation a dashed line, the legend beside the axes."""
    period = properties.get("period", DASHBOARD_PERIOD_S)
    queries = [_query(k, entry, period, properties.get("stat", "Sum"))
               for k, entry in enumerate(properties["metrics"])]
    data = _metric_data(stack, queries, since, until)
    width = timedelta(seconds=period / (len(queries) + 1))
    for k, query in enumerate(queries):
        points = data[data["metric"] == query["Label"]]
        ax.bar(points["time"] + k * width, points["value"], width=width, align="edge",
               label=query["Label"])
    for line in properties.get("annotations", {}).get("horizontal", []):
        ax.axhline(line["value"], color="tab:red", linestyle="--", linewidth=1,
                   label=f"alarm threshold ({line['label']})")
    ax.set_title(properties.get("title", ""), fontsize=10, loc="left")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))


def _iso(moment: datetime) -> str:
    """A time as UTC ISO 8601 with whole seconds (what notebooks show)."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)
