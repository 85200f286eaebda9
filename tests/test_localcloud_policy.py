"""The hand-written policy evaluator against AWS's documented evaluation examples (pure, no cloud).

Each group of cases names the page of the IAM User Guide its examples come from.
"""

from __future__ import annotations

import pytest

from picsel_nb.localcloud.policy import (
    IDENTITY_DENY,
    RESOURCE_DENY,
    Principal,
    arn_glob,
    condition_holds,
    decide,
    global_context,
)

ACCOUNT = "123456789012"
CARLOS = Principal(arn=f"arn:aws:iam::{ACCOUNT}:user/carlossalazar", account=ACCOUNT)
SESSION = Principal(arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/ingest/run-1", account=ACCOUNT,
                    role_arn=f"arn:aws:iam::{ACCOUNT}:role/ingest", session_name="run-1")
OTHER_SESSION = Principal(arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/glue/job", account=ACCOUNT,
                          role_arn=f"arn:aws:iam::{ACCOUNT}:role/glue", session_name="job")


def statement(effect: str = "Allow", action: object = "s3:*", resource: object = "*",
              **extra: object) -> dict:
    return {"Effect": effect, "Action": action, "Resource": resource, **extra}


def policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


# "Policy evaluation for requests within a single account": Carlos's user policy and the
# bucket policy of his own bucket.
CARLOS_POLICY = policy(
    statement(action=["s3:GetBucketLocation", "s3:ListAllMyBuckets"], resource="arn:aws:s3:::*"),
    statement(resource=["arn:aws:s3:::carlossalazar/*", "arn:aws:s3:::carlossalazar"]),
    statement("Deny", resource="arn:aws:s3:::*log*"),
)
CARLOS_BUCKET = policy({"Effect": "Allow", "Principal": {"AWS": CARLOS.arn}, "Action": "s3:*",
                        "Resource": ["arn:aws:s3:::carlossalazar", "arn:aws:s3:::carlossalazar/*"]})

