"""CloudWatch alarms on the embedded cloud evaluate their metric as AWS does and keep a history."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from moto.cloudwatch.models import CloudWatchBackend

from picsel_nb.localcloud import alarms
from picsel_nb.localcloud.router import ACCOUNT_ID
from tests.cloud_fixtures import cloud, poll  # noqa: F401

NOW = datetime(2026, 11, 28, 2, 10, 30, tzinfo=UTC)
REASON = re.compile(r"Threshold Crossed: 1 datapoint \[1\.0 \(\d\d/\d\d/\d\d \d\d:\d\d:\d\d\)\] "
                    r"was greater than or equal to the threshold \(1\.0\)\.")



def _state(cloudwatch, name: str) -> str:
    return cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


# --- through the server, with real clients ------------------------------------------------------


def test_lambda_errors_alarm_fires_after_a_failing_invocation(cloud):  # noqa: F811
    failing = "def handler(event, context):\n    raise RuntimeError('x')\n"
    cloud.deploy_function("alarmed", {"app.py": failing})
    cloudwatch = cloud.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="alarmed-errors", Namespace="AWS/Lambda", MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": "alarmed"}], Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching")
    assert poll(lambda: _state(cloudwatch, "alarmed-errors") == "OK")

    response = cloud.client("lambda").invoke(FunctionName="alarmed")
    assert response["FunctionError"] == "Unhandled"

    poll(lambda: _state(cloudwatch, "alarmed-errors") == "ALARM")
    alarm = cloudwatch.describe_alarms(AlarmNames=["alarmed-errors"])["MetricAlarms"][0]
    assert REASON.fullmatch(alarm["StateReason"]), alarm["StateReason"]
    assert json.loads(alarm["StateReasonData"])["recentDatapoints"] == [1.0]

    history = cloudwatch.describe_alarm_history(AlarmName="alarmed-errors",
                                                HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    assert history[0]["HistorySummary"] == "Alarm updated from OK to ALARM"
    assert json.loads(history[0]["HistoryData"])["newState"]["stateValue"] == "ALARM"
    assert history[-1]["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to OK"


def test_put_metric_data_from_a_client_is_evaluated(cloud):  # noqa: F811
    cloudwatch = cloud.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="queue-depth", Namespace="Picsel/Test", MetricName="Depth", Statistic="Maximum",
        Period=60, EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold")
    assert _state(cloudwatch, "queue-depth") == "INSUFFICIENT_DATA"
    cloudwatch.put_metric_data(Namespace="Picsel/Test",
                               MetricData=[{"MetricName": "Depth", "Value": v} for v in (3, 12)])
    poll(lambda: _state(cloudwatch, "queue-depth") == "ALARM")
    history = cloud.aws("cloudwatch", "describe-alarm-history", "--alarm-name", "queue-depth")
    summaries = [i["HistorySummary"] for i in json.loads(history.stdout)["AlarmHistoryItems"]]
    assert summaries == ["Alarm updated from INSUFFICIENT_DATA to ALARM",
                         'Alarm "queue-depth" created']


def test_ticker_returns_an_alarm_to_ok_when_its_window_rolls_over(cloud):  # noqa: F811
    cloudwatch = cloud.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="short-window", Namespace="Picsel/Test", MetricName="Failures", Statistic="Sum",
        Period=10, EvaluationPeriods=1, Threshold=1, TreatMissingData="notBreaching",
        ComparisonOperator="GreaterThanOrEqualToThreshold")
    cloudwatch.put_metric_data(Namespace="Picsel/Test",
                               MetricData=[{"MetricName": "Failures", "Value": 1}])
    poll(lambda: _state(cloudwatch, "short-window") == "ALARM")
    poll(lambda: _state(cloudwatch, "short-window") == "OK", timeout=40)  # no new sleep: ticker
    alarm = cloudwatch.describe_alarms(AlarmNames=["short-window"])["MetricAlarms"][0]
    reason = alarm["StateReason"]
    assert reason == ("Threshold Crossed: no datapoints were received for 1 period and 1 missing "
                      "datapoint was treated as [NonBreaching].")


# --- the evaluation itself, on a moto backend in this process, at fixed times ------------------


def _backend_with(values: list[float | None], **alarm) -> CloudWatchBackend:
    """A backend with an alarm and one datapoint per minute ending at NOW (None = no data)."""
    backend = CloudWatchBackend("sa-east-1", ACCOUNT_ID)
    config = {"name": "a", "namespace": "N", "metric_name": "M", "period": 60,
              "comparison_operator": "GreaterThanThreshold", "evaluation_periods": len(values),
              "threshold": 5.0, "statistic": "Sum", "description": "", "dimensions": [],
              "alarm_actions": []} | alarm
    backend.put_metric_alarm(**config)
    for age, value in enumerate(reversed(values)):
        if value is not None:
            backend.put_metric_data("N", [_datum(value, NOW - timedelta(minutes=age))])
    return backend


def _datum(value: float, when: datetime = NOW, **fields) -> dict:
    """A datum of metric N/M, stamped as moto stores them (naive UTC)."""
    return {"MetricName": "M", "Value": value, "Timestamp": when.replace(tzinfo=None)} | fields


def _evaluate(backend: CloudWatchBackend, now: datetime = NOW):
    alarm = backend.alarms["a"]
    alarms.evaluate(backend, alarm, backend.get_all_metrics(), now=now)
    return alarm


@pytest.mark.parametrize(("statistic", "threshold", "state"), [
    ("Sum", 10.0, "ALARM"), ("Sum", 11.0, "OK"), ("Average", 3.0, "ALARM"), ("Average", 4.0, "OK"),
    ("Minimum", 0.5, "ALARM"), ("Minimum", 1.0, "OK"), ("Maximum", 7.0, "ALARM"),
    ("Maximum", 8.0, "OK"),
    ("SampleCount", 2.0, "ALARM"), ("SampleCount", 3.0, "OK"),
])
def test_statistics(statistic, threshold, state):
    backend = CloudWatchBackend("sa-east-1", ACCOUNT_ID)
    backend.put_metric_alarm(name="a", namespace="N", metric_name="M", evaluation_periods=1,
                             comparison_operator="GreaterThanThreshold", period=60,
                             threshold=threshold, statistic=statistic, description="",
                             dimensions=[], alarm_actions=[])
    backend.put_metric_data("N", [_datum(v) for v in (2.0, 1.0, 8.0)])
    assert _evaluate(backend).state_value == state


def test_datapoints_to_alarm_m_out_of_n():
    backend = _backend_with([9.0, 1.0, 9.0], datapoints_to_alarm=2)
    alarm = _evaluate(backend)
    assert alarm.state_value == "ALARM"
    assert alarm.state_reason == (
        "Threshold Crossed: 2 out of the last 3 datapoints [9.0 (28/11/26 02:10:00), "
        "9.0 (28/11/26 02:08:00)] were greater than the threshold (5.0) (minimum 2 datapoints "
        "for OK -> ALARM transition).")
    assert _evaluate(_backend_with([9.0, 1.0, 9.0], datapoints_to_alarm=3)).state_value == "OK"


def test_ok_reason_names_the_datapoint():
    backend = _backend_with([9.0])
    alarm = _evaluate(backend)
    assert alarm.state_value == "ALARM"
    backend.put_metric_data("N", [_datum(0.0, NOW + timedelta(minutes=1))])
    _evaluate(backend, NOW + timedelta(minutes=1))
    assert alarm.state_value == "OK"
    assert alarm.state_reason == ("Threshold Crossed: 1 datapoint [0.0 (28/11/26 02:11:00)] was "
                                  "not greater than the threshold (5.0).")


@pytest.mark.parametrize(("treat", "state"), [
    ("missing", "INSUFFICIENT_DATA"), ("notBreaching", "OK"), ("breaching", "ALARM"),
    ("ignore", "OK"),  # ignore keeps the state the alarm is in (moto creates alarms OK)
])
def test_treat_missing_data_when_the_window_is_empty(treat, state):
    backend = _backend_with([9.0], treat_missing_data=treat)
    later = NOW + timedelta(minutes=5)
    alarm = _evaluate(backend, later)
    assert alarm.state_value == state


def test_dimensions_must_match_exactly():
    backend = _backend_with([None], dimensions=[{"Name": "FunctionName", "Value": "f"}])
    backend.put_metric_data("N", [_datum(9.0, Dimensions=[{"Name": "FunctionName", "Value": "g"}])])
    assert _evaluate(backend).state_value == "INSUFFICIENT_DATA"
    backend.put_metric_data("N", [_datum(9.0, Dimensions=[{"Name": "FunctionName", "Value": "f"}])])
    assert _evaluate(backend).state_value == "ALARM"


def test_history_items_describe_each_transition():
    backend = _backend_with([9.0])
    _evaluate(backend)
    _evaluate(backend, NOW + timedelta(minutes=3))
    items = alarms.history_items(backend.alarms["a"])
    assert [i["HistorySummary"] for i in items] == [
        'Alarm "a" created', "Alarm updated from OK to ALARM",
        "Alarm updated from ALARM to INSUFFICIENT_DATA"]
    data = json.loads(items[1]["HistoryData"])
    assert data["oldState"]["stateValue"] == "OK" and data["newState"]["stateValue"] == "ALARM"
    assert data["newState"]["stateReasonData"]["evaluatedDatapoints"][0]["value"] == 9.0
