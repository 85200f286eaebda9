"""Who and where the stack is: settings, account, resource names, and the way to get clients.

Every stack module takes a `Stack` first, so the same functions run on the embedded cloud, on a real
AWS account, or in tests with injected clients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from picsel_nb.settings import ResourceNames, Settings, get_settings

ClientFactory = Callable[..., Any]


def default_client(service: str, **kwargs: Any) -> Any:
    """The project's boto3 client for `service` (starts the embedded cloud on the local backend)."""
    # Imported on use, so code shipped to Lambda/Glue never loads the embedded cloud's machinery.
    from picsel_nb.clients import client

    return client(service, **kwargs)


@cache
def _partition(region: str) -> str:
    return boto3.session.Session().get_partition_for_region(region)


@dataclass(frozen=True)
class Stack:
    """One deployment of the walkthrough: its settings, account, resource names and clients."""

    settings: Settings
    account_id: str
    names: ResourceNames
    client_factory: ClientFactory = field(default=default_client, repr=False, compare=False)
    _clients: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def region(self) -> str:
        """The region every regional resource lives in."""
        return self.settings.region

    @property
    def partition(self) -> str:
        """The ARN partition of the region ("aws", "aws-cn", …)."""
        return _partition(self.region)

    @property
    def metrics_namespace(self) -> str:
        """The CloudWatch namespace of the pipeline's own metrics: the Lambda writes them as EMF log
        lines (no PutMetricData call, so no role holds that grant)."""
        return f"{self.settings.prefix}/pipeline"

    def client(self, service: str, config: Config | None = None) -> Any:
        """The stack's boto3 client for `service`, made once per (service, config) by the client
        factory (clients are thread-safe and slow to create). `config` is e.g. a longer timeout."""
        key = (service, config)
        if key not in self._clients:
            extra = {"config": config} if config is not None else {}
            self._clients[key] = self.client_factory(service, **extra)
        return self._clients[key]


def get_stack(settings: Settings | None = None, client_factory: ClientFactory = default_client) -> Stack:
    """The stack of `settings` (default: those in force), for the account the credentials belong to
    (from STS). The default client factory follows the settings in force (picsel_nb.clients)."""
    settings = settings or get_settings()
    account_id = client_factory("sts").get_caller_identity()["Account"]
    return Stack(settings, account_id, settings.names(account_id), client_factory)
