"""Athena on the embedded cloud: SQL over the Glue catalog on DuckDB, results in S3, Athena's
errors and permissions."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from tests.cloud_fixtures import cloud, poll  # noqa: F401

BUCKET = "athena-test-data"
RESULTS = "athena-test-results"
DATABASE = "athena_test"
DAYS = ["2023-09-01", "2023-09-02", "2023-09-03"]
COLUMNS = [("band", "bigint"), ("lower", "double"), ("upper", "double"), ("label", "string"),
           ("units", "string"), ("area_km2", "double"), ("wet", "boolean")]
MANY = 2500  # rows of the unpartitioned table: GetQueryResults pages of at most 1000
OUTPUT = f"s3://{RESULTS}/queries/"
GLUE = "arn:aws:glue:sa-east-1:123456789012"


def band_rows(variable: str, day: str) -> list[dict]:
    """Rows shaped like the contours' catalog form; open bands have a null bound."""
    offset = DAYS.index(day)
    rows = []
    for band in range(5):
        lower = None if band == 0 else float(band * 10)
        upper = None if band == 4 else float(band * 10 + 10)
        rows.append({"band": band, "lower": lower, "upper": upper,
                     "label": f"{variable} band \"{band}\"", "units": "mm",
                     "area_km2": round(1000.5 * (band + 1) + 7 * offset, 1),
                     "wet": variable == "tp" and band > 1, "ignored": "not a column"})
    return rows


