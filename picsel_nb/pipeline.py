"""The pipeline's steps as functions over the stack modules: provision, ingest, process, crawl and
demo (deleting it all is `stack.teardown`). Each step is idempotent (running it again changes nothing that is already right) and returns a
small result that a notebook can show or a command can print.

This is the one module that differs by backend (where the CDS key comes from); every other module
behaves the same on the embedded cloud and on AWS.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import date
from typing import Any

# Without ipywidgets, tqdm's notebook bars fall back to text bars, which serve as well; its warning
# about that would only clutter every notebook that imports this module.
warnings.filterwarnings("ignore", "IProgress not found", module="tqdm")

import xarray as xr
from tqdm.auto import tqdm

from picsel_nb import products
from picsel_nb.era5 import open_download, parse_date, request_blocks
from picsel_nb.products import days
from picsel_nb.settings import DEMO_END, DEMO_START
from picsel_nb.stack import buckets, catalog, function, job, roles, secret
from picsel_nb.stack.context import Stack, get_stack
from picsel_nb.stack.errors import StackError

Say = Callable[[str], None]
IN_FLIGHT = 3  # backfill: CDS requests at once (ECMWF runs at most 3 active requests per user)
QUEUED_PAUSE_S = 20.0  # backfill: before asking again for requests the CDS still has queued


def cds_credentials(stack: Stack) -> tuple[str, str]:
    """The CDS (url, key) to store: the embedded cloud's loopback CDS and its always-valid token on
    the local backend; the reader's own (CDSAPI_URL/CDSAPI_KEY, ~/.cdsapirc, or asked) on AWS."""
    if stack.settings.backend == "local":
        from picsel_nb.localcloud import cds_api  # the embedded cloud's machinery: local only

        return cds_api.api_url(stack.settings.endpoint_url), cds_api.DEFAULT_TOKEN
    return secret.read_cds_credentials()


def new_cds_key(stack: Stack) -> str:
    """A fresh CDS key to rotate to: a new loopback token on the local backend; on AWS the reader's
    current one (regenerate it on the CDS profile page and update ~/.cdsapirc first)."""
    if stack.settings.backend == "local":
        from picsel_nb.localcloud import cds_api

        return cds_api.issue_token(stack.settings.endpoint_url)
    return secret.read_cds_credentials()[1]


def ensure_storage(stack: Stack) -> dict[str, dict]:
    """Both buckets, configured (notebook 01); their posture by role."""
    return {"input": buckets.ensure_input_bucket(stack), "output": buckets.ensure_output_bucket(stack)}


def ensure_cds_secret(stack: Stack) -> dict[str, Any]:
    """The CDS key in Secrets Manager (notebook 02); its metadata, never its value."""
    return secret.ensure_secret(stack, *cds_credentials(stack))


def ensure_ingest(stack: Stack) -> dict:
    """Everything the ingest Lambda needs, and the Lambda itself (notebooks 01–03); its configuration."""
    ensure_storage(stack)
    arn = ensure_cds_secret(stack)["arn"]
    role_arn = roles.ensure_lambda_role(stack, arn)
    return function.ensure_function(stack, role_arn, stack.names.secret, stack.names.input_bucket)


def ensure_processing(stack: Stack) -> dict:
    """The contours Glue job with its role and script (notebook 04); its description."""
    return job.ensure_job(stack)


def ensure_catalog(stack: Stack) -> dict:
    """The catalog database and the crawler with its role (notebook 05); the crawler's description."""
    return catalog.ensure_crawler(stack)


def inventory(stack: Stack) -> dict[str, str]:
    """What the pipeline consists of, kind -> name: what `provision` creates."""
    names = stack.names
    return {"input bucket": names.input_bucket, "output bucket": names.output_bucket,
            "secret": names.secret, "function": names.lambda_function,
            "function role": names.lambda_role, "job": names.glue_job, "job role": names.glue_role,
            "database": names.database, "crawler": names.crawler,
            "crawler role": names.crawler_role}


def provision(stack: Stack) -> dict[str, str]:
    """Create or bring up to date every resource of the pipeline; its inventory."""
    ensure_ingest(stack)
    ensure_processing(stack)
    ensure_catalog(stack)
    return inventory(stack)


