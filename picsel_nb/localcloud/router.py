"""The WSGI layer in front of moto: it answers the operations moto only stores and observes every call.

Each request is identified once — which AWS service (from the SigV4 credential scope), which
operation (from ``X-Amz-Target``, the query ``Action`` or the service's REST routes in botocore's
own service model) and its parameters — and then either answered by an *interceptor* registered
for that operation or passed through to moto unchanged. *Observers* see every request with its
final response (CloudTrail records them; alarms react to metric data).
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import OperationNotFoundError
from botocore.parsers import ResponseParserError, RpcV2CBORParser

from picsel_nb.localcloud.policy import ANONYMOUS, Principal

if TYPE_CHECKING:
    from picsel_nb.localcloud.auth import Authenticator

ACCOUNT_ID = "123456789012"

# SigV4 signing name -> botocore service model name, for the services this pipeline calls.
SERVICE_MODELS = {
    "s3": "s3",
    "lambda": "lambda",
    "glue": "glue",
    "logs": "logs",
    "monitoring": "cloudwatch",
    "cloudtrail": "cloudtrail",
    "secretsmanager": "secretsmanager",
    "iam": "iam",
    "sts": "sts",
    "events": "events",
    "athena": "athena",
}

_SIGV2_QUERY = {"AWSAccessKeyId", "Signature", "Expires"}  # presigned-URL auth, not parameters
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass
class AwsRequest:
    """One HTTP request to the endpoint, identified as an AWS API call."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    service: str  # SigV4 signing name ("s3", "lambda", "monitoring", …); "s3" when unsigned
    operation: str | None  # e.g. "Invoke", "StartJobRun"; None when not recognised
    params: dict  # JSON body, query-protocol form, or REST path labels + query
    access_key: str | None  # None for an anonymous (unsigned) request
    region: str
    source_ip: str
    user_agent: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    account_id: str = ACCOUNT_ID
    principal: Principal = ANONYMOUS  # who signed it, set by authentication before any handler

    @property
    def signed(self) -> bool:
        return self.access_key is not None

    def json(self) -> dict:
        """The body parsed as JSON ({} when empty)."""
        return json.loads(self.body) if self.body.strip() else {}


@dataclass
class AwsResponse:
    """What the endpoint answered."""

    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def json(cls, payload: dict, status: int = 200, headers: dict | None = None) -> AwsResponse:
        hdrs = {"Content-Type": "application/x-amz-json-1.1"} | (headers or {})
        return cls(status, hdrs, json.dumps(payload, default=str).encode())

    @classmethod
    def json_error(cls, code: str, message: str, status: int = 400) -> AwsResponse:
        """An error in the shape JSON-protocol services (Glue, Lambda, Logs, …) return."""
        return cls.json({"__type": code, "message": message, "Message": message}, status,
                        {"x-amzn-ErrorType": code})

    @classmethod
    def xml_error(cls, code: str, message: str, status: int = 403) -> AwsResponse:
        """An error in S3's XML shape."""
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>")
        return cls(status, {"Content-Type": "application/xml"}, body.encode())

    @classmethod
    def error(cls, request: AwsRequest, code: str, message: str, status: int) -> AwsResponse:
        """An error in the wire shape of the protocol the request was made in."""
        kind = protocol(request)
        if kind == "s3":
            response = cls.xml_error(code, escape(message), status)
            if request.method == "HEAD":
                response.body = b""
            return response
        if kind == "cbor":
            body = _cbor_text_map({"__type": code, "message": message})
            return cls(status, {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor",
                                "x-amzn-RequestId": request.request_id}, body)
        if kind == "query":
            body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                    f"<Message>{escape(message)}</Message></Error>"
                    f"<RequestId>{request.request_id}</RequestId></ErrorResponse>")
            return cls(status, {"Content-Type": "text/xml"}, body.encode())
        return cls.json_error(code, message, status)

    @property
    def error_code(self) -> str | None:
        """The AWS error code of an error response, from its header or body."""
        if self.status < 400:
            return None
        if code := self.headers.get("x-amzn-ErrorType") or self.headers.get("X-Amzn-ErrorType"):
            return code.split(":")[0]
        text = self.body[:4096].decode("utf-8", "replace")
        if match := re.search(r"<Code>([^<]+)</Code>", text):
            return match.group(1)
        try:
            payload = json.loads(text)
        except ValueError:
            return None
        code = payload.get("__type") or payload.get("code") or payload.get("Code")
        return code.rsplit("#", 1)[-1] if isinstance(code, str) else None

    @property
    def error_message(self) -> str | None:
        """The AWS error message of an error response."""
        if self.status < 400:
            return None
        text = self.body[:4096].decode("utf-8", "replace")
        if match := re.search(r"<Message>([^<]*)</Message>", text):
            return match.group(1)
        try:
            payload = json.loads(text)
        except ValueError:
            return None
        return payload.get("message") or payload.get("Message")


