"""Authorization as AWS does it: each authenticated request is held to the caller's policies.

Authentication (``auth``) has set ``request.principal`` before any interceptor runs. Here every
request of an administrator or a role session is mapped to the IAM action(s) and resource ARN(s)
AWS checks for it, with the request's condition keys, and decided by ``policy.decide``: the role's
identity policies (inline and attached, from moto's IAM) together with the resource's policy (the
bucket policy, the secret's resource policy, the function policy). The administrator holds every
identity permission, so only a resource policy's explicit Deny refuses it. Anonymous S3 requests
are ``s3_access``'s business. A refusal answers AWS's error code, status and message.

The operations the pipeline uses are mapped to their documented resources (S3, Secrets Manager,
CloudWatch Logs, CloudWatch metrics, the Glue Data Catalog, Glue jobs and crawlers, Lambda, STS);
every other operation is checked as ``prefix:Operation`` on ``"*"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

from moto.iam.models import Role, iam_backends

from picsel_nb.localcloud import backends, role_sessions, s3_access
from picsel_nb.localcloud.policy import Decision, Principal, arn_part, decide, global_context
from picsel_nb.localcloud.router import (
    ACCOUNT_ID,
    SERVICE_MODELS,
    AwsRequest,
    AwsResponse,
    Router,
)

ADMIN_POLICY = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}

# SigV4 signing names whose IAM action prefix differs.
ACTION_PREFIXES = {"monitoring": "cloudwatch"}
# Operations whose IAM action is not prefix:Operation (S3's are in s3_access.ACTIONS).
LAMBDA_ACTIONS = {"Invoke": "InvokeFunction", "InvokeWithResponseStream": "InvokeFunction"}
# (code, HTTP status) of an access denial, by signing name; JSON services answer 400.
DENIALS = {"s3": ("AccessDenied", 403), "monitoring": ("AccessDenied", 403),
           "sts": ("AccessDenied", 403), "iam": ("AccessDenied", 403),
           "lambda": ("AccessDeniedException", 403)}
DEFAULT_DENIAL = ("AccessDeniedException", 400)


@dataclass(frozen=True)
class Check:
    """One action on one resource that a request needs allowed."""

    action: str
    resource: str  # ARN, or "*" for actions without resource types
    shown: str = ""  # the resource as AWS's message names it (default: the ARN)
    context: dict[str, object] = field(default_factory=dict)  # service-specific condition keys


class AccessDeniedException(Exception):
    """An in-process action refused to a principal (named as Glue reports it in a crawl)."""


# ---------------------------------------------------------------------------------------------
# The in-process API


def role_session(role_arn: str, session_name: str) -> Principal:
    """The principal of a session of ``role_arn`` (an ARN or a role name), as STS names it."""
    role_arn = role_sessions.role_arn(role_arn)
    account = role_arn.split(":")[4]
    name = role_arn.rsplit("/", 1)[-1]
    return Principal(arn=f"arn:aws:sts::{account}:assumed-role/{name}/{session_name}",
                     account=account, role_arn=role_arn, session_name=session_name)


def allowed(principal: Principal, action: str, resource: str,
            context: dict[str, object] | None = None) -> Decision:
    """AWS's decision for ``principal`` doing ``action`` on ``resource``: identity policies of
    the principal with the resource's own policy (``context``: extra condition keys)."""
    keys = global_context(principal, "127.0.0.1", "AWS Internal", arn_part(resource, 3))
    keys |= context or {}
    return decide(principal, action, resource, keys, identity_policies(principal),
                  resource_policy(resource))


def require(principal: Principal, action: str, resource: str,
            context: dict[str, object] | None = None) -> None:
    """Raise AccessDeniedException with AWS's message unless ``allowed``."""
    decision = allowed(principal, action, resource, context)
    if not decision.allowed:
        raise AccessDeniedException(denied_message(principal, action, resource, decision))


