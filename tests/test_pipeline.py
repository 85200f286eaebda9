"""The whole pipeline on the embedded cloud: `demo` provisions, ingests, processes and crawls the
demo's three days; the products are public, the table has its partitions, a rerun adds nothing.
(The products' values — the ERA5-Land accumulation rule — are checked in test_glue_job.py.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date

import pytest
import requests

from picsel_nb import cli, pipeline, products
from picsel_nb.settings import DEMO_END, DEMO_START, LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack import buckets, catalog, teardown
from picsel_nb.stack.context import Stack
from tests.cloud_fixtures import cloud  # noqa: F401

DAYS = products.days(DEMO_START, DEMO_END)
PUBLIC_KINDS = ("geojson", "isolines", "png")


@pytest.fixture(scope="module")
def stack(cloud) -> Stack:  # noqa: F811
    """A deployment of its own (prefix picsel-pipe) on the session's embedded cloud."""
    settings = dataclasses.replace(get_settings(), prefix="picsel-pipe")
    return Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                 client_factory=cloud.client)


@pytest.fixture(scope="module")
def demo_run(stack) -> Iterator[tuple[Stack, list[str], list[str]]]:
    """The demo, run once for this module: (stack, product URLs, what it said); torn down after."""
    said: list[str] = []
    urls = pipeline.demo(stack, say=said.append)
    yield stack, urls, said
    teardown.teardown(stack)


def test_demo_publishes_bands_isolines_and_a_plot_per_variable_and_day(demo_run):
    stack, urls, _ = demo_run
    expected = {buckets.public_url(stack, stack.names.output_bucket, products.key(kind, var, day))
                for kind in PUBLIC_KINDS for var in products.SHORT_NAMES for day in DAYS}
    assert expected <= set(urls) and len(expected) == 18
    maps = {buckets.public_url(stack, stack.names.output_bucket, f"products/maps/{day}.html")
            for day in DAYS}
    assert maps <= set(urls)


def test_every_product_url_fetches_without_credentials(demo_run):
    _, urls, _ = demo_run
    for url in urls:
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, url
        assert response.headers["Content-Type"] == buckets.content_type(url)
        assert response.content


def test_demo_prints_every_url_and_how_to_stop_the_cloud(demo_run):
    _, urls, said = demo_run
    text = "\n".join(said)
    assert all(url in text for url in urls)
    assert "keeps running" in text and "picsel cloud stop" in text


def test_catalog_table_has_a_partition_per_variable_and_day(demo_run):
    stack, _, _ = demo_run
    table = next(t for t in catalog.describe_tables(stack) if t["name"] == catalog.TABLE)
    assert table["partition_keys"] == ["variable", "date"]
    assert table["partitions"] == sorted([variable, day.isoformat()]
                                         for variable in products.SHORT_NAMES for day in DAYS)


def test_demo_again_downloads_and_publishes_nothing_new(demo_run):
    stack, urls, _ = demo_run
    assert {row["status"] for row in pipeline.ingest(stack, DEMO_START, DEMO_END)} == {"skipped"}
    assert pipeline.process(stack, DEMO_START, DEMO_END)["products"] == []
    assert pipeline.product_urls(stack) == urls


def test_backfill_command_ingests_by_month_and_publishes_only_new_days(demo_run, monkeypatch,
                                                                       capsys):
    stack, _, _ = demo_run
    monkeypatch.setenv("PICSEL_PREFIX", "picsel-pipe")  # the command finds this deployment

    code = cli.main(["backfill", "--start", "2023-08-30", "--end", "2023-09-04"])

    out = capsys.readouterr().out
    assert code == 0, out
    # 08-30, 08-31 (a month's last day alone) and 09-01..04 (one request; the demo's days in it
    # are there already, so it is asked again only for the 4th's sake and rewritten whole).
    assert "ingest: 3 CDS requests stored, 0 already there, 0 failed" in out
    assert "3 days published, 3 skipped (already published), 0 failed" in out
    assert {day.isoformat() for day in products.days(date(2023, 8, 30), date(2023, 9, 4))} == {
        row["date"] for row in pipeline.stored_downloads(stack)}


def test_cds_key_on_aws_is_the_readers_own(monkeypatch):
    monkeypatch.setenv("PICSEL_BACKEND", "aws")
    monkeypatch.setenv("CDSAPI_URL", "https://cds.climate.copernicus.eu/api")
    monkeypatch.setenv("CDSAPI_KEY", "00000000-1111-2222-3333-444444444444")
    settings = get_settings()
    offline = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID),
                    client_factory=lambda service: pytest.fail(f"made a {service} client"))
    assert pipeline.cds_credentials(offline) == ("https://cds.climate.copernicus.eu/api",
                                                 "00000000-1111-2222-3333-444444444444")
