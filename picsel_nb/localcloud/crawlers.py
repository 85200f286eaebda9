"""Glue crawlers that crawl: ``StartCrawler`` reads the S3 targets and writes the Data Catalog.

moto stores crawlers but a started one creates no table and stays RUNNING until ``ListCrawls`` is
called. Here a crawl runs in the background: it lists each ``Targets.S3Targets[].Path`` (minus its
``Exclusions`` and hidden ``_``/``.`` files) in the embedded S3, classifies every object
(``schema_inference``: JSON, NDJSON, CSV), makes one table per target named after the target's
last folder (lower-case, other characters → ``_``, ``TablePrefix`` first), turns the folder levels
under it into partition keys (``key=value`` → ``key``, otherwise ``partition_N``; type string) and
creates or updates the table and its partitions in moto's catalog, following the crawler's
``SchemaChangePolicy`` and ``RecrawlPolicy`` (CRAWL_NEW_FOLDERS_ONLY: only new partitions are
added). GetCrawler / GetCrawlers / BatchGetCrawlers report the real State (RUNNING → STOPPING →
READY) and LastCrawl; GetCrawlerMetrics (missing in moto) reports the last crawl's counts;
UpdateCrawler (missing in moto) changes the given settings of a crawler that is not running.
Log lines go to ``/aws-glue/crawlers``, stream = crawler name, prefixed by the crawl id, worded
like Glue's.

Differences from AWS: one table per S3 target (Glue may split a target into several tables when
the folders' schemas differ; here files of a minority classification are skipped and logged); a
data column named like a partition key is dropped in favour of the key; a missing database, a
missing bucket or a failing read fails the crawl; only S3 targets are crawled.

The crawl acts as a session of the crawler's role (``AWS-Crawler``): each S3 list and read and
each catalog read and write is authorized against the role's policies first, and a missing grant
fails the crawl with Glue's AccessDeniedException (its log lines are written as the service's).
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import reduce
from urllib.parse import unquote

from moto.core.utils import camelcase_to_underscores, get_service_model, utcnow
from moto.glue.exceptions import CrawlerNotFoundException
from moto.glue.models import FakeCrawl, FakeCrawler, GlueBackend
from moto.s3.exceptions import MissingBucket

from picsel_nb.localcloud import authorization, backends
from picsel_nb.localcloud.glue_jobs import glue_error, glue_response
from picsel_nb.localcloud.router import AwsRequest, AwsResponse, Router
from picsel_nb.localcloud.schema_inference import (
    FileSchema,
    HiveType,
    classify,
    hive_type,
    merge_columns,
)

LOG_GROUP = "/aws-glue/crawlers"
FINISHED = {"COMPLETED": "SUCCEEDED", "STOPPED": "CANCELLED", "FAILED": "FAILED"}
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
CSV_SERDE = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
TEXT_OUTPUT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
MOTO_TABLE_FIELDS = {"DatabaseName", "CreateTime", "UpdateTime", "VersionId", "CatalogId"}

_lock = threading.Lock()  # one StartCrawler or UpdateCrawler at a time


def install(router: Router) -> None:
    """Answer the crawler operations whose moto answers are stored rather than real."""
    router.intercept("glue", "StartCrawler", start_crawler)
    router.intercept("glue", "GetCrawler", get_crawler)
    router.intercept("glue", "GetCrawlers", get_crawlers)
    router.intercept("glue", "BatchGetCrawlers", batch_get_crawlers)
    router.intercept("glue", "GetCrawlerMetrics", get_crawler_metrics)
    router.intercept("glue", "UpdateCrawler", update_crawler)


class LiveCrawl(FakeCrawl):
    """A crawl in moto's crawler history whose state is set by the crawl itself.

    moto's FakeCrawl advances on every ListCrawls; this one holds still, so moto's own
    StopCrawler (which sets STOPPING) and ListCrawls keep working on the real state.
    """

    def __init__(self, crawler_name: str) -> None:
        super().__init__(crawler_name)
        self.dpu_hour = 0.0
        self.started = time.monotonic()
        self.runtime_seconds = 0.0
        self.error_message: str | None = None
        self.counts = Counter()  # TablesCreated, TablesUpdated, TablesDeleted, PartitionsCreated…

    status = property(lambda self: self._status,
                      lambda self, value: setattr(self, "_status", value))

    def advance(self) -> None:
        """The state changes only when the crawl does."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_dict(self) -> dict:
        """The CrawlerHistory entry of ListCrawls, with the error and a summary of changes."""
        return super().as_dict() | {
            "ErrorMessage": self.error_message,
            "Summary": json.dumps(dict(self.counts)) if self.finished else None,
        }


