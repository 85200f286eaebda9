"""Athena's SQL engine in the embedded cloud: DuckDB over the Glue Data Catalog and moto's S3.

A query runs on a fresh in-memory DuckDB attached as ``awsdatacatalog``. Each table it names is
looked up in moto's Glue catalog and becomes a view over ``read_json`` (OpenX/Hive JSON SerDe) or
``read_csv`` (LazySimpleSerDe) of the objects under its partitions' locations, with the catalog's
column types and its partition keys as Hive-partition columns. The objects are served to DuckDB by
a virtual filesystem whose paths carry the partition values (``<key>=<value>/``), so DuckDB prunes
partitions on ``WHERE`` and opens only the files it keeps; each open is an ``s3:GetObject`` of the
caller. Local files, extension downloads and configuration changes are disabled before the SQL
runs. Errors come back in Athena's words (``QueryFailed``).
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
from fsspec import AbstractFileSystem

from picsel_nb.localcloud import authorization, backends
from picsel_nb.localcloud.policy import Principal

CATALOG = "awsdatacatalog"
PROTOCOL = "athena-s3"
JSON_SERDES = ("org.openx.data.jsonserde.JsonSerDe", "org.apache.hive.hcatalog.data.JsonSerDe")
HIVE_TO_DUCKDB = {"string": "VARCHAR", "varchar": "VARCHAR", "char": "VARCHAR", "bigint": "BIGINT",
                  "int": "INTEGER", "integer": "INTEGER", "smallint": "SMALLINT",
                  "tinyint": "TINYINT", "double": "DOUBLE", "float": "FLOAT",
                  "boolean": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP",
                  "binary": "BLOB"}
# DuckDB result type -> (Athena type, precision, scale); sum(bigint) is HUGEINT in DuckDB only.
ATHENA_TYPES = {"VARCHAR": ("varchar", 2147483647, 0), "BIGINT": ("bigint", 19, 0),
                "HUGEINT": ("bigint", 19, 0), "UBIGINT": ("bigint", 19, 0),
                "INTEGER": ("integer", 10, 0), "UINTEGER": ("bigint", 19, 0),
                "SMALLINT": ("smallint", 5, 0), "TINYINT": ("tinyint", 3, 0),
                "DOUBLE": ("double", 17, 0), "FLOAT": ("real", 7, 0),
                "BOOLEAN": ("boolean", 0, 0), "DATE": ("date", 0, 0),
                "TIMESTAMP": ("timestamp", 3, 0), "BLOB": ("varbinary", 2147483647, 0)}
SETTINGS = ("SET disabled_filesystems = 'LocalFileSystem'", "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false", "SET integer_division = true",
            "SET lock_configuration = true")
_POSITION = re.compile(r"LINE (\d+): (.*)\n( *)\^")


class QueryFailed(Exception):
    """A query that ends FAILED; the message is Athena's StateChangeReason."""


@dataclass
class Result:
    """A finished query: Athena's ColumnInfo, the rows as text (None for NULL), bytes scanned."""

    columns: list[dict]
    rows: list[list[str | None]]
    scanned_bytes: int


@dataclass
class _Files:
    """The virtual filesystem's contents: virtual path -> (bucket, key, size)."""

    objects: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)
    denied: str | None = None