def ingest(stack: Stack, start: str | date, end: str | date) -> list[dict]:
    """Download each day from `start` to `end` into the input bucket (days already stored with the
    same request are skipped by the function itself); one row per day."""
    return [{"date": result.day.isoformat(), "ok": result.ok,
             "status": result.payload.get("status") if result.ok else result.error_type,
             "key": result.payload.get("key"), "bytes": result.payload.get("bytes"),
             "error": result.error_message}
            for result in function.invoke_range(stack, start, end)]


def ingest_blocks(stack: Stack, start: date, end: date, in_flight: int = IN_FLIGHT,
                  pause_s: float = QUEUED_PAUSE_S) -> dict[str, list]:
    """Ingest `start`..`end` as the CDS wants it: a month per request (``era5.request_blocks``),
    `in_flight` at once, requests the CDS still queues asked again after `pause_s` until done.

    Returns the blocks by outcome: "stored", "skipped" (already there) and "failed" (with the
    error), each as ``(first, last[, error])``.
    """
    outcome: dict[str, list] = {"stored": [], "skipped": [], "failed": []}
    pending = request_blocks(start, end)
    with tqdm(total=(end - start).days + 1, desc="ingest", unit="day") as bar, \
            ThreadPoolExecutor(in_flight) as pool:
        while pending:
            futures = {pool.submit(function.invoke_block, stack, *block): block
                       for block in pending}
            pending = []
            for future in as_completed(futures):
                block, result = futures[future], future.result()
                status = result.payload.get("status") if result.ok else "failed"
                if status == "queued":
                    pending.append(block)
                    continue
                bar.update((block[1] - block[0]).days + 1)
                if status == "failed":
                    error = f"{result.error_type}: {result.error_message}"
                    tqdm.write(f"{block[0]}..{block[1]}: {error}")
                    outcome["failed"].append((*block, error))
                else:
                    outcome[status].append(block)
            if pending:
                bar.set_postfix_str(f"{len(pending)} queued at the CDS")
                time.sleep(pause_s)
    return outcome


def _published_days(stack: Stack, start: date, end: date) -> set[date]:
    """The days of `start`..`end` whose every variable is published."""
    found: dict[date, set[str]] = {}
    for item in buckets.list_objects(stack, stack.names.output_bucket,
                                     f"{products.PRODUCTS_PREFIX}geojson/"):
        parsed = products.parse_key(item["Key"])
        if parsed and start <= parsed[2] <= end:
            found.setdefault(parsed[2], set()).add(parsed[1])
    return {day for day, variables in found.items() if variables >= set(products.SHORT_NAMES)}


def process_with_progress(stack: Stack, start: date, end: date) -> dict:
    """One Glue run over `start`..`end` (new days only), a progress bar of the days it publishes,
    and its outcome by day: "published", "skipped" (published before), "failed"."""
    before = _published_days(stack, start, end)
    run_id = job.start_run(stack, job.date_range(start, end))
    finished: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: finished.update(job.wait_run(stack, run_id)))
    waiter.start()
    with tqdm(total=(end - start).days + 1, initial=len(before), desc="process",
              unit="day") as bar:
        while waiter.is_alive():
            waiter.join(timeout=2.0)
            bar.update(len(_published_days(stack, start, end)) - bar.n)
    after = _published_days(stack, start, end)
    return {"state": finished.get("JobRunState"), "run_id": run_id,
            "error": finished.get("ErrorMessage"), "published": sorted(after - before),
            "skipped": sorted(before), "failed": sorted(set(days(start, end)) - after)}


def backfill(stack: Stack, start: str | date, end: str | date,
             in_flight: int = IN_FLIGHT) -> dict:
    """Ingest and process a whole range: the CDS in month-sized requests, then one Glue run over
    every new day; what was stored, published, skipped and failed."""
    first, last = parse_date(start), parse_date(end)
    if last < first:
        raise ValueError(f"end {last} is before start {first}; accepted: end on or after start")
    return {"ingest": ingest_blocks(stack, first, last, in_flight),
            "process": process_with_progress(stack, first, last)}


