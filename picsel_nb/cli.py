"""The ``picsel`` command: the walkthrough's steps from a terminal, over the same functions.

Each command registers itself with ``add_command(name, help, configure, run)``; ``run(args)``
returns the exit code. ``picsel cloud start|stop|status`` manages the embedded cloud.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from picsel_nb.localcloud.process import CloudError, LocalCloud
from picsel_nb.settings import get_settings

EXIT_NOT_RUNNING = 3  # as LSB init scripts report "program is not running"

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]
COMMANDS: list[tuple[str, str, Configure, Run]] = []


def add_command(name: str, help: str, configure: Configure, run: Run) -> None:
    """Register ``picsel <name>``: ``configure`` adds its arguments, ``run`` executes it."""
    COMMANDS.append((name, help, configure, run))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every registered command."""
    parser = argparse.ArgumentParser(prog="picsel", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, configure, run in COMMANDS:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        configure(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``picsel`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CloudError as error:
        print(f"picsel: {error}", file=sys.stderr)
        return 1


# --- picsel cloud start | stop | status ---------------------------------------------------------


def _configure_cloud(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"),
                        help="start the embedded cloud in the background, stop it, or report it")
    parser.add_argument("--port", type=int,
                        help="port on 127.0.0.1 (default: PICSEL_CLOUD_PORT or 4566)")


def _cloud(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.backend != "local":
        print(f"PICSEL_BACKEND={settings.backend}: there is no embedded cloud to {args.action}")
        return 1
    cloud = LocalCloud(args.port or settings.cloud_port, settings.state_dir)
    return {"start": _cloud_start, "stop": _cloud_stop, "status": _cloud_status}[args.action](cloud)


def _cloud_start(cloud: LocalCloud) -> int:
    began = time.perf_counter()
    if not cloud.start():
        print(f"the embedded cloud is already running at {cloud.endpoint_url} (nothing to do)")
        return 0
    print(f"the embedded cloud is running at {cloud.endpoint_url} "
          f"(started in {time.perf_counter() - began:.1f} s; log {cloud.log_path})")
    return 0


def _cloud_stop(cloud: LocalCloud) -> int:
    if cloud.stop():
        print(f"the embedded cloud at {cloud.endpoint_url} is stopped")
    else:
        print(f"the embedded cloud is not running at {cloud.endpoint_url} (nothing to stop)")
    return 0


def _cloud_status(cloud: LocalCloud) -> int:
    status = cloud.status()
    if status is None:
        print(f"the embedded cloud is not running at {cloud.endpoint_url}\n"
              f"  log:      {cloud.log_path}")
        return EXIT_NOT_RUNNING
    held = ", ".join(f"{count} {label}" for label, count in status["holdings"].items())
    print(f"the embedded cloud is running\n"
          f"  endpoint: {cloud.endpoint_url}\n"
          f"  pid:      {status['pid']} (since {status['started']})\n"
          f"  log:      {cloud.log_path}\n"
          f"  holds:    {held}")
    return 0


add_command("cloud", "manage the embedded local cloud (an AWS endpoint on 127.0.0.1)",
            _configure_cloud, _cloud)

if __name__ == "__main__":
    sys.exit(main())
