"""The embedded cloud's WSGI application: moto, plus the executors of what moto only stores."""

from __future__ import annotations

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from picsel_nb.localcloud import (
    alarms,
    cds_api,
    cloudtrail,
    crawlers,
    glue_jobs,
    lambda_exec,
    s3_access,
)
from picsel_nb.localcloud.router import Router

EXECUTORS = (s3_access, cloudtrail, alarms, lambda_exec, glue_jobs, crawlers, cds_api)


def build_app() -> Router:
    """moto's server app wrapped by the router, with every executor installed."""
    router = Router(DomainDispatcherApplication(create_backend_app))
    for executor in EXECUTORS:
        executor.install(router)
    return router