def protocol(request: AwsRequest) -> str:
    """The wire protocol of a request: ``s3``, ``json``, ``cbor`` or ``query`` (AWS query/XML)."""
    if request.service == "s3":
        return "s3"
    if request.headers.get("smithy-protocol") == "rpc-v2-cbor" or "/operation/" in request.path:
        return "cbor"
    if "x-amz-target" in request.headers:
        return "json"
    if "Action" in request.query or "x-www-form-urlencoded" in request.headers.get(
            "content-type", ""):
        return "query"
    return "json"  # rest-json (Lambda) answers errors as JSON too


def _cbor_text_map(values: dict[str, str]) -> bytes:
    """A CBOR map of text strings (RFC 8949), enough for a smithy-rpc-v2-cbor error body."""
    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([major << 5 | length])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if length < 1 << (8 * size):
                return bytes([major << 5 | info]) + length.to_bytes(size, "big")
        raise ValueError("too long for CBOR")

    def text(value: str) -> bytes:
        data = value.encode()
        return head(3, len(data)) + data

    return head(5, len(values)) + b"".join(text(k) + text(v) for k, v in values.items())


Interceptor = Callable[[AwsRequest], "AwsResponse | None"]
Observer = Callable[[AwsRequest, AwsResponse], None]
PathHandler = Callable[[AwsRequest], AwsResponse]


