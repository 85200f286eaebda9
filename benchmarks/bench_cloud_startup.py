"""Start-up time of the embedded cloud: `LocalCloud.start()` until the health check answers.

The target is under 3 s. Run: .venv/bin/python benchmarks/bench_cloud_startup.py
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import time
from pathlib import Path

from picsel_nb.localcloud.process import LocalCloud


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(repeats: int = 5) -> None:
    timings = []
    with tempfile.TemporaryDirectory() as state:
        for _ in range(repeats):
            cloud = LocalCloud(_free_port(), Path(state))
            began = time.perf_counter()
            cloud.start()
            timings.append(time.perf_counter() - began)
            cloud.stop()
    print(f"embedded cloud start-up: median {statistics.median(timings):.2f} s, "
          f"min {min(timings):.2f} s, max {max(timings):.2f} s over {repeats} starts")


if __name__ == "__main__":
    main()