def denied_message(principal: Principal, action: str, shown: str, decision: Decision,
                   quote: bool = False) -> str:
    """AWS's wording: ``User: ARN is not authorized to perform: ACTION on resource: RES …``."""
    where = "" if shown == "*" else f' on resource: "{shown}"' if quote else f" on resource: {shown}"
    return (f"User: {principal.arn or 'anonymous'} is not authorized to perform: {action}{where}"
            f" {decision.reason}")


# ---------------------------------------------------------------------------------------------
# The policies that apply


def identity_policies(principal: Principal) -> list[dict]:
    """The identity-based policies of a principal: everything for the administrator, the role's
    inline and attached (default version) policies for a role session, none otherwise."""
    if principal.admin:
        return [ADMIN_POLICY]
    role = _role(principal.role_arn) if principal.role_arn else None
    if role is None:
        return []
    documents = list(role.policies.values())
    for managed in role.managed_policies.values():
        documents += [v.document for v in managed.versions if v.is_default]
    return [_parsed(d) for d in documents if d]


def resource_policy(resource: str) -> dict | None:
    """The policy attached to the resource an ARN names (bucket, secret, function), if any."""
    service = arn_part(resource, 2)
    if service == "s3":
        bucket = s3_access.find_bucket(resource.split(":::", 1)[-1].split("/", 1)[0])
        return s3_access.bucket_policy(bucket) if bucket else None
    if service == "secretsmanager":
        secret = backends.backend("secretsmanager", arn_part(resource, 3)).secrets.get(resource)
        return _parsed(secret.policy) if secret is not None and secret.policy else None
    if service == "lambda":
        return _function_policy(resource)
    return None


def trust_policy(role_arn: str) -> dict | None:
    """The role's trust policy (who may assume it)."""
    role = _role(role_arn)
    return _parsed(role.assume_role_policy_document) if role else None


def _function_policy(function_arn: str) -> dict | None:
    lambdas = backends.backend("awslambda", arn_part(function_arn, 3))
    try:
        function = lambdas.get_function(function_arn)
    except Exception:  # noqa: BLE001 — moto raises its own not-found errors; no function, no policy
        return None
    return {"Statement": function.policy.statements} if function.policy.statements else None


def _role(name_or_arn: str) -> Role | None:
    """moto's role of that ARN (or name), None when there is none."""
    roles = list(iam_backends[ACCOUNT_ID]["aws"].roles.values())
    name = name_or_arn.rsplit("/", 1)[-1]
    return (next((r for r in roles if r.arn == name_or_arn), None)
            or next((r for r in roles if r.name == name), None))


def _parsed(document: str | dict) -> dict:
    """A policy document as a dict (moto keeps most as JSON text)."""
    if isinstance(document, dict):
        return document
    try:
        value = json.loads(document)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------------------------
# Requests: which action on which resource


def checks(request: AwsRequest) -> list[Check]:
    """The actions and resources AWS authorizes for this request, in the order it checks them."""
    mapper = MAPPERS.get(request.service)
    if mapper is not None and (found := mapper(request)) is not None:
        return found
    return [Check(f"{action_prefix(request.service)}:{request.operation}", "*")]


def action_prefix(service: str) -> str:
    """The IAM action prefix of a signing name (``monitoring`` → ``cloudwatch``)."""
    return ACTION_PREFIXES.get(service, service)


def request_context(request: AwsRequest) -> dict[str, object]:
    """The condition keys of a request: the global ones, and S3's for S3."""
    if request.service == "s3":
        return s3_access.request_context(request)
    return global_context(request.principal, request.source_ip, request.user_agent,
                          request.region)


def _arn(request: AwsRequest, service: str, resource: str) -> str:
    return f"arn:aws:{service}:{request.region}:{request.account_id}:{resource}"


