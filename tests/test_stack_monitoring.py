"""CloudWatch for the pipeline: log groups, log readers, metrics, alarms that fire and clear, and a
dashboard drawn from its own definition — on the embedded cloud, whose alarm clock runs fast."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime

import matplotlib
import pytest

from picsel_nb.localcloud import alarms
from picsel_nb.settings import get_settings
from picsel_nb.stack import buckets, monitoring
from picsel_nb.stack.context import Stack, get_stack
from picsel_nb.stack.waiters import DeadlineError, wait_for_job_run
from tests.cloud_fixtures import cloud  # noqa: F401

matplotlib.use("agg")

FUNCTION = """
import json

def handler(event, context):
    print(json.dumps({"level": "INFO", "message": "working", "date": event.get("date"),
                      "function_request_id": context.aws_request_id}))
    if event.get("fail"):
        raise ValueError("asked to fail\\nsecond line")
    return {"ok": True}
"""
FAILING_JOB = "raise SystemExit('corrupt raw file: not a netCDF file')\n"


@pytest.fixture(scope="module")
def stack(cloud) -> Stack:  # noqa: F811
    """A stack of its own prefix, with a small ingest function and a failing contours job."""
    stack = get_stack(dataclasses.replace(get_settings(), prefix="mon"))
    cloud.deploy_function(stack.names.lambda_function, {"app.py": FUNCTION})
    bucket = buckets.ensure_input_bucket(stack)["bucket"]
    buckets.publish(stack, bucket, "scripts/job.py", FAILING_JOB)
    role = cloud.role("mon-failing-job-role", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/scripts/*"}]}, "glue.amazonaws.com")
    stack.client("glue").create_job(
        Name=stack.names.glue_job, Role=role,
        Command={"Name": "pythonshell", "ScriptLocation": f"s3://{bucket}/scripts/job.py"})
    return stack


def invoke(stack: Stack, **event) -> dict:
    answer = stack.client("lambda").invoke(FunctionName=stack.names.lambda_function,
                                           Payload=json.dumps(event).encode())
    return {"error": answer.get("FunctionError"), "payload": json.loads(answer["Payload"].read())}


def failed_job_run(stack: Stack) -> str:
    glue = stack.client("glue")
    run_id = glue.start_job_run(JobName=stack.names.glue_job)["JobRunId"]
    assert wait_for_job_run(glue, stack.names.glue_job, run_id, 60, 0.5)["JobRunState"] == "FAILED"
    return run_id


# --- log groups and readers ----------------------------------------------------------------------


def test_ensure_log_groups_sets_retention_and_is_idempotent(stack):
    first = monitoring.ensure_log_groups(stack)
    assert monitoring.ensure_log_groups(stack) == first
    assert {row["log group"]: row["retention days"] for row in first} == {
        "/aws/lambda/mon-era5-ingest": 14, "/aws-glue/jobs/output": 14,
        "/aws-glue/jobs/error": 14, "/aws-glue/crawlers": 14}


def test_invocations_tie_json_records_and_runtime_errors_to_their_report(stack):
    since = datetime.now(UTC)
    assert invoke(stack, date="2023-09-01")["error"] is None
    assert invoke(stack, date="2023-09-02", fail=True)["error"] == "Unhandled"

    rows = monitoring.invocations(stack, since)

    assert [(r["date"], r["outcome"], r["message"]) for r in rows] == [
        ("2023-09-01", "ok", "working"),
        ("2023-09-02", "error", "[ERROR] ValueError: asked to fail")]
    assert all(r["duration_ms"] > 0 and r["billed_ms"] >= r["duration_ms"] for r in rows)
    kinds = [line["kind"] for line in monitoring.lambda_log(stack, since)]
    assert kinds == ["START", "INFO", "END", "REPORT", "START", "INFO", "ERROR", "END", "REPORT"]


def test_parse_lambda_line_reads_report_measures():
    line = monitoring.parse_lambda_line(
        "REPORT RequestId: r-1\tDuration: 12.50 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 64 MB\tInit Duration: 100.00 ms\t")
    assert (line["kind"], line["request_id"]) == ("REPORT", "r-1")
    assert line["fields"] == {"Duration": 12.5, "Billed Duration": 13.0, "Memory Size": 128.0,
                              "Max Memory Used": 64.0, "Init Duration": 100.0}
    assert monitoring.parse_lambda_line("plain text")["kind"] == "LOG"


def test_job_run_log_reads_the_runs_error_stream(stack):
    run_id = failed_job_run(stack)
    rows = monitoring.job_run_log(stack, run_id)
    assert {row["group"] for row in rows} == {"/aws-glue/jobs/error"}
    assert rows[-1]["message"] == "corrupt raw file: not a netCDF file"
    assert monitoring.read_log(stack, "/nonexistent/group") == []


# --- alarms --------------------------------------------------------------------------------------


def test_alarm_definitions_fire_on_one_error_in_five_minutes(stack):
    errors, failures = monitoring.alarm_definitions(stack)
    assert errors["AlarmName"] == "mon-era5-ingest-errors"
    assert (errors["Namespace"], errors["MetricName"], errors["Dimensions"]) == (
        "AWS/Lambda", "Errors", [{"Name": "FunctionName", "Value": "mon-era5-ingest"}])
    assert (errors["Statistic"], errors["Period"], errors["EvaluationPeriods"],
            errors["Threshold"], errors["ComparisonOperator"], errors["TreatMissingData"]) == (
        "Sum", 300, 1, 1.0, "GreaterThanOrEqualToThreshold", "notBreaching")
    assert (failures["Namespace"], failures["MetricName"], failures["Dimensions"]) == (
        "Glue", "JobRunsFailed", [{"Name": "JobName", "Value": "mon-era5-contours"}])


def test_ensure_alarms_is_idempotent_and_keeps_the_history(stack):
    monitoring.ensure_alarms(stack)
    name = monitoring.alarm_names(stack)["Errors"]
    monitoring.wait_for_alarm_state(stack, name, "OK", deadline_s=30)
    history = monitoring.alarm_history(stack)
    states = monitoring.ensure_alarms(stack)
    assert monitoring.alarm_history(stack) == history
    assert {row["alarm"] for row in states} == set(monitoring.alarm_names(stack).values())


def test_errors_alarm_fires_after_a_failing_invocation_and_clears_after_its_window(stack):
    name = monitoring.alarm_names(stack)["Errors"]
    monitoring.ensure_alarms(stack)
    monitoring.wait_for_alarm_state(stack, name, "OK", deadline_s=30)
    since = datetime.now(UTC)
    began = time.monotonic()

    invoke(stack, date="2023-02-30", fail=True)
    monitoring.wait_for_alarm_state(stack, name, "ALARM", deadline_s=10, delay_s=0.2)
    fired = time.monotonic() - began
    monitoring.wait_for_alarm_state(stack, name, "OK", deadline_s=30, delay_s=0.5)
    cleared = time.monotonic() - began

    print(f"ALARM after {fired:.1f} s, OK after {cleared:.1f} s")
    assert fired < 5 and cleared < 20
    history = [row["summary"] for row in monitoring.alarm_history(stack, since)
               if row["alarm"] == name]
    assert history == ["Alarm updated from ALARM to OK", "Alarm updated from OK to ALARM"]


def test_job_failure_alarm_fires_on_a_failed_run(stack):
    name = monitoring.alarm_names(stack)["JobRunsFailed"]
    monitoring.ensure_alarms(stack)
    monitoring.wait_for_alarm_state(stack, name, "OK", deadline_s=30)
    failed_job_run(stack)
    alarm = monitoring.wait_for_alarm_state(stack, name, "ALARM", deadline_s=10, delay_s=0.2)
    assert alarm["StateReason"].startswith("Threshold Crossed: 1 datapoint [1.0 (")
    state = next(row for row in monitoring.alarm_states(stack) if row["alarm"] == name)
    assert state["reason"] == ("Threshold Crossed: 1 datapoint [1.0] was greater than or equal "
                               "to the threshold (1.0).")


def test_wait_for_alarm_state_names_the_state_it_is_stuck_in(stack):
    monitoring.ensure_alarms(stack)
    name = monitoring.alarm_names(stack)["Errors"]
    with pytest.raises(DeadlineError, match=f"alarm {name} is still"):
        monitoring.wait_for_alarm_state(stack, name, "INSUFFICIENT_DATA", deadline_s=1, delay_s=0.5)
    with pytest.raises(ValueError, match="accepted: OK, ALARM, INSUFFICIENT_DATA"):
        monitoring.wait_for_alarm_state(stack, name, "RED")


# --- metrics and the dashboard -------------------------------------------------------------------


def test_metric_totals_count_invocations_errors_and_failed_runs(stack):
    since = datetime.now(UTC)
    invoke(stack, date="2023-09-01")
    invoke(stack, date="2023-09-01", fail=True)
    failed_job_run(stack)
    assert monitoring.metric_totals(stack, since) == {
        "Invocations": 2, "Errors": 1, "JobRunsFailed": 1}


def test_dashboard_body_is_valid_and_read_back_as_written(stack):
    body = monitoring.dashboard_body(stack)
    dashboard = monitoring.ensure_dashboard(stack)
    assert dashboard["name"] == "mon-pipeline" and dashboard["body"] == body
    assert monitoring.ensure_dashboard(stack) == dashboard
    watched = {(w.namespace, w.name) for w in monitoring.WATCHED.values()}
    for widget in body["widgets"]:
        assert widget["type"] == "metric" and widget["properties"]["region"] == "sa-east-1"
        for entry in widget["properties"]["metrics"]:
            assert tuple(entry[:2]) in watched and isinstance(entry[-1], dict)
    assert {m[1] for w in body["widgets"] for m in w["properties"]["metrics"]} == set(
        monitoring.WATCHED)


def test_plot_dashboard_draws_one_axes_per_metric_widget(stack):
    since = datetime.now(UTC)
    monitoring.ensure_dashboard(stack)
    invoke(stack, date="2023-09-03")
    figure = monitoring.plot_dashboard(stack, since)
    titles = [w["properties"]["title"] for w in monitoring.dashboard_body(stack)["widgets"]]
    assert [ax.get_title(loc="left") for ax in figure.axes] == titles
    invocations, errors = figure.axes[0].containers
    assert invocations.get_label() == "Invocations" and errors.get_label() == "Errors"
    assert sum(bar.get_height() for bar in invocations) >= 1
    assert [line.get_label() for line in figure.axes[0].lines] == [
        "alarm threshold (mon-era5-ingest-errors)"]


def test_delete_alarms_and_dashboard_tolerate_what_is_gone(stack):
    monitoring.ensure_alarms(stack)
    monitoring.ensure_dashboard(stack)
    assert sorted(monitoring.delete_alarms(stack)) == sorted(monitoring.alarm_names(stack).values())
    assert monitoring.delete_dashboard(stack) is True
    assert monitoring.delete_alarms(stack) == [] and monitoring.delete_dashboard(stack) is False


# --- the embedded cloud's alarm clock ------------------------------------------------------------


def _alarm(period: int):
    return type("Alarm", (), {"period": period})()


def test_period_scale_compresses_minutes_to_seconds_by_default(monkeypatch):
    monkeypatch.delenv(alarms.PERIOD_SCALE_ENV, raising=False)
    scale = alarms.period_scale()
    assert scale == pytest.approx(1 / 60)
    assert alarms.window_seconds(_alarm(300), scale) == 5.0  # 5 minutes -> 5 s
    assert alarms.window_seconds(_alarm(3600), scale) == 60.0
    assert alarms.window_seconds(_alarm(60), scale) == alarms.TICK_SECONDS  # never below a tick
    assert alarms.window_seconds(_alarm(300), 1.0) == 300.0  # AWS's timing


@pytest.mark.parametrize("text", ["0", "-1", "2", "fast", "1/0"])
def test_period_scale_refuses_what_is_not_in_0_1(monkeypatch, text):
    monkeypatch.setenv(alarms.PERIOD_SCALE_ENV, text)
    with pytest.raises(ValueError, match="accepted: a number in"):
        alarms.period_scale()


def test_period_scale_accepts_fractions_and_decimals(monkeypatch):
    monkeypatch.setenv(alarms.PERIOD_SCALE_ENV, "0.5")
    assert alarms.period_scale() == 0.5
    monkeypatch.setenv(alarms.PERIOD_SCALE_ENV, "1")
    assert alarms.period_scale() == 1.0
