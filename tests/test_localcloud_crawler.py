"""Glue crawlers on the embedded cloud crawl S3 into the Data Catalog, driven by boto3."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from picsel_nb.localcloud.schema_inference import classify, hive_type, merge_types
from tests import cloud_fixtures

cloud = cloud_fixtures.cloud  # the shared embedded-cloud fixture

CRAWLER_PERMISSIONS = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
     "Resource": ["arn:aws:s3:::crawl-*", "arn:aws:s3:::crawl-*/*"]},
    {"Effect": "Allow", "Action": "glue:*", "Resource": "*"}]}
ROLE = "arn:aws:iam::123456789012:role/picsel-test-crawler"


def contour_rows(variable: str, day: str, lower: float) -> bytes:
    """Two NDJSON rows shaped like published contour features: flat, a struct and arrays."""
    rows = [
        {"label": f"{lower:g} to {lower + 2:g}", "lower": lower, "upper": lower + 2,
         "fill": "#aabbcc", "properties": {"units": "degC", "level_index": 3},
         "geometry": {"type": "Polygon",
                      "coordinates": [[[-50.0, -10.0], [-49.5, -10.0], [-50.0, -10.5]]]}},
        {"label": "dry", "lower": None, "upper": 0.1, "fill": "#ffffff",
         "properties": {"units": "mm", "level_index": 0},
         "geometry": {"type": "Polygon", "coordinates": []}},
    ]
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


@pytest.fixture(scope="module")
def role(cloud) -> str:
    """The crawlers' role: reads the test buckets, writes the catalog (held to it as on AWS)."""
    return cloud.role("picsel-test-crawler", CRAWLER_PERMISSIONS, "glue.amazonaws.com")


