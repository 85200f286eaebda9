"""The catalog database and crawler: definition, crawling the contours' catalog form, waiting with
custom waiters, describing the table, deleting."""

from __future__ import annotations

import dataclasses
import json
from datetime import date

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from picsel_nb import products
from picsel_nb.settings import LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack import athena, buckets, catalog
from picsel_nb.stack.context import Stack
from picsel_nb.stack.waiters import DeadlineError, wait_for_crawler
from tests.cloud_fixtures import cloud  # noqa: F401

DAYS = [date(2023, 9, 1), date(2023, 9, 2), date(2023, 9, 3)]
EXPECTED_COLUMNS = [("band", "bigint"), ("lower", "double"), ("upper", "double"),
                    ("label", "string"), ("colour", "string"), ("units", "string"),
                    ("area_km2", "double"), ("west", "double"), ("south", "double"),
                    ("east", "double"), ("north", "double"), ("geometry", "string")]


def square(west: float, south: float, size: float) -> dict:
    """A counter-clockwise square polygon."""
    east, north = west + size, south + size
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                [west, north], [west, south]]]}


def bands(variable: str) -> dict:
    """A small bands FeatureCollection shaped like the contours module's."""
    units = "degC" if variable == "t2m" else "mm"
    features = [{"type": "Feature", "bbox": [-50.0 + i, -15.0, -49.0 + i, -14.0],
                 "geometry": square(-50 + i, -15, 1), "properties": {
        "variable": variable, "units": units, "lower": float(i), "upper": float(i + 1),
        "label": f"{i}–{i + 1} {units}", "fill": f"#0000{i:02x}"}} for i in range(3)]
    return {"type": "FeatureCollection", "features": features}


def test_crawler_definition_follows_the_design(offline_stack):
    definition = catalog.crawler_definition(offline_stack, "arn:aws:iam::1:role/r")
    assert definition["Targets"] == {"S3Targets": [
        {"Path": f"s3://{offline_stack.names.output_bucket}/catalog/contours/"}]}
    assert definition["SchemaChangePolicy"] == {"UpdateBehavior": "UPDATE_IN_DATABASE",
                                                "DeleteBehavior": "DEPRECATE_IN_DATABASE"}
    assert definition["RecrawlPolicy"] == {"RecrawlBehavior": "CRAWL_EVERYTHING"}
    assert "TablePrefix" not in definition
    configuration = json.loads(definition["Configuration"])
    assert configuration["Grouping"] == {"TableGroupingPolicy": "CombineCompatibleSchemas"}
    assert configuration["CrawlerOutput"]["Partitions"] == {
        "AddOrUpdateBehavior": "InheritFromTable"}


def test_definition_comparison_ignores_what_glue_adds_and_json_spacing(offline_stack):
    wanted = catalog.crawler_definition(offline_stack, "arn:aws:iam::1:role/r")
    current = {**wanted, "Name": "x", "State": "READY", "Role": "r",
               "Configuration": json.dumps(json.loads(wanted["Configuration"]), indent=2),
               "Targets": {"S3Targets": [{**wanted["Targets"]["S3Targets"][0],
                                          "Exclusions": []}], "JdbcTargets": []}}
    assert not catalog._differs(current, wanted)
    recrawl_new = {"RecrawlBehavior": "CRAWL_NEW_FOLDERS_ONLY"}
    assert catalog._differs({**current, "RecrawlPolicy": recrawl_new}, wanted)


def test_crawler_wait_past_its_deadline_names_the_crawler_and_its_state():
    glue = boto3.client("glue", region_name="sa-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x")
    with Stubber(glue) as stub:
        for _ in range(3):
            stub.add_response("get_crawler", {"Crawler": {"Name": "c", "State": "RUNNING"}},
                              {"Name": "c"})
        with pytest.raises(DeadlineError, match="crawler c is still RUNNING after 0.02 s"):
            wait_for_crawler(glue, "c", deadline_s=0.02, delay_s=0.01)


# --- on the embedded cloud ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(cloud):  # noqa: F811
    """A stack of its own (prefix picsel-cat); its output bucket holds 2 × 3 catalog files."""
    settings = dataclasses.replace(get_settings(), prefix="picsel-cat")
    stack = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                  client_factory=cloud.client)
    buckets.ensure_output_bucket(stack)
    for variable in products.SHORT_NAMES:
        for day in DAYS:
            key = products.key("catalog", variable, day)
            buckets.publish(stack, stack.names.output_bucket, key,
                            products.ndjson(products.catalog_rows(bands(variable))))
    yield stack
    catalog.delete_crawler(stack)
    catalog.delete_database(stack)
    buckets.delete_bucket(stack, stack.names.output_bucket)


