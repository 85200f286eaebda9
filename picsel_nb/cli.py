"""The ``picsel`` command: the walkthrough's steps from a terminal, over the same functions.

Each command registers itself with ``add_command(name, help, configure, run)``; ``run(args)``
returns the exit code. ``picsel cloud start|stop|status`` manages the embedded cloud (``picsel cloud env`` prints the
shell lines that point the AWS CLI and other SDKs at it); ``up``,
``ingest``, ``process``, ``crawl``, ``demo`` and ``down`` run the pipeline's steps; ``backfill``
ingests and processes a whole range.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable

from picsel_nb.localcloud.process import CloudError, LocalCloud
from picsel_nb.settings import DEMO_END, DEMO_START, get_settings
from picsel_nb.stack.context import get_stack
from picsel_nb.stack.errors import StackError

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
    except (CloudError, StackError, ValueError) as error:  # user-facing messages
        print(f"picsel: {error}", file=sys.stderr)
        return 1


# --- picsel cloud start | stop | status | env ---------------------------------------------------


def _configure_cloud(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status", "env"),
                        help="start the embedded cloud in the background, stop it, report it, "
                             "or print the shell lines that point the AWS CLI at it")
    parser.add_argument("--port", type=int,
                        help="port on 127.0.0.1 (default: PICSEL_CLOUD_PORT or 4566)")


def _cloud(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.backend != "local":
        print(f"PICSEL_BACKEND={settings.backend}: there is no embedded cloud to {args.action}")
        return 1
    cloud = LocalCloud(args.port or settings.cloud_port, settings.state_dir)
    actions = {"start": _cloud_start, "stop": _cloud_stop, "status": _cloud_status,
               "env": _cloud_env}
    return actions[args.action](cloud)


def _cloud_env(cloud: LocalCloud) -> int:
    """``eval "$(picsel cloud env)"``: the AWS CLI and SDKs then reach the embedded cloud."""
    print("unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN")
    for name, value in cloud.client_env().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


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

# --- picsel up | ingest | process | crawl | demo | down -----------------------------------------


def _configure_nothing(parser: argparse.ArgumentParser) -> None:
    """A command without arguments."""


def _configure_days(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", help="first day, YYYY-MM-DD (default: the demo's, 2023-09-01)")
    parser.add_argument("--end", help="last day, YYYY-MM-DD (default: --start; without either: "
                                      "the demo's last day, 2023-09-03)")


def _configure_process(parser: argparse.ArgumentParser) -> None:
    _configure_days(parser)
    parser.add_argument("--redo", action="store_true",
                        help="recompute days whose products are already published")


def _configure_backfill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", required=True, help="last day, YYYY-MM-DD")
    parser.add_argument("--in-flight", type=int, default=3,
                        help="CDS requests (Lambda invocations) at once (default 3)")


def _configure_down(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", action="store_true",
                        help="really delete (without it, only list what would be deleted)")


def _span(args: argparse.Namespace) -> tuple[str, str]:
    """(start, end) of --start/--end: the demo's days when neither is given."""
    if args.start is None and args.end is None:
        return DEMO_START.isoformat(), DEMO_END.isoformat()
    start = args.start or args.end
    return start, args.end or start


def _up(args: argparse.Namespace) -> int:
    from picsel_nb import pipeline

    for kind, name in pipeline.provision(get_stack()).items():
        print(f"{kind:<14} {name}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from picsel_nb import pipeline

    rows = pipeline.ingest(get_stack(), *_span(args))
    for row in rows:
        print(f"{row['date']}  {row['status']:<8} {row['key'] or row['error']}")
    return 0 if all(row["ok"] for row in rows) else 1


def _process(args: argparse.Namespace) -> int:
    from picsel_nb import pipeline

    run = pipeline.process(get_stack(), *_span(args), redo=args.redo)
    print(f"job run {run['run_id']}: {run['state']} in {run['duration_s'] or 0:.0f} s, "
          f"{len(run['products'])} product files written")
    if run["error"]:
        print(run["error"], file=sys.stderr)
    return 0 if run["state"] == "SUCCEEDED" else 1


def _backfill(args: argparse.Namespace) -> int:
    from picsel_nb import pipeline

    outcome = pipeline.backfill(get_stack(), args.start, args.end, in_flight=args.in_flight)
    ingest, process = outcome["ingest"], outcome["process"]
    print(f"ingest: {len(ingest['stored'])} CDS requests stored, {len(ingest['skipped'])} "
          f"already there, {len(ingest['failed'])} failed")
    for first, last, error in ingest["failed"]:
        print(f"  failed {first}..{last}: {error}", file=sys.stderr)
    print(f"process: job run {process['run_id']} {process['state']}: "
          f"{len(process['published'])} days published, {len(process['skipped'])} skipped "
          f"(already published), {len(process['failed'])} failed")
    if process["failed"]:
        print(f"  failed days: {', '.join(map(str, process['failed']))}\n"
              f"  {process['error'] or ''}", file=sys.stderr)
    return 0 if not ingest["failed"] and not process["failed"] else 1


def _crawl(args: argparse.Namespace) -> int:
    from picsel_nb import pipeline

    outcome = pipeline.crawl(get_stack())
    crawl = outcome["crawl"]
    print(f"crawl {crawl['status']}" + (f": {crawl['error']}" if crawl["error"] else ""))
    for table in outcome["tables"]:
        print(f"table {table['name']}: {len(table['columns'])} columns, partitioned by "
              f"{', '.join(table['partition_keys'])}, {len(table['partitions'])} partitions")
    return 0 if crawl["status"] == "SUCCEEDED" else 1


def _demo(args: argparse.Namespace) -> int:
    from picsel_nb import pipeline

    pipeline.demo()
    return 0


def _down(args: argparse.Namespace) -> int:
    from picsel_nb.stack import teardown

    stack = get_stack()
    if not args.yes:
        print("would delete:")
        for kind, names in teardown.leftovers(stack).items():
            print(f"  {kind:<12} {', '.join(names) or '-'}")
        if not sys.stdin.isatty() or input("delete all of it? [y/N] ").strip().lower() != "y":
            print("nothing deleted (pass --yes to delete without asking)")
            return 2
    teardown.teardown(stack, say=print)
    return 0


add_command("up", "create or update every resource of the pipeline", _configure_nothing, _up)
add_command("ingest", "download ERA5-Land days into the input bucket (the Lambda)",
            _configure_days, _ingest)
add_command("process", "compute the daily contours of ingested days (the Glue job)",
            _configure_process, _process)
add_command("backfill", "ingest and process a whole range of days (a month per CDS request, "
            "then one Glue run)", _configure_backfill, _backfill)
add_command("crawl", "catalog the contours as a table (the Glue crawler)", _configure_nothing,
            _crawl)
add_command("demo", "the whole pipeline for the demo's days, 2023-09-01..03, then the product URLs",
            _configure_nothing, _demo)
add_command("down", "delete everything the walkthrough created", _configure_down, _down)

if __name__ == "__main__":
    sys.exit(main())