# "Policy evaluation for requests within a single account", "How AWS enforcement code logic
# evaluates requests": deny first, then an Allow of either policy type, else implicit deny.
DECISIONS = [
    ("own bucket object: both allow", CARLOS, "s3:PutObject", "arn:aws:s3:::carlossalazar/a",
     [CARLOS_POLICY], CARLOS_BUCKET, True, ""),
    ("logs bucket: the identity Deny wins", CARLOS, "s3:PutObject",
     "arn:aws:s3:::carlossalazar-logs/a", [CARLOS_POLICY], None, False, IDENTITY_DENY),
    ("list all buckets: identity Allow alone suffices", CARLOS, "s3:ListAllMyBuckets",
     "arn:aws:s3:::x", [CARLOS_POLICY], None, True, ""),
    ("resource policy Allow alone suffices within the account", CARLOS, "s3:GetObject",
     "arn:aws:s3:::carlossalazar/a", [], CARLOS_BUCKET, True, ""),
    ("nothing allows: implicit deny", CARLOS, "s3:GetObject", "arn:aws:s3:::other/a",
     [CARLOS_POLICY], None, False,
     "because no identity-based policy allows the s3:GetObject action"),
    ("a resource-policy Deny beats an identity Allow", SESSION, "secretsmanager:GetSecretValue",
     "arn:aws:secretsmanager:us-east-1:123456789012:secret:cds-AbCdEf",
     [policy(statement(action="secretsmanager:*"))],
     policy({"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:GetSecretValue",
             "Resource": "*", "Condition": {"ArnNotEquals": {
                 "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/glue"}}}),
     False, RESOURCE_DENY),
    ("the named role's session escapes that Deny", OTHER_SESSION, "secretsmanager:GetSecretValue",
     "arn:aws:secretsmanager:us-east-1:123456789012:secret:cds-AbCdEf",
     [policy(statement(action="secretsmanager:*"))],
     policy({"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:GetSecretValue",
             "Resource": "*", "Condition": {"ArnNotEquals": {
                 "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/glue"}}}),
     True, ""),
    ("a role ARN in a resource policy grants its sessions", SESSION, "s3:GetObject",
     "arn:aws:s3:::b/k", [],
     policy({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/ingest"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}), True, ""),
    ("another role's grant does not", OTHER_SESSION, "s3:GetObject", "arn:aws:s3:::b/k", [],
     policy({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/ingest"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}), False,
     "because no identity-based policy allows the s3:GetObject action"),
    ("an identity statement ignores Principal matching", SESSION, "logs:PutLogEvents",
     "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:log-stream:s",
     [policy(statement(action="logs:PutLogEvents",
                       resource="arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:*"))],
     None, True, ""),
    # "IAM JSON policy elements: NotAction" and "NotResource".
    ("NotAction allows all but the named", SESSION, "s3:GetObject", "arn:aws:s3:::b/k",
     [policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})], None, True, ""),
    ("NotAction excludes the named", SESSION, "iam:CreateUser", "*",
     [policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})], None, False,
     "because no identity-based policy allows the iam:CreateUser action"),
    ("Deny with NotResource denies outside it", SESSION, "s3:PutObject", "arn:aws:s3:::b/other",
     [policy(statement(), {"Effect": "Deny", "Action": "s3:PutObject",
                           "NotResource": "arn:aws:s3:::b/raw/*"})], None, False, IDENTITY_DENY),
    ("Deny with NotResource spares inside it", SESSION, "s3:PutObject", "arn:aws:s3:::b/raw/x",
     [policy(statement(), {"Effect": "Deny", "Action": "s3:PutObject",
                           "NotResource": "arn:aws:s3:::b/raw/*"})], None, True, ""),
    # "IAM JSON policy elements: Action": action names are case-insensitive.
    ("action case does not matter", SESSION, "s3:GetObject", "arn:aws:s3:::b/k",
     [policy(statement(action="S3:getobject"))], None, True, ""),
    # "IAM policy elements: Variables and tags".
    ("${aws:username} in a Resource", CARLOS, "s3:GetObject",
     "arn:aws:s3:::home/carlossalazar/notes.txt",
     [policy(statement(action="s3:GetObject", resource="arn:aws:s3:::home/${aws:username}/*"))],
     None, True, ""),
    ("${aws:username} names someone else's folder", CARLOS, "s3:GetObject",
     "arn:aws:s3:::home/mary/notes.txt",
     [policy(statement(action="s3:GetObject", resource="arn:aws:s3:::home/${aws:username}/*"))],
     None, False, "because no identity-based policy allows the s3:GetObject action"),
    ("a variable without a value (a role has no username) matches nothing", SESSION,
     "s3:GetObject", "arn:aws:s3:::home/ingest/notes.txt",
     [policy(statement(action="s3:GetObject", resource="arn:aws:s3:::home/${aws:username}/*"))],
     None, False, "because no identity-based policy allows the s3:GetObject action"),
    # "Example IAM identity-based policies": Amazon S3 ListBucket restricted by s3:prefix.
    ("ListBucket under a granted prefix", SESSION, "s3:ListBucket", "arn:aws:s3:::b",
     [policy(statement(action="s3:ListBucket", resource="arn:aws:s3:::b",
                       Condition={"StringLike": {"s3:prefix": ["raw/*"]}}))], None, True, ""),
]


@pytest.mark.parametrize(("principal", "action", "resource", "identity", "shared", "allowed",
                          "reason"),
                         [case[1:] for case in DECISIONS], ids=[case[0] for case in DECISIONS])
def test_decisions_follow_aws_evaluation(principal, action, resource, identity, shared, allowed,
                                         reason):
    context = global_context(principal, "127.0.0.1", "test", "us-east-1") | {"s3:prefix": "raw/x"}
    decision = decide(principal, action, resource, context, identity, shared)
    assert (decision.allowed, decision.reason) == (allowed, reason)


# "IAM JSON policy elements: Condition operators" and "Single-valued vs. multivalued context
# keys": (operator, context value or None when absent, policy values, holds).
CONDITIONS = [
    ("StringEquals", "Pipeline", ["Pipeline"], True),
    ("StringEquals", "pipeline", ["Pipeline"], False),  # case-sensitive
    ("StringEqualsIgnoreCase", "pipeline", ["Pipeline"], True),
    ("StringEquals", "b", ["a", "b"], True),  # values of one key are ORed
    ("StringNotEquals", "c", ["a", "b"], True),  # … and NORed when negated
    ("StringNotEquals", "b", ["a", "b"], False),
    ("StringEquals", None, ["a"], False),  # an absent key fails a positive operator
    ("StringNotEquals", None, ["a"], True),  # … and satisfies a negated one
    ("StringLike", "raw/2023/01.nc", ["raw/*"], True),
    ("StringLike", "products/x", ["raw/*"], False),
    ("StringLike", "raw/a", ["raw/?"], True),
    ("StringEqualsIfExists", None, ["a"], True),
    ("StringEqualsIfExists", "b", ["a"], False),
    ("Null", None, ["true"], True),
    ("Null", "x", ["true"], False),
    ("Null", "x", ["false"], True),
    ("Bool", "true", ["false"], False),  # aws:SecureTransport here is "true"
    ("Bool", "true", [True], True),
    ("NumericLessThan", "5", ["10"], True),
    ("NumericGreaterThanEquals", "5", ["10"], False),
    ("NumericEquals", "not a number", ["10"], False),
    ("DateGreaterThan", "2024-06-01T00:00:00+00:00", ["2024-01-01T00:00:00Z"], True),
    ("DateLessThan", "1700000000", ["2024-01-01T00:00:00+00:00"], True),
    ("IpAddress", "203.0.113.7", ["203.0.113.0/24"], True),
    ("NotIpAddress", "203.0.113.7", ["203.0.113.0/24"], False),
    ("ArnLike", "arn:aws:cloudtrail:us-east-1:123456789012:trail/t",
     ["arn:aws:cloudtrail:*:123456789012:trail/*"], True),
    ("ArnEquals", "arn:aws:cloudtrail:us-east-1:123456789012:trail/t",
     ["arn:aws:cloudtrail:us-east-1:123456789012:trail/t"], True),
    ("ArnLike", "arn:aws:iam::123456789012:role/a:b", ["arn:aws:iam::*"], False),  # six parts
    ("ArnNotLike", "arn:aws:iam::123456789012:role/glue", ["arn:aws:iam::*:role/ingest"], True),
    ("ForAnyValue:StringEquals", ["a", "z"], ["a", "b"], True),
    ("ForAnyValue:StringEquals", ["y", "z"], ["a", "b"], False),
    ("ForAnyValue:StringEquals", None, ["a"], False),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "b", "c"], True),
    ("ForAllValues:StringEquals", ["a", "z"], ["a", "b"], False),
    ("ForAllValues:StringEquals", None, ["a"], True),  # true when the key is absent
    ("ForAllValues:StringNotEquals", ["y", "z"], ["a", "b"], True),
    ("ForAnyValue:StringNotEquals", ["a", "z"], ["a", "b"], True),
    ("ForAllValues:StringLike", ["CreatedBy", "CreatedAt"], ["Created*"], True),
]