def start_crawler(req: AwsRequest) -> AwsResponse | None:
    """Start a crawl in the background; CrawlerRunningException while one runs."""
    crawler = _glue(req.region).crawlers.get(req.params.get("Name"))
    if crawler is None:
        return None  # moto answers EntityNotFoundException
    with _lock:
        if crawler.status != "READY":
            return AwsResponse.json_error("CrawlerRunningException",
                                          f"Crawler with name {crawler.name} has already started")
        crawl = LiveCrawl(crawler.name)
        crawler.crawls.append(crawl)
    threading.Thread(target=_run, args=(req.region, crawler, crawl), daemon=True,
                     name=f"crawl-{crawler.name}").start()
    return glue_response("StartCrawler", {})


def update_crawler(req: AwsRequest) -> AwsResponse:
    """Change only the given settings, as Glue does: Version + 1, LastUpdated now; refused
    (CrawlerRunningException) unless the crawler is READY."""
    name = req.params.get("Name")
    crawler = _glue(req.region).crawlers.get(name)
    if crawler is None:
        return glue_error(CrawlerNotFoundException(name))
    with _lock:
        if crawler.status != "READY":
            return AwsResponse.json_error("CrawlerRunningException", "Cannot update Crawler while "
                                          "running. Please stop crawl or wait until it completes "
                                          "to update.")
        settings = get_service_model("glue").operation_model("UpdateCrawler").input_shape.members
        for key in settings.keys() & req.params.keys() - {"Name"}:
            setattr(crawler, camelcase_to_underscores(key), req.params[key])
        crawler.version += 1
        crawler.last_updated = utcnow()
    return glue_response("UpdateCrawler", {})


def get_crawler(req: AwsRequest) -> AwsResponse | None:
    """The crawler with its real State, LastCrawl and CrawlElapsedTime."""
    crawler = _glue(req.region).crawlers.get(req.params.get("Name"))
    if crawler is None:
        return None
    return glue_response("GetCrawler", {"Crawler": _crawler_dict(crawler)})


def get_crawlers(req: AwsRequest) -> AwsResponse:
    """Every crawler, with real states."""
    crawlers = [_crawler_dict(c) for c in _glue(req.region).crawlers.values()]
    return glue_response("GetCrawlers", {"Crawlers": crawlers})


def batch_get_crawlers(req: AwsRequest) -> AwsResponse:
    """The named crawlers, with real states, and the names not found."""
    names = req.params.get("CrawlerNames") or []
    known = _glue(req.region).crawlers
    return glue_response("BatchGetCrawlers", {
        "Crawlers": [_crawler_dict(known[n]) for n in names if n in known],
        "CrawlersNotFound": [n for n in names if n not in known],
    })


def get_crawler_metrics(req: AwsRequest) -> AwsResponse:
    """Runtimes and the last crawl's table counts of the named (default: all) crawlers."""
    known = _glue(req.region).crawlers
    names = req.params.get("CrawlerNameList") or list(known)
    return glue_response("GetCrawlerMetrics", {
        "CrawlerMetricsList": [_metrics(known[n]) for n in names if n in known],
    })


def _glue(region: str) -> GlueBackend:
    return backends.backend("glue", region)


def _crawls(crawler: FakeCrawler) -> list[LiveCrawl]:
    return [c for c in crawler.crawls if isinstance(c, LiveCrawl)]


