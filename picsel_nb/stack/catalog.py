"""The Data Catalog side of the pipeline: a database, a crawler over the contours' catalog form
(``s3://<output>/catalog/contours/variable=<v>/date=<d>/``), running it, and what it made.

The crawler makes one table, ``contours``, partitioned by (variable, date): one row per band with
flat columns (see ``picsel_nb.products``), so Athena can filter by date and variable and read each
band's geometry — not the single array-of-features column of the original pipeline.
"""

from __future__ import annotations

import json
import time
from typing import Any

from picsel_nb.products import CATALOG_PREFIX
from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import retry_while_role_propagates, tolerate
from picsel_nb.stack.roles import ensure_crawler_role
from picsel_nb.stack.waiters import wait_for_crawler

TABLE = "contours"  # a crawler names the table after the target's last folder
SCHEMA_CHANGE_POLICY = {"UpdateBehavior": "UPDATE_IN_DATABASE",
                        "DeleteBehavior": "DEPRECATE_IN_DATABASE"}
RECRAWL_POLICY = {"RecrawlBehavior": "CRAWL_EVERYTHING"}
# One table for every partition (their schemas are compatible), whose partitions take its schema.
CONFIGURATION = {
    "Version": 1.0,
    "Grouping": {"TableGroupingPolicy": "CombineCompatibleSchemas"},
    "CrawlerOutput": {"Partitions": {"AddOrUpdateBehavior": "InheritFromTable"}},
}


def ensure_database(stack: Stack) -> dict:
    """Create the catalog database unless it exists; its description."""
    glue, name = stack.client("glue"), stack.names.database
    with tolerate("AlreadyExistsException"):
        glue.create_database(DatabaseInput={
            "Name": name, "Description": "picsel-nb: daily ERA5 contours, one row per band"})
    return glue.get_database(Name=name)["Database"]


def delete_database(stack: Stack) -> bool:
    """Delete the database and its tables; False when it did not exist."""
    with tolerate("EntityNotFoundException"):
        stack.client("glue").delete_database(Name=stack.names.database)
        return True
    return False


def target_path(stack: Stack) -> str:
    """The S3 path the crawler reads: the catalog form of the contours."""
    return f"s3://{stack.names.output_bucket}/{CATALOG_PREFIX}"


def crawler_definition(stack: Stack, role_arn: str) -> dict:
    """The crawler's settings as create_crawler/update_crawler take them (without its Name)."""
    return {
        "Role": role_arn,
        "DatabaseName": stack.names.database,
        "Description": "picsel-nb: catalogs the daily contours (one row per band)",
        "Targets": {"S3Targets": [{"Path": target_path(stack)}]},
        "SchemaChangePolicy": SCHEMA_CHANGE_POLICY,
        "RecrawlPolicy": RECRAWL_POLICY,
        "Configuration": json.dumps(CONFIGURATION, sort_keys=True),
    }


def get_crawler(stack: Stack) -> dict | None:
    """The crawler as Glue describes it, or None when it does not exist."""
    with tolerate("EntityNotFoundException"):
        return stack.client("glue").get_crawler(Name=stack.names.crawler)["Crawler"]
    return None


def _differs(current: dict, wanted: dict) -> bool:
    """Whether the crawler's current settings differ from `wanted` (JSON compared parsed)."""
    for key, value in wanted.items():
        have = current.get(key)
        if key == "Configuration":
            have, value = json.loads(have or "{}"), json.loads(value)
        elif key == "Targets":
            have = {"S3Targets": [{"Path": t["Path"]} for t in (have or {}).get("S3Targets", [])]}
        elif key == "Role":  # Glue may hand back the role's name rather than its ARN
            have, value = (have or "").rsplit("/", 1)[-1], value.rsplit("/", 1)[-1]
        if have != value:
            return True
    return False


def _with_role_retries(call, **kwargs) -> Any:
    """`call(**kwargs)`, retried while Glue cannot assume the (new) crawler role yet."""
    return retry_while_role_propagates(call, "InvalidInputException", "assume", **kwargs)


def ensure_crawler(stack: Stack, role_arn: str | None = None) -> dict:
    """Create the crawler, or update it where it differs; its description.

    The role defaults to the crawler role of ``roles.py`` (read catalog/contours/, write the table).
    """
    ensure_database(stack)
    glue, name = stack.client("glue"), stack.names.crawler
    wanted = crawler_definition(stack, role_arn or ensure_crawler_role(stack))
    current = get_crawler(stack)
    if current is None:
        _with_role_retries(glue.create_crawler, Name=name, **wanted)
    elif _differs(current, wanted):
        _with_role_retries(glue.update_crawler, Name=name, **wanted)
    return get_crawler(stack)


def run_crawler(stack: Stack, deadline_s: float = 600, delay_s: float = 2.0) -> dict:
    """Start a crawl (or join the one running) and wait until the crawler is READY again.

    Returns the last crawl: status (SUCCEEDED | FAILED | CANCELLED), error, duration and where
    its log lines are.
    """
    glue, name = stack.client("glue"), stack.names.crawler
    started = time.monotonic()
    with tolerate("CrawlerRunningException"):
        glue.start_crawler(Name=name)
    crawler = wait_for_crawler(glue, name, deadline_s, delay_s)
    last = crawler.get("LastCrawl", {})
    return {"status": last.get("Status"), "error": last.get("ErrorMessage"),
            "duration_s": round(time.monotonic() - started, 1),
            "log_group": last.get("LogGroup"), "log_stream": last.get("LogStream"),
            "started": last.get("StartTime")}


def _partition_values(glue: Any, database: str, table: str) -> list[list[str]]:
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table)
    return sorted(partition["Values"] for page in pages for partition in page["Partitions"])


def describe_tables(stack: Stack) -> list[dict]:
    """Every table of the database: name, columns [(name, type)], partition keys, partitions
    (their values, sorted) and S3 location."""
    glue, database = stack.client("glue"), stack.names.database
    pages = glue.get_paginator("get_tables").paginate(DatabaseName=database)
    return [{
        "name": table["Name"],
        "columns": [(c["Name"], c["Type"]) for c in table["StorageDescriptor"].get("Columns", [])],
        "partition_keys": [key["Name"] for key in table.get("PartitionKeys", [])],
        "partitions": _partition_values(glue, database, table["Name"]),
        "location": table["StorageDescriptor"].get("Location"),
        "classification": table.get("Parameters", {}).get("classification"),
        "updated": table.get("UpdateTime", table.get("CreateTime")),
    } for page in pages for table in page["TableList"]]


def delete_crawler(stack: Stack) -> bool:
    """Delete the crawler (not the tables it made); False when it did not exist."""
    with tolerate("EntityNotFoundException"):
        stack.client("glue").delete_crawler(Name=stack.names.crawler)
        return True
    return False