@pytest.mark.parametrize(("operator", "actual", "expected", "holds"), CONDITIONS)
def test_condition_operators(operator, actual, expected, holds):
    assert condition_holds(operator, actual, expected) is holds


# "IAM JSON policy elements: Resource": wildcards stay in their segment unless they end it.
RESOURCES = [
    ("arn:aws:s3:::b/*", "arn:aws:s3:::b/raw/2023/01.nc", True),
    ("arn:aws:s3:::b/*", "arn:aws:s3:::b", False),
    ("arn:aws:s3:::*log*", "arn:aws:s3:::carlossalazar-logs/file", True),
    ("arn:aws:logs:*:123456789012:log-group:/aws/lambda/f:*",
     "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:log-stream:s", True),
    ("arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:*",
     "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f", False),
    ("arn:aws:logs:us-east-1:123456789012:log-group:/aws-glue/jobs/*",
     "arn:aws:logs:us-east-1:123456789012:log-group:/aws-glue/jobs/output:log-stream:jr_1", True),
    ("arn:aws:iam::123456789012:user/accounting/*", "arn:aws:iam::123456789012:user/accounting/x",
     True),
    ("arn:aws:glue:us-east-1:123456789012:t*e/db/x",
     "arn:aws:glue:us-east-1:123456789012:t:e/db/x", False),  # a mid-segment * stops at ':'
    ("arn:aws:lambda:us-east-1:123456789012:function:f?",
     "arn:aws:lambda:us-east-1:123456789012:function:f1", True),
    ("*", "arn:aws:s3:::anything/at/all", True),
]


@pytest.mark.parametrize(("pattern", "resource", "matches"), RESOURCES)
def test_resource_wildcards(pattern, resource, matches):
    assert arn_glob(pattern, resource) is matches


def test_a_trust_policy_statement_without_resource_covers_its_role():
    """"IAM JSON policy elements: Principal": a trust policy names who, not which resource."""
    trust = policy({"Effect": "Allow", "Principal": {"Service": "glue.amazonaws.com"},
                    "Action": "sts:AssumeRole"})
    glue = Principal(service="glue.amazonaws.com")
    role = f"arn:aws:iam::{ACCOUNT}:role/glue"
    assert decide(glue, "sts:AssumeRole", role, {}, [], trust).allowed
    assert not decide(SESSION, "sts:AssumeRole", role, {}, [], trust).allowed


def test_global_context_names_the_role_as_principal_arn():
    context = global_context(SESSION, "127.0.0.1", "ua", "us-east-1")
    assert context["aws:PrincipalArn"] == SESSION.role_arn
    assert context["aws:SecureTransport"] == "true"
    assert "aws:username" not in context
    assert global_context(CARLOS, "127.0.0.1", "ua", "us-east-1")["aws:username"] == "carlossalazar"
