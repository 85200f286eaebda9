"""IAM roles of the pipeline, from the policy templates of infra/policies/ (least privilege).

IAM is global and eventually consistent: on AWS a role created a moment ago may not be assumable for
~10 s. The code that hands a role to a service (Lambda create_function, Glue create_job/crawler)
retries on "cannot be assumed"; here the role_exists waiter only proves IAM knows the name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from string import Template

from picsel_nb.stack.context import Stack
from picsel_nb.stack.errors import tolerate

POLICY_DIR = Path(__file__).resolve().parents[2] / "infra" / "policies"
PERMISSIONS_POLICY = "permissions"  # the one inline policy each role carries

# role kind -> (trust template, permissions template)
ROLE_TEMPLATES = {
    "lambda": ("trust-lambda", "lambda-permissions"),
    "glue-job": ("trust-glue", "glue-job-permissions"),
    "crawler": ("trust-glue", "crawler-permissions"),
}


def role_arn(stack: Stack, role_name: str) -> str:
    """The ARN of one of the stack's roles (created without a path), known before the role
    exists: the secret's resource policy names the Lambda role before ``ensure_lambda_role``."""
    return f"arn:{stack.partition}:iam::{stack.account_id}:role/{role_name}"


def policy_values(stack: Stack, **extra: str) -> dict[str, str]:
    """The values of the templates' ${Placeholders} for this stack, plus `extra` (e.g. SecretArn)."""
    names = stack.names
    return {
        "Partition": stack.partition,
        "Region": stack.region,
        "AccountId": stack.account_id,
        "InputBucket": names.input_bucket,
        "OutputBucket": names.output_bucket,
        "FunctionName": names.lambda_function,
        "DatabaseName": names.database,
        "CrawlerName": names.crawler,
        "TrailName": names.trail,
        "LambdaRoleArn": role_arn(stack, names.lambda_role),
        **extra,
    }


def render_policy(name: str, values: Mapping[str, str]) -> dict:
    """infra/policies/<name>.json with its ${Placeholders} filled in, parsed."""
    text = (POLICY_DIR / f"{name}.json").read_text()
    try:
        return json.loads(Template(text).substitute(values))
    except KeyError as exc:
        raise ValueError(f"policy template {name!r} needs a value for ${{{exc.args[0]}}}") from None


def role_documents(stack: Stack, kind: str, **extra: str) -> tuple[dict, dict]:
    """The (trust, permissions) documents of a role kind: "lambda" (needs SecretArn), "glue-job",
    "crawler"."""
    if kind not in ROLE_TEMPLATES:
        raise ValueError(f"role kind {kind!r} is not valid; accepted: {', '.join(ROLE_TEMPLATES)}")
    values = policy_values(stack, **extra)
    trust, permissions = ROLE_TEMPLATES[kind]
    return render_policy(trust, values), render_policy(permissions, values)


def ensure_role(stack: Stack, role_name: str, trust: dict, permissions: dict,
                description: str = "") -> str:
    """Create the role or bring its trust and inline permissions to `trust`/`permissions`; its ARN."""
    iam = stack.client("iam")
    role = None
    with tolerate("NoSuchEntity"):
        role = iam.get_role(RoleName=role_name)["Role"]
    if role is None:
        role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust),
                               Description=description)["Role"]
        iam.get_waiter("role_exists").wait(RoleName=role_name)
    elif role["AssumeRolePolicyDocument"] != trust:  # boto3 hands the document back parsed
        iam.update_assume_role_policy(RoleName=role_name, PolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=role_name, PolicyName=PERMISSIONS_POLICY,
                        PolicyDocument=json.dumps(permissions))
    return role["Arn"]


def ensure_lambda_role(stack: Stack, secret_arn: str) -> str:
    """The ingest function's role: list, head and write raw/ of the input bucket, read that one
    secret, write its own logs."""
    trust, permissions = role_documents(stack, "lambda", SecretArn=secret_arn)
    return ensure_role(stack, stack.names.lambda_role, trust, permissions,
                       "picsel-nb: ERA5 download function")


def ensure_glue_job_role(stack: Stack) -> str:
    """The contours job's role: read raw/ and its code under scripts/glue/, use tmp/ (its TempDir),
    write products/ and catalog/, write its logs."""
    trust, permissions = role_documents(stack, "glue-job")
    return ensure_role(stack, stack.names.glue_role, trust, permissions,
                       "picsel-nb: ERA5 contours Glue job")


def ensure_crawler_role(stack: Stack) -> str:
    """The crawler's role: read catalog/contours/, write the catalog database's tables, own logs."""
    trust, permissions = role_documents(stack, "crawler")
    return ensure_role(stack, stack.names.crawler_role, trust, permissions,
                       "picsel-nb: contours crawler")


def delete_role(stack: Stack, role_name: str) -> bool:
    """Delete the role with its inline and attached policies; False when it did not exist."""
    iam = stack.client("iam")
    with tolerate("NoSuchEntity"):
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name):
            for policy_name in page["PolicyNames"]:
                iam.delete_role_policy(RoleName=role_name, PolicyName=policy_name)
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name):
            for policy in page["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=role_name, PolicyArn=policy["PolicyArn"])
        iam.delete_role(RoleName=role_name)
        return True
    return False