def ndjson(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def table_input(name: str, location: str, partitioned: bool) -> dict:
    return {
        "Name": name, "TableType": "EXTERNAL_TABLE",
        "PartitionKeys": [{"Name": "variable", "Type": "string"},
                          {"Name": "date", "Type": "string"}] if partitioned else [],
        "Parameters": {"classification": "json"},
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": t} for n, t in COLUMNS], "Location": location,
            "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
            "SerdeInfo": {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe"}},
    }


@pytest.fixture(scope="module")
def data(cloud):  # noqa: F811
    """A partitioned table ``bands`` (2 variables × 3 days), an unpartitioned ``many`` of 2500
    rows, a CSV table ``plain``, a results bucket and a workgroup writing to it."""
    s3, glue, athena = cloud.client("s3"), cloud.client("glue"), cloud.client("athena")
    for bucket in (BUCKET, RESULTS):
        s3.create_bucket(Bucket=bucket,
                         CreateBucketConfiguration={"LocationConstraint": "sa-east-1"})
    glue.create_database(DatabaseInput={"Name": DATABASE})
    glue.create_table(DatabaseName=DATABASE,
                      TableInput=table_input("bands", f"s3://{BUCKET}/bands/", True))
    rows = []
    for variable in ("t2m", "tp"):
        for day in DAYS:
            folder = f"bands/variable={variable}/date={day}/"
            s3.put_object(Bucket=BUCKET, Key=folder + "part-0000.json",
                          Body=ndjson(band_rows(variable, day)))
            s3.put_object(Bucket=BUCKET, Key=folder + "_SUCCESS", Body=b"not json")
            storage = table_input("bands", f"s3://{BUCKET}/{folder}", True)["StorageDescriptor"]
            glue.create_partition(DatabaseName=DATABASE, TableName="bands", PartitionInput={
                "Values": [variable, day], "StorageDescriptor": storage})
            rows += [{**row, "variable": variable, "date": day}
                     for row in band_rows(variable, day)]
    many = [{"band": i, "lower": i / 4, "upper": None, "label": f"row {i}", "units": "mm",
             "area_km2": i * 1.5, "wet": i % 2 == 0} for i in range(MANY)]
    s3.put_object(Bucket=BUCKET, Key="many/part-0000.json", Body=ndjson(many))
    glue.create_table(DatabaseName=DATABASE,
                      TableInput=table_input("many", f"s3://{BUCKET}/many/", False))
    plain = table_input("plain", f"s3://{BUCKET}/plain/", False)
    plain["StorageDescriptor"]["Columns"] = [{"Name": "name", "Type": "string"},
                                             {"Name": "n", "Type": "bigint"}]
    plain["StorageDescriptor"]["SerdeInfo"] = {
        "SerializationLibrary": "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
        "Parameters": {"field.delim": ","}}
    plain["Parameters"] = {"classification": "csv", "skip.header.line.count": "1"}
    s3.put_object(Bucket=BUCKET, Key="plain/a.csv", Body=b"name,n\nx,1\ny,2\n")
    glue.create_table(DatabaseName=DATABASE, TableInput=plain)
    athena.create_work_group(Name="analysts", Configuration={
        "ResultConfiguration": {"OutputLocation": OUTPUT}})
    return pd.DataFrame(rows)


@pytest.fixture
def aws(cloud, data):  # noqa: F811
    """The cloud, once the test data is there."""
    return cloud


def execute(athena, sql: str, workgroup: str = "analysts", **kwargs) -> dict:
    """Start a query and wait for its final state; its QueryExecution."""
    execution_id = athena.start_query_execution(
        QueryString=sql, WorkGroup=workgroup,
        QueryExecutionContext={"Database": DATABASE}, **kwargs)["QueryExecutionId"]

    def finished():
        execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
        return execution if execution["Status"]["State"] in (
            "SUCCEEDED", "FAILED", "CANCELLED") else None

    return poll(finished, timeout=60, interval=0.05)


def frame(athena, execution_id: str) -> pd.DataFrame:
    """Every page of a query's results as text (None for NULL), header row dropped."""
    pages = athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id)
    rows = [[cell.get("VarCharValue") for cell in row["Data"]]
            for page in pages for row in page["ResultSet"]["Rows"]]
    return pd.DataFrame(rows[1:], columns=rows[0])


def succeeded(athena, sql: str, **kwargs) -> dict:
    execution = execute(athena, sql, **kwargs)
    assert execution["Status"]["State"] == "SUCCEEDED", execution["Status"]
    return execution


# --- results --------------------------------------------------------------------------------


def test_wet_days_match_pandas_over_the_same_rows(aws, data):
    athena = aws.client("athena")
    execution = succeeded(athena, 'SELECT "date", count(*) AS bands, sum(area_km2) AS km2 '
                                  "FROM bands WHERE variable = 'tp' AND lower >= 20 "
                                  'GROUP BY "date" ORDER BY "date"')
    got = frame(athena, execution["QueryExecutionId"])
    wet = data[(data.variable == "tp") & (data.lower >= 20)]
    expected = wet.groupby("date").agg(bands=("band", "size"), km2=("area_km2", "sum"))
    assert got["date"].tolist() == expected.index.tolist()
    assert got["bands"].astype(int).tolist() == expected["bands"].tolist()
    assert got["km2"].astype(float).tolist() == pytest.approx(expected["km2"].tolist())


def test_top_band_per_day_with_a_window_matches_pandas(aws, data):
    athena = aws.client("athena")
    sql = ('SELECT "date", label, lower FROM (SELECT "date", label, lower, row_number() OVER '
           '(PARTITION BY "date" ORDER BY lower DESC NULLS LAST) AS n FROM "athena_test"."bands"'
           " WHERE variable = 't2m') WHERE n = 1 ORDER BY \"date\"")
    got = frame(athena, succeeded(athena, sql)["QueryExecutionId"])
    top = data[data.variable == "t2m"].sort_values("lower", na_position="first").groupby("date").tail(1)
    assert got["label"].tolist() == top.sort_values("date")["label"].tolist()
    assert got["lower"].astype(float).tolist() == top.sort_values("date")["lower"].tolist()


def test_results_have_the_header_row_first_and_athena_types(aws):
    athena = aws.client("athena")
    execution = succeeded(athena, "SELECT band, lower, label, wet, variable, sum(band) AS s, "
                                  "7 / 2 AS half, CAST(1.5 AS decimal(3,1)) AS d FROM bands "
                                  "WHERE band = 0 AND \"date\" = '2023-09-01' GROUP BY 1,2,3,4,5 "
                                  "ORDER BY variable")
    page = athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"])
    info = page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    assert [(c["Name"], c["Type"]) for c in info] == [
        ("band", "bigint"), ("lower", "double"), ("label", "varchar"), ("wet", "boolean"),
        ("variable", "varchar"), ("s", "bigint"), ("half", "integer"), ("d", "decimal")]
    assert (info[7]["Precision"], info[7]["Scale"]) == (3, 1)
    rows = page["ResultSet"]["Rows"]
    assert [cell["VarCharValue"] for cell in rows[0]["Data"]] == [c["Name"] for c in info]
    first = rows[1]["Data"]
    assert first[0] == {"VarCharValue": "0"} and first[1] == {}  # NULL: no VarCharValue
    assert [c.get("VarCharValue") for c in first[2:]] == [
        't2m band "0"', "false", "t2m", "0", "3", "1.5"]  # integer division, as in Trino


def test_the_where_on_partition_keys_reads_only_those_partitions(aws):
    athena, s3 = aws.client("athena"), aws.client("s3")
    sizes = {item["Key"]: item["Size"] for item in s3.list_objects_v2(
        Bucket=BUCKET, Prefix="bands/")["Contents"] if item["Key"].endswith(".json")}
    pruned = succeeded(athena, "SELECT count(*) FROM bands WHERE variable = 'tp' "
                               "AND \"date\" = '2023-09-02'")
    everything = succeeded(athena, "SELECT count(*) FROM bands")
    assert pruned["Statistics"]["DataScannedInBytes"] == sizes[
        "bands/variable=tp/date=2023-09-02/part-0000.json"]
    assert everything["Statistics"]["DataScannedInBytes"] == sum(sizes.values())
    assert frame(athena, pruned["QueryExecutionId"]).iloc[0, 0] == "5"


def test_pages_of_at_most_1000_rows_cover_every_row_once(aws):
    athena = aws.client("athena")
    execution = succeeded(athena, "SELECT band, label FROM many ORDER BY band")
    pages = list(athena.get_paginator("get_query_results").paginate(
        QueryExecutionId=execution["QueryExecutionId"]))
    assert [len(page["ResultSet"]["Rows"]) for page in pages] == [1000, 1000, 501]
    got = frame(athena, execution["QueryExecutionId"])
    assert got["band"].astype(int).tolist() == list(range(MANY))
    small = athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"],
                                     MaxResults=10)
    assert len(small["ResultSet"]["Rows"]) == 10 and "NextToken" in small
    with pytest.raises(ClientError, match="less than or equal to 1000"):
        athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"],
                                 MaxResults=1001)


