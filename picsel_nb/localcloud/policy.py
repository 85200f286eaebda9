"""The IAM policy language: statements matched against a principal, an action, a resource and
the request's condition keys, as AWS documents its evaluation.

Hand-written: no library in the environment evaluates policies (``parliament`` lints them;
moto's ``IAMPolicy`` checks Secrets Manager and Logs actions against ``"*"`` and treats an
unknown condition as a Deny). The functions are small: ``decide`` (identity-based and resource
policies together) → ``evaluate`` (one policy) → ``statement_applies`` → principal / action /
resource / condition matchers. Not modelled: permissions boundaries, session policies, SCPs and
cross-account evaluation (the embedded cloud has one account and sets none of them).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

# Condition keys that, compared with fixed values, make an Allow to "*" non-public (AWS's rule).
RESTRICTING_KEYS = {
    "aws:sourcearn", "aws:sourceaccount", "aws:sourceowner", "aws:sourcevpc", "aws:sourcevpce",
    "aws:sourceorgid", "aws:sourceorgpaths", "aws:principalorgid", "aws:principalorgpaths",
    "aws:principalaccount", "aws:principalarn", "aws:userid", "aws:sourceip",
    "s3:dataaccesspointarn", "s3:dataaccesspointaccount",
}
FIXED_VALUE_OPERATORS = {"stringequals", "stringequalsignorecase", "stringlike", "arnequals",
                         "arnlike", "ipaddress"}


@dataclass(frozen=True)
class Principal:
    """Who a request is evaluated as: anonymous, an identity of an account, or an AWS service."""

    arn: str | None = None  # caller ARN (IAM user, assumed-role session, account root)
    account: str | None = None
    service: str | None = None  # e.g. "cloudtrail.amazonaws.com"
    role_arn: str | None = None  # the role of an assumed-role session (its aws:PrincipalArn)
    admin: bool = False  # the embedded cloud's administrator: every identity permission
    access_key: str | None = None
    session_name: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.arn is None and self.service is None

    @property
    def principal_arn(self) -> str | None:
        """``aws:PrincipalArn``: the role's ARN for a role session, else the caller's ARN."""
        return self.role_arn or self.arn


ANONYMOUS = Principal()


def global_context(principal: Principal, source_ip: str, user_agent: str,
                   region: str) -> dict[str, object]:
    """The global condition keys of a request by ``principal`` (this endpoint stands for AWS's
    TLS-terminated https, so ``aws:SecureTransport`` is true)."""
    now = time.time()
    context: dict[str, object] = {
        "aws:SecureTransport": "true",
        "aws:SourceIp": source_ip,
        "aws:UserAgent": user_agent,
        "aws:CurrentTime": datetime.fromtimestamp(now, UTC).isoformat(),
        "aws:EpochTime": str(int(now)),
        "aws:RequestedRegion": region,
    }
    if principal.arn is not None:
        kind = "AssumedRole" if principal.role_arn else "User" if ":user/" in principal.arn \
            else "Account"
        context |= {"aws:PrincipalArn": principal.principal_arn,
                    "aws:PrincipalAccount": principal.account, "aws:PrincipalType": kind}
        if kind == "User":
            context["aws:username"] = principal.arn.rsplit("/", 1)[-1]
    return {k: v for k, v in context.items() if v is not None}


# The reasons AWS gives in an access-denied message, after the action and resource.
IDENTITY_DENY = "with an explicit deny in an identity-based policy"
RESOURCE_DENY = "with an explicit deny in a resource-based policy"


@dataclass(frozen=True)
class Decision:
    """The outcome of AWS's policy evaluation for one action on one resource."""

    allowed: bool
    reason: str = ""  # why not, worded as AWS's message ends ("because no identity-based …")


def decide(principal: Principal, action: str, resource: str, context: dict[str, object],
           identity_policies: list[dict], resource_policy: dict | None = None) -> Decision:
    """AWS's evaluation within one account: an explicit Deny in any policy refuses; otherwise an
    Allow of an identity-based policy or of the resource's policy grants; otherwise implicit deny."""
    identity = [evaluate(p, principal, action, resource, context, identity=True)
                for p in identity_policies]
    if "Deny" in identity:
        return Decision(False, IDENTITY_DENY)
    shared = evaluate(resource_policy, principal, action, resource, context)
    if shared == "Deny":
        return Decision(False, RESOURCE_DENY)
    if "Allow" in identity or shared == "Allow":
        return Decision(True)
    return Decision(False, f"because no identity-based policy allows the {action} action")


def evaluate(policy: dict | None, principal: Principal, action: str, resource: str,
             context: dict[str, object], *, identity: bool = False) -> str | None:
    """``"Deny"`` when a statement denies, else ``"Allow"`` when one allows, else None (implicit).

    ``identity`` marks an identity-based policy: its statements name no Principal.
    """
    verdict = None
    for statement in _statements(policy):
        if statement_applies(statement, principal, action, resource, context, identity=identity):
            if statement.get("Effect") == "Deny":
                return "Deny"
            verdict = "Allow"
    return verdict