def _s3(request: AwsRequest) -> list[Check]:
    """S3: s3_access's action and bucket/object ARN; a POST-form upload is a PutObject."""
    if request.operation is None and s3_access.is_browser_post(request):
        bucket = s3_access.bucket_from_path(request.path)
        return [Check("s3:PutObject", f"arn:aws:s3:::{bucket}/{_form_key(request)}")]
    action, resource = s3_access.action_and_resource(request)
    return [Check(action, resource)]


def _form_key(request: AwsRequest) -> str:
    """The ``key`` field of a multipart/form-data POST upload ("" when absent)."""
    head = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.body)
    for part in message.iter_parts() if message.is_multipart() else []:
        if part.get_param("name", header="content-disposition") == "key":
            return part.get_content().strip()
    return ""


def _secretsmanager(request: AwsRequest) -> list[Check] | None:
    """Secrets Manager: the secret's full ARN, named in the message as the caller named it."""
    secret_id = request.params.get("SecretId") or request.params.get("Name")
    if not secret_id:
        return None
    secret = backends.backend("secretsmanager", request.region).secrets.get(secret_id)
    arn = secret.arn if secret is not None else (
        secret_id if secret_id.startswith("arn:") else _arn(request, "secretsmanager",
                                                            f"secret:{secret_id}"))
    return [Check(f"secretsmanager:{request.operation}", arn, secret_id,
                  {"secretsmanager:SecretId": arn})]


def _logs(request: AwsRequest) -> list[Check] | None:
    """CloudWatch Logs: the log-stream ARN for stream operations, else the log-group ARN."""
    group = request.params.get("logGroupName") or request.params.get("logGroupIdentifier")
    if not group:
        return None
    arn = group if group.startswith("arn:") else _arn(request, "logs", f"log-group:{group}")
    stream = request.params.get("logStreamName")
    if stream and request.operation in ("CreateLogStream", "DeleteLogStream", "PutLogEvents",
                                        "GetLogEvents"):
        arn = f"{arn.removesuffix(':*')}:log-stream:{stream}"
    return [Check(f"logs:{request.operation}", arn)]


def _cloudwatch(request: AwsRequest) -> list[Check] | None:
    """CloudWatch: PutMetricData on "*" scoped by ``cloudwatch:namespace``; alarms by ARN."""
    if request.operation == "PutMetricData":
        namespace = request.params.get("Namespace")
        context = {"cloudwatch:namespace": namespace} if namespace else {}
        return [Check("cloudwatch:PutMetricData", "*", context=context)]
    if alarm := request.params.get("AlarmName"):
        return [Check(f"cloudwatch:{request.operation}", _arn(request, "cloudwatch",
                                                               f"alarm:{alarm}"))]
    return None


GLUE_JOB_OPERATIONS = {"StartJobRun", "GetJobRun", "GetJobRuns", "GetJob", "DeleteJob",
                       "UpdateJob", "BatchStopJobRun"}
GLUE_DATABASE_OPERATIONS = {"GetDatabase", "CreateDatabase", "UpdateDatabase", "DeleteDatabase"}


def catalog_arns(region: str, database: str, table: str | None = None,
                 account: str = ACCOUNT_ID) -> list[str]:
    """The ARNs Glue checks for a Data Catalog call: the catalog, the database and (given) the
    table."""
    prefix = f"arn:aws:glue:{region}:{account}"
    arns = [f"{prefix}:catalog", f"{prefix}:database/{database}"]
    return arns + ([f"{prefix}:table/{database}/{table}"] if table is not None else [])