def test_the_results_file_and_its_metadata_are_in_the_output_location(aws):
    athena, s3 = aws.client("athena"), aws.client("s3")
    execution = succeeded(athena, "SELECT band, upper, label FROM bands WHERE variable = 'tp' "
                                  "AND \"date\" = '2023-09-01' ORDER BY band")
    location = execution["ResultConfiguration"]["OutputLocation"]
    assert location == f"{OUTPUT}{execution['QueryExecutionId']}.csv"
    key = location.removeprefix(f"s3://{RESULTS}/")
    body = s3.get_object(Bucket=RESULTS, Key=key)["Body"].read().decode()
    lines = body.splitlines()
    assert lines[0] == '"band","upper","label"'
    assert lines[1] == '"0","10.0","tp band ""0"""'
    assert lines[5] == '"4",,"tp band ""4"""'  # NULL: an empty unquoted field
    assert list(csv.reader(io.StringIO(body)))[1:] == frame(
        athena, execution["QueryExecutionId"]).fillna("").values.tolist()
    metadata = json.loads(s3.get_object(Bucket=RESULTS, Key=f"{key}.metadata")["Body"].read())
    assert [c["Type"] for c in metadata["ColumnInfo"]] == ["bigint", "double", "varchar"]


def test_a_csv_table_is_read_with_its_delimiter_and_header(aws):
    athena = aws.client("athena")
    got = frame(athena, succeeded(athena, "SELECT name, n * 10 AS n FROM plain ORDER BY n")[
        "QueryExecutionId"])
    assert got.values.tolist() == [["x", "10"], ["y", "20"]]


def test_enforced_workgroup_location_wins_over_the_request(aws):
    athena = aws.client("athena")
    execution = succeeded(athena, "SELECT 1", ResultConfiguration={
        "OutputLocation": f"s3://{RESULTS}/elsewhere/"})
    assert execution["ResultConfiguration"]["OutputLocation"].startswith(OUTPUT)
    athena.create_work_group(Name="free", Configuration={"EnforceWorkGroupConfiguration": False,
                                                         "ResultConfiguration": {
                                                             "OutputLocation": OUTPUT}})
    own = succeeded(athena, "SELECT 1", workgroup="free", ResultConfiguration={
        "OutputLocation": f"s3://{RESULTS}/elsewhere/"})
    assert own["ResultConfiguration"]["OutputLocation"].startswith(f"s3://{RESULTS}/elsewhere/")