def _crawler_dict(crawler: FakeCrawler) -> dict:
    """moto's crawler description, with LastCrawl = the last *finished* crawl, as on AWS."""
    data = crawler.as_dict()
    data.pop("LastCrawl", None)
    data["LakeFormationConfiguration"] = getattr(crawler, "lake_formation_configuration", None)
    crawls = _crawls(crawler)
    if finished := [c for c in crawls if c.finished]:
        last = finished[-1]
        data["LastCrawl"] = {
            "Status": FINISHED[last.status], "ErrorMessage": last.error_message,
            "LogGroup": last.log_group, "LogStream": last.log_stream,
            "MessagePrefix": last.message_prefix, "StartTime": last.start_time,
        }
    running = crawls and not crawls[-1].finished
    data["CrawlElapsedTime"] = int((time.monotonic() - crawls[-1].started) * 1000) if running else 0
    return data


def _metrics(crawler: FakeCrawler) -> dict:
    crawls = _crawls(crawler)
    finished = [c for c in crawls if c.finished]
    runtimes = [c.runtime_seconds for c in finished]
    last = finished[-1].counts if finished else Counter()
    return {
        "CrawlerName": crawler.name, "TimeLeftSeconds": 0.0,
        "StillEstimating": bool(crawls) and not crawls[-1].finished,
        "LastRuntimeSeconds": runtimes[-1] if runtimes else 0.0,
        "MedianRuntimeSeconds": statistics.median(runtimes) if runtimes else 0.0,
        "TablesCreated": last["TablesCreated"], "TablesUpdated": last["TablesUpdated"],
        "TablesDeleted": last["TablesDeleted"],
    }


class CrawlStopped(Exception):
    """StopCrawler was called while the crawl ran."""


class CrawlLog:
    """The crawl's lines in ``/aws-glue/crawlers``, each prefixed by the crawl id like Glue's."""

    def __init__(self, region: str, crawler: str, crawl_id: str) -> None:
        self.region, self.stream, self.prefix = region, crawler, crawl_id

    def __call__(self, level: str, message: str) -> None:
        backends.write_logs(self.region, LOG_GROUP, self.stream,
                            [f"[{self.prefix}] {level} : {message}"])


def _run(region: str, crawler: FakeCrawler, crawl: LiveCrawl) -> None:
    """One crawl from start to READY, recording its outcome on ``crawl``."""
    log = CrawlLog(region, crawler.name, crawl.message_prefix)
    log("BENCHMARK", f"Running Start Crawl for Crawler {crawler.name}")
    log("INFO", "Crawler configured with SchemaChangePolicy "
        + json.dumps(crawler.schema_change_policy or {}, separators=(",", ":")))
    outcome, message = "COMPLETED", None
    try:
        Crawl(_glue(region), crawler, crawl, log).run()
    except CrawlStopped:
        outcome = "STOPPED"
        log("INFO", f"Crawler {crawler.name} was stopped")
    except Exception as exc:  # noqa: BLE001 — any error ends the crawl as FAILED, like Glue
        outcome, message = "FAILED", f"{type(exc).__name__}: {exc}"
        log("ERROR", message)
    if outcome != "STOPPED":
        crawl.status = "STOPPING"  # Glue's crawler passes through STOPPING on its way to READY
    if outcome == "COMPLETED":
        log("BENCHMARK", "Finished writing to Catalog")
    crawl.runtime_seconds = time.monotonic() - crawl.started
    crawl.error_message, crawl.end_time = message, utcnow()
    log("BENCHMARK", "Crawler has finished running and is in state READY")
    crawl.status = outcome


@dataclass
class PartitionScan:
    """The files of one partition folder and their merged schema."""

    values: list[str]
    location: str
    schema: FileSchema


@dataclass
class TableScan:
    """What one S3 target holds: a table's schema, layout and partitions."""

    name: str
    location: str
    partition_keys: list[str]
    schema: FileSchema
    partitions: dict[tuple, PartitionScan] = field(default_factory=dict)