def _glue(request: AwsRequest) -> list[Check] | None:
    """Glue: catalog + database (+ table) ARNs for Data Catalog operations, as Glue documents
    them (GetTables: every table of the database); job and crawler ARNs."""
    params, operation = request.params, request.operation or ""
    action = f"glue:{operation}"
    if operation in GLUE_JOB_OPERATIONS:
        job = params.get("JobName") or params.get("Name")
        return [Check(action, _arn(request, "glue", f"job/{job}"))] if job else None
    if "Crawler" in operation and (crawler := params.get("Name") or params.get("CrawlerName")):
        return [Check(action, _arn(request, "glue", f"crawler/{crawler}"))]
    catalog = Check(action, _arn(request, "glue", "catalog"))
    if operation == "GetDatabases":
        return [catalog, Check(action, _arn(request, "glue", "database/*"))]
    if operation in GLUE_DATABASE_OPERATIONS:
        database = params.get("Name") or (params.get("DatabaseInput") or {}).get("Name")
        return [Check(action, arn) for arn in catalog_arns(request.region, database,
                                                           account=request.account_id)]
    database = params.get("DatabaseName")
    table = "*" if operation == "GetTables" else (
        params.get("TableName") or params.get("Name") or (params.get("TableInput") or {}).get(
            "Name"))
    if not database or not table:
        return None
    return [Check(action, arn) for arn in catalog_arns(request.region, database, table,
                                                       request.account_id)]


def _lambda(request: AwsRequest) -> list[Check] | None:
    """Lambda: the function's ARN (with its qualifier), ``Invoke`` as ``lambda:InvokeFunction``."""
    function = request.params.get("FunctionName")
    if not function:
        return None
    arn = function if function.startswith("arn:") else _arn(request, "lambda",
                                                            f"function:{function}")
    if qualifier := request.params.get("Qualifier"):
        arn += f":{qualifier}"
    action = LAMBDA_ACTIONS.get(request.operation or "", request.operation)
    return [Check(f"lambda:{action}", arn)]


def _sts(request: AwsRequest) -> list[Check] | None:
    """STS: AssumeRole on the role's ARN; GetCallerIdentity needs no permission."""
    if request.operation == "GetCallerIdentity":
        return []
    if request.operation == "AssumeRole" and (role := request.params.get("RoleArn")):
        return [Check("sts:AssumeRole", role)]
    return None


MAPPERS: dict[str, Callable[[AwsRequest], list[Check] | None]] = {
    "s3": _s3, "secretsmanager": _secretsmanager, "logs": _logs, "monitoring": _cloudwatch,
    "glue": _glue, "lambda": _lambda, "sts": _sts,
}


# ---------------------------------------------------------------------------------------------
# The interceptor


def install(router: Router) -> None:
    """Authorize every request of every service before any other handler sees it."""
    for service in SERVICE_MODELS:
        router.intercept(service, "*", authorize)


def authorize(request: AwsRequest) -> AwsResponse | None:
    """AWS's access-denied answer when the caller may not do this; None lets it through."""
    principal = request.principal
    if principal.anonymous or request.path.startswith(("/moto-api", "/_picsel")):
        return None  # anonymous S3 is s3_access's; everything else was refused unsigned
    if request.operation is None and not (request.service == "s3"
                                          and s3_access.is_browser_post(request)):
        return None  # not an API call moto would perform: moto answers its own error
    context = request_context(request)
    for check in checks(request):
        decision = decide_check(principal, check, context)
        if not decision.allowed:
            return refusal(request, check, decision)
    return None


def decide_check(principal: Principal, check: Check, context: dict[str, object]) -> Decision:
    """One check: identity and resource policies; AssumeRole also needs the trust policy."""
    keys = context | check.context
    if check.action == "sts:AssumeRole":
        trust = trust_policy(check.resource)
        verdict = decide(principal, check.action, check.resource, keys, [], trust)
        if not verdict.allowed:
            return Decision(False, verdict.reason.replace("identity-based", "resource-based"))
    return decide(principal, check.action, check.resource, keys, identity_policies(principal),
                  resource_policy(check.resource))


def refusal(request: AwsRequest, check: Check, decision: Decision) -> AwsResponse:
    """The service's access-denied error, in its protocol."""
    code, status = DENIALS.get(request.service, DEFAULT_DENIAL)
    message = denied_message(request.principal, check.action, check.shown or check.resource,
                             decision, quote=request.service == "s3")
    return AwsResponse.error(request, code, message, status)