class CatalogFileSystem(AbstractFileSystem):
    """The objects of the queried tables, opened as the caller (``s3:GetObject`` per file)."""

    protocol = PROTOCOL
    cachable = False

    def __init__(self, files: _Files, principal: Principal, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files, self.principal = files, principal

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list:
        prefix = self._strip_protocol(path).rstrip("/")
        items = [self.info(name) for name in self.files.objects
                 if name == prefix or name.startswith(prefix + "/")]
        return items if detail else [item["name"] for item in items]

    def info(self, path: str, **kwargs: Any) -> dict:
        name = self._strip_protocol(path)
        if name not in self.files.objects:
            raise FileNotFoundError(path)
        return {"name": name, "size": self.files.objects[name][2], "type": "file"}

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.BytesIO:
        name = self._strip_protocol(path)
        bucket, key, _ = self.files.objects[name]
        try:
            authorization.require(self.principal, "s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")
        except authorization.AccessDeniedException:
            self.files.denied = f"s3://{bucket}/{key}"
            raise PermissionError(f"Permission denied on S3 path: s3://{bucket}/{key}") from None
        self.files.read.add(name)
        return io.BytesIO(backends.read_object(bucket, key))


def run(sql: str, database: str | None, principal: Principal, region: str,
        cancelled: threading.Event | None = None) -> Result:
    """Run one SELECT as ``principal``; QueryFailed with Athena's reason when it fails."""
    refs = table_refs(sql)
    files = _Files()
    con, done = duckdb.connect(), threading.Event()
    if cancelled is not None:
        threading.Thread(target=_interrupt_on, args=(cancelled, done, con), daemon=True).start()
    try:
        con.register_filesystem(CatalogFileSystem(files, principal))
        con.execute(f"ATTACH ':memory:' AS {CATALOG}; USE {CATALOG}")
        glue = backends.backend("glue", region)
        for schema in ({ref[0] or database for ref in refs} | {database}) - {None}:
            if schema in glue.databases:
                _require_glue(principal, region, "glue:GetDatabase", schema)
                con.execute(f"CREATE SCHEMA {_quote(schema)}")
        if database in glue.databases:
            con.execute(f"USE {CATALOG}.{_quote(database)}")
        for schema, table in {(ref[0] or database, ref[1]) for ref in refs}:
            if schema in glue.databases and table in glue.databases[schema].tables:
                view = _view(glue, schema, table, principal, region, files)
                con.execute(f"CREATE VIEW {_quote(schema)}.{_quote(table)} AS {view}")
        for setting in SETTINGS:
            con.execute(setting)
        cursor = con.execute(sql)
        columns = [column_info(name, str(kind)) for name, kind, *_ in cursor.description]
        rows = [[text(value) for value in row] for row in cursor.fetchall()]
    except duckdb.Error as exc:
        raise QueryFailed(reason(exc, sql, refs, database, files)) from None
    finally:
        done.set()
        con.close()
    scanned = sum(files.objects[name][2] for name in files.read)
    return Result(columns, rows, scanned)


def _interrupt_on(cancelled: threading.Event, done: threading.Event,
                  con: duckdb.DuckDBPyConnection) -> None:
    """Interrupt the connection until its query ends, once the query is cancelled (an interrupt
    before DuckDB starts executing would be lost)."""
    cancelled.wait()
    while not done.wait(0.05):
        con.interrupt()


def table_refs(sql: str) -> list[tuple[str, str]]:
    """The (database or "", table) of every catalog table the query names (CTEs left out);
    QueryFailed for a syntax error or a statement other than a query."""
    tree = json.loads(duckdb.execute("SELECT json_serialize_sql($1)", [sql]).fetchall()[0][0])
    if tree.get("error"):
        if tree.get("error_type") == "parser":
            line, col = _line_col(sql, int(tree.get("position") or 0))
            token = re.search(r'at or near "(.*)"', tree["error_message"])
            return _fail(f"line {line}:{col}: mismatched input "
                         f"'{token.group(1) if token else '<EOF>'}'")
        return _fail("NOT_SUPPORTED: only SELECT queries run on the embedded cloud's Athena")
    found, ctes = [], set()
    for node in _nodes(tree):
        ctes |= {item["key"] for item in node.get("cte_map", {}).get("map", [])}
        if node.get("type") == "BASE_TABLE" and node.get("catalog_name", "").lower() in (
                "", CATALOG):
            found.append((node["schema_name"], node["table_name"]))
    return [(schema, table) for schema, table in found if schema or table not in ctes]


def _fail(message: str):
    raise QueryFailed(message)


def _nodes(tree: Any) -> Iterator[dict]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def _require_glue(principal: Principal, region: str, action: str, database: str,
                  table: str | None = None) -> None:
    """Athena's catalog reads, as the caller: the catalog, the database (and the table)."""
    base = f"arn:aws:glue:{region}:{backends.ACCOUNT_ID}"
    resources = [f"{base}:catalog", f"{base}:database/{database}"]
    resources += [f"{base}:table/{database}/{table}"] if table else []
    try:
        for resource in resources:
            authorization.require(principal, action, resource)
    except authorization.AccessDeniedException as exc:
        raise QueryFailed(f"Insufficient permissions to execute the query. {exc}") from None


def _view(glue: Any, database: str, name: str, principal: Principal, region: str,
          files: _Files) -> str:
    """The SELECT over a catalog table's objects, its columns typed as the catalog says."""
    _require_glue(principal, region, "glue:GetTable", database, name)
    _require_glue(principal, region, "glue:GetPartitions", database, name)
    table = glue.get_table(database, name).as_dict()
    storage = table["StorageDescriptor"]
    columns = {c["Name"]: duckdb_type(c["Type"]) for c in storage.get("Columns", [])}
    keys = {k["Name"]: duckdb_type(k["Type"]) for k in table.get("PartitionKeys", [])}
    if keys:
        parts = [(p.as_dict()["Values"], p.as_dict()["StorageDescriptor"]["Location"])
                 for p in glue.get_partitions(database, name, None)]
    else:
        parts = [([], storage["Location"])]
    paths = []
    for values, location in parts:
        folder = "/".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
        for index, (bucket, key, size) in enumerate(_objects(location, principal)):
            path = f"{database}/{name}/{folder}/{index}".replace("//", "/")
            files.objects[path] = (bucket, key, size)
            paths.append(f"{PROTOCOL}://{path}")
    names = ", ".join(_quote(c) for c in [*columns, *keys])
    if not paths:
        typed = ", ".join(f"CAST(NULL AS {kind}) AS {_quote(c)}"
                          for c, kind in {**columns, **keys}.items())
        return f"SELECT {typed} WHERE false"
    options = f"columns = {_struct(columns)}"
    if keys:
        options += f", hive_partitioning = true, hive_types = {_struct(keys)}"
    serde = storage.get("SerdeInfo", {})
    if serde.get("SerializationLibrary") in JSON_SERDES:
        reader = f"read_json({paths!r}, format = 'newline_delimited', {options})"
    else:
        params = serde.get("Parameters", {})
        delimiter = params.get("field.delim", ",").replace("'", "''")
        header = table.get("Parameters", {}).get("skip.header.line.count") == "1"
        reader = (f"read_csv({paths!r}, delim = '{delimiter}', header = {str(header).lower()}, "
                  f"quote = '', escape = '', {options})")
    return f"SELECT {names} FROM {reader}"


def _objects(location: str, principal: Principal) -> list[tuple[str, str, int]]:
    """The data objects under an S3 location, listed as the caller; Athena skips keys whose
    name starts with ``_`` or ``.`` and folder markers."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        authorization.require(principal, "s3:ListBucket", f"arn:aws:s3:::{bucket}",
                              {"s3:prefix": prefix})
        keys = backends.list_keys(bucket, prefix)
    except authorization.AccessDeniedException:
        raise QueryFailed(f"Permission denied on S3 path: {location}") from None
    except KeyError:
        raise QueryFailed(f"The specified bucket does not exist: {bucket}") from None
    store = backends.s3_backend().get_bucket(bucket).keys
    return [(bucket, key, store[key].size) for key in keys
            if not key.endswith("/") and not key.rsplit("/", 1)[-1].startswith(("_", "."))]


def duckdb_type(hive: str) -> str:
    """The DuckDB type of a Hive/Glue column type (``array<double>`` → ``DOUBLE[]``)."""
    hive = hive.strip().lower()
    if hive.startswith("array<"):
        return duckdb_type(hive[6:-1]) + "[]"
    if hive.startswith("struct<"):
        fields = _split(hive[7:-1])
        inner = ", ".join(f"{_quote(f.split(':', 1)[0])} {duckdb_type(f.split(':', 1)[1])}"
                          for f in fields)
        return f"STRUCT({inner})"
    if hive.startswith("map<"):
        key, value = _split(hive[4:-1])
        return f"MAP({duckdb_type(key)}, {duckdb_type(value)})"
    if hive.startswith(("decimal", "varchar", "char")):
        return hive.upper() if hive.startswith("decimal") else "VARCHAR"
    return HIVE_TO_DUCKDB.get(hive, "VARCHAR")


def _split(text: str) -> list[str]:
    """Comma-separated items at the top level of a type's angle brackets."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:index])
            start = index + 1
    return [*items, text[start:]]


def column_info(name: str, duck: str) -> dict:
    """Athena's ColumnInfo of one result column of DuckDB type ``duck``."""
    if duck.startswith("DECIMAL"):
        precision, scale = map(int, re.findall(r"\d+", duck))
        kind = ("decimal", precision, scale)
    elif duck.endswith("]"):
        kind = ("array", 0, 0)
    elif duck.startswith("STRUCT"):
        kind = ("row", 0, 0)
    elif duck.startswith("MAP"):
        kind = ("map", 0, 0)
    else:
        kind = ATHENA_TYPES.get(duck, ("varchar", 2147483647, 0))
    return {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": name,
            "Label": name, "Type": kind[0], "Precision": kind[1], "Scale": kind[2],
            "Nullable": "UNKNOWN", "CaseSensitive": kind[0] == "varchar"}


def text(value: Any) -> str | None:
    """A value as Athena writes it in results (Trino's text forms); None stays NULL."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _double(value)
    if isinstance(value, datetime):
        return value.isoformat(" ", "milliseconds")
    if isinstance(value, date | Decimal | int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(text(v) or "null" for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={text(v) or 'null'}" for k, v in value.items()) + "}"
    return str(value)


def _double(value: float) -> str:
    """Java's Double.toString, as Trino prints a double: plain from 1e-3 to 1e7, else 1.5E7."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(value)
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    mantissa = "".join(map(str, digits))
    power = exponent + len(digits) - 1
    return f"{'-' if sign else ''}{mantissa[0]}.{mantissa[1:] or '0'}E{power}"


def reason(exc: duckdb.Error, sql: str, refs: list[tuple[str, str]], database: str | None,
           files: _Files) -> str:
    """Athena's StateChangeReason for a DuckDB error."""
    message = str(exc).split("\n")[0].split(": ", 1)[-1]
    if files.denied:
        return f"Permission denied on S3 path: {files.denied}"
    where = _where(str(exc), sql)
    if isinstance(exc, duckdb.CatalogException):
        if schema := re.search(r'because schema "([^"]+)" does not exist', message):
            return f"SCHEMA_NOT_FOUND: {where}Schema '{schema.group(1)}' does not exist"
        if found := re.search(r"Table with name (\S+) does not exist", message):
            name = found.group(1).strip('"')
            schema = next((s for s, t in refs if t == name.rsplit(".", 1)[-1] and s), database)
            return (f"TABLE_NOT_FOUND: {where}Table '{CATALOG}.{schema or 'default'}."
                    f"{name.rsplit('.', 1)[-1]}' does not exist")
        if found := re.search(r"Function with name (\S+) does not exist", message):
            return f"FUNCTION_NOT_FOUND: {where}Function '{found.group(1)}' not registered"
    if column := re.search(r'Referenced column "([^"]+)" not found', message):
        return (f"COLUMN_NOT_FOUND: {where}Column '{column.group(1)}' cannot be resolved or "
                "requester is not authorized to access requested resources")
    if isinstance(exc, duckdb.InterruptException):
        return "Query cancelled by user"
    if isinstance(exc, duckdb.ConversionException):
        return f"INVALID_CAST_ARGUMENT: {where}{message}"
    return f"GENERIC_USER_ERROR: {where}{message}"


def _where(message: str, sql: str) -> str:
    """``line L:C: `` from the caret DuckDB puts under the query, "" when it shows none."""
    found = _POSITION.search(message)
    if not found:
        return ""
    line, shown, caret = int(found.group(1)), found.group(2), found.group(3)
    offset = len(caret) - len(f"LINE {line}: ")
    snippet = shown[offset:].removesuffix("...")[:20]
    source = sql.split("\n")[line - 1] if line <= sql.count("\n") + 1 else ""
    col = source.find(snippet) + 1 if snippet and snippet in source else offset + 1
    return f"line {line}:{col}: "


def _line_col(sql: str, position: int) -> tuple[int, int]:
    before = sql[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _struct(types: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in types.items()) + "}"
