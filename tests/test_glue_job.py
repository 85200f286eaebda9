"""The Glue job script's main(), run in this process against the embedded cloud, its units on a
local Spark started once for the module: products, the accumulation rule, skipping, redo, bad
days, and products written in full or not at all."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from datetime import date

import numpy as np
import orjson
import pytest
import shapely
from pyspark import SparkConf, SparkContext, cloudpickle
from shapely.geometry import Point, shape

from picsel_nb import era5, products
from picsel_nb.localcloud import glue_spark
from picsel_nb.localcloud.glue_jobs import RUNTIME_PATH
from picsel_nb.settings import DEMO_DATASET
from picsel_nb.stack.job import SCRIPT
from tests.cloud_fixtures import cloud  # noqa: F401

pytestmark = pytest.mark.spark
DAYS = [date(2023, 9, 1), date(2023, 9, 2), date(2023, 9, 3)]
CONTENT_TYPES = {"geojson": "application/geo+json", "isolines": "application/geo+json",
                 "png": "image/png", "catalog": "application/x-ndjson"}


@pytest.fixture(scope="module")
def spark(cloud, tmp_path_factory):  # noqa: F811 — its executors inherit this environment
    """The module's Spark, configured as the embedded cloud configures a run's; its boto3
    clients reach the cloud as a session of a job role, as on Glue (the session's temporary
    credentials in the environment the executors inherit)."""
    settings = glue_spark.spark_conf("test_glue_job", 2, tmp_path_factory.mktemp("spark"))
    role = cloud.role("picsel-test-contours-job", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                       "s3:ListBucket"],
         "Resource": ["arn:aws:s3:::glue-*", "arn:aws:s3:::glue-*/*"]}]})
    credentials = cloud.assume(role, "GlueJobRunnerSession").get_credentials()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", cloud.endpoint_url)
        patch.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
        patch.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
        patch.setenv("AWS_SESSION_TOKEN", credentials.token)
        patch.setenv("PYSPARK_PYTHON", sys.executable)  # an in-process context reads only this
        context = SparkContext.getOrCreate(SparkConf().setAll(list(settings.items())))
        context.setLogLevel("WARN")
        yield context
        context.stop()


@pytest.fixture(scope="module")
def job(spark):
    """infra/glue/contours_job.py as a module, with the awsglue stand-in on the path (as the
    embedded cloud runs it); its functions travel to the executors by value, like a script's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(RUNTIME_PATH))
        spec = importlib.util.spec_from_file_location("contours_job", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, "contours_job", module)
        spec.loader.exec_module(module)
        cloudpickle.register_pickle_by_value(module)
        yield module
        cloudpickle.unregister_pickle_by_value(module)


def raw_body(day: date, hours: int = 24) -> bytes:
    """What the ingest Lambda stores for `day`: days D and D+1, the first `hours` of each."""
    request = era5.build_request(DEMO_DATASET, day)
    request["time"] = request["time"][:hours]
    return era5.synthetic_download(DEMO_DATASET, request)


@pytest.fixture(scope="module")
def raw_bodies() -> dict[date, bytes]:
    return {day: raw_body(day) for day in DAYS}


def raw_key(day: date) -> str:
    return f"raw/{DEMO_DATASET}/{day:%Y/%m/%d}.nc"


