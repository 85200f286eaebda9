"""One place for AWS error handling, so stack modules read like the AWS SDK examples without a
try/except in every function."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError


class StackError(RuntimeError):
    """A provisioning step cannot go on; the message says what to do about it."""


def error_code(exc: ClientError) -> str:
    """The AWS error code of a ClientError (e.g. "NoSuchBucket"; S3 HEAD errors give "404")."""
    return exc.response.get("Error", {}).get("Code", "")


@contextmanager
def tolerate(*codes: str) -> Iterator[None]:
    """Swallow ClientErrors with one of `codes` (the expected "already there / not there" cases)."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc) not in codes:
            raise


@contextmanager
def explain(code: str, message: str) -> Iterator[None]:
    """Turn a ClientError with `code` into a StackError carrying `message` (what the user can do)."""
    try:
        yield
    except ClientError as exc:
        if error_code(exc) == code:
            raise StackError(message) from exc
        raise
