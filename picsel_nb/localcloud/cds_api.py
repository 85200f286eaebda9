"""The loopback CDS API: the part of the current Copernicus CDS API that ``cdsapi`` ≥ 0.7 calls.

Mounted by the embedded cloud under ``/_picsel/cds``; the cdsapi ``url`` is
``http://127.0.0.1:<port>/_picsel/cds/api`` (see :func:`api_url`) and the ``key`` a token:
:data:`DEFAULT_TOKEN` (always valid, licence accepted) or one from :func:`issue_token`.

Paths (under the prefix):

- ``api/catalogue/v1/messages`` (GET): the portal messages the client logs on start (none).
- ``api/retrieve/v1/processes/{dataset}`` (GET) and ``…/execution`` (POST ``{"inputs": request}``,
  validated by ``picsel_nb.era5.validate_request``); ``api/retrieve/v1/jobs`` (GET),
  ``…/jobs/{id}`` (GET, DELETE), ``…/jobs/{id}/results`` (GET), ``…/jobs/delete`` (POST).
- ``api/profiles/v1/account/verification/pat`` (POST), ``…/account/licences`` (GET) and
  ``…/account/licences/{id}`` (PUT ``{"revision": n}``).
- ``download/{file}`` (GET, HEAD; HTTP Range): the results' ``href``, no token needed.
- ``admin/tokens`` (POST ``{"accept_licences": bool, "faults": {...}}`` → ``{"token", "url"}``)
  and ``admin/tokens/{token}`` (DELETE): not part of the CDS; how tests and notebooks get keys.
  Faults (see ``cds_jobs.Faults``): ``queue_seconds``, ``job_seconds``, ``job_error``,
  ``truncate_bytes``, ``server_errors`` (a list of statuses answered, one per authenticated API
  call).

Errors are JSON problems ``{"type", "title", "status", "detail", "instance"}`` as the CDS sends.
"""

from __future__ import annotations

import json
from datetime import datetime

import requests
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.http import parse_range_header
from werkzeug.routing import Map, Rule

from picsel_nb import era5
from picsel_nb.localcloud.cds_jobs import (
    DEFAULT_TOKEN,
    LICENCE,
    Account,
    CdsStore,
    Faults,
    Job,
    LicenceError,
)
from picsel_nb.localcloud.credentials import admin_headers, admin_key
from picsel_nb.localcloud.router import AwsRequest, AwsResponse, Router
from picsel_nb.settings import get_settings

__all__ = ["DEFAULT_TOKEN", "PREFIX", "api_url", "install", "issue_token", "revoke_token"]

PREFIX = "/_picsel/cds"

_GET, _POST = ["GET"], ["POST"]
_URLS = Map([
    Rule("/api/catalogue/v1/messages", methods=_GET, endpoint="messages"),
    Rule("/api/retrieve/v1/processes/<dataset>", methods=_GET, endpoint="process"),
    Rule("/api/retrieve/v1/processes/<dataset>/execution", methods=_POST, endpoint="execute"),
    Rule("/api/retrieve/v1/jobs", methods=_GET, endpoint="jobs"),
    Rule("/api/retrieve/v1/jobs/delete", methods=_POST, endpoint="delete_jobs"),
    Rule("/api/retrieve/v1/jobs/<job_id>", methods=["GET", "DELETE"], endpoint="job"),
    Rule("/api/retrieve/v1/jobs/<job_id>/results", methods=_GET, endpoint="results"),
    Rule("/api/profiles/v1/account/verification/pat", methods=_POST, endpoint="verify"),
    Rule("/api/profiles/v1/account/licences", methods=_GET, endpoint="licences"),
    Rule("/api/profiles/v1/account/licences/<licence_id>", methods=["PUT"], endpoint="accept"),
    Rule("/api/resources/<path:name>", methods=_POST, endpoint="legacy"),
    Rule("/download/<name>", methods=_GET, endpoint="download"),
    Rule("/admin/tokens", methods=_POST, endpoint="issue"),
    Rule("/admin/tokens/<token>", methods=["DELETE"], endpoint="revoke"),
], strict_slashes=False)

