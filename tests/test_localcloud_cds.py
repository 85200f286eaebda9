"""The loopback CDS API, driven by the real clients: cdsapi (>= 0.7) and ecmwf-datastores-client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date

import cdsapi
import pytest
import requests
from ecmwf.datastores import Client as DatastoresClient
from ecmwf.datastores.processing import DownloadError
from werkzeug.serving import make_server
from werkzeug.test import Client

from picsel_nb import era5
from picsel_nb.localcloud import cds_api
from picsel_nb.localcloud.app import build_app
from picsel_nb.localcloud.auth import Authenticator
from picsel_nb.localcloud.credentials import AccessKey, admin_key
from picsel_nb.localcloud.router import Router

DATASET = "reanalysis-era5-land"
DAY = date(2023, 9, 1)
SMALL_AREA = (-10.0, -50.0, -11.0, -49.0)  # 11 × 11 ERA5-Land points: quick to make


def _not_found(environ: dict, start_response) -> list[bytes]:
    """Stands in for moto: this module only needs the mounted CDS."""
    start_response("404 Not Found", [])
    return [b""]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback CDS on a free port, served as the embedded cloud serves it (router mount,
    requests authenticated with an administrator key of a state directory of its own)."""
    state = tmp_path_factory.mktemp("cds-state")
    router = Router(_not_found, Authenticator(admin_key(state)))
    cds_api.install(router)
    server = make_server("127.0.0.1", 0, router, threaded=True)
    router.authenticator.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PICSEL_STATE_DIR", str(state))
        yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def client(endpoint: str, key: str = cds_api.DEFAULT_TOKEN, **options) -> cdsapi.Client:
    """cdsapi as a Lambda must configure it: quiet, no progress bar, bounded retries and waits."""
    settings = {"quiet": True, "progress": False, "retry_max": 3, "sleep_max": 0.05,
                "timeout": 30} | options
    return cdsapi.Client(url=cds_api.api_url(endpoint), key=key, **settings)


def request(**changes) -> dict:
    """The pipeline's request for DAY over SMALL_AREA, with some fields changed."""
    return era5.build_request(DATASET, DAY, area=SMALL_AREA) | changes


def test_retrieve_downloads_a_day_that_era5_opens_and_aggregates(endpoint, tmp_path):
    target = tmp_path / "era5land.nc"
    path = client(endpoint).retrieve(DATASET, request(), str(target))

    ds = era5.open_download(path)
    daily = era5.daily(ds, DATASET, days=[DAY])
    assert path == str(target)
    assert daily.sizes == {"date": 1, "latitude": 11, "longitude": 11}
    assert float(daily["t2m"].min()) > -60 and float(daily["t2m"].max()) < 60
    assert float(daily["tp"].min()) >= 0


def test_identical_requests_are_served_from_one_cached_file(endpoint):
    datastores = DatastoresClient(url=cds_api.api_url(endpoint), key=cds_api.DEFAULT_TOKEN,
                                  progress=False, maximum_tries=2, retry_after=0)
    first = datastores.submit(DATASET, request()).get_results()
    second = datastores.submit(DATASET, request()).get_results()

    assert first.location == second.location
    assert first.content_length == second.content_length
    assert first.content_type in ("application/zip", "application/netcdf")


@pytest.mark.parametrize("key", ["not-a-token", "00000000-0000-4000-8000-000000000000"])
def test_unknown_key_is_refused_with_401(endpoint, key, tmp_path):
    with pytest.raises(requests.HTTPError) as raised:
        client(endpoint, key).retrieve(DATASET, request(), str(tmp_path / "x.nc"))

    assert raised.value.response.status_code == 401
    assert "Authentication failed" in str(raised.value)
    assert key not in str(raised.value)
    assert not (tmp_path / "x.nc").exists()


def test_missing_key_is_refused_with_401(endpoint):
    reply = requests.post(f"{cds_api.api_url(endpoint)}/retrieve/v1/processes/{DATASET}/execution",
                          json={"inputs": request()}, timeout=30)

    assert reply.status_code == 401
    assert reply.json() | {"instance": None} == {
        "type": "permission denied", "title": "permission denied", "status": 401,
        "detail": "Authentication required", "instance": None}


