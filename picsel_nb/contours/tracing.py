"""Filled bands from contourpy, and the isolines read off their edges, in grid-index space.

Each band is one ``filled(lower, upper)`` call. A band rarely covers every latitude, so rows whose
values cannot reach the band are skipped: each run of rows the band reaches is traced in the
smallest block of rows (the grid, a half, a quarter, an eighth or a sixteenth of it) that holds
the run and whose edges the band does not touch, so no polygon is cut. Each block's contour
generator is made once per thread and reused by the next bands; a band is traced on the whole grid
instead when that is cheaper.

Isolines are not traced again: the isoline at a level is the part of the band below it whose
points lie on that level, so lines and bands share every vertex.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import contourpy
import numpy as np
import shapely

from picsel_nb.contours.grid import Grid

BLOCK_LEVELS = 5  # row blocks: the grid, its halves, quarters, eighths and sixteenths
MAKE_COST = 2.0  # making a contour generator costs about this many traces of its cells,
MAKE_CELLS = 100_000  # plus about as much as tracing this many cells
# contourpy's threaded algorithm on one thread traces exactly as its serial one but releases the
# GIL while it marches, so bands and variables trace on two cores at once (serial holds it).
_GENERATOR = {"name": "threaded", "thread_count": 1, "corner_mask": False,
              "fill_type": contourpy.FillType.ChunkCombinedOffsetOffset}


@dataclass(frozen=True)
class Polygons:
    """The polygons of one band: ``points`` (n, 2) as (column, row), ``rings`` offsets into points
    (each ring closed: last point = first), ``polygons`` offsets into rings (exterior first)."""

    points: np.ndarray
    rings: np.ndarray
    polygons: np.ndarray

    @classmethod
    def join(cls, parts: list[Polygons]) -> Polygons:
        """The parts as one Polygons (offsets shifted)."""
        parts = [part for part in parts if part.points.size] or [EMPTY]
        if len(parts) == 1:
            return parts[0]
        ring_base = np.cumsum([0] + [part.rings[-1] for part in parts[:-1]])
        polygon_base = np.cumsum([0] + [part.rings.size - 1 for part in parts[:-1]])
        return cls(np.concatenate([part.points for part in parts]),
                   np.concatenate([[0]] + [part.rings[1:] + base for part, base
                                           in zip(parts, ring_base, strict=True)]),
                   np.concatenate([[0]] + [part.polygons[1:] + base for part, base
                                           in zip(parts, polygon_base, strict=True)]))

    def slice(self, first: int, stop: int) -> Polygons:
        """Polygons ``first`` to ``stop`` (exclusive) on their own."""
        ring_first, ring_stop = self.polygons[first], self.polygons[stop]
        point_first, point_stop = self.rings[ring_first], self.rings[ring_stop]
        return Polygons(self.points[point_first:point_stop],
                        self.rings[ring_first:ring_stop + 1] - point_first,
                        self.polygons[first:stop + 1] - ring_first)


EMPTY = Polygons(np.zeros((0, 2)), np.zeros(1, np.int64), np.zeros(1, np.int64))


@dataclass(frozen=True)
class Lines:
    """Isolines: ``index`` picks their points out of a band's points; ``offsets`` into index."""

    index: np.ndarray
    offsets: np.ndarray


NO_LINES = Lines(np.zeros(0, np.int64), np.zeros(1, np.int64))