class Buckets:
    """An input and an output bucket of one test, with the job's arguments for them."""

    def __init__(self, s3, raw: dict[date, bytes]):
        self.s3 = s3
        suffix = uuid.uuid4().hex[:10]
        self.input, self.output = f"glue-in-{suffix}", f"glue-out-{suffix}"
        for bucket in (self.input, self.output):
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": "sa-east-1"})
        for day, body in raw.items():
            self.put_raw(day, body)

    def put_raw(self, day: date, body: bytes) -> None:
        self.s3.put_object(Bucket=self.input, Key=raw_key(day), Body=body)

    def argv(self, **overrides: str) -> list[str]:
        """The job's ``--key value`` arguments for these buckets, with `overrides`."""
        options = {"input_bucket": self.input, "output_bucket": self.output,
                   "dataset": DEMO_DATASET, "dates": "all-new", "redo": "false",
                   "t2m_levels": "default", "tp_levels": "default", **overrides}
        return [part for name, value in options.items() for part in (f"--{name}", value)]

    def objects(self, prefix: str = "") -> dict[str, dict]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.output, Prefix=prefix)
        return {item["Key"]: item for page in pages for item in page.get("Contents", [])}

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.output, Key=key)["Body"].read()

    def delete(self) -> None:
        for bucket in (self.input, self.output):
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for item in page.get("Contents", []):
                    self.s3.delete_object(Bucket=bucket, Key=item["Key"])
            self.s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def buckets(cloud, raw_bodies):  # noqa: F811
    store = Buckets(cloud.client("s3"), raw_bodies)
    yield store
    store.delete()


@pytest.fixture(scope="module")
def published(cloud, job, raw_bodies):  # noqa: F811
    """One run over the three demo days, shared by the read-only tests."""
    store = Buckets(cloud.client("s3"), raw_bodies)
    began = time.perf_counter()
    summary = job.main(store.argv())
    print(f"main() for 3 days in-process: {time.perf_counter() - began:.1f} s")
    yield store, summary
    store.delete()


def unit_keys(variable: str, day: date) -> list[str]:
    return list(products.keys(variable, day).values())


def test_every_product_of_every_variable_and_day_is_written(published, capsys):
    store, summary = published
    expected = sorted(key for v in products.SHORT_NAMES for d in DAYS for key in unit_keys(v, d))
    assert summary["products_written"] == expected
    assert summary["published"] == [d.isoformat() for d in DAYS]
    assert (summary["skipped"], summary["failed"]) == ([], {})
    assert sorted(store.objects()) == expected
    for key in expected:
        kind = products.parse_key(key)[0]
        head = store.s3.head_object(Bucket=store.output, Key=key)
        assert head["ContentType"] == CONTENT_TYPES[kind], key


def test_bands_are_valid_rfc7946_polygons_with_their_properties(published):
    store, _ = published
    for variable in products.SHORT_NAMES:
        collection = orjson.loads(store.read(products.key("geojson", variable, DAYS[1])))
        assert collection["type"] == "FeatureCollection" and collection["features"]
        for feature in collection["features"]:
            geometry = shape(feature["geometry"])
            assert geometry.geom_type in ("Polygon", "MultiPolygon")
            assert geometry.is_valid, shapely.is_valid_reason(geometry)
            props = feature["properties"]
            assert props["variable"] == variable and props["date"] == "2023-09-02"
            assert {"units", "lower", "upper", "label", "fill"} <= set(props)
        lines = orjson.loads(store.read(products.key("isolines", variable, DAYS[1])))
        assert {shape(f["geometry"]).geom_type for f in lines["features"]} <= {
            "LineString", "MultiLineString"}


def test_catalog_rows_are_flat_and_match_the_bands(published):
    store, _ = published
    for variable in products.SHORT_NAMES:
        body = store.read(products.key("catalog", variable, DAYS[0]))
        rows = [json.loads(line) for line in body.decode().splitlines()]
        bands = orjson.loads(store.read(products.key("geojson", variable, DAYS[0])))["features"]
        assert len(rows) == len(bands)
        for row, band in zip(rows, bands, strict=True):
            assert list(row) == list(products.CATALOG_COLUMNS)  # no variable/date: partition keys
            assert (row["lower"], row["upper"], row["label"], row["colour"]) == (
                band["properties"]["lower"], band["properties"]["upper"],
                band["properties"]["label"], band["properties"]["fill"])
            assert isinstance(row["geometry"], str)
            assert shape(json.loads(row["geometry"])).equals(shape(band["geometry"]))
            assert row["area_km2"] > 0
            assert [row[k] for k in ("west", "south", "east", "north")] == band["bbox"]