# --- errors ---------------------------------------------------------------------------------


def test_no_output_location_is_refused_as_athena_refuses_it(aws):
    with pytest.raises(ClientError) as raised:
        aws.client("athena").start_query_execution(QueryString="SELECT 1")
    assert raised.value.response["Error"]["Code"] == "InvalidRequestException"
    assert raised.value.response["Error"]["Message"].startswith("No output location provided.")


@pytest.mark.parametrize(("sql", "reason"), [
    ("SELECT band\nFORM bands", "line 2:6: mismatched input 'bands'"),
    ("SELECT band FROM nosuch", ("TABLE_NOT_FOUND: line 1:18: Table "
                                 "'awsdatacatalog.athena_test.nosuch' does not exist")),
    ("SELECT * FROM nodb.bands", "SCHEMA_NOT_FOUND: line 1:15: Schema 'nodb' does not exist"),
    ("SELECT band, colour FROM bands", ("COLUMN_NOT_FOUND: line 1:14: Column 'colour' cannot "
                                        "be resolved or requester is not authorized to access "
                                        "requested resources")),
    ("CREATE TABLE x (a int)", "NOT_SUPPORTED"),
    ("SELECT * FROM read_text('/etc/hostname')", "GENERIC_USER_ERROR"),
])
def test_a_bad_query_fails_in_athenas_words_and_writes_nothing(aws, sql, reason):
    athena, s3 = aws.client("athena"), aws.client("s3")
    execution = execute(athena, sql)
    assert execution["Status"]["State"] == "FAILED"
    assert execution["Status"]["StateChangeReason"].startswith(reason), execution["Status"]
    assert execution["Status"]["AthenaError"]["ErrorCategory"] == 2
    listed = s3.list_objects_v2(Bucket=RESULTS, Prefix="queries/" + execution["QueryExecutionId"])
    assert listed["KeyCount"] == 0
    with pytest.raises(ClientError, match="Final query state: FAILED"):
        athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"])


def test_a_stopped_query_is_cancelled_and_writes_nothing(aws):
    athena, s3 = aws.client("athena"), aws.client("s3")
    execution_id = athena.start_query_execution(
        QueryString="SELECT count(*) FROM range(100000000000) a, range(1000) b",
        WorkGroup="analysts")["QueryExecutionId"]
    poll(lambda: athena.get_query_execution(QueryExecutionId=execution_id)[
        "QueryExecution"]["Status"]["State"] == "RUNNING", timeout=10, interval=0.02)
    athena.stop_query_execution(QueryExecutionId=execution_id)
    state = poll(lambda: (s := athena.get_query_execution(QueryExecutionId=execution_id)[
        "QueryExecution"]["Status"]["State"]) != "RUNNING" and s, timeout=30)
    assert state == "CANCELLED"
    assert s3.list_objects_v2(Bucket=RESULTS, Prefix=f"queries/{execution_id}")["KeyCount"] == 0


def test_workgroups_are_created_once_found_and_deleted_with_athenas_errors(aws):
    athena = aws.client("athena")
    athena.create_work_group(Name="scratch", Description="d")
    with pytest.raises(ClientError, match="WorkGroup scratch is already created"):
        athena.create_work_group(Name="scratch")
    group = athena.get_work_group(WorkGroup="scratch")["WorkGroup"]
    assert (group["Name"], group["State"], group["Description"]) == ("scratch", "ENABLED", "d")
    athena.update_work_group(WorkGroup="scratch", ConfigurationUpdates={
        "ResultConfigurationUpdates": {"OutputLocation": OUTPUT}})
    assert athena.get_work_group(WorkGroup="scratch")["WorkGroup"]["Configuration"][
        "ResultConfiguration"]["OutputLocation"] == OUTPUT
    athena.delete_work_group(WorkGroup="scratch", RecursiveDeleteOption=True)
    with pytest.raises(ClientError, match="WorkGroup scratch is not found."):
        athena.get_work_group(WorkGroup="scratch")
    with pytest.raises(ClientError, match="WorkGroup is not found."):
        athena.start_query_execution(QueryString="SELECT 1", WorkGroup="scratch")
    with pytest.raises(ClientError, match="cannot be deleted"):
        athena.delete_work_group(WorkGroup="primary")


