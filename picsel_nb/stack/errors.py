"""One place for AWS error handling, so stack modules read like the AWS SDK examples without a
try/except in every function."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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


def retry_while_role_propagates(call: Callable[..., Any], code: str, phrase: str,
                                attempts: int = 6, **kwargs: Any) -> Any:
    """`call(**kwargs)`, retried while AWS answers `code` saying a new role cannot be assumed yet.

    IAM is eventually consistent: a role created seconds ago may not be assumable for ~10 s, and
    no boto3 waiter covers that. Any other error is raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call(**kwargs)
        except ClientError as exc:
            if attempt == attempts or error_code(exc) != code or phrase not in str(exc):
                raise
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")