def test_revoked_key_is_refused_with_401(endpoint):
    key = cds_api.issue_token(endpoint)
    datastores = DatastoresClient(url=cds_api.api_url(endpoint), key=key, maximum_tries=1)
    datastores.check_authentication()

    cds_api.revoke_token(key, endpoint)

    with pytest.raises(requests.HTTPError) as raised:
        datastores.check_authentication()
    assert raised.value.response.status_code == 401


@pytest.mark.parametrize("change", [
    {"day": ["31"], "month": ["02"]},  # no such date
    {"year": ["1949"]},  # before ERA5-Land starts
    {"area": [-24.0, -60.0, -9.0, -40.0]},  # north below south
    {"variable": ["2m_temperature", "snowfall"]},  # not a variable of this pipeline
    {"data_format": "csv"},
], ids=["impossible-date", "too-early", "area-upside-down", "unknown-variable", "bad-format"])
def test_invalid_request_is_refused_with_400_and_the_validation_message(endpoint, change, tmp_path):
    body = request(**change)
    with pytest.raises(ValueError) as expected:
        era5.validate_request(DATASET, body)

    with pytest.raises(requests.HTTPError) as raised:
        client(endpoint).retrieve(DATASET, body, str(tmp_path / "x.nc"))

    assert raised.value.response.status_code == 400
    assert "invalid request" in str(raised.value)
    assert str(expected.value) in str(raised.value)


def test_unknown_dataset_is_404_naming_the_served_ones(endpoint, tmp_path):
    with pytest.raises(requests.HTTPError) as raised:
        client(endpoint).retrieve("reanalysis-era5-pressure-levels", request(), str(tmp_path / "x"))

    assert raised.value.response.status_code == 404
    assert DATASET in raised.value.response.json()["detail"]


def test_failed_job_raises_with_its_message(endpoint, tmp_path):
    key = cds_api.issue_token(endpoint, faults={"job_error": "MARS returned no data"})

    with pytest.raises(requests.HTTPError) as raised:
        client(endpoint, key).retrieve(DATASET, request(), str(tmp_path / "x.nc"))

    assert raised.value.response.status_code == 400
    assert "The job has failed" in str(raised.value)
    assert "MARS returned no data" in str(raised.value)
    assert not (tmp_path / "x.nc").exists()


def test_truncated_download_is_detected_and_not_taken_for_a_file(endpoint, tmp_path):
    key = cds_api.issue_token(endpoint, faults={"truncate_bytes": 1000})
    target = tmp_path / "x.nc"

    with pytest.raises(DownloadError, match=r"downloaded \d+ byte\(s\) out of \d+"):
        client(endpoint, key).retrieve(DATASET, request(), str(target))

    with pytest.raises(era5.DownloadError):
        era5.open_download(target)


def test_server_errors_are_retried_until_success(endpoint, tmp_path):
    key = cds_api.issue_token(endpoint, faults={"server_errors": [500, 503]})

    path = client(endpoint, key, retry_max=5).retrieve(DATASET, request(), str(tmp_path / "x.nc"))

    assert era5.open_download(path).sizes["latitude"] == 11