_ADMIN_ENDPOINTS = ("issue", "revoke")
_LEGACY = ("The CDS API v2 (UID:KEY keys, /resources endpoints) was retired in September 2024: "
           "use a personal access token (no colon) with cdsapi >= 0.7.")


class Problem(Exception):
    """An error answered as the CDS does: a JSON problem (RFC 7807) with an HTTP status."""

    def __init__(self, status: int, title: str, detail: str = "", *, kind: str | None = None,
                 **extra: str) -> None:
        super().__init__(detail or title)
        self.body = {"type": kind or title, "title": title, "status": status, "detail": detail,
                     **extra}

    def response(self, instance: str) -> AwsResponse:
        return _json(self.body | {"instance": instance}, self.body["status"])


def install(router: Router) -> None:
    """Serve the loopback CDS under ``/_picsel/cds`` with a fresh, empty store."""
    router.mount(PREFIX, CdsApi(CdsStore()), public=True)  # the CDS checks its own tokens


def api_url(endpoint_url: str | None = None) -> str:
    """The cdsapi ``url`` of the loopback CDS of the embedded cloud at ``endpoint_url``."""
    return f"{_root(endpoint_url)}/api"


def issue_token(endpoint_url: str | None = None, *, accept_licences: bool = True,
                faults: dict | None = None) -> str:
    """A new API key for the loopback CDS, optionally without the licence or with faults."""
    body = json.dumps({"accept_licences": accept_licences, "faults": faults or {}}).encode()
    url = f"{_root(endpoint_url)}/admin/tokens"
    headers = _admin_headers("POST", url, body, {"Content-Type": "application/json"})
    reply = requests.post(url, data=body, headers=headers, timeout=30)
    reply.raise_for_status()
    return reply.json()["token"]


def revoke_token(token: str, endpoint_url: str | None = None) -> None:
    """Make a loopback CDS key invalid (as deleting a token on the CDS profile page does)."""
    url = f"{_root(endpoint_url)}/admin/tokens/{token}"
    reply = requests.delete(url, headers=_admin_headers("DELETE", url), timeout=30)
    reply.raise_for_status()


