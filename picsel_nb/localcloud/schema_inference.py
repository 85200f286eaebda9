"""What a Glue crawler's built-in classifiers make of one file: its format and its Hive schema.

Classification follows the built-in classifiers' order: JSON (one document, or one object per
line), then CSV (delimiters ``,`` ``|`` tab ``;`` Ctrl-A; at least two columns and two rows; a
header only when the first row is all strings and some later cell is not). Types are Hive's:
``string``, ``bigint``, ``double``, ``boolean``, ``struct<…>``, ``array<…>``, merged across records
and files (``double`` wins over ``bigint``; any other conflict becomes ``string``).

A type is kept as a small tree until rendered: ``None`` (only nulls seen), a scalar name,
a ``dict`` (struct fields in first-seen order) or a one-item ``list`` (array of that element type).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

HiveType = None | str | dict | list

CSV_DELIMITERS = ",|\t;\x01"
_NUMERIC = {"bigint", "double"}


@dataclass
class FileSchema:
    """The classification, schema and size of one file."""

    classification: str  # "json" | "csv" | "UNKNOWN"
    columns: dict[str, HiveType] = field(default_factory=dict)
    record_count: int = 0
    size: int = 0
    compression: str = "none"
    delimiter: str | None = None  # csv only
    header: bool = False  # csv only
    object_count: int = 1  # files it was read from (more than one once combined)


def infer_type(value: Any) -> HiveType:
    """The Hive type of one JSON value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        return {key: infer_type(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reduce(merge_types, map(infer_type, value), None)]
    return "string"


def merge_types(a: HiveType, b: HiveType) -> HiveType:
    """The type that holds values of both ``a`` and ``b``, as the crawler widens a column."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if isinstance(a, str) and isinstance(b, str):
        return "double" if {a, b} == _NUMERIC else "string"
    if isinstance(a, dict) and isinstance(b, dict):
        return merge_columns(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return [merge_types(a[0], b[0])]
    return "string"


def merge_columns(a: dict[str, HiveType], b: dict[str, HiveType]) -> dict[str, HiveType]:
    """Union of two schemas (column order: ``a``'s, then ``b``'s new ones), types merged."""
    merged = dict(a)
    for name, kind in b.items():
        merged[name] = merge_types(merged.get(name), kind)
    return merged


def hive_type(kind: HiveType) -> str:
    """The Hive type string of a type tree (a column of only nulls is a ``string``)."""
    if kind is None:
        return "string"
    if isinstance(kind, dict):
        return "struct<" + ",".join(f"{k}:{hive_type(v)}" for k, v in kind.items()) + ">"
    if isinstance(kind, list):
        return f"array<{hive_type(kind[0])}>"
    return kind


def classify(data: bytes) -> FileSchema:
    """Classify one file's bytes (gzip is undone first) and infer its schema."""
    compression = "none"
    if data[:2] == b"\x1f\x8b":
        data, compression = gzip.decompress(data), "gzip"
    size = len(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return FileSchema("UNKNOWN", size=size, compression=compression)
    for reader in (_json_records, _csv_schema):
        if (schema := reader(text)) is not None:
            schema.size, schema.compression = size, compression
            return schema
    return FileSchema("UNKNOWN", size=size, compression=compression)


def _json_records(text: str) -> FileSchema | None:
    """A JSON document (a top-level array becomes one ``array`` column, as Glue does) or NDJSON."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return None
    else:
        records = [{"array": document}] if isinstance(document, list) else [document]
    if not records or not all(isinstance(r, dict) for r in records):
        return None
    columns = reduce(merge_columns, ({k: infer_type(v) for k, v in r.items()} for r in records))
    return FileSchema("json", columns, record_count=len(records))


def _csv_schema(text: str) -> FileSchema | None:
    """Delimited text with at least two columns and two rows, all rows of one width."""
    sample = text[:65536]
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        return None
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    if len(rows) < 2 or len(rows[0]) < 2 or any(len(row) != len(rows[0]) for row in rows):
        return None
    cell_types = [[_cell_type(cell) for cell in row] for row in rows]
    header = all(t in (None, "string") for t in cell_types[0]) and any(
        t not in (None, "string") for row in cell_types[1:] for t in row
    )
    names = [name.strip() or f"col{i}" for i, name in enumerate(rows[0])] if header else [
        f"col{i}" for i in range(len(rows[0]))
    ]
    body = cell_types[1:] if header else cell_types
    columns = {name: reduce(merge_types, (row[i] for row in body), None)
               for i, name in enumerate(names)}
    return FileSchema("csv", columns, record_count=len(body), delimiter=delimiter, header=header)


def _cell_type(cell: str) -> HiveType:
    """The Hive type of one CSV cell (empty cells are nulls)."""
    value = cell.strip()
    if not value:
        return None
    if value.lower() in ("true", "false"):
        return "boolean"
    for kind, parse in (("bigint", int), ("double", float)):
        try:
            parse(value)
        except ValueError:
            continue
        return kind
    return "string"
