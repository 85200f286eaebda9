"""GeoJSON text for contour features, written by numpy without a Python object per coordinate.

Every vertex becomes one fixed-width text row ``[lon,lat],`` built from lookup tables of digit
strings: numbers are right-aligned with spaces (JSON whitespace) and carry exactly ``precision``
decimals, e.g. ``[ -59.9000,-12.3456],``. Rings and lines are runs of rows; the brackets between
them go in separator rows padded with spaces. A whole document is one numpy array of rows plus a
few bytes per feature, so writing costs a handful of vectorised passes over the vertices. Rows are
made once per vertex (``vertex_rows``): isolines, which reuse band vertices, copy their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import orjson

_NEXT_PIECE = b"],["  # between two rings of a polygon, or two lines
_NEXT_POLYGON = b"]],[["  # between two polygons
_OPEN = {"MultiPolygon": b"[[[", "MultiLineString": b"[["}
_CLOSE = {"MultiPolygon": b"]]]}}", "MultiLineString": b"]]}}"}


@dataclass(frozen=True)
class Geometry:
    """A MultiPolygon or MultiLineString: ``x``/``y`` per vertex in integer units and its ``text``
    row (see ``vertex_rows``), ``pieces`` offsets of its rings or lines into the vertices,
    ``groups`` offsets of polygons into pieces."""

    kind: str
    x: np.ndarray
    y: np.ndarray
    text: np.ndarray
    pieces: np.ndarray
    groups: np.ndarray | None = None


@dataclass(frozen=True)
class Coordinates:
    """A geometry written: its kind, the text of its coordinates (without the outer brackets)
    and its bbox in integer units, None when it has no vertex."""

    kind: str
    text: memoryview
    bbox: tuple[int, int, int, int] | None


def coordinates(geo: Geometry) -> Coordinates:
    """The text and bbox of a geometry, written apart from its document so that the geometries
    of one document can be written on several threads."""
    if not geo.x.size:
        return Coordinates(geo.kind, memoryview(b""), None)
    return Coordinates(geo.kind, memoryview(_rows([geo])).cast("B"), _bbox(geo))


def feature_collection(features: list[tuple[dict, Coordinates]], precision: int) -> bytes:
    """The RFC 7946 FeatureCollection of ``(properties, coordinates)`` pairs, with bboxes on the
    collection and on every feature; geometries without vertices are left out."""
    features = [(props, written) for props, written in features if written.bbox is not None]
    if not features:
        return b'{"type":"FeatureCollection","features":[]}'
    boxes = [written.bbox for _, written in features]
    total = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
             max(b[3] for b in boxes))
    parts = [b'{"type":"FeatureCollection","bbox":', _numbers(total, precision),
             b',"features":[']
    for index, (props, written) in enumerate(features):
        parts += [b"," if index else b"", b'{"type":"Feature","bbox":',
                  _numbers(written.bbox, precision), b',"properties":', orjson.dumps(props),
                  b',"geometry":{"type":"', written.kind.encode(), b'","coordinates":',
                  _OPEN[written.kind], written.text, _CLOSE[written.kind]]
    parts.append(b"]}")
    return b"".join(parts)


def _rows(geometries: list[Geometry]) -> np.ndarray:
    """The text rows of geometries of one kind, one after the other.

    A geometry's pieces (rings or lines) follow each other, each but its last followed by a
    separator row; the last row of a piece has no trailing comma.
    """
    pieces = _Pieces(geometries)
    whole = np.empty(pieces.row_count, geometries[0].text.dtype)
    rows_of_points = pieces.rows_of_points()
    for geo, (first, stop) in zip(geometries, pieces.point_spans, strict=True):
        whole[rows_of_points[first:stop]] = geo.text
    rows = whole.view(np.uint8).reshape(whole.size, whole.itemsize)
    rows[pieces.last_rows, -1] = ord(" ")
    followed = pieces.last_rows[pieces.followed]
    new_polygon = pieces.next_starts_polygon(geometries)[pieces.followed]
    for text, where in ((_NEXT_PIECE, ~new_polygon), (_NEXT_POLYGON, new_polygon)):
        rows[followed[where] + 1] = np.frombuffer(text.ljust(rows.shape[1]), np.uint8)
    return rows


class _Pieces:
    """Where each piece of a run of geometries goes among the rows."""

    def __init__(self, geometries: list[Geometry]):
        point_counts = np.array([geo.x.size for geo in geometries])
        self.counts = np.array([geo.pieces.size - 1 for geo in geometries])
        self.bases = np.cumsum(self.counts) - self.counts  # first piece of each geometry
        point_bases = np.cumsum(point_counts) - point_counts
        self.ends = np.concatenate([geo.pieces[1:] + base
                                    for geo, base in zip(geometries, point_bases, strict=True)])
        self.separators_before = np.arange(self.ends.size) - np.repeat(
            np.arange(len(geometries)), self.counts)
        self.last_rows = self.ends - 1 + self.separators_before
        self.followed = np.ones(self.ends.size, bool)  # by a separator: not last of its geometry
        self.followed[self.bases + self.counts - 1] = False
        self.row_count = int(self.ends[-1] + self.ends.size - len(geometries))
        self.point_spans = list(zip(point_bases.tolist(), (point_bases + point_counts).tolist(),
                                    strict=True))

    def rows_of_points(self) -> np.ndarray:
        sizes = np.diff(self.ends, prepend=0)
        return np.arange(self.ends[-1]) + np.repeat(self.separators_before, sizes)

    def next_starts_polygon(self, geometries: list[Geometry]) -> np.ndarray:
        """Per piece, whether the next piece starts a new polygon (never, for lines)."""
        starts = np.zeros(self.ends.size + 1, bool)
        if geometries[0].groups is not None:
            starts[np.concatenate([geo.groups[:-1] + base
                                   for geo, base in zip(geometries, self.bases,
                                                        strict=True)])] = True
        return starts[1:]


def vertex_rows(x: np.ndarray, y: np.ndarray, precision: int) -> np.ndarray:
    """Rows ``[lon,lat],`` for integer coordinates in units of 10**-precision degrees, one item
    (numpy void of the row's width) per vertex, so that rows are copied whole.

    Four table lookups per row, each written as one integer through a strided view of the buffer:
    '[' lon '.' (8 bytes), the lon fraction (exactly p bytes), ',' lat '.' (8 bytes) and the lat
    fraction with '],' (8 bytes). The 8-byte writes run past their fields; the order C, D, A, B
    overwrites each overrun with the right bytes (D's overrun lands on the next row's A).
    """
    p = precision
    width = 13 + 2 * p
    tables = _tables(p)
    buffer = np.empty(max(x.size, 1) * width + 8, np.uint8)  # a row more: the views fit if empty
    scale = np.int32(10 ** p)
    parts = {}
    for name, values in (("lon", x), ("lat", y)):
        values = values.astype(np.int32)
        magnitude = np.abs(values)
        whole = magnitude // scale
        parts[name + "_fraction"] = magnitude - whole * scale
        parts[name + "_int"] = whole | (values >> 31) & 1024  # sign bit → negative half
    for name, offset in (("lat_int", 6 + p), ("lat_fraction", 11 + p), ("lon_int", 0),
                         ("lon_fraction", 6)):
        table = tables[name]
        view = np.ndarray((x.size,), table.dtype, buffer, offset, (width,))
        view[...] = table[parts[name]]
    return buffer[:x.size * width].view(f"V{width}")


@lru_cache
def _tables(precision: int) -> dict[str, np.ndarray]:
    """The text pieces of a row as integers, indexed by integer part (negative ones at 1024 + n)
    or by fraction digits; see ``_format`` for the layout."""
    p = precision
    lon_tail = b" ," if p == 1 else b"  "  # byte 7 is the ',' after a one-digit fraction
    lon, lat = np.zeros(2048, np.uint64), np.zeros(2048, np.uint64)
    for whole in range(1000):
        for sign, base in (("", 0), ("-", 1024)):
            text = f"{sign}{whole}"
            lon[base + whole] = _integer(b"[" + text.rjust(4).encode() + b"." + lon_tail)
            lat[base + whole] = _integer(b"," + text[-3:].rjust(3).encode() + b".   ")
    digits = np.arange(10 ** p)[:, None] // 10 ** np.arange(p - 1, -1, -1) % 10 + ord("0")
    fraction = np.zeros((10 ** p, 8), np.uint8)
    fraction[:, :p] = digits
    fraction[:, p:p + 2] = np.frombuffer(b"],", np.uint8)
    exact = {1: "u1", 2: "u2", 4: "u4"}.get(p, f"V{p}")
    return {"lon_int": lon, "lat_int": lat, "lat_fraction": fraction.view(np.uint64).ravel(),
            "lon_fraction": np.ascontiguousarray(fraction[:, :p]).view(exact).ravel()}


def _integer(text: bytes) -> int:
    return int.from_bytes(text.ljust(8)[:8], "little")


def _bbox(geo: Geometry) -> tuple[int, int, int, int]:
    return int(geo.x.min()), int(geo.y.min()), int(geo.x.max()), int(geo.y.max())


def _numbers(values: tuple[int, ...], precision: int) -> bytes:
    """A JSON array of decimals from integer units."""
    scale = 10 ** precision
    text = [f"{'-' if v < 0 else ''}{abs(v) // scale}.{abs(v) % scale:0{precision}d}"
            for v in values]
    return ("[" + ",".join(text) + "]").encode()