def _admin_headers(method: str, url: str, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers signed with the administrator's key of the state directory in force."""
    settings = get_settings()
    return admin_headers(method, url, admin_key(settings.state_dir), settings.region, body,
                         headers)


def _root(endpoint_url: str | None) -> str:
    endpoint = endpoint_url or get_settings().endpoint_url
    if endpoint is None:
        raise ValueError("the loopback CDS exists only on the local backend (PICSEL_BACKEND=local)")
    return f"{endpoint.rstrip('/')}{PREFIX}"


class CdsApi:
    """The mounted handler: route a request, check its token, answer from the store."""

    def __init__(self, store: CdsStore) -> None:
        self.store = store

    def __call__(self, req: AwsRequest) -> AwsResponse:
        instance = f"http://{_host(req)}{req.path}"
        try:
            endpoint, args = _URLS.bind("loopback").match(req.path[len(PREFIX):], req.method)
            if endpoint in _ADMIN_ENDPOINTS and not req.principal.admin:
                raise Problem(403, "forbidden", "only the embedded cloud's administrator (a "
                              "SigV4-signed request) may issue or revoke tokens")
            return getattr(self, f"_{endpoint}")(req, **args)
        except NotFound:
            return Problem(404, "not found", f"{req.path} is not served here").response(instance)
        except MethodNotAllowed:
            return Problem(405, "method not allowed", req.method).response(instance)
        except Problem as problem:
            return problem.response(instance)

    # -- catalogue and processes --------------------------------------------------------------

    def _messages(self, req: AwsRequest) -> AwsResponse:
        return _json({"messages": []})

    def _process(self, req: AwsRequest, dataset: str) -> AwsResponse:
        _check_dataset(dataset)
        url = f"{_api_base(req)}/retrieve/v1/processes/{dataset}"
        return _json({"id": dataset, "title": era5.DATASETS[dataset].title, "version": "1.0.0",
                      "jobControlOptions": ["async-execute"], "outputTransmission": ["reference"],
                      "links": [{"href": url, "rel": "self", "type": "application/json"}]})

    def _execute(self, req: AwsRequest, dataset: str) -> AwsResponse:
        account = self._account(req)
        _check_dataset(dataset)
        inputs = _body(req).get("inputs")
        if not isinstance(inputs, dict):
            raise Problem(400, "invalid request", 'the body must be {"inputs": {<request>}}')
        try:
            job = self.store.submit(account, dataset, inputs)
        except LicenceError:
            licences = [{"id": LICENCE[0], "revision": LICENCE[1]}]
            raise Problem(403, "required licences not accepted",
                          f"please accept the following licences to proceed: {licences}",
                          kind="permission denied") from None
        except ValueError as exc:
            raise Problem(400, "invalid request", str(exc)) from None
        monitor = f"{_api_base(req)}/retrieve/v1/jobs/{job.id}"
        execution = f"{_api_base(req)}/retrieve/v1/processes/{dataset}/execution"
        body = _job_json(job, req, [_link(execution, "self"), _link(monitor, "monitor")])
        return _json(body, 201, {"Location": monitor})

    # -- jobs ---------------------------------------------------------------------------------

    def _jobs(self, req: AwsRequest) -> AwsResponse:
        account = self._account(req)
        jobs = [_job_json(job, req, _job_links(job, req)) for job in self.store.jobs(account)]
        return _json({"jobs": jobs, "links": [_link(f"{_api_base(req)}/retrieve/v1/jobs", "self")]})

    def _job(self, req: AwsRequest, job_id: str) -> AwsResponse:
        account = self._account(req)
        if req.method == "DELETE":
            job = self.store.dismiss(account, job_id)
        else:
            job = self.store.job(account, job_id)
        if job is None or (req.method == "GET" and job.status == "dismissed"):
            raise Problem(404, "job not found", f"job {job_id} not found", kind="no such job")
        return _json(_job_json(job, req, _job_links(job, req)))

    def _delete_jobs(self, req: AwsRequest) -> AwsResponse:
        account = self._account(req)
        job_ids = _body(req).get("job_ids", [])
        jobs = [self.store.dismiss(account, str(job_id)) for job_id in job_ids]
        return _json({"jobs": [_job_json(job, req, []) for job in jobs if job is not None]})

    def _results(self, req: AwsRequest, job_id: str) -> AwsResponse:
        account = self._account(req)
        job = self.store.job(account, job_id)
        if job is None or job.status == "dismissed":
            raise Problem(404, "job not found", f"job {job_id} not found", kind="no such job")
        if job.status == "failed":
            raise Problem(400, "The job has failed", kind="job results failed",
                          traceback=job.error or "")
        if job.status != "successful":
            raise Problem(404, "job results not ready", f"status of {job_id} is '{job.status}'",
                          kind="result not ready")
        href = f"http://{_host(req)}{PREFIX}/download/{job.file_name}"
        return _json({"asset": {"value": {"type": job.media_type, "href": href,
                                          "file:size": job.size}}})

    # -- profiles -----------------------------------------------------------------------------

    def _verify(self, req: AwsRequest) -> AwsResponse:
        return _json({"id": self._account(req).user_id})

    def _licences(self, req: AwsRequest) -> AwsResponse:
        account = self._account(req)
        return _json({"licences": [{"id": lid, "revision": rev}
                                   for lid, rev in account.licences.items()]})

    def _accept(self, req: AwsRequest, licence_id: str) -> AwsResponse:
        account = self._account(req)
        revision = _body(req).get("revision")
        if not isinstance(revision, int):
            raise Problem(400, "invalid request", "the body must be {\"revision\": <int>}")
        try:
            self.store.accept_licence(account, licence_id, revision)
        except ValueError as exc:
            raise Problem(404, "licence not found", str(exc)) from None
        return _json({"id": licence_id, "revision": revision})

    def _legacy(self, req: AwsRequest, name: str) -> AwsResponse:
        """What an old ``UID:KEY`` client reaches; it shows the body's ``message`` field."""
        raise Problem(410, "legacy API retired", _LEGACY, message=_LEGACY)

    # -- downloads and administration ---------------------------------------------------------

    def _download(self, req: AwsRequest, name: str) -> AwsResponse:
        served = self.store.file(name)
        if served is None:
            raise Problem(404, "not found", f"no file {name}")
        data, media_type = served
        headers = {"Content-Type": media_type, "Accept-Ranges": "bytes"}
        ranges = parse_range_header(req.headers.get("range"))
        if ranges is None:
            return AwsResponse(200, headers, data)
        span = ranges.range_for_length(len(data))
        if span is None:
            return AwsResponse(416, headers | {"Content-Range": f"bytes */{len(data)}"}, b"")
        headers["Content-Range"] = ranges.to_content_range_header(len(data))
        return AwsResponse(206, headers, data[span[0]:span[1]])

    def _issue(self, req: AwsRequest) -> AwsResponse:
        body = _body(req)
        try:
            faults = Faults.parse(body.get("faults") or {})
        except ValueError as exc:
            raise Problem(400, "invalid request", str(exc)) from None
        token = self.store.register(accept_licences=bool(body.get("accept_licences", True)),
                                    faults=faults)
        return _json({"token": token, "url": _api_base(req)}, 201)

    def _revoke(self, req: AwsRequest, token: str) -> AwsResponse:
        if not self.store.revoke(token):
            raise Problem(404, "not found", "no such token (the default token cannot be revoked)")
        return AwsResponse(204, {}, b"")

    def _account(self, req: AwsRequest) -> Account:
        """The caller's account from ``PRIVATE-TOKEN`` (401 otherwise), after injected 5xx."""
        token = req.headers.get("private-token")
        if not token:
            raise Problem(401, "permission denied", "Authentication required")
        account = self.store.account(token)
        if account is None:
            raise Problem(401, "Authentication failed", "operation not allowed: the API key "
                          "(PRIVATE-TOKEN) is not valid here", kind="permission denied")
        if status := self.store.take_server_error(account):
            raise Problem(status, "injected fault", f"fault injected for this token: {status}")
        return account


def _check_dataset(dataset: str) -> None:
    if dataset not in era5.DATASETS:
        raise Problem(404, "process not found",
                      f"dataset {dataset!r} not found; accepted: {', '.join(era5.DATASETS)}",
                      kind="no such process")


def _job_json(job: Job, req: AwsRequest, links: list[dict]) -> dict:
    """A job's status info in the CDS's shape, with its request and (new) log when asked."""
    body = {"processID": job.dataset, "type": "process", "jobID": job.id, "status": job.status,
            "created": _iso(job.created), "started": _iso(job.started),
            "finished": _iso(job.finished), "updated": _iso(job.updated), "links": links}
    metadata: dict = {"origin": "api"}
    if _flag(req, "request"):
        metadata["request"] = {"ids": job.request}
    if _flag(req, "log"):
        since = _since(req)
        metadata["log"] = [[_iso(t), text] for t, text in job.log if since is None or t > since]
    return body | {"metadata": metadata}


def _job_links(job: Job, req: AwsRequest) -> list[dict]:
    url = f"{_api_base(req)}/retrieve/v1/jobs/{job.id}"
    links = [_link(url, "self")]
    return links + [_link(f"{url}/results", "results")] if job.done else links


def _link(href: str, rel: str) -> dict:
    return {"href": href, "rel": rel, "type": "application/json"}


def _api_base(req: AwsRequest) -> str:
    return f"http://{_host(req)}{PREFIX}/api"


def _host(req: AwsRequest) -> str:
    """The host:port the client called: links point back to where it reached us."""
    return req.headers.get("host", "127.0.0.1")


def _since(req: AwsRequest) -> datetime | None:
    """The ``logStartTime`` the client sends back: only later log entries are wanted."""
    text = req.query.get("logStartTime", [""])[0]
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        raise Problem(400, "invalid request", f"logStartTime={text!r} is not an ISO time") from None


def _flag(req: AwsRequest, name: str) -> bool:
    return req.query.get(name, ["false"])[0].lower() == "true"


def _body(req: AwsRequest) -> dict:
    try:
        body = req.json()
    except ValueError:
        raise Problem(400, "invalid request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "invalid request", "the body must be a JSON object")
    return body


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _json(body: dict, status: int = 200, headers: dict | None = None) -> AwsResponse:
    return AwsResponse(status, {"Content-Type": "application/json"} | (headers or {}),
                       json.dumps(body).encode())