def test_band_areas_add_up_to_the_land_area_of_the_grid(published):
    """The bands tile the land cells: their areas sum to the area the non-NaN grid covers."""
    store, _ = published
    rows = [json.loads(line) for line in
            store.read(products.key("catalog", "t2m", DAYS[0])).decode().splitlines()]
    total = sum(row["area_km2"] for row in rows)
    # The demo area is 20° × 15° around 16.5° S: ~3.5 million km², less the synthetic sea.
    assert 2.0e6 < total < 3.6e6


def test_daily_total_follows_the_era5_land_accumulation_rule(published, raw_bodies):
    """The tp band over a cell brackets that cell's day total = the accumulation at 00 UTC of the
    next day — not the sum of the hourly accumulations."""
    store, _ = published
    day = DAYS[1]
    hourly = era5.open_download(raw_bodies[day])
    total = era5.daily(hourly, DEMO_DATASET, days=[day])["tp"].isel(date=0)
    wettest = total.where(np.isfinite(total), -1).argmax(dim=("latitude", "longitude"))
    cell = total.isel(wettest)
    lon, lat, value = float(cell.longitude), float(cell.latitude), float(cell)
    next_midnight = hourly["tp"].sel(valid_time=f"{day + (DAYS[1] - DAYS[0])}T00:00").sel(
        latitude=lat, longitude=lon)
    assert value == pytest.approx(float(next_midnight) * 1000, rel=1e-5)
    summed = float(hourly["tp"].sel(valid_time=slice(f"{day}T01:00", f"{day}T23:00"),
                                    latitude=lat, longitude=lon).sum()) * 1000
    assert summed > 2 * value  # summing accumulations (the original's bug) overcounts

    rows = [json.loads(line) for line in
            store.read(products.key("catalog", "tp", day)).decode().splitlines()]
    over_cell = [row for row in rows if shape(json.loads(row["geometry"])).intersects(
        Point(lon, lat))]
    assert over_cell, "no band covers the wettest cell"
    assert any((row["lower"] is None or row["lower"] <= value)
               and (row["upper"] is None or value <= row["upper"]) for row in over_cell), (
        value, [(row["lower"], row["upper"]) for row in over_cell])
    assert not any(row["lower"] is not None and row["lower"] > summed for row in over_cell)


def test_second_run_skips_what_is_published_and_writes_nothing(published, job, capsys):
    store, _ = published
    before = store.objects()

    summary = job.main(store.argv())

    assert summary["skipped"] == [d.isoformat() for d in DAYS]
    assert summary["products_written"] == [] and summary["published"] == []
    after = store.objects()
    assert {k: (v["ETag"], v["LastModified"]) for k, v in after.items()} == {
        k: (v["ETag"], v["LastModified"]) for k, v in before.items()}
    assert "skipped 2023-09-01: already published" in capsys.readouterr().out


def test_redo_rewrites_the_days_asked_for(buckets, job):
    job.main(buckets.argv())
    key = products.key("png", "tp", DAYS[0])
    buckets.s3.put_object(Bucket=buckets.output, Key=key, Body=b"stale", ContentType="image/png")

    summary = job.main(buckets.argv(dates="2023-09-01:2023-09-01", redo="true"))

    assert summary["published"] == ["2023-09-01"] and summary["days"] == 1
    assert len(summary["products_written"]) == 8
    assert buckets.read(key).startswith(b"\x89PNG")


def test_a_corrupt_raw_day_is_reported_and_the_others_are_published(buckets, job, capsys):
    buckets.put_raw(DAYS[1], raw_body(DAYS[1])[:5000])  # truncated

    with pytest.raises(job.JobFailed) as failure:
        job.main(buckets.argv())

    where = f"s3://{buckets.input}/{raw_key(DAYS[1])}"
    assert str(failure.value).startswith(
        f"1 of 3 days failed: 2023-09-02 (corrupt raw file {where}: ")
    assert "\n" not in str(failure.value)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR 2023-09-02: corrupt raw file {where}")
    assert "summary: 3 days: 2 published, 0 skipped, 1 failed; 16 objects" in captured.out
    published = {products.parse_key(key)[1:] for key in buckets.objects()}
    assert published == {(v, d) for v in products.SHORT_NAMES for d in (DAYS[0], DAYS[2])}


