"""Serve the embedded cloud on 127.0.0.1 until SIGTERM: ``python -m picsel_nb.localcloud.server``.

The app is moto's server app behind the router (``build_app``), served as moto's
``ThreadedMotoServer`` serves it, but bound to the loopback interface only. Two non-AWS paths,
which answer only the administrator's signature, tell ``picsel cloud status`` about the running
server: ``/_picsel/health`` and ``/_picsel/status``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime

from moto.backends import get_backend
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import BaseWSGIServer, make_server

from picsel_nb.localcloud.app import build_app
from picsel_nb.localcloud.credentials import admin_key, write_config
from picsel_nb.localcloud.process import HEALTH_PATH, STATUS_PATH, LocalCloud
from picsel_nb.localcloud.router import ACCOUNT_ID, AwsResponse
from picsel_nb.settings import get_settings

log = logging.getLogger("picsel_nb.localcloud")

# What `status` counts: label -> (moto backend name, count in one regional backend).
HOLDINGS: dict[str, tuple[str, Callable]] = {
    "buckets": ("s3", lambda b: len(b.buckets)),
    "functions": ("awslambda", lambda b: len(list(b.list_functions()))),
    "layers": ("awslambda", lambda b: len(list(b.list_layers()))),
    "secrets": ("secretsmanager", lambda b: len(b.secrets)),
    "roles": ("iam", lambda b: len(b.roles)),
    "glue jobs": ("glue", lambda b: len(b.jobs)),
    "job runs": ("glue", lambda b: sum(len(job.job_runs) for job in b.jobs.values())),
    "crawlers": ("glue", lambda b: len(b.crawlers)),
    "databases": ("glue", lambda b: len(b.databases)),
    "log groups": ("logs", lambda b: len(b.groups)),
    "alarms": ("cloudwatch", lambda b: len(b.alarms)),
    "dashboards": ("cloudwatch", lambda b: len(b.dashboards)),
    "trails": ("cloudtrail", lambda b: len(b.trails)),
}


class RequestHandler(MotoRequestHandler):
    """moto's request handler, logging requests without terminal colour codes (logs are files)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log("info", '"%s" %s %s', self.requestline, getattr(code, "value", code), size)


def holdings() -> dict[str, int]:
    """How many of each resource the account holds, over every region in use."""
    counts = {}
    for label, (service, count) in HOLDINGS.items():
        regional = get_backend(service)[ACCOUNT_ID]
        counts[label] = sum(count(backend) for backend in list(regional.values()))
    return counts


def create_server(port: int) -> BaseWSGIServer:
    """The embedded cloud's HTTP server on 127.0.0.1:``port`` (0 picks a free port)."""
    settings = get_settings()
    app = build_app(admin_key(settings.state_dir))
    started = datetime.now(UTC).isoformat(timespec="seconds")

    def health() -> dict:
        return {"pid": os.getpid(), "port": server.server_port, "started": started}

    app.mount(HEALTH_PATH, lambda req: AwsResponse.json(health()))
    app.mount(STATUS_PATH, lambda req: AwsResponse.json(health() | {"holdings": holdings()}))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=RequestHandler)
    app.authenticator.port = server.server_port
    write_config(settings.state_dir, f"http://127.0.0.1:{server.server_port}", settings.region)
    return server


def serve(port: int) -> None:
    """Serve until SIGTERM or Ctrl-C, with a pid file in the state directory while listening."""
    server = create_server(port)
    pid_path = LocalCloud(server.server_port, get_settings().state_dir).pid_path
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log.info("embedded cloud listening on http://127.0.0.1:%d (pid %d)",
             server.server_port, os.getpid())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if pid_path.exists() and pid_path.read_text().strip() == str(os.getpid()):
            pid_path.unlink()
        log.info("embedded cloud on port %d stopped", server.server_port)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: ``python -m picsel_nb.localcloud.server [--port N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=get_settings().cloud_port)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.port)


if __name__ == "__main__":
    main()