def statement_applies(statement: dict, principal: Principal, action: str, resource: str,
                      context: dict[str, object], *, identity: bool = False) -> bool:
    """Whether one statement covers this principal, action and resource under its conditions."""
    return ((identity or principal_matches(statement, principal))
            and _action_matches(statement, action)
            and _resource_matches(statement, resource, context, identity)
            and conditions_hold(statement.get("Condition") or {}, context))


def principal_matches(statement: dict, principal: Principal) -> bool:
    """Principal / NotPrincipal of a resource-policy statement against the caller."""
    if "NotPrincipal" in statement:
        return not _principal_in(statement["NotPrincipal"], principal)
    return _principal_in(statement.get("Principal"), principal)


def _principal_in(element: object, principal: Principal) -> bool:
    if element == "*":
        return True
    if not isinstance(element, dict):
        return False
    if principal.service and principal.service in _as_list(element.get("Service")):
        return True
    return any(_aws_principal_matches(value, principal) for value in _as_list(element.get("AWS")))


def _aws_principal_matches(value: str, principal: Principal) -> bool:
    """One ``"AWS"`` principal value: ``*``, an account (id or root ARN), a role or a user ARN."""
    if value == "*":
        return True
    if principal.arn is None:
        return False
    account = value if value.isdigit() else arn_part(value, 4)
    if value.isdigit() or value.endswith(":root"):
        return principal.account == account
    if ":role/" in value:  # a role ARN also names every session of that role
        role = value.rsplit("/", 1)[-1]
        session_arn = f"arn:aws:sts::{account}:assumed-role/{role}/"
        return principal.arn == value or principal.arn.startswith(session_arn)
    return principal.arn == value


def _action_matches(statement: dict, action: str) -> bool:
    """Action / NotAction: case-insensitive, with ``*`` and ``?``."""
    if "NotAction" in statement:
        return not any(glob(p, action, True) for p in _as_list(statement["NotAction"]))
    return any(glob(p, action, True) for p in _as_list(statement.get("Action")))


def _resource_matches(statement: dict, resource: str, context: dict[str, object],
                      identity: bool) -> bool:
    """Resource / NotResource as ARN patterns with policy variables.

    A resource-policy statement without either element (a role's trust policy) covers the
    resource it is attached to; an identity-policy statement must name one.
    """
    key = "NotResource" if "NotResource" in statement else "Resource"
    if key not in statement:
        return not identity
    patterns = [substitute(p, context) for p in _as_list(statement[key])]
    matched = any(p is not None and arn_glob(p, resource) for p in patterns)
    return not matched if key == "NotResource" else matched


def substitute(text: str, context: dict[str, object]) -> str | None:
    """Fill ``${key}`` policy variables from the context (``${*}``, ``${?}``, ``${$}`` stand for
    the literal characters); None when a variable has no value, so the pattern matches nothing."""
    lowered = {k.lower(): v for k, v in context.items()}
    missing = False

    def value(match: re.Match) -> str:
        nonlocal missing
        name, default = match.group(1).strip(), match.group(2)
        if name in ("*", "?", "$"):
            return name
        found = lowered.get(name.lower())
        if isinstance(found, str):
            return found
        if default is not None:
            return default
        missing = True
        return ""

    filled = _VARIABLE.sub(value, text)
    return None if missing else filled


_VARIABLE = re.compile(r"\$\{([^},]+)(?:,\s*'([^']*)')?\}")


def conditions_hold(conditions: dict, context: dict[str, object]) -> bool:
    """Every ``{operator: {key: values}}`` block holds for the request context (keys any case).

    Blocks and keys are ANDed, the values of one key ORed (NORed for negated operators).
    """
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, block in conditions.items():
        for key, expected in block.items():
            values = [v if (s := substitute(str(v), context)) is None else s
                      for v in _as_list(expected)]
            if not condition_holds(operator, lowered.get(key.lower()), values):
                return False
    return True


def condition_holds(operator: str, actual: object, expected: list) -> bool:
    """One condition operator (with its ``ForAllValues:``/``ForAnyValue:`` qualifier and
    ``IfExists`` suffix) against the context value (None: the key is absent).

    As IAM documents it: an absent key fails positive operators and satisfies negated ones,
    any ``…IfExists`` operator and ``ForAllValues``; ``ForAnyValue`` needs a value.
    """
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    if op == "Null":
        return (actual is None) == (str(expected[0]).lower() == "true")
    negated = "Not" in op
    values = actual if isinstance(actual, list) else [] if actual is None else [actual]
    if not values:
        return if_exists or qualifier == "ForAllValues" or (negated and not qualifier)
    test = _comparison(op.replace("Not", ""))

    def passes(value: object) -> bool:
        matched = any(test(value, e) for e in expected)
        return not matched if negated else matched

    if qualifier == "ForAllValues":
        return all(passes(v) for v in values)
    if qualifier == "ForAnyValue":
        return any(passes(v) for v in values)
    return all(passes(v) for v in values) if negated else any(passes(v) for v in values)


