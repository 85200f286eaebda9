"""Role sessions that AWS services start for the code they run: the Lambda's, the Glue job's.

An AWS service runs code with temporary credentials of the role it was given (``AssumeRole``
made by the service itself, so the caller's trust check is the service's). Here moto's STS issues
them; the authentication layer then knows their keys, and the authorization layer holds each
session to its role's policies. Credentials are reused until five minutes before they expire.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from moto.iam.models import iam_backends
from moto.sts.models import sts_backends

from picsel_nb.localcloud.router import ACCOUNT_ID

CREDENTIAL_SECONDS = 3600
HOST_COMPATIBILITY = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # machine quirks, no secrets

_sessions: dict[tuple[str, str], object] = {}
_lock = threading.Lock()


def role_arn(role: str) -> str:
    """A role's ARN from what a service was given (Glue accepts a bare role name, which names
    the account's role of that name, path included)."""
    if role.startswith("arn:"):
        return role
    found = next((r for r in iam_backends[ACCOUNT_ID]["aws"].roles.values() if r.name == role),
                 None)
    return found.arn if found else f"arn:aws:iam::{ACCOUNT_ID}:role/{role}"


def credentials(role: str, session_name: str, region: str) -> dict[str, str]:
    """``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` of a session."""
    key = (role_arn(role), session_name)
    soon = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=5)  # moto: naive UTC
    with _lock:
        session = _sessions.get(key)
        if session is None or session.expiration < soon:
            session = sts_backends[ACCOUNT_ID]["aws"].assume_role(
                region_name=region, role_session_name=session_name, role_arn=key[0],
                policy=None, duration=CREDENTIAL_SECONDS, external_id=None)
            _sessions[key] = session
    return {"AWS_ACCESS_KEY_ID": session.access_key_id,
            "AWS_SECRET_ACCESS_KEY": session.secret_access_key,
            "AWS_SESSION_TOKEN": session.session_token}