class Tracer:
    """Traces the bands of one Grid, sharing row statistics and index coordinates between bands;
    bands may be traced on several threads at once."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self._local = threading.local()  # a generator is not thread-safe: each thread has its own
        with np.errstate(invalid="ignore"):
            row_min, row_max = np.fmin.reduce(grid.z, axis=1), np.fmax.reduce(grid.z, axis=1)
        self._quad_min = np.fmin(row_min[:-1], row_min[1:])  # per row of quads
        self._quad_max = np.fmax(row_max[:-1], row_max[1:])

    @property
    def _generators(self) -> dict[tuple[int, int], contourpy.ContourGenerator]:
        """This thread's contour generators by block of rows."""
        return self._local.__dict__.setdefault("generators", {})

    @cached_property
    def _xy(self) -> tuple[np.ndarray, np.ndarray]:
        ny, nx = self.grid.z.shape
        return np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))

    @cached_property
    def _pinches(self) -> np.ndarray | None:
        return pinch_points(self.grid.z)

    @cached_property
    def _padded(self) -> np.ndarray:
        """z with NaN as 0 and one more row and column of 0, for reading values off edges."""
        ny, nx = self.grid.z.shape
        padded = np.zeros((ny + 1, nx + 1))
        np.copyto(padded[:ny, :nx], self.grid.z)
        return np.nan_to_num(padded, copy=False)

    def band(self, lower: float, upper: float) -> Polygons:
        """The polygons of ``lower < z <= upper`` (simple rings, exteriors anticlockwise)."""
        with np.errstate(invalid="ignore"):
            reach = (self._quad_max > lower) & (self._quad_min <= upper)
        blocks = _blocks(reach)
        if blocks and self._cost(blocks) >= reach.size * self.grid.z.shape[1]:
            blocks = [(0, reach.size)]  # the whole grid, whose generator is counted as made
        polygons = Polygons.join([_filled(self._generator(block), lower, upper)
                                  for block in blocks])
        if self._pinches is not None:
            polygons = split_pinched(polygons, self._pinches)
        return polygons

    def isolines(self, polygons: Polygons, lower: float, upper: float) -> Lines:
        """The isoline at ``upper`` read off the band ``lower < z <= upper`` (see ``isolines``)."""
        return isolines(self._padded, polygons, lower, upper)

    def _cost(self, blocks: list[tuple[int, int]]) -> float:
        """Grid cells traced, plus making the generators not made yet (in cells traced)."""
        width = self.grid.z.shape[1]
        cost = 0.0
        for first, last in blocks:
            new = (first, last) not in self._generators
            cost += (last - first) * width * (1 + MAKE_COST * new) + MAKE_CELLS * new
        return cost

    def _generator(self, block: tuple[int, int]) -> contourpy.ContourGenerator:
        """The generator of grid rows ``block[0]..block[1]``, made once."""
        if block not in self._generators:
            x, y = self._xy
            rows = slice(block[0], block[1] + 1)
            self._generators[block] = contourpy.contour_generator(x[rows], y[rows],
                                                                  self.grid.z[rows], **_GENERATOR)
        return self._generators[block]