def test_executions_are_listed_newest_first_and_fetched_in_batches(aws):
    athena = aws.client("athena")
    athena.create_work_group(Name="listing", Configuration={
        "ResultConfiguration": {"OutputLocation": OUTPUT}})
    ids = [succeeded(athena, f"SELECT {n}", workgroup="listing")["QueryExecutionId"]
           for n in range(3)]
    pages = athena.get_paginator("list_query_executions").paginate(
        WorkGroup="listing", PaginationConfig={"PageSize": 2})
    assert [i for page in pages for i in page["QueryExecutionIds"]] == ids[::-1]
    batch = athena.batch_get_query_execution(QueryExecutionIds=[ids[0], "no-such-id"])
    assert [e["QueryExecutionId"] for e in batch["QueryExecutions"]] == [ids[0]]
    assert batch["UnprocessedQueryExecutionIds"][0]["QueryExecutionId"] == "no-such-id"
    with pytest.raises(ClientError, match="was not found"):
        athena.get_query_execution(QueryExecutionId="no-such-id")


# --- permissions ----------------------------------------------------------------------------


def analyst_policy(*, glue: bool = True, read: bool = True, write: bool = True) -> dict:
    """Least privilege to query ``bands`` in the ``analysts`` workgroup, less what is left out."""
    statements = [{"Effect": "Allow", "Action": ["athena:StartQueryExecution",
                                                 "athena:GetQueryExecution",
                                                 "athena:GetQueryResults"],
                   "Resource": "arn:aws:athena:sa-east-1:123456789012:workgroup/analysts"},
                  {"Effect": "Allow", "Action": "s3:GetObject",
                   "Resource": f"arn:aws:s3:::{RESULTS}/queries/*"}]
    if glue:
        statements.append({"Effect": "Allow", "Action": ["glue:GetDatabase", "glue:GetTable",
                                                         "glue:GetPartitions"],
                           "Resource": [f"{GLUE}:catalog", f"{GLUE}:database/{DATABASE}",
                                        f"{GLUE}:table/{DATABASE}/bands"]})
    if read:
        statements += [{"Effect": "Allow", "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{BUCKET}/bands/*"},
                       {"Effect": "Allow", "Action": "s3:ListBucket",
                        "Resource": f"arn:aws:s3:::{BUCKET}",
                        "Condition": {"StringLike": {"s3:prefix": "bands/*"}}}]
    if write:
        statements.append({"Effect": "Allow", "Action": "s3:PutObject",
                           "Resource": f"arn:aws:s3:::{RESULTS}/queries/*"})
    return {"Version": "2012-10-17", "Statement": statements}


def analyst(aws, name: str, policy: dict):
    return aws.assume(aws.role(name, policy)).client("athena",
                                                         endpoint_url=aws.endpoint_url)


def test_a_least_privilege_role_queries_its_table_and_nothing_else(aws):
    athena = analyst(aws, "athena-analyst", analyst_policy())
    execution = succeeded(athena, "SELECT count(*) FROM bands WHERE variable = 'tp'")
    assert frame(athena, execution["QueryExecutionId"]).iloc[0, 0] == "15"
    other = execute(athena, "SELECT count(*) FROM many")
    assert other["Status"]["State"] == "FAILED"
    assert other["Status"]["StateChangeReason"].startswith(
        "Insufficient permissions to execute the query. User: arn:aws:sts::123456789012:"
        "assumed-role/athena-analyst/test-session is not authorized to perform: glue:GetTable")
    with pytest.raises(ClientError) as raised:
        athena.start_query_execution(QueryString="SELECT 1", WorkGroup="free")
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "athena:StartQueryExecution" in raised.value.response["Error"]["Message"]


@pytest.mark.parametrize(("left_out", "reason"), [
    ({"glue": False}, "Insufficient permissions to execute the query."),
    ({"read": False}, f"Permission denied on S3 path: s3://{BUCKET}/bands/"),
    ({"write": False}, "Access denied when writing output to url: s3://"),
])
def test_a_role_without_one_grant_fails_with_athenas_reason(aws, left_out, reason):
    athena = analyst(aws, f"athena-no-{next(iter(left_out))}", analyst_policy(**left_out))
    execution = execute(athena, "SELECT count(*) FROM bands")
    assert execution["Status"]["State"] == "FAILED"
    assert execution["Status"]["StateChangeReason"].startswith(reason), execution["Status"]
