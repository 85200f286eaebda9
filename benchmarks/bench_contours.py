"""Benchmark: a day of hourly ERA5 → four GeoJSON documents, picsel_nb against the usual stack.

The documents are the bands and isolines of daily t2m and tp; both sides run in one process.

ours:     picsel_nb.era5.daily + picsel_nb.contours.day_products (on a large grid, the variables
          on two threads, and the bands of each on two more).
baseline: xarray aggregation + xarray ``.plot.contourf`` / ``.plot.contour`` (matplotlib) +
          geojsoncontour ``contourf_to_geojson`` / ``contour_to_geojson``, on the same levels.

Inputs are picsel_nb.era5.synthetic hourly cubes: ERA5 global (0.25°, longitudes 0..360 as the
CDS returns global requests) and ERA5-Land over the demo area (0.1°). Run:

    .venv/bin/python benchmarks/bench_contours.py [--repeats 7] [--baseline-repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from geojsoncontour import contour_to_geojson, contourf_to_geojson

from picsel_nb import contours
from picsel_nb.era5 import daily, synthetic
from picsel_nb.settings import DEMO_AREA, DEMO_START

CASES = {  # name: (dataset, area, target seconds for ours, target speed-up or None)
    "global ERA5": ("reanalysis-era5-single-levels", (90.0, 0.0, -90.0, 359.75), 0.20, 25.0),
    "regional ERA5-Land": ("reanalysis-era5-land", DEMO_AREA, 0.015, None),
}


def hourly_cube(dataset: str, area, day: date) -> xr.Dataset:
    """The hours a complete day needs: 00 UTC of ``day`` to 00 UTC of the next day."""
    cube = synthetic(dataset, day, day + timedelta(days=1), area=area)
    return cube.sel(valid_time=slice(np.datetime64(day), np.datetime64(day + timedelta(days=1))))


def ours(cube: xr.Dataset, dataset: str, day: date) -> list[bytes]:
    """The daily fields, then both documents of each variable."""
    documents = contours.day_products(daily(cube, dataset, days=[day]))
    return [doc for name in ("t2m", "tp") for doc in documents[name]]


def baseline(cube: xr.Dataset, dataset: str, day: date) -> list[str]:
    """The tutorial stack: xarray means/sums, xarray plotting, geojsoncontour."""
    start = np.datetime64(day)
    hour = np.timedelta64(1, "h")
    t2m = cube.t2m.sel(valid_time=slice(start, start + 23 * hour)).mean("valid_time") - 273.15
    if dataset == "reanalysis-era5-land":  # accumulated since 00 UTC: the next 00 UTC value
        tp = cube.tp.sel(valid_time=start + 24 * hour) * 1000
    else:  # hourly amounts ending at 01..24 UTC
        tp = cube.tp.sel(valid_time=slice(start + hour, start + 24 * hour)).sum("valid_time") * 1000
    documents = []
    for values, name in ((t2m, "t2m"), (tp, "tp")):
        levels = contours.default_levels(name, values.values)
        figure, axes = plt.subplots()
        filled = values.plot.contourf(ax=axes, levels=levels, add_colorbar=False)
        documents.append(contourf_to_geojson(filled, ndigits=4))
        lines = values.plot.contour(ax=axes, levels=levels, add_colorbar=False)
        documents.append(contour_to_geojson(lines, ndigits=4))
        plt.close(figure)
    return documents


def timed(run: Callable[[], list], repeats: int) -> tuple[float, list]:
    """Median wall time of ``repeats`` runs (after one warm-up run), and the last result."""
    result = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--case", choices=list(CASES), action="append")
    args = parser.parse_args()
    plt.switch_backend("agg")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    for name in args.case or CASES:
        dataset, area, target, target_ratio = CASES[name]
        cube = hourly_cube(dataset, area, DEMO_START)
        print(f"{name}: hourly cube {dict(cube.sizes)}")
        mine, documents = timed(partial(ours, cube, dataset, DEMO_START), args.repeats)
        sizes = ", ".join(f"{len(doc) / 1e6:.1f}" for doc in documents)
        print(f"  ours      median {mine * 1e3:8.1f} ms   documents (MB): {sizes}"
              f"   target <= {target * 1e3:.0f} ms: {'met' if mine <= target else 'NOT met'}")
        theirs, _ = timed(partial(baseline, cube, dataset, DEMO_START), args.baseline_repeats)
        ratio = theirs / mine
        verdict = "" if target_ratio is None else \
            f"   target >= {target_ratio:.0f}x: {'met' if ratio >= target_ratio else 'NOT met'}"
        print(f"  baseline  median {theirs * 1e3:8.1f} ms   ratio {ratio:.1f}x{verdict}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