def _blocks(reach: np.ndarray) -> list[tuple[int, int]]:
    """Blocks ``(first, last)`` of grid rows to trace a band in, given the quad rows it reaches.

    Each run of reached quad rows goes to the smallest dyadic block around it whose edges the band
    does not touch (a quad row beside each edge is out of reach); blocks inside others are dropped.
    """
    quads = reach.size
    padded = np.zeros(quads + 2, bool)
    padded[1:-1] = reach
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    chosen: set[tuple[int, int]] = set()
    for start, stop in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
        for level in range(BLOCK_LEVELS - 1, -1, -1):
            size = quads / 2 ** level
            first = int(start // size * size)
            last = min(int(np.ceil(stop / size) * size), quads)
            if last >= stop and (first == 0 or not reach[first - 1] or not reach[first]) \
                    and (last == quads or not reach[last - 1] or not reach[last]):
                chosen.add((first, last))
                break
    return [block for block in sorted(chosen)
            if not any(o != block and o[0] <= block[0] and block[1] <= o[1] for o in chosen)]


def _filled(generator: contourpy.ContourGenerator, lower: float, upper: float) -> Polygons:
    points, rings, polygons = (part[0] for part in generator.filled(lower, upper))
    if points is None:
        return EMPTY
    return Polygons(points, rings.astype(np.int64), polygons.astype(np.int64))


def pinch_points(z: np.ndarray) -> np.ndarray | None:
    """Grid points where the no-data mask pinches the data to a point: two diagonally opposite
    quads around the point masked, the other two not. A ring may pass there twice. None if none."""
    missing = np.isnan(z)
    if not missing.any():
        return None
    quad = missing[:-1, :-1] | missing[1:, :-1] | missing[:-1, 1:] | missing[1:, 1:]
    sw, se, nw, ne = quad[:-1, :-1], quad[:-1, 1:], quad[1:, :-1], quad[1:, 1:]
    pinch = np.zeros_like(missing)
    pinch[1:-1, 1:-1] = (sw & ne & ~se & ~nw) | (se & nw & ~sw & ~ne)
    return pinch if pinch.any() else None


def split_pinched(polygons: Polygons, pinches: np.ndarray) -> Polygons:
    """Polygons whose rings touch themselves at a pinch point, rebuilt from simple rings.

    contourpy may trace a ring through a pinch point twice (shapely: "Ring Self-intersection").
    Such a ring is cut there into loops; anticlockwise loops are exteriors, clockwise ones holes,
    and each hole goes to the smallest exterior around it. Other polygons are kept as they are.
    """
    points, rings = polygons.points, polygons.rings
    x, y = points[:, 0], points[:, 1]
    corner = np.flatnonzero((x == np.rint(x)) & (y == np.rint(y)))
    corner = corner[pinches[y[corner].astype(np.intp), x[corner].astype(np.intp)]]
    ring_of = np.searchsorted(rings, corner, side="right") - 1
    opening = corner != rings[ring_of + 1] - 1  # the closing point repeats the first by design
    corner, ring_of = corner[opening], ring_of[opening]
    key = ring_of * pinches.size + (y[corner] * pinches.shape[1] + x[corner]).astype(np.int64)
    unique, counts = np.unique(key, return_counts=True)
    repeated = np.isin(key, unique[counts > 1])
    if not repeated.any():
        return polygons
    bad = np.unique(np.searchsorted(polygons.polygons, ring_of[repeated], side="right") - 1)
    parts, done = [], 0
    for index in bad.tolist():
        parts.append(polygons.slice(done, index))
        loops = []
        for ring in range(polygons.polygons[index], polygons.polygons[index + 1]):
            at = corner[repeated & (ring_of == ring)] - rings[ring]
            loops.extend(_simple_loops(points[rings[ring]:rings[ring + 1]], at))
        parts.extend(_as_polygons(loops))
        done = index + 1
    parts.append(polygons.slice(done, polygons.polygons.size - 1))
    return Polygons.join(parts)


def _simple_loops(ring: np.ndarray, repeated: np.ndarray) -> list[np.ndarray]:
    """A closed ring cut into closed loops at ``repeated``: the positions of its vertices that
    occur more than once. Walks the pieces between those positions, closing a loop each time the
    walk comes back to a vertex it is still on."""
    if repeated.size == 0:
        return [ring]
    size = ring.shape[0] - 1
    cuts = np.sort(repeated).tolist()
    pieces = [np.arange(a, b) for a, b in zip(cuts, cuts[1:] + [cuts[0] + size], strict=True)]
    vertex = [tuple(ring[c].tolist()) for c in cuts + cuts[:1]]
    loops, stack = [], [(vertex[0], [])]
    for piece, arrive in zip(pieces, vertex[1:], strict=True):
        stack[-1][1].append(piece)
        on_stack = [v for v, _ in stack]
        if arrive in on_stack:
            at = on_stack.index(arrive)
            index = np.concatenate([i for _, run in stack[at:] for i in run])
            loops.append(ring[np.append(index, index[0]) % size])
            del stack[at + 1:]
            stack[at] = (arrive, [])
        else:
            stack.append((arrive, []))
    return loops


def _signed_area(loop: np.ndarray) -> float:
    x, y = loop[:, 0], loop[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _as_polygons(loops: list[np.ndarray]) -> list[Polygons]:
    """Polygons from simple closed loops: exteriors anticlockwise, holes clockwise. A hole goes to
    the smallest exterior around a point just inside it (right of its first edge)."""
    area = np.array([_signed_area(loop) for loop in loops])
    shells = [loop for loop, a in zip(loops, area, strict=True) if a > 0]
    holes = [loop for loop, a in zip(loops, area, strict=True) if a < 0]
    owned: list[list[np.ndarray]] = [[] for _ in shells]
    if holes:
        start = np.array([hole[0] for hole in holes])
        edge = np.array([hole[1] for hole in holes]) - start
        inside = start + edge / 2 + 1e-6 * np.c_[edge[:, 1], -edge[:, 0]]
        owner = np.zeros(len(holes), np.intp)
        for i in np.argsort(-area[area > 0]).tolist():  # smaller exteriors last, so they win
            owner[shapely.contains_xy(shapely.Polygon(shells[i]), inside[:, 0], inside[:, 1])] = i
        for hole, i in zip(holes, owner.tolist(), strict=True):
            owned[i].append(hole)
    return [_polygon([shell] + mine) for shell, mine in zip(shells, owned, strict=True)]


def _polygon(loops: list[np.ndarray]) -> Polygons:
    sizes = [len(loop) for loop in loops]
    return Polygons(np.concatenate(loops), np.cumsum([0] + sizes),
                    np.array([0, len(loops)], np.int64))


def isolines(padded: np.ndarray, polygons: Polygons, lower: float, upper: float) -> Lines:
    """The isoline at ``upper``: runs of the band's ring points that lie on ``upper``.

    A ring point is a grid corner (where the ring follows the grid or mask edge), a crossing of
    ``lower`` or a crossing of ``upper``; the value read off its grid edge tells the two levels
    apart. A ring made only of upper crossings is a closed isoline; other runs are open lines
    (a run may wrap past the ring's first point).
    """
    if polygons.points.size == 0 or not np.isfinite(upper):
        return NO_LINES
    on = _on_upper(padded, polygons, lower, upper)
    first, last = polygons.rings[:-1], polygons.rings[1:] - 1  # last: the closing copy of first
    size = last - first
    on[last] = False
    before = np.empty_like(on)
    before[1:] = on[:-1]
    before[first] = on[last - 1]
    after = np.empty_like(on)
    after[:-1] = on[1:]
    after[last - 1] = on[first]
    starts, ends = np.flatnonzero(on & ~before), np.flatnonzero(on & ~after)
    ring = np.searchsorted(first, starts, side="right") - 1
    end_ring = np.searchsorted(first, ends, side="right") - 1
    match = np.searchsorted(ends, starts)
    inside = match < ends.size
    inside[inside] = end_ring[match[inside]] == ring[inside]
    match[~inside] = np.searchsorted(ends, first[ring[~inside]])  # the run wraps round the ring
    stop = ends[match]
    closed = np.flatnonzero(np.add.reduceat(on, first, dtype=np.int64) == size)
    line_start = np.concatenate([starts, first[closed]])
    line_ring = np.concatenate([ring, closed])
    period = np.concatenate([size[ring], size[closed] + 1])
    length = np.concatenate([(stop - starts) % size[ring] + 1, size[closed] + 1])
    offsets = np.concatenate([[0], np.cumsum(length)])
    step = np.arange(offsets[-1]) - np.repeat(offsets[:-1], length)
    base = first[line_ring]
    index = np.repeat(base, length) + (np.repeat(line_start - base, length) + step) \
        % np.repeat(period, length)
    return Lines(index, offsets)


def _on_upper(padded: np.ndarray, polygons: Polygons, lower: float, upper: float) -> np.ndarray:
    """Whether each ring point crosses ``upper`` (not ``lower``, nor a grid corner).

    A ring is made of chords across quads, which join two crossings of one level, and of segments
    along the grid or mask edge, where it may change level or pass grid corners. So one point per
    run of chords is enough: its value, linear along its grid edge, is read from ``padded`` (z with
    NaN as 0 and one more row and column) as ``z[j,i] + fx (z[j,i+1] - z[j,i]) + fy (z[j+1,i] -
    z[j,i])``, one of fx, fy being (nearly) 0; a corner is on no level.
    """
    points, rings = polygons.points, polygons.rings
    x, y = points[:, 0], points[:, 1]
    tolerance = 1e-9  # crossings are further than 0.5 unit of precision from a grid line
    along = np.zeros(x.size, bool)  # the segment ending at this point follows a grid line
    dx, dy = np.abs(np.diff(x)) < tolerance, np.abs(np.diff(y)) < tolerance
    steps = np.flatnonzero(dx | dy)
    on_line = dx[steps] & (np.abs(x[steps] - np.rint(x[steps])) < tolerance) | \
        dy[steps] & (np.abs(y[steps] - np.rint(y[steps])) < tolerance)
    along[steps[on_line] + 1] = True
    along[rings[:-1]] = True  # each ring starts a run
    run_first = np.flatnonzero(along)
    px, py = x[run_first], y[run_first]
    column, row = np.floor(px + tolerance), np.floor(py + tolerance)
    fx, fy = px - column, py - row
    corner = (fx == 0) & (fy == 0)
    if lower == -np.inf:
        upper_run = ~corner
    else:
        width = padded.shape[1]
        start = row.astype(np.intp) * width + column.astype(np.intp)
        flat = padded.reshape(-1)
        here = flat[start]
        value = here + fx * (flat[start + 1] - here) + fy * (flat[start + width] - here)
        upper_run = (value > (lower + upper) / 2) & ~corner
    return upper_run[np.cumsum(along) - 1]
