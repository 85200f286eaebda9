"""``getResolvedOptions`` as AWS Glue's ``awsglue.utils`` defines it: ``--key value`` job arguments.

Hand-written to behave like Glue's: argparse over ``argv[1:]``, each requested option required
(a missing one raises ``GlueArgumentError``), unknown arguments ignored, Glue's reserved options
(job bookmarks, job ids, encryption type) parsed but refused as user options, and ``TempDir`` /
``RedshiftTempDir`` optional and mirrored into each other.
"""

from __future__ import annotations

import argparse

BOOKMARK_OPTION = "--job-bookmark-option"
BOOKMARK_CHOICES = ("job-bookmark-enable", "job-bookmark-pause", "job-bookmark-disable")
CONTINUATION_OPTION = "--continuation-option"
CONTINUATION_CHOICES = ("continuation-enabled", "continuation-readonly", "continuation-ignore")
BOOKMARK_RANGE_OPTIONS = ("--job-bookmark-from", "--job-bookmark-to")
ID_OPTIONS = ("--JOB_ID", "--JOB_RUN_ID", "--SECURITY_CONFIGURATION")  # JOB_NAME is not reserved
ENCRYPTION_OPTION = "--encryption-type"
TEMP_DIRS = ("TempDir", "RedshiftTempDir")


class GlueArgumentError(Exception):
    """A job argument is missing or invalid (Glue raises this instead of exiting)."""


class GlueArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises ``GlueArgumentError`` where argparse would exit."""

    def error(self, message: str):
        raise GlueArgumentError(message)


def getResolvedOptions(args: list[str], options: list[str]) -> dict:
    """The values of ``--<option> value`` for each of ``options`` in ``args`` (``sys.argv``).

    Also returns Glue's own arguments (``job_bookmark_option``, ``JOB_ID``, ``JOB_RUN_ID``, …).
    Raises ``GlueArgumentError`` when a requested option is absent.
    """
    reserved = [BOOKMARK_OPTION, CONTINUATION_OPTION, *BOOKMARK_RANGE_OPTIONS, *ID_OPTIONS,
                ENCRYPTION_OPTION]
    for option in reserved:
        if option[2:] in options:
            raise RuntimeError(f"Using reserved arguments {option}")
    parser = GlueArgumentParser()
    parser.add_argument(BOOKMARK_OPTION, choices=BOOKMARK_CHOICES, required=False)
    parser.add_argument(CONTINUATION_OPTION, choices=CONTINUATION_CHOICES, required=False)
    for option in (*BOOKMARK_RANGE_OPTIONS, *ID_OPTIONS):
        parser.add_argument(option, required=False)
    parser.add_argument(ENCRYPTION_OPTION, choices=("sse-s3",))
    for name in TEMP_DIRS:
        parser.add_argument(f"--{name}", required=False)
    for option in options:
        if option not in TEMP_DIRS:
            parser.add_argument(f"--{option}", required=True)
    parsed, _unknown = parser.parse_known_args(args[1:])
    values = vars(parsed)
    values["TempDir"] = values["TempDir"] or values["RedshiftTempDir"]
    values["RedshiftTempDir"] = values["TempDir"]
    values["job_bookmark_option"] = _bookmark_option(values)
    _check_bookmark_range(values)
    return values


def _bookmark_option(values: dict) -> str:
    """The job-bookmark option, falling back to the legacy continuation option, then disabled."""
    continuation = values.pop("continuation_option", None)
    if values.get("job_bookmark_option"):
        return values["job_bookmark_option"]
    if continuation is None:
        return "job-bookmark-disable"
    return BOOKMARK_CHOICES[CONTINUATION_CHOICES.index(continuation)]


def _check_bookmark_range(values: dict) -> None:
    """``job-bookmark-pause`` needs both range options or neither; other modes accept neither."""
    absent = [o for o in BOOKMARK_RANGE_OPTIONS if values.get(o[2:].replace("-", "_")) is None]
    if values["job_bookmark_option"] == "job-bookmark-pause":
        if len(absent) == 1:
            raise RuntimeError(f"Missing option or value for {absent[0]}")
    elif not absent:
        raise RuntimeError("Invalid option(s) " + " ".join(BOOKMARK_RANGE_OPTIONS))