class Router:
    """Wrap moto's WSGI app: answer registered operations, pass the rest through, observe all."""

    def __init__(self, moto_app: Callable, authenticator: Authenticator | None = None) -> None:
        self._moto = moto_app
        self.authenticator = authenticator
        self._interceptors: dict[tuple[str, str], list[Interceptor]] = {}
        self._prefixes: list[tuple[str, PathHandler, bool]] = []
        self._observers: list[Observer] = []

    def intercept(self, service: str, operation: str, handler: Interceptor) -> None:
        """Answer ``operation`` of ``service`` (signing name) with ``handler``.

        ``operation="*"`` sees every request of the service before the specific handlers do.
        A handler returning None lets the request continue (to the next handler, then moto).
        """
        self._interceptors.setdefault((service, operation), []).append(handler)

    def mount(self, prefix: str, handler: PathHandler, public: bool = False) -> None:
        """Serve every path under ``prefix`` (e.g. ``/_picsel/cds``) with ``handler``.

        Only the administrator may call a mounted route unless it is ``public`` (the loopback
        CDS, which checks its own tokens).
        """
        self._prefixes.append((prefix, handler, public))

    def observe(self, observer: Observer) -> None:
        """Call ``observer(request, response)`` after every AWS request."""
        self._observers.append(observer)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        gate = self.authenticator
        if gate is not None and not gate.check_host(environ):
            return _send(misdirected(environ), start_response)
        request = parse_request(environ)
        mount = next((m for m in self._prefixes if request.path.startswith(m[0])), None)
        public = mount is not None and mount[2]
        refusal = gate.authenticate(request, environ, public) if gate is not None else None
        if refusal is not None:
            return _send(_without_cors(request, refusal), start_response)
        if mount is not None:
            if not public and gate is not None and not request.principal.admin:
                return _send(gate.control_refusal(request), start_response)
            return _send(mount[1](request), start_response)
        if (gate is not None and request.path.startswith("/moto-api")
                and not request.principal.admin):
            return _send(gate.control_refusal(request), start_response)
        response = None
        handlers = self._interceptors.get((request.service, "*"), []) + self._interceptors.get(
            (request.service, request.operation or ""), []
        )
        for handler in handlers:
            response = handler(request)
            if response is not None:
                break
        if response is None:
            response = self._pass_through(environ, request)
        for observer in self._observers:
            observer(request, response)
        return _send(_without_cors(request, response), start_response,
                     head=request.method == "HEAD")

    def _pass_through(self, environ: dict, request: AwsRequest) -> AwsResponse:
        environ = dict(environ)
        environ["wsgi.input"] = io.BytesIO(request.body)
        environ["CONTENT_LENGTH"] = str(len(request.body))
        captured: dict = {}

        def capture(status: str, headers: list, exc_info=None):
            captured["status"] = int(status.split()[0])
            captured["headers"] = headers
            return lambda chunk: None

        chunks = self._moto(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        headers: dict[str, str] = {}
        for name, value in captured["headers"]:
            headers[name] = value
        return AwsResponse(captured["status"], headers, body)


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def misdirected(environ: dict) -> AwsResponse:
    """The answer to a ``Host`` that is not this endpoint's (a DNS-rebinding page, a proxy)."""
    host = environ.get("HTTP_HOST", "")[:64]
    return AwsResponse.xml_error(
        "InvalidHostHeader", escape(f"Host {host!r} is not this endpoint: use 127.0.0.1, "
                                    "localhost or [::1] with the cloud's port."), 421)


def _without_cors(request: AwsRequest, response: AwsResponse) -> AwsResponse:
    """Only S3 answers with CORS headers (from its buckets' rules); moto adds them everywhere."""
    if request.service != "s3" or request.path.startswith(("/moto-api", "/_picsel")):
        for name in [n for n in response.headers if n.lower().startswith("access-control-")]:
            del response.headers[name]
    return response


def _send(response: AwsResponse, start_response: Callable, head: bool = False) -> list[bytes]:
    """Start the WSGI response; a HEAD answer keeps the Content-Length of what a GET would send."""
    reason = _REASONS.get(response.status, "")
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    length = next((v for k, v in response.headers.items() if k.lower() == "content-length"), None)
    headers["Content-Length"] = length if head and length is not None else str(len(response.body))
    start_response(f"{response.status} {reason}", list(headers.items()))
    return [response.body]


def parse_request(environ: dict) -> AwsRequest:
    """Identify service, operation and parameters of a raw WSGI request."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    if not length and environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        body = environ["wsgi.input"].read()
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    path = unquote(environ.get("PATH_INFO", "/")) or "/"
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    access_key, region, service = _credential(headers, query, path)
    operation, params = identify_operation(service, environ["REQUEST_METHOD"], path, query, headers, body)
    return AwsRequest(
        method=environ["REQUEST_METHOD"],
        path=path,
        query=query,
        headers=headers,
        body=body,
        service=service,
        operation=operation,
        params=params,
        access_key=access_key,
        region=region,
        source_ip=environ.get("REMOTE_ADDR", "127.0.0.1"),
        user_agent=headers.get("user-agent", ""),
    )


def _credential(headers: dict, query: dict, path: str) -> tuple[str | None, str, str]:
    """Access key, region and signing name from a SigV4 header or presigned URL (or S3's SigV2,
    which boto3 still uses to presign S3 URLs)."""
    text = headers.get("authorization", "")
    if not text and "X-Amz-Credential" in query:
        text = "Credential=" + query["X-Amz-Credential"][0]
    if match := _CREDENTIAL.search(text):
        return match.group(1), match.group(2), match.group(3)
    from picsel_nb.settings import get_settings

    if text.startswith("AWS ") or "AWSAccessKeyId" in query:  # SigV2: S3 only
        key = text[4:].split(":")[0] if text else query["AWSAccessKeyId"][0]
        return key, get_settings().region, "s3"
    return None, get_settings().region, _unsigned_service(headers, query, path)


def _unsigned_service(headers: dict, query: dict, path: str) -> str:
    """The service an unsigned request is meant for (it has no credential scope to say so):
    from its ``X-Amz-Target`` prefix, a query-protocol ``Action`` on ``/``, or Lambda's REST
    routes; S3 otherwise, which alone serves anonymous callers."""
    target = headers.get("x-amz-target") or (path.split("/")[2] if "/operation/" in path
                                             else "")
    if target:
        return _target_prefixes().get(target.split(".")[0], "unknown")
    if path == "/" and ("Action" in query or "x-www-form-urlencoded" in headers.get(
            "content-type", "")):
        return "unknown"
    if any(pattern.fullmatch(path) for _, pattern, _, _ in _rest_routes("lambda")):
        return "lambda"
    return "s3"


@cache
def _target_prefixes() -> dict[str, str]:
    """``X-Amz-Target`` prefix -> signing name, for the services of SERVICE_MODELS."""
    session = botocore.session.get_session()
    prefixes = {}
    for signing_name, model_name in SERVICE_MODELS.items():
        prefix = session.get_service_model(model_name).metadata.get("targetPrefix")
        if prefix:
            prefixes[prefix] = signing_name
    return prefixes


def identify_operation(
    service: str, method: str, path: str, query: dict, headers: dict, body: bytes
) -> tuple[str | None, dict]:
    """The operation name and its parameters, for any protocol botocore speaks."""
    if target := headers.get("x-amz-target"):
        return target.rsplit(".", 1)[-1], _json_or_empty(body)
    if "/operation/" in path:  # smithy-rpc-v2-cbor: /service/<svc>/operation/<Op>
        operation = path.rsplit("/", 1)[-1]
        return operation, _cbor_params(service, operation, body)
    content_type = headers.get("content-type", "")
    if method == "POST" and "x-www-form-urlencoded" in content_type:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        return form.get("Action"), form
    if "Action" in query:
        return query["Action"][0], {k: v[0] for k, v in query.items()}
    model = SERVICE_MODELS.get(service)
    if model is None:
        return None, {}
    for operation, pattern, required_query, required_headers in _rest_routes(model):
        if operation.http["method"] != method:
            continue
        match = pattern.fullmatch(path)
        if (match and all(key in query for key in required_query)
                and all(name in headers for name in required_headers)):
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            params.update({k: v[0] for k, v in query.items()
                           if not k.startswith("X-Amz-") and k not in _SIGV2_QUERY})
            payload = getattr(operation.input_shape, "serialization", {}).get("payload")
            if "json" in content_type and not payload:
                params.update(_json_or_empty(body))  # never an S3 object or a Lambda payload
            return operation.name, params
    return None, {}


def _cbor_params(service: str, operation: str, body: bytes) -> dict:
    """The parameters of a smithy-rpc-v2-cbor request, decoded with botocore's own CBOR parser.

    botocore ships a CBOR *response* parser only; a request body is the same CBOR map of the
    operation's input shape, so the parser reads it as well (``ResponseMetadata`` dropped).
    """
    model = SERVICE_MODELS.get(service)
    if not body or model is None:
        return {}
    try:
        shape = botocore.session.get_session().get_service_model(model).operation_model(
            operation).input_shape
        parsed = RpcV2CBORParser().parse({"body": body, "headers": {}, "status_code": 200}, shape)
    except (OperationNotFoundError, ResponseParserError, ValueError, TypeError, AttributeError):
        # an unknown operation or malformed CBOR: moto answers the error
        return {}
    parsed.pop("ResponseMetadata", None)
    return parsed


def _json_or_empty(body: bytes) -> dict:
    try:
        value = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@cache
def _rest_routes(model_name: str) -> list:
    """REST routes of a botocore service model as (operation, path regex, required query keys,
    required header names).

    Routes with more requirements and longer literal paths come first, so ``PUT /{Bucket}?policy``
    wins over ``PUT /{Bucket}`` and ``PUT /{Bucket}/{Key+}`` with ``x-amz-copy-source`` is
    CopyObject, without it PutObject.
    """
    model = botocore.session.get_session().get_service_model(model_name)
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        uri = operation.http.get("requestUri", "/")
        path, _, query = uri.partition("?")
        required = tuple(part.split("=")[0] for part in query.split("&") if part)
        required += _required_members(operation, "querystring")
        headers = tuple(name.lower() for name in _required_members(operation, "header"))
        regex = ""
        for piece in re.split(r"(\{[^}]+\})", path):
            if piece.startswith("{"):
                label = piece.strip("{}")
                greedy = label.endswith("+")
                label = re.sub(r"\W", "_", label.rstrip("+"))
                regex += f"(?P<{label}>.+)" if greedy else f"(?P<{label}>[^/]+)"
            else:
                regex += re.escape(piece)
        if path.endswith("/") and len(path) > 1:
            regex = regex[: -len(re.escape("/"))] + "/?"
        literal = len(re.sub(r"\{[^}]+\}", "", path))
        routes.append((operation, re.compile(regex), required, headers, literal))
    routes.sort(key=lambda r: (-len(r[2]) - len(r[3]), -r[4]))
    return [route[:4] for route in routes]


def _required_members(operation, location: str) -> tuple[str, ...]:
    """Wire names of the required input members an operation carries in ``location``."""
    shape = operation.input_shape
    if shape is None:
        return ()
    members = (shape.members[name].serialization for name in shape.required_members)
    return tuple(s["name"] for s in members if s.get("location") == location)
