"""Athena over the contours table: a workgroup whose results stay private, and queries as DataFrames.

Results go to ``s3://<input>/athena-results/``: the input bucket has Block Public Access on and no
public statement, while the output bucket's policy makes ``products/`` public — a results prefix
there would be one policy edit away from publishing every query's answer. The workgroup enforces
that location, so no caller can send results elsewhere. The queries are Trino SQL that DuckDB (the
embedded cloud) runs the same way, over one-line JSON records (Athena's JSON SerDe).
"""

from __future__ import annotations

import pandas as pd

from picsel_nb.stack.catalog import TABLE
from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import StackError, tolerate
from picsel_nb.stack.waiters import wait_for_query

RESULTS_PREFIX = "athena-results/"
PANDAS_TYPES = {"bigint": "Int64", "integer": "Int64", "smallint": "Int64", "tinyint": "Int64",
                "double": "float64", "real": "float64", "decimal": "float64",
                "boolean": "boolean"}


def results_location(stack: Stack) -> str:
    """Where the workgroup writes query results (private: the input bucket)."""
    return f"s3://{stack.names.input_bucket}/{RESULTS_PREFIX}"


def workgroup_configuration(stack: Stack) -> dict:
    """The workgroup's settings: its enforced, encrypted results location, engine version 3."""
    return {"ResultConfiguration": {"OutputLocation": results_location(stack),
                                    "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"}},
            "EnforceWorkGroupConfiguration": True, "PublishCloudWatchMetricsEnabled": False,
            "EngineVersion": {"SelectedEngineVersion": "Athena engine version 3"}}


def ensure_workgroup(stack: Stack) -> dict:
    """Create the workgroup, or point it back at its results location; its description."""
    athena, name = stack.client("athena"), stack.names.workgroup
    wanted = workgroup_configuration(stack)
    with tolerate("InvalidRequestException"):
        athena.create_work_group(Name=name, Configuration=wanted,
                                 Description="picsel-nb: queries over the contours table")
    current = athena.get_work_group(WorkGroup=name)["WorkGroup"]["Configuration"]
    if (current.get("ResultConfiguration", {}).get("OutputLocation") != results_location(stack)
            or not current.get("EnforceWorkGroupConfiguration")):
        athena.update_work_group(WorkGroup=name, ConfigurationUpdates={
            "ResultConfigurationUpdates": wanted["ResultConfiguration"],
            "EnforceWorkGroupConfiguration": True})
    return athena.get_work_group(WorkGroup=name)["WorkGroup"]


def delete_workgroup(stack: Stack) -> bool:
    """Delete the workgroup and its query history; False when it did not exist."""
    athena = stack.client("athena")
    with tolerate("InvalidRequestException"):
        athena.get_work_group(WorkGroup=stack.names.workgroup)
        athena.delete_work_group(WorkGroup=stack.names.workgroup, RecursiveDeleteOption=True)
        return True
    return False


def query(stack: Stack, sql: str, deadline_s: float = 300) -> pd.DataFrame:
    """Run ``sql`` in the workgroup against the catalog database; its rows, typed from
    Athena's ColumnInfo. StackError with Athena's reason when the query fails."""
    athena = stack.client("athena")
    execution_id = athena.start_query_execution(
        QueryString=sql, WorkGroup=stack.names.workgroup,
        QueryExecutionContext={"Database": stack.names.database})["QueryExecutionId"]
    status = wait_for_query(athena, execution_id, deadline_s)["Status"]
    if status["State"] != "SUCCEEDED":
        raise StackError(f"Athena query {status['State']}: {status.get('StateChangeReason')}")
    pages = athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id)
    columns, rows = [], []
    for page in pages:
        columns = page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
        rows += [[cell.get("VarCharValue") for cell in row["Data"]]
                 for row in page["ResultSet"]["Rows"]]
    frame = pd.DataFrame(rows[1:], columns=[c["Name"] for c in columns])
    for column in columns:
        kind = PANDAS_TYPES.get(column["Type"])
        if kind == "boolean":
            frame[column["Name"]] = frame[column["Name"]].map({"true": True, "false": False})
        elif kind:
            frame[column["Name"]] = pd.to_numeric(frame[column["Name"]]).astype(kind)
    return frame


def wet_days(stack: Stack, threshold_mm: float = 20) -> pd.DataFrame:
    """The days with more than ``threshold_mm`` of precipitation anywhere, and over how many km²
    (the bands whose lower bound is at least the threshold; it should be one of the levels)."""
    return query(stack, f"""
        SELECT "date", sum(area_km2) AS area_km2, count(*) AS bands, max(lower) AS highest_band
        FROM {TABLE}
        WHERE variable = 'tp' AND lower >= {float(threshold_mm)}
        GROUP BY "date"
        ORDER BY "date\"""")


def warmest_bands(stack: Stack) -> pd.DataFrame:
    """The warmest temperature band of each day, with its area."""
    return query(stack, f"""
        SELECT "date", label, lower, upper, area_km2
        FROM (SELECT "date", label, lower, upper, area_km2,
                     row_number() OVER (PARTITION BY "date" ORDER BY lower DESC NULLS LAST) AS n
              FROM {TABLE} WHERE variable = 't2m')
        WHERE n = 1
        ORDER BY "date\"""")


def day_bands(stack: Stack, variable: str, day: str) -> pd.DataFrame:
    """Every band of one variable on one day: a query that reads one partition only."""
    if variable not in ("t2m", "tp") or len(day) != 10:
        raise ValueError(f"variable {variable!r} / day {day!r} not valid; accepted: t2m or tp, "
                         "and a YYYY-MM-DD day")
    return query(stack, f"""
        SELECT band, label, lower, upper, units, area_km2, west, south, east, north
        FROM {TABLE}
        WHERE variable = '{variable}' AND "date" = '{day}'
        ORDER BY band""")