@pytest.fixture
def catalog(cloud, role):
    """A bucket and a database of their own, and the crawlers' role."""
    bucket = f"crawl-{uuid.uuid4().hex[:10]}"
    database = f"db_{uuid.uuid4().hex[:8]}"
    cloud.client("s3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "sa-east-1"})
    cloud.client("glue").create_database(DatabaseInput={"Name": database})
    return bucket, database


def put(cloud, bucket: str, key: str, body: bytes) -> None:
    cloud.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def make_crawler(cloud, database: str, path: str, **options) -> str:
    name = f"crawler-{uuid.uuid4().hex[:8]}"
    cloud.client("glue").create_crawler(Name=name, Role=ROLE, DatabaseName=database,
                                        Targets={"S3Targets": [{"Path": path}]}, **options)
    return name


def crawl(glue, name: str, seconds: float = 60) -> dict:
    """Start the crawler and poll GetCrawler until it is READY again."""
    glue.start_crawler(Name=name)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        crawler = glue.get_crawler(Name=name)["Crawler"]
        if crawler["State"] == "READY":
            return crawler
        time.sleep(0.05)
    raise AssertionError(f"crawler {name} still {crawler['State']} after {seconds} s")


def crawler_log(cloud, name: str) -> list[str]:
    events = cloud.client("logs").get_log_events(logGroupName="/aws-glue/crawlers",
                                                 logStreamName=name, startFromHead=True)["events"]
    return [e["message"] for e in events]


def partition_values(glue, database: str, table: str) -> set[tuple]:
    partitions = glue.get_partitions(DatabaseName=database, TableName=table)["Partitions"]
    return {tuple(p["Values"]) for p in partitions}


def test_crawl_catalogs_ndjson_with_nested_columns_and_partitions(cloud, catalog):
    bucket, database = catalog
    for variable, day, lower in (("t2m", "2023-09-01", 20), ("t2m", "2023-09-02", 20.5),
                                 ("tp", "2023-09-01", 0)):
        put(cloud, bucket, f"catalog/contours/variable={variable}/date={day}/part.json",
            contour_rows(variable, day, lower))
    put(cloud, bucket, "catalog/contours/_SUCCESS", b"")  # hidden: skipped
    put(cloud, bucket, "catalog/contours/tmp/scratch.csv", b"a,b\n1,2\n3,4\n")  # excluded
    glue = cloud.client("glue")
    name = f"crawler-{uuid.uuid4().hex[:8]}"
    glue.create_crawler(Name=name, Role=ROLE, DatabaseName=database, Targets={"S3Targets": [
        {"Path": f"s3://{bucket}/catalog/contours/", "Exclusions": ["tmp/**"]}]})

    crawler = crawl(glue, name)

    assert crawler["LastCrawl"]["Status"] == "SUCCEEDED"
    assert crawler["LastCrawl"]["LogGroup"] == "/aws-glue/crawlers"
    assert crawler["LastCrawl"]["LogStream"] == name
    table = glue.get_table(DatabaseName=database, Name="contours")["Table"]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    assert columns == {
        "label": "string", "lower": "double", "upper": "double", "fill": "string",
        "properties": "struct<units:string,level_index:bigint>",
        "geometry": "struct<type:string,coordinates:array<array<array<double>>>>",
    }
    assert table["PartitionKeys"] == [{"Name": "variable", "Type": "string"},
                                      {"Name": "date", "Type": "string"}]
    storage = table["StorageDescriptor"]
    assert storage["Location"] == f"s3://{bucket}/catalog/contours/"
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert storage["InputFormat"] == "org.apache.hadoop.mapred.TextInputFormat"
    assert table["Parameters"]["classification"] == "json"
    assert table["Parameters"]["recordCount"] == "6"
    assert partition_values(glue, database, "contours") == {
        ("t2m", "2023-09-01"), ("t2m", "2023-09-02"), ("tp", "2023-09-01")}
    partition = glue.get_partition(DatabaseName=database, TableName="contours",
                                   PartitionValues=["tp", "2023-09-01"])["Partition"]
    assert partition["StorageDescriptor"]["Location"] == (
        f"s3://{bucket}/catalog/contours/variable=tp/date=2023-09-01/")
    metrics = glue.get_crawler_metrics(CrawlerNameList=[name])["CrawlerMetricsList"][0]
    assert (metrics["TablesCreated"], metrics["TablesUpdated"], metrics["TablesDeleted"]) == (1, 0, 0)
    assert metrics["LastRuntimeSeconds"] > 0
    lines = crawler_log(cloud, name)
    prefix = f"[{crawler['LastCrawl']['MessagePrefix']}]"
    assert lines[0] == f"{prefix} BENCHMARK : Running Start Crawl for Crawler {name}"
    assert f"{prefix} INFO : Created table contours in database {database}" in lines
    assert lines[-1] == f"{prefix} BENCHMARK : Crawler has finished running and is in state READY"
    crawls = glue.list_crawls(CrawlerName=name)["Crawls"]
    assert [c["State"] for c in crawls] == ["COMPLETED"]


def test_recrawl_adds_new_partitions_and_updates_the_schema(cloud, catalog):
    bucket, database = catalog
    put(cloud, bucket, "catalog/contours/variable=t2m/date=2023-09-01/part.json",
        contour_rows("t2m", "2023-09-01", 20))
    glue = cloud.client("glue")
    name = make_crawler(cloud, database, f"s3://{bucket}/catalog/contours/")
    crawl(glue, name)
    extra = json.dumps({"label": "new", "lower": 1.0, "upper": 2.0, "fill": "#000000",
                        "isoline": True}).encode()
    put(cloud, bucket, "catalog/contours/variable=t2m/date=2023-09-03/part.json", extra)

    crawler = crawl(glue, name)

    assert crawler["LastCrawl"]["Status"] == "SUCCEEDED"
    assert partition_values(glue, database, "contours") == {("t2m", "2023-09-01"),
                                                            ("t2m", "2023-09-03")}
    table = glue.get_table(DatabaseName=database, Name="contours")["Table"]
    assert {"Name": "isoline", "Type": "boolean"} in table["StorageDescriptor"]["Columns"]
    metrics = glue.get_crawler_metrics(CrawlerNameList=[name])["CrawlerMetricsList"][0]
    assert (metrics["TablesCreated"], metrics["TablesUpdated"]) == (0, 1)
    assert any("INFO : Created partitions with values [[t2m, 2023-09-03]] for table contours"
               in line for line in crawler_log(cloud, name))


def test_schema_change_policy_log_keeps_the_schema_and_delete_removes_vanished_partitions(
        cloud, catalog):
    bucket, database = catalog
    for day in ("2023-09-01", "2023-09-02"):
        put(cloud, bucket, f"catalog/contours/variable=t2m/date={day}/part.json",
            contour_rows("t2m", day, 20))
    glue = cloud.client("glue")
    policy = {"UpdateBehavior": "LOG", "DeleteBehavior": "DELETE_FROM_DATABASE"}
    name = make_crawler(cloud, database, f"s3://{bucket}/catalog/contours/",
                        SchemaChangePolicy=policy)
    crawl(glue, name)
    before = glue.get_table(DatabaseName=database, Name="contours")["Table"]
    cloud.client("s3").delete_object(
        Bucket=bucket, Key="catalog/contours/variable=t2m/date=2023-09-02/part.json")
    put(cloud, bucket, "catalog/contours/variable=t2m/date=2023-09-01/more.json",
        json.dumps({"label": "x", "isoline": True}).encode())

    assert crawl(glue, name)["LastCrawl"]["Status"] == "SUCCEEDED"

    after = glue.get_table(DatabaseName=database, Name="contours")["Table"]
    assert after["StorageDescriptor"]["Columns"] == before["StorageDescriptor"]["Columns"]
    assert partition_values(glue, database, "contours") == {("t2m", "2023-09-01")}
    lines = crawler_log(cloud, name)
    assert any("not applied: UpdateBehavior is LOG" in line for line in lines)
    assert any("Deleted partitions with values [[t2m, 2023-09-02]]" in line for line in lines)


def test_empty_target_succeeds_without_tables(cloud, catalog):
    bucket, database = catalog
    glue = cloud.client("glue")
    name = make_crawler(cloud, database, f"s3://{bucket}/nothing/here/")

    crawler = crawl(glue, name)

    assert crawler["LastCrawl"]["Status"] == "SUCCEEDED"
    assert glue.get_tables(DatabaseName=database)["TableList"] == []
    assert any(f"No files found under s3://{bucket}/nothing/here/" in line
               for line in crawler_log(cloud, name))


def test_csv_is_classified_with_its_header_and_delimiter(cloud, catalog):
    bucket, database = catalog
    put(cloud, bucket, "raw/Station-List/a.csv",
        b"station,lat,lon,active\nBSB,-15.8,-47.9,true\nCGB,-15.6,-56.1,false\n")
    glue = cloud.client("glue")
    name = make_crawler(cloud, database, f"s3://{bucket}/raw/Station-List", TablePrefix="raw_")

    assert crawl(glue, name)["LastCrawl"]["Status"] == "SUCCEEDED"

    table = glue.get_table(DatabaseName=database, Name="raw_station_list")["Table"]
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == [
        ("station", "string"), ("lat", "double"), ("lon", "double"), ("active", "boolean")]
    assert table["PartitionKeys"] == []
    serde = table["StorageDescriptor"]["SerdeInfo"]
    assert serde["SerializationLibrary"] == "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
    assert serde["Parameters"] == {"field.delim": ","}
    assert table["Parameters"]["classification"] == "csv"
    assert table["Parameters"]["skip.header.line.count"] == "1"


def _stop_while_running(cloud, bucket: str, database: str, files: int) -> str | None:
    """Start a crawl of ``files`` files of ~0.4 MB, check that starting or updating it again is
    refused and stop it; the crawler's name, or None when the crawl finished before the stop."""
    rows = contour_rows("t2m", "2023-09-01", 20) * 1000
    prefix = f"big{files}/data/"
    for index in range(files):
        put(cloud, bucket, f"{prefix}part-{index:03d}.json", rows)
    glue = cloud.client("glue")
    name = make_crawler(cloud, database, f"s3://{bucket}/{prefix}")
    glue.start_crawler(Name=name)
    try:
        with pytest.raises(ClientError) as again:
            glue.start_crawler(Name=name)
        assert again.value.response["Error"]["Code"] == "CrawlerRunningException"
        with pytest.raises(ClientError) as update:
            glue.update_crawler(Name=name, TablePrefix="new_")
        assert update.value.response["Error"]["Code"] == "CrawlerRunningException"
        glue.stop_crawler(Name=name)
    except (ClientError, pytest.fail.Exception):
        if glue.get_crawler(Name=name)["Crawler"]["State"] == "RUNNING":
            raise
        return None  # the crawl outran the calls on this loaded machine: try a bigger one
    return name


def test_start_or_update_while_running_is_refused_and_stop_cancels_the_crawl(cloud, catalog):
    bucket, database = catalog
    glue = cloud.client("glue")
    name = None
    for files in (10, 40, 160):  # a crawl long enough for three calls to land while it runs
        if name := _stop_while_running(cloud, bucket, database, files):
            break
    assert name, "every crawl finished before it could be stopped"
    deadline = time.monotonic() + 60
    while (crawler := glue.get_crawler(Name=name)["Crawler"])["State"] != "READY":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    assert crawler["LastCrawl"]["Status"] == "CANCELLED"
    assert [c["State"] for c in glue.list_crawls(CrawlerName=name)["Crawls"]] == ["STOPPED"]
    assert "TablePrefix" not in crawler


def test_update_changes_only_the_given_settings_and_the_next_crawl_uses_them(cloud, catalog):
    bucket, database = catalog
    put(cloud, bucket, "catalog/contours/variable=t2m/part-0000.json", b'{"a": 1}\n')
    glue = cloud.client("glue")
    name = make_crawler(cloud, database, f"s3://{bucket}/catalog/contours/", Description="old",
                        SchemaChangePolicy={"UpdateBehavior": "LOG", "DeleteBehavior": "LOG"})
    before = glue.get_crawler(Name=name)["Crawler"]
    lake_formation = {"UseLakeFormationCredentials": False}

    glue.update_crawler(Name=name, TablePrefix="new_", Schedule="cron(0 6 * * ? *)",
                        LakeFormationConfiguration=lake_formation)

    after = glue.get_crawler(Name=name)["Crawler"]
    assert (after["TablePrefix"], after["Schedule"]["ScheduleExpression"]) == (
        "new_", "cron(0 6 * * ? *)")
    assert after["LakeFormationConfiguration"] == lake_formation
    for key in ("Role", "DatabaseName", "Description", "Targets", "SchemaChangePolicy",
                "CreationTime"):
        assert after[key] == before[key]
    assert (after["Version"], before["Version"]) == (2, 1)
    assert after["LastUpdated"] >= before["LastUpdated"]
    crawl(glue, name)
    assert [t["Name"] for t in glue.get_tables(DatabaseName=database)["TableList"]] == [
        "new_contours"]


def test_update_of_an_unknown_crawler_is_entity_not_found(cloud):
    with pytest.raises(ClientError) as error:
        cloud.client("glue").update_crawler(Name="no-such-crawler", TablePrefix="x")
    assert error.value.response["Error"]["Code"] == "EntityNotFoundException"


def test_missing_database_fails_the_crawl_with_its_message(cloud, catalog):
    bucket, _ = catalog
    put(cloud, bucket, "x/data.json", b'{"a": 1}\n')
    glue = cloud.client("glue")
    name = make_crawler(cloud, "no_such_database", f"s3://{bucket}/x/")

    crawler = crawl(glue, name)

    assert crawler["LastCrawl"]["Status"] == "FAILED"
    assert "no_such_database" in crawler["LastCrawl"]["ErrorMessage"]


def test_geojson_feature_collection_is_one_json_record_with_an_array_of_structs():
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"lower": 0, "label": "dry"},
         "geometry": {"type": "Polygon", "coordinates": [[[-50, -10], [-49.5, -10.25]]]}},
        {"type": "Feature", "properties": {"lower": 0.5, "upper": 1},
         "geometry": {"type": "Polygon", "coordinates": [[[-50, -10], [-49, -10]]]}},
    ]}

    schema = classify(json.dumps(collection).encode())

    assert (schema.classification, schema.record_count) == ("json", 1)
    assert {name: hive_type(kind) for name, kind in schema.columns.items()} == {
        "type": "string",
        "features": "array<struct<type:string,properties:struct<lower:double,label:string,"
                    "upper:bigint>,geometry:struct<type:string,"
                    "coordinates:array<array<array<double>>>>>>",
    }


@pytest.mark.parametrize(("a", "b", "merged"), [
    ("bigint", "double", "double"), ("bigint", "string", "string"), (None, "boolean", "boolean"),
    ({"x": "bigint"}, {"y": "string"}, {"x": "bigint", "y": "string"}),
    (["bigint"], ["double"], ["double"]), ({"x": "bigint"}, "string", "string"),
])
def test_types_merge_like_the_crawler(a, b, merged):
    assert merge_types(a, b) == merged
