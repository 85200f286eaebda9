"""State of the loopback CDS: tokens, jobs, the cache of produced files and injected faults.

Jobs follow the CDS lifecycle accepted → running → successful | failed. A job's file is made the
first time the job is looked at after its delays (none unless a fault adds them: ``queue_seconds``
in the queue as ``accepted``, then ``job_seconds`` as ``running``), so by default the client's
first poll already sees ``successful`` and no client sleeps. Files are cached by request
hash, as the CDS caches identical requests.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from picsel_nb import era5

# The licence ERA5 and ERA5-Land require on the CDS: (id, revision).
LICENCE = ("licence-to-use-copernicus-products", 12)
# Always valid, licence accepted, no faults: what the walkthrough stores in Secrets Manager.
DEFAULT_TOKEN = str(uuid.uuid5(uuid.NAMESPACE_URL, "picsel-nb:loopback-cds:default-token"))

_MEDIA_TYPES = (  # leading bytes -> (media type, file extension), as the CDS names its files
    (b"PK\x03\x04", "application/zip", ".zip"),
    (b"\x89HDF", "application/netcdf", ".nc"),
    (b"CDF", "application/netcdf", ".nc"),
    (b"GRIB", "application/x-grib", ".grib"),
)


class LicenceError(PermissionError):
    """The account has not accepted a licence the dataset requires."""


@dataclass
class Faults:
    """Misbehaviour injected for one token, so tests can watch how clients cope."""

    queue_seconds: float = 0.0  # the job waits in the CDS queue (accepted) this long
    job_seconds: float = 0.0  # then stays running this long
    job_error: str | None = None  # the job ends `failed` with this message
    truncate_bytes: int = 0  # downloads serve this many bytes fewer than the results announce
    server_errors: list[int] = field(default_factory=list)  # next API calls answer these, one each

    @classmethod
    def parse(cls, payload: dict) -> Faults:
        """Faults from their JSON form; ValueError naming a field that is unknown or ill-typed."""
        for name, value in payload.items():
            if name not in _FAULT_RULES:
                raise ValueError(f"unknown fault {name!r}; accepted: {', '.join(_FAULT_RULES)}")
            valid, accepted = _FAULT_RULES[name]
            if not valid(value):
                raise ValueError(f"fault {name!r}={value!r} is not valid; accepted: {accepted}")
        return cls(**payload)


def _count(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


_FAULT_RULES = {  # fault -> (check, what is accepted)
    "queue_seconds": (_count, "a number of seconds >= 0"),
    "job_seconds": (_count, "a number of seconds >= 0"),
    "job_error": (lambda v: v is None or (isinstance(v, str) and v != ""), "a non-empty message"),
    "truncate_bytes": (lambda v: _count(v) and isinstance(v, int), "an integer >= 0"),
    "server_errors": (lambda v: isinstance(v, list) and all(
        isinstance(s, int) and 400 <= s <= 599 for s in v), "a list of HTTP statuses 400..599"),
}


@dataclass
class Account:
    """One API token: its accepted licences and its faults."""

    token: str
    licences: dict[str, int]  # accepted licence id -> revision
    faults: Faults

    @property
    def user_id(self) -> str:
        """A stable user id that does not reveal the token."""
        return str(uuid.uuid5(uuid.NAMESPACE_OID, self.token))


@dataclass
class Job:
    """One submitted request and where it is in its lifecycle."""

    id: str
    dataset: str
    request: dict
    token: str
    faults: Faults
    running_at: float  # time.monotonic() from which the job leaves the queue
    ready_at: float  # time.monotonic() from which the job may finish
    created: datetime = field(default_factory=lambda: _now())
    status: str = "accepted"
    started: datetime | None = None
    finished: datetime | None = None
    file_name: str | None = None
    size: int = 0
    media_type: str = ""
    error: str | None = None
    log: list[tuple[datetime, str]] = field(default_factory=list)

    @property
    def updated(self) -> datetime:
        return self.finished or self.started or self.created

    @property
    def done(self) -> bool:
        return self.status in ("successful", "failed")


class CdsStore:
    """Tokens, jobs and files of one loopback CDS; safe to use from the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._accounts = {DEFAULT_TOKEN: Account(DEFAULT_TOKEN, dict([LICENCE]), Faults())}
        self._jobs: dict[str, Job] = {}
        self._cache: dict[str, bytes] = {}  # request hash -> the file the request produced
        self._files: dict[str, tuple[bytes, str]] = {}  # href file name -> (bytes, media type)

    def register(self, *, accept_licences: bool = True, faults: Faults | None = None) -> str:
        """A new valid token, with the dataset licence accepted or not, and its faults."""
        token = str(uuid.uuid4())
        with self._lock:
            licences = dict([LICENCE]) if accept_licences else {}
            self._accounts[token] = Account(token, licences, faults or Faults())
        return token

    def revoke(self, token: str) -> bool:
        """Make a token invalid; False when it was not known (the default token stays)."""
        with self._lock:
            return token != DEFAULT_TOKEN and self._accounts.pop(token, None) is not None

    def account(self, token: str) -> Account | None:
        with self._lock:
            return self._accounts.get(token)

    def take_server_error(self, account: Account) -> int | None:
        """The next injected error status for this account's API calls, consumed; None if none."""
        with self._lock:
            return account.faults.server_errors.pop(0) if account.faults.server_errors else None

    def accept_licence(self, account: Account, licence_id: str, revision: int) -> None:
        """Record that the account accepted a licence; ValueError for an unknown licence."""
        if licence_id != LICENCE[0]:
            raise ValueError(f"licence {licence_id!r} not found; accepted: {LICENCE[0]}")
        with self._lock:
            account.licences[licence_id] = revision

    def submit(self, account: Account, dataset: str, request: dict) -> Job:
        """Accept a request as a new job.

        LicenceError when the licence is not accepted; ValueError (from
        ``era5.validate_request``) for an unknown dataset or an invalid request.
        """
        if account.licences.get(LICENCE[0]) != LICENCE[1]:
            raise LicenceError(LICENCE)
        validated = era5.validate_request(dataset, request)
        faults = account.faults
        job = Job(id=str(uuid.uuid4()), dataset=dataset, request=validated, token=account.token,
                  faults=faults, running_at=time.monotonic() + faults.queue_seconds,
                  ready_at=time.monotonic() + faults.queue_seconds + faults.job_seconds)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def job(self, account: Account, job_id: str) -> Job | None:
        """The account's job, advanced to where it is now; None when unknown or someone else's."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.token != account.token:
                return None
            self._advance(job)
            return job

    def jobs(self, account: Account) -> list[Job]:
        """The account's jobs that were not deleted, newest first."""
        with self._lock:
            mine = [job for job in self._jobs.values()
                    if job.token == account.token and job.status != "dismissed"]
            for job in mine:
                self._advance(job)
        return sorted(mine, key=lambda job: job.created, reverse=True)

    def dismiss(self, account: Account, job_id: str) -> Job | None:
        """Delete a job (its status becomes ``dismissed``); None when unknown."""
        with self._lock:
            job = self.job(account, job_id)
            if job is None or job.status == "dismissed":
                return None
            job.status = "dismissed"
            return job

    def file(self, name: str) -> tuple[bytes, str] | None:
        """The bytes and media type served under a results href's file name."""
        with self._lock:
            return self._files.get(name)

    def _advance(self, job: Job) -> None:
        if job.status not in ("accepted", "running"):
            return
        now = time.monotonic()
        if now < job.running_at:
            return  # still queued
        if now < job.ready_at:
            if job.status == "accepted":
                job.status, job.started = "running", _now()
            return
        job.started = job.started or _now()
        if job.faults.job_error:
            self._finish(job, error=job.faults.job_error)
            return
        key = era5.request_hash(job.dataset, job.request)
        try:  # made once per distinct request; the server's other threads wait meanwhile
            data = self._cache.get(key) or era5.synthetic_download(job.dataset, job.request)
        except Exception as exc:  # noqa: BLE001 - the CDS reports any adaptor error as a failed job
            self._finish(job, error=f"{type(exc).__name__}: {exc}")
            return
        self._cache[key] = data
        media_type, extension = _media_type(data)
        served = data[: max(len(data) - job.faults.truncate_bytes, 0)]
        if job.faults.truncate_bytes:
            key += f"-truncated-{job.faults.truncate_bytes}"
        job.file_name = key + extension
        self._files[job.file_name] = served, media_type
        job.size, job.media_type = len(data), media_type
        job.log.append((_now(), "INFO: synthetic ERA5-like data from the picsel-nb loopback CDS"))
        self._finish(job)

    @staticmethod
    def _finish(job: Job, error: str | None = None) -> None:
        job.status = "failed" if error else "successful"
        job.error = error
        job.finished = _now()
        if error:
            job.log.append((job.finished, f"ERROR: {error}"))


def _media_type(data: bytes) -> tuple[str, str]:
    """Media type and file extension of a download, from its first bytes."""
    for magic, media_type, extension in _MEDIA_TYPES:
        if data.startswith(magic):
            return media_type, extension
    return "application/octet-stream", ".bin"


def _now() -> datetime:
    return datetime.now(UTC)