def test_an_incomplete_raw_day_is_reported_and_the_others_are_published(buckets, job, capsys):
    buckets.put_raw(DAYS[2], raw_body(DAYS[2], hours=20))  # 20:00..23:00 UTC missing

    with pytest.raises(job.JobFailed, match=r"^1 of 3 days failed: 2023-09-03 \(incomplete day "
                                            r"in raw file s3://.*2023/09/03\.nc: .*20:00"):
        job.main(buckets.argv())

    assert "ERROR 2023-09-03: incomplete day" in capsys.readouterr().err
    written = {products.parse_key(key)[1:] for key in buckets.objects()}
    # Each (variable, day) is its own unit: tp of the 3rd needs only 00 UTC of the 4th, present.
    assert written == {(v, d) for v in products.SHORT_NAMES for d in DAYS[:2]} | {("tp", DAYS[2])}


def test_a_day_without_raw_file_fails_when_asked_for_by_date(buckets, job):
    buckets.s3.delete_object(Bucket=buckets.input, Key=raw_key(DAYS[2]))

    with pytest.raises(job.JobFailed, match=r"1 of 3 days failed: 2023-09-03 \(no raw file at "):
        job.main(buckets.argv(dates="2023-09-01:2023-09-03"))


def test_a_failed_upload_leaves_nothing_of_its_unit(buckets, job, monkeypatch):
    failing = products.key("catalog", "tp", DAYS[1])
    upload = job.put

    def put(client, bucket, key, body, content_type):
        if key == failing:
            raise ConnectionError("injected upload failure")
        upload(client, bucket, key, body, content_type)

    monkeypatch.setattr(job, "put", put)  # the tasks carry the module's globals by value

    with pytest.raises(job.JobFailed, match="2023-09-02 .*upload of tp failed.*injected"):
        job.main(buckets.argv())

    left = buckets.objects()
    assert not set(unit_keys("tp", DAYS[1])) & set(left)
    assert set(unit_keys("t2m", DAYS[1])) <= set(left)  # the other unit of that day is whole
    assert {products.parse_key(k)[2] for k in left} == set(DAYS)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("dates", "yesterday", "--dates 'yesterday' is not valid; accepted: \"all-new\""),
    ("redo", "maybe", "--redo 'maybe' is not valid; accepted"),
    ("tp_levels", "5,1", "--tp_levels '5,1' is not valid; accepted"),
    ("dataset", "era6", "era6"),
])
def test_bad_arguments_are_refused_naming_the_option(buckets, job, option, value, message):
    with pytest.raises(ValueError, match=message):
        job.main(buckets.argv(**{option: value}))
    assert buckets.objects() == {}


def test_custom_levels_shape_the_bands(buckets, job):
    job.main(buckets.argv(dates="2023-09-01", tp_levels="0,10,100"))
    rows = [json.loads(line) for line in
            buckets.read(products.key("catalog", "tp", DAYS[0])).decode().splitlines()]
    assert {(row["lower"], row["upper"]) for row in rows} <= {(0, 10), (10, 100), (100, None)}


def test_a_real_preliminary_download_that_stops_mid_day_is_reported_incomplete(
        buckets, job, samples_dir):
    """ERA5-Land-T (expver 0005) as the CDS delivered it, zipped, stopping at 18:00 UTC."""
    day = date(2025, 9, 11)
    buckets.put_raw(day, (samples_dir / "era5land_kerala_2025-09-11_hourly.zip").read_bytes())

    with pytest.raises(job.JobFailed, match=r"2025-09-11 \(incomplete day in raw file .*"
                                            r"2025/09/11\.nc: .*19:00"):
        job.main(buckets.argv(dates="2025-09-11"))

    assert buckets.objects() == {}