def stored_downloads(stack: Stack) -> list[dict]:
    """Every raw download in the input bucket: key, size and the provenance the function stored
    with it (dataset, date, request hash, CDS job id); the ids of pending CDS jobs kept beside
    them are no downloads."""
    s3, bucket = stack.client("s3"), stack.names.input_bucket
    return [{"key": item["Key"], "bytes": item["Size"],
             **s3.head_object(Bucket=bucket, Key=item["Key"])["Metadata"]}
            for item in buckets.list_objects(stack, bucket, buckets.RAW_PREFIX)
            if item["Key"].endswith(".nc")]


def open_raw(stack: Stack, key: str) -> xr.Dataset:
    """One stored raw download, opened as the Glue job opens it (hourly t2m in K, tp in m)."""
    body = stack.client("s3").get_object(Bucket=stack.names.input_bucket, Key=key)["Body"].read()
    return open_download(body)


def process(stack: Stack, start: str | date, end: str | date, redo: bool = False) -> dict:
    """Run the contours job over the days from `start` to `end` (days already published are
    skipped unless `redo`) and wait for it: state, run id, duration, error, product keys written."""
    return job.run(stack, job.date_range(parse_date(start), parse_date(end)), redo=redo)


def crawl(stack: Stack) -> dict:
    """Crawl the catalog form of the contours; the crawl's outcome and the tables it left."""
    return {"crawl": catalog.run_crawler(stack), "tables": catalog.describe_tables(stack)}


def publish_maps(stack: Stack, start: str | date, end: str | date) -> list[dict]:
    """Write and publish the interactive map page of each day (build/maps/ and products/maps/)."""
    from picsel_nb import maps  # folium and geopandas load only for the maps

    return [maps.publish_day_map(stack, day) for day in days(parse_date(start), parse_date(end))]


def product_urls(stack: Stack) -> list[str]:
    """The public URL of every published product, sorted."""
    bucket = stack.names.output_bucket
    return sorted(buckets.public_url(stack, bucket, item["Key"])
                  for item in buckets.list_objects(stack, bucket, buckets.PUBLIC_PREFIX))


@contextmanager
def _step(say: Say, what: str) -> Iterator[None]:
    """Announce a step, then how long it took."""
    say(f"{what} …")
    began = time.perf_counter()
    yield
    say(f"  done in {time.perf_counter() - began:.1f} s")


def _check_ingest(rows: list[dict]) -> None:
    failed = [f"{row['date']}: {row['status']}: {row['error']}" for row in rows if not row["ok"]]
    if failed:
        raise StackError("ingest failed for " + "; ".join(failed))


def _check_run(run: dict) -> None:
    if run.get("state") != "SUCCEEDED":
        raise StackError(f"the contours job ended {run.get('state')}: {run.get('error')}")


def _check_crawl(outcome: dict) -> None:
    crawl_result = outcome["crawl"]
    if crawl_result["status"] != "SUCCEEDED":
        raise StackError(f"the crawl ended {crawl_result['status']}: {crawl_result['error']}")


def demo(stack: Stack | None = None, say: Say = print) -> list[str]:
    """The whole pipeline for the demo's days (2023-09-01..03), with progress; the products' URLs."""
    with _step(say, "connecting"):
        stack = stack or get_stack()
        say(f"  backend {stack.settings.backend}, region {stack.region}, account {stack.account_id}")
    with _step(say, "provisioning buckets, secret, roles, function, job, database and crawler"):
        provision(stack)
    with _step(say, f"ingesting ERA5-Land {DEMO_START}..{DEMO_END} with the Lambda function"):
        _check_ingest(ingest(stack, DEMO_START, DEMO_END))
    with _step(say, "computing daily contours with the Glue job"):
        _check_run(process(stack, DEMO_START, DEMO_END))
    with _step(say, "cataloguing the contours with the Glue crawler"):
        _check_crawl(crawl(stack))
    with _step(say, "drawing a map page of each day"):
        for page in publish_maps(stack, DEMO_START, DEMO_END):
            say(f"  {page['path']}")
    urls = product_urls(stack)
    say(f"\n{len(urls)} products, public (anyone may GET them, no credentials):")
    for url in urls:
        say(f"  {url}")
    if stack.settings.backend == "local":
        say("\nThe embedded cloud keeps running, so these URLs open in a browser or with curl.\n"
            "Stop it with: picsel cloud stop")
    return urls