def _comparison(op: str) -> Callable[[object, object], bool]:
    """The value test of a (non-negated) condition operator; an unknown one never matches."""
    def number(x: object) -> float:
        return float(x)

    def date(x: object) -> float:
        text = str(x)
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        return datetime.fromisoformat(text).timestamp()

    ordered = {"Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b,
               "LessThanEquals": lambda a, b: a <= b, "GreaterThan": lambda a, b: a > b,
               "GreaterThanEquals": lambda a, b: a >= b}
    for family, convert in (("Numeric", number), ("Date", date)):
        if op.startswith(family):
            compare = ordered[op.removeprefix(family)]
            return lambda a, b, c=compare, f=convert: _safely(c, f, a, b)
    return {
        "StringEquals": lambda a, b: str(a) == str(b),
        "StringEqualsIgnoreCase": lambda a, b: str(a).lower() == str(b).lower(),
        "StringLike": lambda a, b: glob(str(b), str(a), False),
        "ArnEquals": lambda a, b: arn_like(str(b), str(a)),
        "ArnLike": lambda a, b: arn_like(str(b), str(a)),
        "Bool": lambda a, b: str(a).lower() == str(b).lower(),
        "IpAddress": lambda a, b: ipaddress.ip_address(str(a)) in ipaddress.ip_network(
            str(b), strict=False),
    }.get(op, lambda a, b: False)


def _safely(compare: Callable, convert: Callable, a: object, b: object) -> bool:
    """A numeric/date comparison; a value that is no number or date does not match."""
    try:
        return compare(convert(a), convert(b))
    except ValueError:
        return False


def is_public(policy: dict | None) -> bool:
    """AWS's definition: some Allow reaches ``*`` without a fixed-value restricting condition."""
    for statement in _statements(policy):
        if statement.get("Effect") != "Allow":
            continue
        wildcard = "NotPrincipal" in statement or principal_matches(statement, ANONYMOUS)
        if wildcard and not _restricted(statement.get("Condition") or {}):
            return True
    return False


def _restricted(conditions: dict) -> bool:
    for operator, block in conditions.items():
        if operator.lower() not in FIXED_VALUE_OPERATORS:
            continue
        for key, values in block.items():
            if key.lower() in RESTRICTING_KEYS and all(_fixed(key, v) for v in _as_list(values)):
                return True
    return False


def _fixed(key: str, value: object) -> bool:
    """A value that names something specific: no wildcard, and no IP range wider than /8."""
    text = str(value)
    if "*" in text or "?" in text:
        return False
    if key.lower() == "aws:sourceip":
        return ipaddress.ip_network(text, strict=False).prefixlen >= 8
    return True


@lru_cache(maxsize=4096)
def _glob_regex(pattern: str, ignore_case: bool) -> re.Pattern:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def glob(pattern: str, value: str, ignore_case: bool) -> bool:
    """IAM's wildcards over the whole string: ``*`` any run of characters, ``?`` one."""
    return _glob_regex(pattern, ignore_case).fullmatch(value) is not None


@lru_cache(maxsize=4096)
def _arn_regex(pattern: str) -> re.Pattern:
    """A Resource ARN pattern: wildcards stay within a colon-separated segment, except a ``*``
    ending a segment, which may run past colons (IAM's Resource element rules)."""
    parts = []
    for i, char in enumerate(pattern):
        if char == "*":
            last = i + 1 == len(pattern) or pattern[i + 1] == ":"
            parts.append(".*" if last else "[^:]*")
        else:
            parts.append("[^:]" if char == "?" else re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def arn_glob(pattern: str, resource: str) -> bool:
    """Whether a Resource element pattern covers a resource ARN (or ``*``)."""
    return _arn_regex(pattern).fullmatch(resource) is not None


def arn_like(pattern: str, arn: str) -> bool:
    """``ArnLike``/``ArnEquals``: each of the six colon-separated parts matched on its own."""
    wanted, given = pattern.split(":", 5), arn.split(":", 5)
    return len(wanted) == len(given) and all(
        glob(w, g, False) for w, g in zip(wanted, given, strict=True))


def _statements(policy: dict | None) -> list[dict]:
    return _as_list((policy or {}).get("Statement"))


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def arn_part(arn: str, index: int) -> str:
    """Field ``index`` of an ARN (2 service, 3 region, 4 account); "" when it has none."""
    parts = arn.split(":")
    return parts[index] if len(parts) > index else ""


