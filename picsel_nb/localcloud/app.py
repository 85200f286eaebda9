"""The embedded cloud's WSGI application: moto, plus the executors of what moto only stores."""

from __future__ import annotations

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from picsel_nb.localcloud import (
    alarms,
    athena,
    auth,
    authorization,
    cds_api,
    cloudtrail,
    crawlers,
    glue_jobs,
    lambda_exec,
    s3_access,
)
from picsel_nb.localcloud.credentials import AccessKey
from picsel_nb.localcloud.router import Router

# Authentication's own answers first, then authorization, which must see every request before
# any executor acts on it.
EXECUTORS = (auth, authorization, athena, s3_access, cloudtrail, alarms, lambda_exec, glue_jobs,
             crawlers, cds_api)


def build_app(admin: AccessKey, port: int | None = None) -> Router:
    """moto's server app behind the router: requests authenticated, every executor installed."""
    router = Router(DomainDispatcherApplication(create_backend_app),
                    auth.Authenticator(admin, port))
    for executor in EXECUTORS:
        executor.install(router)
    return router
