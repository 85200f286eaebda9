"""Delete everything the walkthrough created, in dependency order, and list what is left.

On AWS this is what stops the bill: storage (buckets, logs), the secret's monthly fee, alarms
and the trail's deliveries. CloudTrail's own event history of the account (90 days of management
events) is not a resource and stays, recording the teardown itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from picsel_nb.stack import (
    athena,
    buckets,
    catalog,
    function,
    job,
    monitoring,
    roles,
    secret,
    trail,
)
from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import error_code

TRAIL_BUCKET_ATTEMPTS = 3  # CloudTrail may deliver a last file just after the trail is deleted
TRAIL_BUCKET_PAUSE_S = 5.0


def _names(done: bool, *names: str) -> list[str]:
    return list(names) if done else []


def _delete_trail_bucket(stack: Stack) -> bool:
    """Delete the trail's bucket, emptying it again if a late delivery lands while it is emptied."""
    for attempt in range(1, TRAIL_BUCKET_ATTEMPTS + 1):
        try:
            return buckets.delete_bucket(stack, stack.names.trail_bucket)
        except ClientError as exc:
            if attempt == TRAIL_BUCKET_ATTEMPTS or error_code(exc) != "BucketNotEmpty":
                raise
            time.sleep(TRAIL_BUCKET_PAUSE_S)
    return False


def teardown(stack: Stack, say: Callable[[str], None] = lambda _: None) -> dict[str, list[str]]:
    """Delete every resource of the walkthrough, dependents first, each step tolerating what is
    already gone (so it can run again); what was deleted, by kind."""
    names = stack.names
    run_ids = monitoring.job_run_ids(stack)  # their log streams outlive the job: collected first
    steps: list[tuple[str, Callable[[], list[str]]]] = [
        ("trail", lambda: _names(trail.delete_trail(stack), names.trail)),
        ("alarms", lambda: monitoring.delete_alarms(stack)),
        ("dashboard", lambda: _names(monitoring.delete_dashboard(stack),
                                     monitoring.dashboard_name(stack))),
        ("workgroup", lambda: _names(athena.delete_workgroup(stack), names.workgroup)),
        ("crawler", lambda: _names(catalog.delete_crawler(stack), names.crawler)),
        ("database", lambda: _names(catalog.delete_database(stack), names.database)),
        ("job", lambda: _names(job.delete_job(stack), names.glue_job)),
        ("function", lambda: _names(function.delete_function(stack), names.lambda_function)),
        ("roles", lambda: [role for role in (names.lambda_role, names.glue_role,
                                             names.crawler_role)
                           if roles.delete_role(stack, role)]),
        ("secret", lambda: _names(secret.delete_secret(stack, force=True), names.secret)),
        ("logs", lambda: monitoring.delete_log_groups(stack, run_ids)),
        ("buckets", lambda: [bucket for bucket in (names.input_bucket, names.output_bucket)
                             if buckets.delete_bucket(stack, bucket)]),
        ("trail bucket", lambda: _names(_delete_trail_bucket(stack), names.trail_bucket)),
    ]
    deleted = {}
    for kind, step in steps:
        deleted[kind] = step()
        say(f"{kind}: {', '.join(deleted[kind]) or 'nothing to delete'}")
    return deleted


def _listed(stack: Stack, service: str, operation: str, key: str, name: str,
            **params: Any) -> list[str]:
    """The `name` of every item under `key` of a listing (every page) that carries the
    walkthrough's prefix ("picsel-…", the secret's "picsel/…", the database's "picsel_…")."""
    client = stack.client(service)
    prefix = stack.settings.prefix
    prefixes = (f"{prefix}-", f"{prefix}/", f"{prefix.replace('-', '_')}_")
    if client.can_paginate(operation):
        pages = client.get_paginator(operation).paginate(**params)
    else:
        pages = [getattr(client, operation)(**params)]
    return sorted(item[name] for page in pages for item in page.get(key, [])
                  if item[name].startswith(prefixes))


def leftovers(stack: Stack) -> dict[str, list[str]]:
    """What the walkthrough created and is still there, by kind, found by asking each service for
    the names that carry the walkthrough's prefix (empty lists once torn down)."""
    prefix = stack.settings.prefix
    return {
        "trails": [t["Name"] for t in stack.client("cloudtrail").describe_trails()["trailList"]
                   if t["Name"].startswith(f"{prefix}-")],
        "alarms": _listed(stack, "cloudwatch", "describe_alarms", "MetricAlarms", "AlarmName",
                          AlarmNamePrefix=f"{prefix}-"),
        "dashboards": monitoring.dashboards(stack),
        "workgroups": _listed(stack, "athena", "list_work_groups", "WorkGroups", "Name"),
        "crawlers": _listed(stack, "glue", "get_crawlers", "Crawlers", "Name"),
        "databases": _listed(stack, "glue", "get_databases", "DatabaseList", "Name"),
        "jobs": _listed(stack, "glue", "get_jobs", "Jobs", "Name"),
        "functions": _listed(stack, "lambda", "list_functions", "Functions", "FunctionName"),
        "layers": _listed(stack, "lambda", "list_layers", "Layers", "LayerName"),
        "roles": _listed(stack, "iam", "list_roles", "Roles", "RoleName"),
        "secrets": _listed(stack, "secretsmanager", "list_secrets", "SecretList", "Name",
                           IncludePlannedDeletion=True),
        "log groups": monitoring.own_log_groups(stack, monitoring.job_run_ids(stack)),
        "buckets": _listed(stack, "s3", "list_buckets", "Buckets", "Name"),
    }