def test_server_errors_beyond_the_retry_bound_raise(endpoint, tmp_path):
    key = cds_api.issue_token(endpoint, faults={"server_errors": [503] * 5})

    with pytest.raises(requests.HTTPError) as raised:
        client(endpoint, key, retry_max=3).retrieve(DATASET, request(), str(tmp_path / "x.nc"))

    assert raised.value.response.status_code == 503
    # exactly retry_max attempts were made, so two of the five injected errors remain
    check = f"{cds_api.api_url(endpoint)}/profiles/v1/account/verification/pat"
    statuses = [requests.post(check, headers={"PRIVATE-TOKEN": key}, timeout=30).status_code
                for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_slow_job_goes_through_running_and_then_succeeds(endpoint, tmp_path):
    key = cds_api.issue_token(endpoint, faults={"job_seconds": 0.3})
    statuses: list[str] = []
    logged = client(endpoint, key, quiet=False,
                    info_callback=lambda message, *args: statuses.append(message % args))

    path = logged.retrieve(DATASET, request(), str(tmp_path / "x.nc"))

    assert era5.open_download(path).sizes["longitude"] == 11
    assert [s for s in statuses if s.startswith("status")] == [
        "status has been updated to running", "status has been updated to successful"]


def test_slow_job_is_abandoned_at_a_deadline_and_deleted(endpoint):
    key = cds_api.issue_token(endpoint, faults={"job_seconds": 60})
    remote = client(endpoint, key, wait_until_complete=False).retrieve(DATASET, request())
    deadline = time.monotonic() + 0.5

    while not remote.results_ready:  # the Lambda's loop, with its remaining time as deadline
        if time.monotonic() > deadline:
            reply = remote.delete()
            break
        time.sleep(0.1)
    else:
        pytest.fail("a 60 s job was ready within the deadline")

    assert reply["status"] == "dismissed"


def test_deleted_job_is_gone(endpoint):
    key = cds_api.issue_token(endpoint, faults={"job_seconds": 60})
    datastores = DatastoresClient(url=cds_api.api_url(endpoint), key=key, maximum_tries=1)
    remote = datastores.submit(DATASET, request())
    assert remote.status == "running"

    assert remote.delete()["status"] == "dismissed"

    with pytest.raises(requests.HTTPError) as raised:
        remote.status  # noqa: B018 - the property makes the request
    assert raised.value.response.status_code == 404
    assert remote.request_id not in datastores.get_jobs().request_ids


def test_licence_must_be_accepted_before_retrieving(endpoint, tmp_path):
    key = cds_api.issue_token(endpoint, accept_licences=False)
    with pytest.raises(requests.HTTPError) as raised:
        client(endpoint, key).retrieve(DATASET, request(), str(tmp_path / "x.nc"))
    assert raised.value.response.status_code == 403
    assert "required licences not accepted" in str(raised.value)

    datastores = DatastoresClient(url=cds_api.api_url(endpoint), key=key, maximum_tries=1)
    datastores.accept_licence("licence-to-use-copernicus-products", revision=12)

    assert datastores.get_accepted_licences() == [
        {"id": "licence-to-use-copernicus-products", "revision": 12}]
    assert client(endpoint, key).retrieve(DATASET, request(), str(tmp_path / "x.nc"))


def test_legacy_uid_key_is_told_the_api_was_retired(endpoint, tmp_path):
    legacy = client(endpoint, "12345:abcdef")

    with pytest.raises(Exception, match="retired"):
        legacy.retrieve(DATASET, request(), str(tmp_path / "x.nc"))


def test_download_honours_http_ranges_and_needs_no_key(endpoint):
    datastores = DatastoresClient(url=cds_api.api_url(endpoint), key=cds_api.DEFAULT_TOKEN,
                                  maximum_tries=1)
    results = datastores.submit(DATASET, request()).get_results()
    whole = requests.get(results.location, timeout=30)
    head = requests.head(results.location, timeout=30)
    tail = requests.get(results.location, headers={"Range": "bytes=100-"}, timeout=30)
    beyond = requests.get(results.location, headers={"Range": f"bytes={len(whole.content)}-"},
                          timeout=30)

    assert len(whole.content) == results.content_length
    assert head.headers["Content-Length"] == str(results.content_length)
    assert head.headers["Accept-Ranges"] == "bytes"
    assert tail.status_code == 206 and tail.content == whole.content[100:]
    size = len(whole.content)
    assert tail.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert beyond.status_code == 416


def test_bad_faults_are_refused_naming_the_accepted_ones(endpoint):
    with pytest.raises(requests.HTTPError) as raised:
        cds_api.issue_token(endpoint, faults={"explode": True})

    assert raised.value.response.status_code == 400
    assert "job_seconds" in raised.value.response.json()["detail"]


def test_embedded_cloud_mounts_the_loopback_cds():
    cloud = Client(build_app(AccessKey("AKIAEXAMPLEEXAMPLE00", "not-a-real-secret")))

    reply = cloud.get(f"{cds_api.PREFIX}/api/retrieve/v1/processes/{DATASET}")

    assert reply.status_code == 200
    assert reply.json["id"] == DATASET


def test_queued_job_stays_accepted_and_another_client_resumes_it_by_id(endpoint, tmp_path):
    key = cds_api.issue_token(endpoint, faults={"queue_seconds": 0.5})
    first = client(endpoint, key, wait_until_complete=False).retrieve(DATASET, request())
    assert first.status == "accepted"  # waiting in the CDS queue

    later = client(endpoint, key, wait_until_complete=False).client.get_remote(first.request_id)
    deadline = time.monotonic() + 10
    while not later.results_ready:  # a later Lambda invocation, polling the same job
        assert time.monotonic() < deadline, "the queued job never finished"
        time.sleep(0.1)

    assert era5.open_download(later.download(str(tmp_path / "x.nc"))).sizes["longitude"] == 11
