"""Direct access to moto's in-process state, for the executors that run beside it.

Executors read what moto stored (function code, job definitions, bucket objects) and write what
AWS itself would produce (log events, metric data, catalog tables) without a round trip over HTTP,
so none of it shows up as a caller's API event in CloudTrail.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from moto.cloudwatch.models import cloudwatch_backends
from moto.core.base_backend import BaseBackend
from moto.logs.models import logs_backends
from moto.s3.models import s3_backends

from picsel_nb.localcloud.router import ACCOUNT_ID

_metric_listeners: list = []
_logs_lock = threading.Lock()  # parallel writers must not both create the same group or stream


def backend(service: str, region: str, account_id: str = ACCOUNT_ID) -> BaseBackend:
    """moto's backend of ``service`` (its moto module name, e.g. "glue", "awslambda")."""
    from moto.backends import get_backend

    return get_backend(service)[account_id][region]


def s3_backend(account_id: str = ACCOUNT_ID):
    """moto's S3 backend (bucket names are global: one backend per account)."""
    return s3_backends[account_id]["aws"]


def read_object(bucket: str, key: str) -> bytes:
    """The bytes of ``s3://bucket/key``; raises KeyError when there is no such object."""
    obj = s3_backend().get_object(bucket, key)
    if obj is None:
        raise KeyError(f"s3://{bucket}/{key} does not exist")
    return obj.value


def list_keys(bucket: str, prefix: str = "") -> list[str]:
    """Every key of ``bucket`` under ``prefix``, sorted."""
    keys = s3_backend().get_bucket(bucket).keys
    return sorted(k for k in keys if k.startswith(prefix))


def write_object(bucket: str, key: str, body: bytes, content_type: str | None = None) -> None:
    """Store ``body`` at ``s3://bucket/key`` as AWS itself would (no caller, no API event)."""
    obj = s3_backend().put_object(bucket, key, body)
    if content_type:
        obj.set_metadata({"Content-Type": content_type})


def write_logs(region: str, group: str, stream: str, messages: list[str],
               timestamps_ms: list[int] | None = None) -> None:
    """Append ``messages`` to a log stream, creating the group and stream when missing."""
    if not messages:
        return
    logs = logs_backends[ACCOUNT_ID][region]
    now = int(time.time() * 1000)
    stamps = timestamps_ms or [now] * len(messages)
    events = [{"timestamp": t, "message": m} for t, m in zip(stamps, messages)]
    with _logs_lock:
        if group not in logs.groups:
            logs.create_log_group(group, tags={})
        if stream not in logs.groups[group].streams:
            logs.create_log_stream(group, stream)
        logs.put_log_events(group, stream, events)
    for message in messages:
        for namespace, metrics in embedded_metrics(message):
            put_metrics(region, namespace, metrics)


def embedded_metrics(message: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """The metrics of a log line in CloudWatch's embedded metric format (EMF), as CloudWatch Logs
    extracts them on AWS: ``[(namespace, [{"MetricName", "Value", "Unit", "Dimensions"}])]``."""
    if not message.startswith("{") or '"_aws"' not in message:
        return []
    try:
        record = json.loads(message)
        directives = record["_aws"]["CloudWatchMetrics"]
    except (ValueError, KeyError, TypeError):
        return []
    found = []
    for directive in directives:
        dimension_sets = directive.get("Dimensions") or [[]]
        metrics = []
        for metric in directive.get("Metrics", []):
            values = record.get(metric["Name"])
            for value in values if isinstance(values, list) else [values]:
                if not isinstance(value, int | float):
                    continue
                for names in dimension_sets:
                    dims = [{"Name": n, "Value": str(record.get(n, ""))} for n in names]
                    metrics.append({"MetricName": metric["Name"], "Value": float(value),
                                    "Unit": metric.get("Unit", "None"), "Dimensions": dims})
        if metrics:
            found.append((directive["Namespace"], metrics))
    return found


def on_metric_data(listener) -> None:
    """Call ``listener(region, namespace)`` whenever metric data is stored (alarms use it)."""
    _metric_listeners.append(listener)


def notify_metric_data(region: str, namespace: str) -> None:
    """Tell the listeners that ``namespace`` got new data in ``region``."""
    for listener in _metric_listeners:
        listener(region, namespace)


def put_metrics(region: str, namespace: str, metrics: list[dict[str, Any]]) -> None:
    """Store metric data as the AWS service itself emits it, then let alarms react.

    Each item: ``{"MetricName", "Value", "Unit"?, "Dimensions"?: [{"Name", "Value"}]}``.
    """
    stamp = datetime.now(UTC).replace(tzinfo=None)  # moto keeps and compares naive UTC
    data = [{"Timestamp": stamp} | m for m in metrics]
    cloudwatch_backends[ACCOUNT_ID][region].put_metric_data(namespace, data)
    notify_metric_data(region, namespace)