class Crawl:
    """One crawl of one crawler: scan its S3 targets, then write the catalog."""

    def __init__(self, glue: GlueBackend, crawler: FakeCrawler, crawl: LiveCrawl, log) -> None:
        self.glue, self.crawler, self.crawl, self.log = glue, crawler, crawl, log
        policy = crawler.schema_change_policy or {}
        self.update = policy.get("UpdateBehavior", "UPDATE_IN_DATABASE")
        self.delete = policy.get("DeleteBehavior", "DEPRECATE_IN_DATABASE")
        recrawl = (crawler.recrawl_policy or {}).get("RecrawlBehavior", "CRAWL_EVERYTHING")
        self.new_folders_only = recrawl == "CRAWL_NEW_FOLDERS_ONLY"
        config = json.loads(crawler.configuration or "{}")
        behaviour = config.get("CrawlerOutput", {}).get("Partitions", {}).get("AddOrUpdateBehavior")
        self.inherit_schema = behaviour == "InheritFromTable"
        self.database = crawler.database_name
        self.principal = authorization.role_session(crawler.role or "", "AWS-Crawler")

    def _require(self, action: str, table: str | None = None) -> None:
        """Fail the crawl unless the role may do ``action`` on the catalog, the database and
        (given) the table, the ARNs Glue checks."""
        for resource in authorization.catalog_arns(self.glue.region_name, self.database, table,
                                                   self.glue.account_id):
            authorization.require(self.principal, action, resource)

    def run(self) -> None:
        """Scan every S3 target, then create, update and delete tables and partitions."""
        self._require("glue:GetDatabase")
        self.glue.get_database(self.database)  # a missing database fails the crawl
        for kind in set(self.crawler.targets or {}) - {"S3Targets"}:
            if self.crawler.targets[kind]:
                self.log("WARN", f"{kind} are not crawled by the embedded cloud")
        scans = [scan for target in (self.crawler.targets or {}).get("S3Targets", [])
                 if (scan := self._scan(target)) is not None]
        self.log("BENCHMARK", f"Classification complete, writing results to database "
                 f"{self.database}")
        for scan in scans:
            self._check_stop()
            self._write_table(scan)
        if not self.new_folders_only:
            self._remove_vanished({scan.name for scan in scans})
        self._check_stop()  # a stop accepted while RUNNING always ends CANCELLED

    def _check_stop(self) -> None:
        """End the crawl here when StopCrawler has been called."""
        if self.crawl.status == "STOPPING":
            raise CrawlStopped

    # -- scanning S3 ------------------------------------------------------------------------

    def _scan(self, target: dict) -> TableScan | None:
        """Classify every object of one S3 target; None when it holds nothing to catalog."""
        path = target["Path"]
        bucket, _, prefix = path.removeprefix("s3://").partition("/")
        authorization.require(self.principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}",
                              {"s3:prefix": prefix})
        try:
            keys = backends.list_keys(bucket, prefix)
        except MissingBucket:
            raise ValueError(f"The bucket of S3 target {path} does not exist") from None
        if prefix and prefix in keys:  # the path names one object: its folder is the table's
            folder = prefix.rpartition("/")[0]
            root, keys = (folder + "/" if folder else ""), [prefix]
        else:
            root = prefix.rstrip("/") + "/" if prefix else ""
        excluded = [_glob_regex(p) for p in target.get("Exclusions", [])]
        files = {}
        for key in keys:
            relative = key[len(root):]
            if (not key.startswith(root) or key.endswith("/") or relative.split("/")[-1][:1] in "_."
                    or any(rx.fullmatch(relative) for rx in excluded)):
                continue
            self._check_stop()
            authorization.require(self.principal, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")
            files[relative] = classify(backends.read_object(bucket, key))
        if not files:
            self.log("INFO", f"No files found under {path}: no table created")
            return None
        return self._table_scan(path, f"s3://{bucket}/{root}", files)

    def _table_scan(self, path: str, location: str, files: dict[str, FileSchema]) -> TableScan | None:
        """Group classified files into one table with partitions by folder."""
        kinds = Counter(s.classification for s in files.values() if s.classification != "UNKNOWN")
        if not kinds:
            self.log("WARN", f"No file under {path} matched a classifier (json, csv): "
                     "no table created")
            return None
        classification = kinds.most_common(1)[0][0]
        for relative, schema in files.items():
            if schema.classification != classification:
                self.log("WARN", f"Skipping {location}{relative}: classified "
                         f"{schema.classification}, the table is {classification}")
        folders = {rel: rel.split("/")[:-1] for rel, s in files.items()
                   if s.classification == classification}
        depth = min(len(parts) for parts in folders.values())
        keys = [_partition_key(i, {parts[i] for parts in folders.values()}) for i in range(depth)]
        name = self.crawler.table_prefix or ""
        name += re.sub(r"[^a-z0-9_]", "_", (location.rstrip("/").rsplit("/", 1)[-1]).lower())
        partitions: dict[tuple, list[FileSchema]] = {}
        for relative, parts in folders.items():
            partitions.setdefault(tuple(parts[:depth]), []).append(files[relative])
        scan = TableScan(name, location, keys,
                         _combine([s for group in partitions.values() for s in group]))
        for parts, schemas in partitions.items():
            values = [unquote(p.split("=", 1)[-1]) if "=" in p else p for p in parts]
            where = location + "".join(f"{p}/" for p in parts)
            scan.partitions[tuple(values)] = PartitionScan(values, where, _combine(schemas))
        return scan

    # -- writing the catalog ----------------------------------------------------------------

    def _write_table(self, scan: TableScan) -> None:
        """Create the table or apply the update policy; then its partitions."""
        table_input = self._table_input(scan)
        self._require("glue:GetTable", scan.name)
        existing = self.glue.get_database(self.database).tables.get(scan.name)
        if existing is None:
            self._require("glue:CreateTable", scan.name)
            self.glue.create_table(self.database, scan.name, table_input)
            self.crawl.counts["TablesCreated"] += 1
            self.log("INFO", f"Created table {scan.name} in database {self.database}")
        elif not self.new_folders_only and _changed(existing.as_dict(), table_input):
            schema_changed = _changed(existing.as_dict(), table_input,
                                      ("PartitionKeys", "StorageDescriptor.Columns"))
            if self.update == "UPDATE_IN_DATABASE":
                self._require("glue:UpdateTable", scan.name)
                self.glue.update_table(self.database, scan.name, table_input)
                self.crawl.counts["TablesUpdated"] += 1
                self.log("INFO", f"Updated table {scan.name} in database {self.database}")
            elif schema_changed:
                self.log("INFO", f"Schema change of table {scan.name} in database "
                         f"{self.database} not applied: UpdateBehavior is LOG")
        self._write_partitions(scan, table_input)

    def _write_partitions(self, scan: TableScan, table_input: dict) -> None:
        self._require("glue:GetPartitions", scan.name)
        table = self.glue.get_table(self.database, scan.name)
        current = {tuple(p.values): p for p in table.partitions.values()}
        wanted = {values: self._partition_input(scan, part, table_input)
                  for values, part in scan.partitions.items()}
        new = [wanted[v] for v in wanted if v not in current]
        if new:
            self._require("glue:BatchCreatePartition", scan.name)
            self.glue.batch_create_partition(self.database, scan.name, new)
            self.crawl.counts["PartitionsCreated"] += len(new)
            self.log("INFO", f"Created partitions with values {_values(new)} for table "
                     f"{scan.name} in database {self.database}")
        if self.update == "UPDATE_IN_DATABASE" and not self.new_folders_only:
            changed = [wanted[v] for v in wanted
                       if v in current and current[v].partition_input != wanted[v]]
            if changed:
                self._require("glue:UpdatePartition", scan.name)
            for item in changed:
                self.glue.update_partition(self.database, scan.name, item, item["Values"])
            if changed:
                self.crawl.counts["PartitionsUpdated"] += len(changed)
                self.log("INFO", f"Updated partitions with values {_values(changed)} for table "
                         f"{scan.name}")
        gone = [list(v) for v in current if v not in wanted]
        if gone and not self.new_folders_only:
            self._remove_partitions(scan.name, gone)

    def _remove_partitions(self, table: str, gone: list[list[str]]) -> None:
        if self.delete == "DELETE_FROM_DATABASE":
            self._require("glue:BatchDeletePartition", table)
            self.glue.batch_delete_partition(self.database, table, [{"Values": v} for v in gone])
            self.crawl.counts["PartitionsDeleted"] += len(gone)
            self.log("INFO", f"Deleted partitions with values {_values(gone)} from table {table}")
        else:
            self.log("INFO", f"Partitions with values {_values(gone)} of table {table} have no "
                     f"data any more; kept (DeleteBehavior {self.delete})")

    def _remove_vanished(self, crawled: set[str]) -> None:
        """Apply DeleteBehavior to this crawler's tables whose data is gone."""
        self._require("glue:GetTables", "*")
        tables = self.glue.get_database(self.database).tables
        for name, table in list(tables.items()):
            parameters = table.as_dict().get("Parameters") or {}
            if name in crawled or parameters.get("UPDATED_BY_CRAWLER") != self.crawler.name:
                continue
            if self.delete == "DELETE_FROM_DATABASE":
                self._require("glue:DeleteTable", name)
                self.glue.delete_table(self.database, name)
                self.log("INFO", f"Deleted table {name} from database {self.database}")
            elif self.delete == "DEPRECATE_IN_DATABASE":
                if "DEPRECATED_BY_CRAWLER" in parameters:
                    continue
                table_input = _table_input_of(table)
                table_input["Parameters"] = parameters | {"DEPRECATED_BY_CRAWLER":
                                                          self.crawler.name}
                self._require("glue:UpdateTable", name)
                self.glue.update_table(self.database, name, table_input)
                self.log("INFO", f"Deprecated table {name} in database {self.database}")
            else:
                self.log("INFO", f"Table {name} has no data any more; kept (DeleteBehavior LOG)")
                continue
            self.crawl.counts["TablesDeleted"] += 1

    def _table_input(self, scan: TableScan) -> dict:
        """The TableInput a Glue crawler writes for ``scan``."""
        columns = {k: v for k, v in scan.schema.columns.items() if k not in scan.partition_keys}
        for name in set(scan.schema.columns) - set(columns):
            self.log("WARN", f"Column {name} of table {scan.name} is also a partition key; "
                     f"the partition key is kept")
        parameters = _parameters(scan.schema, self.crawler.name)
        role = (self.crawler.role or "").rsplit("/", 1)[-1]
        return {
            "Name": scan.name,
            "Owner": "owner",
            "Retention": 0,
            "TableType": "EXTERNAL_TABLE",
            "PartitionKeys": [{"Name": key, "Type": "string"} for key in scan.partition_keys],
            "Parameters": parameters,
            "StorageDescriptor": _storage(scan.location, scan.schema, columns, parameters),
            "CreatedBy": f"arn:aws:sts::{self.glue.account_id}:assumed-role/{role}/AWS-Crawler",
        }

    def _partition_input(self, scan: TableScan, part: PartitionScan, table_input: dict) -> dict:
        """The PartitionInput for one partition folder (its own schema unless InheritFromTable)."""
        own = {k: v for k, v in part.schema.columns.items() if k not in scan.partition_keys}
        parameters = _parameters(part.schema, self.crawler.name)
        storage = _storage(part.location, part.schema, own, parameters)
        if self.inherit_schema:
            storage["Columns"] = table_input["StorageDescriptor"]["Columns"]
        return {"Values": part.values, "Parameters": parameters, "StorageDescriptor": storage}


def _partition_key(level: int, folders: set[str]) -> str:
    """``key`` when every folder at this level is ``key=value``, else ``partition_<level>``."""
    names = {f.split("=", 1)[0] for f in folders}
    if len(names) == 1 and all("=" in f for f in folders):
        return names.pop()
    return f"partition_{level}"


def _combine(schemas: list[FileSchema]) -> FileSchema:
    """One schema for several files of one classification: columns merged, counts summed."""
    first = schemas[0]
    return FileSchema(
        first.classification,
        reduce(merge_columns, (s.columns for s in schemas)),
        record_count=sum(s.record_count for s in schemas),
        size=sum(s.size for s in schemas),
        compression=first.compression,
        delimiter=first.delimiter,
        header=first.header,
        object_count=sum(s.object_count for s in schemas),
    )


def _parameters(schema: FileSchema, crawler: str) -> dict[str, str]:
    """The table/partition Parameters a crawler records (classification, counts, sizes)."""
    parameters = {
        "classification": schema.classification,
        "compressionType": schema.compression,
        "typeOfData": "file",
        "recordCount": str(schema.record_count),
        "averageRecordSize": str(schema.size // max(schema.record_count, 1)),
        "objectCount": str(schema.object_count),
        "sizeKey": str(schema.size),
        "CrawlerSchemaDeserializerVersion": "1.0",
        "CrawlerSchemaSerializerVersion": "1.0",
        "UPDATED_BY_CRAWLER": crawler,
    }
    if schema.classification == "csv":
        parameters |= {"delimiter": schema.delimiter, "areColumnsQuoted": "false",
                       "columnsOrdered": "true"}
        if schema.header:
            parameters["skip.header.line.count"] = "1"
    return parameters


def _storage(location: str, schema: FileSchema, columns: dict[str, HiveType],
             parameters: dict[str, str]) -> dict:
    """A StorageDescriptor like the crawler's: text input, the JSON or delimited-text SerDe."""
    if schema.classification == "csv":
        serde = {"SerializationLibrary": CSV_SERDE,
                 "Parameters": {"field.delim": schema.delimiter}}
    else:
        serde = {"SerializationLibrary": JSON_SERDE, "Parameters": {"paths": ",".join(columns)}}
    return {
        "Columns": [{"Name": name, "Type": hive_type(kind)} for name, kind in columns.items()],
        "Location": location,
        "InputFormat": TEXT_INPUT,
        "OutputFormat": TEXT_OUTPUT,
        "Compressed": schema.compression != "none",
        "NumberOfBuckets": -1,
        "SerdeInfo": serde,
        "BucketColumns": [],
        "SortColumns": [],
        "Parameters": parameters,
        "StoredAsSubDirectories": False,
    }


def _table_input_of(table) -> dict:
    """The current TableInput of a moto table: its description minus what moto adds."""
    return {k: v for k, v in table.as_dict().items() if k not in MOTO_TABLE_FIELDS}


def _changed(current: dict, wanted: dict, paths: tuple[str, ...] | None = None) -> bool:
    """Whether ``wanted`` differs from ``current`` at ``paths`` (dotted; default: every key)."""
    for path in paths or tuple(wanted):
        a, b = current, wanted
        for part in path.split("."):
            a, b = (a or {}).get(part), (b or {}).get(part)
        if a != b:
            return True
    return False


def _values(items: list) -> str:
    """Partition values as Glue's log lines show them: ``[[t2m, 2023-09-01], …]``."""
    rows = [item["Values"] if isinstance(item, dict) else item for item in items]
    return "[" + ", ".join("[" + ", ".join(row) + "]" for row in rows) + "]"


def _glob_regex(pattern: str) -> re.Pattern:
    """A Glue exclude pattern as a regex: ``**`` crosses folders, ``*``/``?`` do not; ``[…]``
    and ``{a,b}`` as in glob."""
    out, i, braces = "", 0, 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if char == "[" and (end := pattern.find("]", i + 1)) > i:
            out, i = out + "[" + pattern[i + 1:end].replace("!", "^", 1) + "]", end + 1
            continue
        braces += {"{": 1, "}": -1}.get(char, 0)
        special = {"*": "[^/]*", "?": "[^/]", "{": "(?:", "}": ")", ",": "|" if braces else ","}
        out, i = out + special.get(char, re.escape(char)), i + 1
    return re.compile(out)
