"""CloudWatch metric alarms that evaluate, where moto only stores them.

An alarm is evaluated against moto's stored datapoints whenever metric data arrives (from an
executor through ``backends.put_metrics``, or from a client's ``PutMetricData``), when it is
created, and every few seconds by a background ticker so that windows rolling over change state.
State changes go through moto's ``set_alarm_state`` with AWS's reasons, so DescribeAlarms shows
them; ``DescribeAlarmHistory`` (not implemented by moto) is answered from the history moto keeps.

Time runs faster here: ``PICSEL_ALARM_PERIOD_SCALE`` (default 1/60, "a minute per second"; a
fraction like ``1/60`` or a decimal in (0, 1]) shrinks each evaluation window to Period × scale
seconds, never shorter than the ticker's interval nor longer than the Period. So a 5-minute alarm
goes back to OK some 5–10 s after its last breaching datapoint instead of 5–10 minutes, and a
walkthrough can show the whole cycle. Set it to 1 for AWS's timing.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import numpy as np
from botocore.utils import parse_timestamp
from moto.cloudwatch.models import (
    Alarm,
    CloudWatchBackend,
    MetricDatum,
    Statistics,
    cloudwatch_backends,
)

from picsel_nb.localcloud import backends
from picsel_nb.localcloud.router import ACCOUNT_ID, AwsRequest, AwsResponse

log = logging.getLogger(__name__)

TICK_SECONDS = 5.0
PERIOD_SCALE_ENV = "PICSEL_ALARM_PERIOD_SCALE"
DEFAULT_PERIOD_SCALE = "1/60"
INITIAL_REASON = "Unchecked: Initial alarm creation"
OPERATORS = {  # ComparisonOperator -> (test, wording of AWS's reasons)
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}

_lock = threading.RLock()  # one evaluation at a time: request threads, executors and the ticker
_started = threading.Event()


def install(router) -> None:
    """Evaluate alarms on new data and on a ticker; answer DescribeAlarmHistory."""
    period_scale()  # a bad PICSEL_ALARM_PERIOD_SCALE stops the server now, not the ticker later
    router.observe(_observe)
    router.intercept("monitoring", "DescribeAlarmHistory", describe_alarm_history)
    if not _started.is_set():  # once per process, however many apps are built
        _started.set()
        backends.on_metric_data(evaluate_region)
        threading.Thread(target=_tick, name="alarm-ticker", daemon=True).start()


def _observe(req: AwsRequest, resp: AwsResponse) -> None:
    """React to a client's PutMetricData and PutMetricAlarm once moto has stored them."""
    if req.service != "monitoring" or resp.status >= 300:
        return
    if req.operation == "PutMetricData":
        evaluate_region(req.region, req.params.get("Namespace"))
    elif req.operation == "PutMetricAlarm" and "AlarmName" in req.params:
        cloudwatch = cloudwatch_backends[ACCOUNT_ID][req.region]
        alarm = cloudwatch.alarms.get(req.params["AlarmName"])
        if alarm is not None and not alarm.history and alarm.state_reason == INITIAL_REASON:
            alarm.state_value = "INSUFFICIENT_DATA"  # the state AWS creates alarms in
            _evaluate_all(cloudwatch, [alarm])


def period_scale() -> float:
    """The time scale of alarm periods, from PICSEL_ALARM_PERIOD_SCALE (ValueError when invalid)."""
    text = os.environ.get(PERIOD_SCALE_ENV, DEFAULT_PERIOD_SCALE)
    try:
        scale = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        scale = Fraction(0)
    if not 0 < scale <= 1:
        raise ValueError(f"{PERIOD_SCALE_ENV}={text!r} is not valid; accepted: a number in (0, 1] "
                         "such as 1/60 (a minute per second) or 1 (AWS's timing)")
    return float(scale)


def window_seconds(alarm: Alarm, scale: float = 1.0) -> float:
    """The length of one evaluation window: the Period times ``scale``, never shorter than the
    ticker's interval (nor than the Period itself, when that is shorter)."""
    period = float(alarm.period or 60)
    return max(period * scale, min(period, TICK_SECONDS))


def _tick() -> None:
    """Re-evaluate, every few seconds, the alarms whose state is at least a window (≤ 1 min) old.

    The wait lets a state set by SetAlarmState stand until the next evaluation, as on AWS.
    """
    while True:
        time.sleep(TICK_SECONDS)
        now = datetime.now(UTC).replace(tzinfo=None)  # moto keeps naive UTC timestamps
        scale = period_scale()
        for cloudwatch in list(cloudwatch_backends[ACCOUNT_ID].values()):
            settled = [alarm for alarm in list(cloudwatch.alarms.values())
                       if now - alarm.state_updated_timestamp
                       >= timedelta(seconds=min(window_seconds(alarm, scale), 60))]
            _evaluate_all(cloudwatch, settled)


