"""Benchmark: a backfill's Glue step on Spark ``local[2]`` against the plain-Python process pool.

Both sides process the same (day, variable) units of synthetic ERA5-Land days over the demo area,
whose raw files are already in the input bucket of an embedded cloud started for the run:

spark:    the deployed contours job (Glue 5.0, 2 × G.1X → local[2] on 2 cores) through StartJobRun.
baseline: what the job did before it ran on Spark: its own ``process_unit`` over a process pool of
          two, in this process.

Printed per size: seconds, days/s, and the peak resident memory of each side's processes (the
Spark driver JVM, the script and its Python workers; the pool's parent and children). Spark's fixed
start-up is the intercept of the two sizes' times. Then one global ERA5 day (721 × 1440) through
the Spark job. Run:

    .venv/bin/python benchmarks/bench_backfill.py [--sizes 31 365] [--no-global]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Self

import psutil

from picsel_nb import era5, pipeline, products
from picsel_nb.localcloud.glue_jobs import RUNTIME_PATH
from picsel_nb.localcloud.process import LocalCloud
from picsel_nb.settings import DEMO_AREA, DEMO_DATASET, LOCAL_ACCOUNT_ID, get_settings
from picsel_nb.stack import job
from picsel_nb.stack.context import Stack

FIRST_DAY = date(2022, 1, 1)
GLOBAL = ("reanalysis-era5-single-levels", (90.0, 0.0, -90.0, 359.75))
GIB = 1024**3


class PeakMemory:
    """The peak summed RSS of a process and its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak = psutil.Process(pid), 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            total = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def stored_day(stack: Stack, dataset: str, area, day: date) -> None:
    """Put the raw file the ingest Lambda would store for ``day`` into the input bucket."""
    body = era5.synthetic_download(dataset, era5.build_request(dataset, day, area=area))
    stack.client("s3").put_object(Bucket=stack.names.input_bucket,
                                  Key=f"raw/{dataset}/{day:%Y/%m/%d}.nc", Body=body)


def spark_run(stack: Stack, cloud: LocalCloud, first: date, last: date,
              dataset: str = DEMO_DATASET) -> tuple[float, int, str]:
    """One StartJobRun over the days (every unit redone): seconds, peak bytes, final state."""
    glue = stack.client("glue")
    with PeakMemory(cloud.health()["pid"]) as memory:
        began = time.perf_counter()
        run_id = glue.start_job_run(JobName=stack.names.glue_job, Arguments={
            "--dates": job.date_range(first, last), "--redo": "true", "--dataset": dataset})[
            "JobRunId"]
        run = job.wait_run(stack, run_id, delay_s=0.5)
        seconds = time.perf_counter() - began
    return seconds, memory.peak, f"{run['JobRunState']} {run.get('ErrorMessage') or ''}".strip()


def load_job_module():
    """The job script as a module (the awsglue stand-in on the path), as its pool baseline runs."""
    sys.path.insert(0, str(RUNTIME_PATH))
    sys.path.insert(0, str(job.SCRIPT.parent))
    import contours_job

    return contours_job


_clients: dict[int, object] = {}


def pool_unit(unit):
    """One unit in a pool worker, with that worker's own S3 client (as the job did before Spark);
    the job's module is the parent's, inherited by the fork."""
    contours_job = sys.modules["contours_job"]
    if os.getpid() not in _clients:
        _clients[os.getpid()] = contours_job.s3()
    return contours_job.process_unit(unit, _clients[os.getpid()])


def pool_run(stack: Stack, first: date, last: date) -> tuple[float, int]:
    """The job's units over two processes in this one: seconds, peak bytes."""
    contours_job = load_job_module()
    options = contours_job.parse_options([
        "--input_bucket", stack.names.input_bucket, "--output_bucket", stack.names.output_bucket,
        "--dataset", DEMO_DATASET, "--dates", job.date_range(first, last), "--redo", "true",
        "--t2m_levels", "default", "--tp_levels", "default"])
    with PeakMemory(os.getpid()) as memory:
        began = time.perf_counter()
        units, _, _ = contours_job.plan(options)
        with ProcessPoolExecutor(2) as pool:
            failed = [r for r in pool.map(pool_unit, units) if r.error]
        seconds = time.perf_counter() - began
    assert not failed, failed[0].error
    return seconds, memory.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[31, 365])
    parser.add_argument("--no-global", action="store_true")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    with socket.socket() as probe:  # a free port of 127.0.0.1
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cloud = LocalCloud(port, state)
    cloud.start(timeout=60)
    os.environ.update({**cloud.client_env(), "PICSEL_BACKEND": "local", "PICSEL_PREFIX": "bench",
                       "PICSEL_CLOUD_PORT": str(port), "PICSEL_STATE_DIR": str(state)})
    try:
        settings = get_settings()  # every client of picsel_nb now reaches this cloud only
        stack = Stack(settings, LOCAL_ACCOUNT_ID, settings.names(LOCAL_ACCOUNT_ID))
        pipeline.ensure_storage(stack)
        job.ensure_job(stack)
        last_day = FIRST_DAY + timedelta(days=max(args.sizes) - 1)
        began = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda d: stored_day(stack, DEMO_DATASET, DEMO_AREA, d),
                          products.days(FIRST_DAY, last_day)))
        print(f"{max(args.sizes)} raw days stored in {time.perf_counter() - began:.0f} s")
        times = {}
        for size in args.sizes:
            last = FIRST_DAY + timedelta(days=size - 1)
            spark_s, spark_mem, state_ = spark_run(stack, cloud, FIRST_DAY, last)
            pool_s, pool_mem = pool_run(stack, FIRST_DAY, last)
            times[size] = spark_s
            print(f"{size:>4} days: spark local[2] {spark_s:6.1f} s ({size / spark_s:5.1f} days/s, "
                  f"peak {spark_mem / GIB:.2f} GiB, {state_}) | process pool {pool_s:6.1f} s "
                  f"({size / pool_s:5.1f} days/s, peak {pool_mem / GIB:.2f} GiB) | "
                  f"spark/pool time {spark_s / pool_s:.2f}")
        if len(times) >= 2:
            (small, t_small), (large, t_large) = sorted(times.items())[:2]
            per_day = (t_large - t_small) / (large - small)
            print(f"spark fixed start-up ≈ {t_small - small * per_day:.1f} s "
                  f"(intercept; {per_day * 1000:.0f} ms per day)")
        if not args.no_global:
            day = date(2022, 6, 1)
            stored_day(stack, *GLOBAL, day)
            seconds, peak, state_ = spark_run(stack, cloud, day, day, dataset=GLOBAL[0])
            print(f"global ERA5 day 721×1440: spark {seconds:.1f} s, peak {peak / GIB:.2f} GiB, "
                  f"{state_}")
    finally:
        cloud.stop()


if __name__ == "__main__":
    main()