def test_crawl_makes_the_contours_table_with_flat_columns_and_six_partitions(stack):
    crawler = catalog.ensure_crawler(stack)
    assert crawler["Name"] == stack.names.crawler and crawler["State"] == "READY"

    outcome = catalog.run_crawler(stack, deadline_s=120, delay_s=0.2)

    assert outcome["status"] == "SUCCEEDED", outcome
    assert outcome["log_group"] == "/aws-glue/crawlers"
    tables = catalog.describe_tables(stack)
    print(json.dumps(tables, default=str)[:1500])
    assert [t["name"] for t in tables] == [catalog.TABLE]
    table = tables[0]
    assert table["columns"] == EXPECTED_COLUMNS
    assert [name for name, _ in table["columns"]] == list(products.CATALOG_COLUMNS)
    assert table["partition_keys"] == ["variable", "date"]
    assert table["partitions"] == [[v, d.isoformat()] for v in ("t2m", "tp") for d in DAYS]
    assert table["location"] == f"s3://{stack.names.output_bucket}/catalog/contours/"
    assert table["classification"] == "json"


def test_ensure_crawler_again_changes_nothing(stack):
    before = catalog.ensure_crawler(stack)
    after = catalog.ensure_crawler(stack)
    assert after["Version"] == before["Version"]
    assert after["LastUpdated"] == before["LastUpdated"]


def test_run_crawler_joins_a_crawl_already_running(stack):
    stack.client("glue").start_crawler(Name=stack.names.crawler)

    outcome = catalog.run_crawler(stack, deadline_s=120, delay_s=0.2)

    assert outcome["status"] == "SUCCEEDED"
    assert len(catalog.describe_tables(stack)[0]["partitions"]) == 6


def test_changed_definition_is_updated(stack):
    glue = stack.client("glue")
    role = catalog.ensure_crawler(stack)["Role"]
    wanted = catalog.crawler_definition(stack, role)
    glue.delete_crawler(Name=stack.names.crawler)
    glue.create_crawler(Name=stack.names.crawler,
                        **{**wanted, "RecrawlPolicy": {"RecrawlBehavior": "CRAWL_NEW_FOLDERS_ONLY"},
                           "SchemaChangePolicy": {"UpdateBehavior": "LOG",
                                                  "DeleteBehavior": "LOG"}})
    crawler = catalog.ensure_crawler(stack, role)
    assert crawler["RecrawlPolicy"] == catalog.RECRAWL_POLICY
    assert crawler["SchemaChangePolicy"] == catalog.SCHEMA_CHANGE_POLICY


def test_delete_crawler_and_database_say_whether_they_existed(stack):
    catalog.ensure_crawler(stack)
    assert catalog.delete_crawler(stack) is True
    assert catalog.get_crawler(stack) is None
    assert catalog.delete_crawler(stack) is False
    assert catalog.delete_database(stack) is True
    assert catalog.delete_database(stack) is False
    with pytest.raises(ClientError, match="EntityNotFoundException"):
        catalog.run_crawler(stack, deadline_s=5, delay_s=0.1)


def test_athena_answers_the_notebook_questions_from_the_crawled_table(stack):
    catalog.ensure_crawler(stack)
    assert catalog.run_crawler(stack, deadline_s=120, delay_s=0.2)["status"] == "SUCCEEDED"
    buckets.ensure_input_bucket(stack)
    group = athena.ensure_workgroup(stack)
    assert athena.ensure_workgroup(stack) == group  # idempotent
    assert group["Configuration"]["ResultConfiguration"]["OutputLocation"] == (
        f"s3://{stack.names.input_bucket}/athena-results/")
    rows = products.catalog_rows(bands("tp"))
    wet = athena.wet_days(stack, threshold_mm=1)
    assert wet["date"].tolist() == [d.isoformat() for d in DAYS]
    assert wet["area_km2"].tolist() == pytest.approx(
        [sum(r["area_km2"] for r in rows if r["lower"] >= 1)] * 3)
    assert wet["bands"].tolist() == [2, 2, 2]
    warmest = athena.warmest_bands(stack)
    assert warmest["lower"].tolist() == [2.0, 2.0, 2.0]
    one = athena.day_bands(stack, "t2m", "2023-09-02")
    assert one["band"].tolist() == [0, 1, 2] and one["west"].tolist() == [-50.0, -49.0, -48.0]
    assert athena.delete_workgroup(stack) and not athena.delete_workgroup(stack)
    buckets.delete_bucket(stack, stack.names.input_bucket)