def evaluate_region(region: str, namespace: str | None = None) -> None:
    """Evaluate every metric alarm of ``region`` (on ``namespace`` only, when given)."""
    cloudwatch = cloudwatch_backends[ACCOUNT_ID][region]
    _evaluate_all(cloudwatch, [alarm for alarm in list(cloudwatch.alarms.values())
                               if namespace is None or alarm.namespace == namespace])


def _evaluate_all(cloudwatch: CloudWatchBackend, alarms: list[Alarm]) -> None:
    """Evaluate ``alarms`` one at a time; a failing alarm is logged and does not stop the rest."""
    if not alarms:
        return
    scale = period_scale()
    with _lock:
        data = cloudwatch.get_all_metrics()
        for alarm in alarms:
            try:
                evaluate(cloudwatch, alarm, data, scale=scale)
            except Exception:  # one bad alarm must not stop the evaluation of the others
                log.exception("could not evaluate alarm %s", alarm.name)


def evaluate(cloudwatch: CloudWatchBackend, alarm: Alarm, data: list,
             now: datetime | None = None, scale: float = 1.0) -> None:
    """Set ``alarm``'s state from its last EvaluationPeriods windows, when that state changes
    (``scale``: the time scale of the windows, 1 for AWS's)."""
    if alarm.metric_data_queries or alarm.rule or alarm.comparison_operator not in OPERATORS:
        return  # metric math, composite and anomaly-detection alarms are not evaluated
    now = now or datetime.now(UTC)
    window = window_seconds(alarm, scale)
    periods = _periods(alarm, now, window)
    step = timedelta(seconds=window)
    stamped = [(_utc(d.timestamp), d) for d in data if _of_metric(alarm, d)]
    points = [_aggregate(alarm, [d for t, d in stamped if start <= t < start + step], start)
              for start in periods]
    decision = _decide(alarm, points)
    if decision is None or decision[0] == alarm.state_value:
        return
    state, reason = decision
    reason_data = _reason_data(alarm, now, periods, points)
    cloudwatch.set_alarm_state(alarm.name, reason, json.dumps(reason_data), state)


def _periods(alarm: Alarm, now: datetime, window: float) -> list[datetime]:
    """Starts of the alarm's evaluation windows, oldest first, the last one containing ``now``."""
    current = math.floor(now.timestamp() / window) * window
    return [datetime.fromtimestamp(current - k * window, UTC)
            for k in reversed(range(int(alarm.evaluation_periods)))]


def _of_metric(alarm: Alarm, datum) -> bool:
    """Whether ``datum`` is of the alarm's metric: namespace, name, exactly its dimensions, unit."""
    return (datum.namespace == alarm.namespace and datum.name == alarm.metric_name
            and _dimensions(datum.dimensions) == _dimensions(alarm.dimensions)
            and (not alarm.unit or datum.unit == alarm.unit))


def _utc(moment: datetime) -> datetime:
    """An aware UTC datetime (moto stores naive UTC or aware ones, depending on the caller)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _dimensions(dimensions) -> set[tuple]:
    return {(d.name, d.value) for d in dimensions}


def _aggregate(alarm: Alarm, data: list, start: datetime) -> tuple[datetime, float | None, float]:
    """(period start, the alarm's statistic over ``data`` or None when empty, sample count)."""
    if not data:
        return start, None, 0.0
    stats = Statistics(["SampleCount", "Sum", "Average", "Minimum", "Maximum"], start)
    stats.metric_data = data
    count = float(stats.sample_count)
    if alarm.extended_statistic:  # pNN over the raw values
        values = [d.value for d in data if isinstance(d, MetricDatum)]
        percentile = float(alarm.extended_statistic[1:])
        return start, float(np.percentile(values, percentile)) if values else None, count
    return start, float(stats.get_statistics_for_type(alarm.statistic)), count


def _decide(alarm: Alarm, points: list) -> tuple[str, str] | None:
    """The new state and AWS's reason, or None when TreatMissingData=ignore keeps the state."""
    present = [(start, value) for start, value, _ in reversed(points) if value is not None]
    missing = len(points) - len(present)
    treat = alarm.treat_missing_data or "missing"
    if present:
        return _decide_on_data(alarm, present, missing, treat == "breaching")
    if treat == "ignore":
        return None
    if treat == "missing":
        return "INSUFFICIENT_DATA", (f"Insufficient Data: {_count(missing, 'datapoint')} "
                                     f"{_was(missing)} unknown.")
    breaching = treat == "breaching"
    state = "ALARM" if breaching and missing >= _needed(alarm) else "OK"
    return state, (f"Threshold Crossed: no datapoints were received for "
                   f"{_count(missing, 'period')} and {_count(missing, 'missing datapoint')} "
                   f"{_was(missing)} treated as [{'Breaching' if breaching else 'NonBreaching'}].")


def _decide_on_data(alarm: Alarm, present: list, missing: int,
                    missing_breaches: bool) -> tuple[str, str]:
    """ALARM when at least DatapointsToAlarm of the periods breach, else OK; AWS's wording."""
    test, wording = OPERATORS[alarm.comparison_operator]
    threshold = float(alarm.threshold)
    total = len(present) + missing
    crossing = [(start, value) for start, value in present if test(value, threshold)]
    if len(crossing) + (missing if missing_breaches else 0) < _needed(alarm):
        return "OK", (f"Threshold Crossed: {_count(len(present), 'datapoint')} {_listing(present)} "
                      f"{_was(len(present))} not {wording} the threshold ({threshold}).")
    if total == 1:
        return "ALARM", (f"Threshold Crossed: 1 datapoint {_listing(crossing)} was {wording} "
                         f"the threshold ({threshold}).")
    return "ALARM", (f"Threshold Crossed: {len(crossing)} out of the last {total} datapoints "
                     f"{_listing(crossing)} {_was(len(crossing))} {wording} the threshold "
                     f"({threshold}) (minimum {_count(_needed(alarm), 'datapoint')} for "
                     f"{alarm.state_value} -> ALARM transition).")


def _needed(alarm: Alarm) -> int:
    """How many breaching periods make an ALARM (DatapointsToAlarm, by default all of them)."""
    return int(alarm.datapoints_to_alarm or alarm.evaluation_periods)


def _was(n: int) -> str:
    return "was" if n == 1 else "were"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _listing(points: list) -> str:
    """``[1.0 (28/11/26 02:10:00), …]``, most recent first, as in AWS's reasons."""
    return "[" + ", ".join(f"{value} ({start:%d/%m/%y %H:%M:%S})" for start, value in points) + "]"


def _reason_data(alarm: Alarm, now: datetime, periods: list, points: list) -> dict:
    """The StateReasonData document AWS attaches to a state change."""
    evaluated = [{"timestamp": _iso(start)} | ({"sampleCount": count, "value": value}
                                               if value is not None else {})
                 for start, value, count in reversed(points)]
    return {"version": "1.0", "queryDate": _iso(now), "startDate": _iso(periods[0]),
            "statistic": alarm.extended_statistic or alarm.statistic, "period": int(alarm.period),
            "recentDatapoints": [value for _, value, _ in points if value is not None],
            "threshold": float(alarm.threshold), "evaluatedDatapoints": evaluated}


def _iso(moment: datetime) -> str:
    """A timestamp as AWS writes them in alarm reason data: ``2026-11-28T02:10:00.000+0000``."""
    millis = moment.microsecond // 1000
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}+0000"


def describe_alarm_history(req: AwsRequest) -> AwsResponse:
    """DescribeAlarmHistory from moto's alarm history, newest first, filtered as AWS filters."""
    params = req.params
    cloudwatch = cloudwatch_backends[ACCOUNT_ID][req.region]
    alarms = [a for a in cloudwatch.alarms.values()
              if params.get("AlarmName") in (None, a.name)]
    items = [item for alarm in alarms for item in history_items(alarm)]
    if kind := params.get("HistoryItemType"):
        items = [item for item in items if item["HistoryItemType"] == kind]
    if "StartDate" in params:
        start = parse_timestamp(params["StartDate"]).timestamp()
        items = [item for item in items if item["Timestamp"] >= start]
    if "EndDate" in params:
        end = parse_timestamp(params["EndDate"]).timestamp()
        items = [item for item in items if item["Timestamp"] <= end]
    items.sort(key=lambda item: item["Timestamp"],
               reverse=params.get("ScanBy", "TimestampDescending") == "TimestampDescending")
    return AwsResponse.json({"AlarmHistoryItems": items[: int(params.get("MaxRecords") or 100)]},
                            headers={"Content-Type": "application/x-amz-json-1.0"})


def history_items(alarm: Alarm) -> list[dict]:
    """The alarm's creation and state changes as AWS's AlarmHistoryItems.

    moto's ``update_state`` records the state being *left* (reason, data, value, since); the
    state entered is the next record, or the alarm's current state for the last change.
    """
    current = (alarm.state_reason, alarm.state_reason_data, alarm.state_value,
               alarm.state_updated_timestamp)
    states = [record[1:] for record in alarm.history] + [current]
    items = [_item(alarm, "ConfigurationUpdate", alarm.configuration_updated_timestamp,
                   f'Alarm "{alarm.name}" created', {"type": "Create", "version": "1.0"})]
    for old, new in itertools.pairwise(states):
        items.append(_item(alarm, "StateUpdate", new[3], f"Alarm updated from {old[2]} to {new[2]}",
                           {"version": "1.0", "oldState": _state(old), "newState": _state(new)}))
    return items


def _state(record: tuple) -> dict:
    reason, reason_data, value, _ = record
    state = {"stateValue": value, "stateReason": reason}
    if reason_data and reason_data != "{}":
        state["stateReasonData"] = json.loads(reason_data)
    return state


def _item(alarm: Alarm, kind: str, when: datetime, summary: str, data: dict) -> dict:
    return {"AlarmName": alarm.name, "AlarmType": "MetricAlarm",
            "Timestamp": _utc(when).timestamp(), "HistoryItemType": kind,
            "HistorySummary": summary, "HistoryData": json.dumps(data)}
