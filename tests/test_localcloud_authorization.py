"""Authorization of the embedded cloud, in-process: requests mapped to IAM actions and resources
and decided against the pipeline's own role policies held in moto (no server)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from picsel_nb.localcloud import authorization, crawlers
from picsel_nb.localcloud.policy import Principal
from picsel_nb.localcloud.router import ACCOUNT_ID, AwsRequest
from picsel_nb.stack.roles import render_policy

REGION = "sa-east-1"
INPUT, OUTPUT, DATABASE, NAMESPACE = "in-bucket", "out-bucket", "picsel_db", "Picsel"
ADMIN = Principal(arn=f"arn:aws:iam::{ACCOUNT_ID}:user/picsel-admin", account=ACCOUNT_ID,
                  admin=True)
ARN = f"arn:aws:{{}}:{REGION}:{ACCOUNT_ID}:{{}}"


def values(secret_arn: str) -> dict[str, str]:
    return {"Partition": "aws", "Region": REGION, "AccountId": ACCOUNT_ID, "InputBucket": INPUT,
            "OutputBucket": OUTPUT, "FunctionName": "ingest", "DatabaseName": DATABASE,
            "CrawlerName": "contours", "TrailName": "trail", "MetricsNamespace": NAMESPACE,
            "SecretArn": secret_arn}


@pytest.fixture
def cloud(monkeypatch):
    """moto in-process with the pipeline's buckets, secrets and roles (their real policies)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (INPUT, OUTPUT):
            s3.create_bucket(Bucket=bucket,
                             CreateBucketConfiguration={"LocationConstraint": REGION})
        secrets = boto3.client("secretsmanager", region_name=REGION)
        arn = secrets.create_secret(Name="cds", SecretString="k")["ARN"]
        secrets.create_secret(Name="other", SecretString="k")
        iam = boto3.client("iam", region_name=REGION)
        for role, template in (("ingest", "lambda"), ("crawler", "crawler")):
            trust = render_policy("trust-glue", values(arn))
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
            iam.put_role_policy(RoleName=role, PolicyName="permissions", PolicyDocument=json.dumps(
                render_policy(f"{template}-permissions", values(arn))))
        yield {"secret": arn}


def session(role: str) -> Principal:
    return authorization.role_session(f"arn:aws:iam::{ACCOUNT_ID}:role/{role}", "run-1")


def call(principal: Principal, service: str, operation: str | None, params: dict,
         **fields) -> AwsRequest:
    """A request as the router identifies it (JSON protocol unless the fields say otherwise)."""
    defaults = {"method": "POST", "path": "/", "query": {},
                "headers": {"x-amz-target": f"X.{operation}"}, "body": b""}
    if service == "s3":
        defaults["headers"] = {}
    return AwsRequest(service=service, operation=operation, params=params, access_key="AKIA",
                      region=REGION, source_ip="127.0.0.1", user_agent="test",
                      principal=principal, **(defaults | fields))


def refused(request: AwsRequest) -> tuple[int, str | None, str | None] | None:
    response = authorization.authorize(request)
    return None if response is None else (response.status, response.error_code,
                                          response.error_message)


def test_s3_role_session_gets_only_its_prefix(cloud):
    lambda_role = session("ingest")
    put = call(lambda_role, "s3", "PutObject", {"Bucket": INPUT, "Key": "raw/2023/01.nc"},
               method="PUT")
    assert refused(put) is None
    outside = call(lambda_role, "s3", "PutObject", {"Bucket": INPUT, "Key": "scripts/job.py"},
                   method="PUT")
    assert refused(outside) == (403, "AccessDenied", (
        f"User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/ingest/run-1 is not authorized to perform: "
        f's3:PutObject on resource: "arn:aws:s3:::{INPUT}/scripts/job.py" because no '
        "identity-based policy allows the s3:PutObject action"))
    read_output = call(lambda_role, "s3", "GetObject", {"Bucket": OUTPUT, "Key": "products/a"},
                       method="GET")
    assert refused(read_output)[1] == "AccessDenied"


def test_s3_list_bucket_is_scoped_by_prefix(cloud):
    def listing(prefix: str) -> AwsRequest:
        return call(session("ingest"), "s3", "ListObjectsV2", {"Bucket": INPUT, "prefix": prefix},
                    method="GET", query={"list-type": ["2"], "prefix": [prefix]})

    assert refused(listing("raw/2023/")) is None
    assert refused(listing("scripts/"))[0] == 403


def test_a_bucket_policy_deny_binds_the_administrator(cloud):
    deny = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
         "Resource": f"arn:aws:s3:::{OUTPUT}/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": f"arn:aws:s3:::{OUTPUT}/*",
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
    boto3.client("s3", region_name=REGION).put_bucket_policy(Bucket=OUTPUT, Policy=json.dumps(deny))
    assert refused(call(ADMIN, "s3", "GetObject", {"Bucket": OUTPUT, "Key": "k"}, method="GET")) \
        is None  # the TLS-only Deny never fires: this endpoint stands for https
    status, code, message = refused(call(ADMIN, "s3", "DeleteObject",
                                         {"Bucket": OUTPUT, "Key": "k"}, method="DELETE"))
    assert (status, code) == (403, "AccessDenied")
    assert message.endswith("with an explicit deny in a resource-based policy")


def test_secrets_by_arn_and_named_as_called(cloud):
    lambda_role = session("ingest")
    assert refused(call(lambda_role, "secretsmanager", "GetSecretValue", {"SecretId": "cds"})) \
        is None
    assert refused(call(lambda_role, "secretsmanager", "GetSecretValue",
                        {"SecretId": "other"})) == (400, "AccessDeniedException", (
        f"User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/ingest/run-1 is not authorized to perform: "
        "secretsmanager:GetSecretValue on resource: other because no identity-based policy "
        "allows the secretsmanager:GetSecretValue action"))
    assert refused(call(session("crawler"), "secretsmanager", "GetSecretValue",
                        {"SecretId": cloud["secret"]}))[0] == 400


def test_the_secret_policy_keeps_its_value_from_the_administrator(cloud):
    only_lambda = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "secretsmanager:GetSecretValue",
        "Resource": "*", "Condition": {"StringNotEquals": {
            "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT_ID}:role/ingest"}}}]}
    boto3.client("secretsmanager", region_name=REGION).put_resource_policy(
        SecretId="cds", ResourcePolicy=json.dumps(only_lambda))
    status, code, message = refused(call(ADMIN, "secretsmanager", "GetSecretValue",
                                         {"SecretId": "cds"}))
    assert (status, code) == (400, "AccessDeniedException")
    assert message.endswith("with an explicit deny in a resource-based policy")
    assert refused(call(ADMIN, "secretsmanager", "DescribeSecret", {"SecretId": "cds"})) is None
    assert refused(call(session("ingest"), "secretsmanager", "GetSecretValue",
                        {"SecretId": "cds"})) is None


def test_logs_groups_and_streams(cloud):
    own = {"logGroupName": "/aws/lambda/ingest", "logStreamName": "2024/01/01/[$LATEST]x"}
    assert refused(call(session("ingest"), "logs", "PutLogEvents", own)) is None
    assert refused(call(session("ingest"), "logs", "CreateLogGroup",
                        {"logGroupName": "/aws/lambda/ingest"})) is None
    other = {"logGroupName": "/aws/lambda/other", "logStreamName": "s"}
    status, code, message = refused(call(session("ingest"), "logs", "PutLogEvents", other))
    assert (status, code) == (400, "AccessDeniedException")
    assert ARN.format("logs", "log-group:/aws/lambda/other:log-stream:s") in message


def test_put_metric_data_is_scoped_by_namespace(cloud):
    grant = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}}]}
    boto3.client("iam", region_name=REGION).put_role_policy(
        RoleName="ingest", PolicyName="metrics", PolicyDocument=json.dumps(grant))

    def put(namespace: str) -> AwsRequest:
        return call(session("ingest"), "monitoring", "PutMetricData", {"Namespace": namespace},
                    headers={}, query={"Action": ["PutMetricData"]})

    assert refused(put(NAMESPACE)) is None
    assert refused(put("Other")) == (403, "AccessDenied", (
        f"User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/ingest/run-1 is not authorized to perform: "
        "cloudwatch:PutMetricData because no identity-based policy allows the "
        "cloudwatch:PutMetricData action"))


def test_glue_catalog_needs_catalog_database_and_table(cloud):
    crawler = session("crawler")
    table = {"DatabaseName": DATABASE, "TableInput": {"Name": "contours"}}
    assert refused(call(crawler, "glue", "CreateTable", table)) is None
    assert refused(call(crawler, "glue", "GetDatabase", {"Name": DATABASE})) is None
    elsewhere = call(crawler, "glue", "CreateTable", {"DatabaseName": "other",
                                                      "TableInput": {"Name": "t"}})
    status, code, message = refused(elsewhere)
    assert (status, code) == (400, "AccessDeniedException")
    assert ARN.format("glue", "database/other") in message
    assert refused(call(crawler, "glue", "StartJobRun", {"JobName": "contours"}))[2].endswith(
        "because no identity-based policy allows the glue:StartJobRun action")


def test_lambda_invoke_and_the_administrator(cloud):
    invoke = {"FunctionName": "ingest"}
    status, code, message = refused(call(session("crawler"), "lambda", "Invoke", invoke,
                                         headers={}, path="/2015-03-31/functions/ingest/invocations"))
    assert (status, code) == (403, "AccessDeniedException")
    assert f"lambda:InvokeFunction on resource: {ARN.format('lambda', 'function:ingest')}" in message
    assert refused(call(ADMIN, "lambda", "Invoke", invoke, headers={})) is None


def test_assume_role_needs_the_trust_policy_even_for_the_administrator(cloud):
    role = f"arn:aws:iam::{ACCOUNT_ID}:role/ingest"
    query = {"query": {"Action": ["AssumeRole"]}, "headers": {}}
    status, code, _ = refused(call(ADMIN, "sts", "AssumeRole", {"RoleArn": role}, **query))
    assert (status, code) == (403, "AccessDenied")
    assert refused(call(session("crawler"), "sts", "GetCallerIdentity", {}, **query)) is None


def test_other_operations_are_checked_as_prefix_operation_on_star(cloud):
    _, code, message = refused(call(session("ingest"), "iam", "ListRoles", {}, headers={},
                                    query={"Action": ["ListRoles"]}))
    assert code == "AccessDenied"
    assert "perform: iam:ListRoles because" in message
    assert refused(call(ADMIN, "iam", "ListRoles", {}, headers={})) is None


def test_attached_managed_policies_count(cloud):
    iam = boto3.client("iam", region_name=REGION)
    arn = iam.create_policy(PolicyName="list", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iam:ListRoles", "Resource": "*"}]}))[
        "Policy"]["Arn"]
    iam.attach_role_policy(RoleName="ingest", PolicyArn=arn)
    assert authorization.allowed(session("ingest"), "iam:ListRoles", "*").allowed
    assert not authorization.allowed(session("crawler"), "iam:ListRoles", "*").allowed


def test_a_crawl_without_the_read_grant_fails_as_glue_does(cloud):
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=OUTPUT, Key="catalog/contours/level=1/a.json", Body=b'{"x": 1}\n')
    glue = boto3.client("glue", region_name=REGION)
    glue.create_database(DatabaseInput={"Name": DATABASE})
    for name, path in (("allowed", "catalog/contours/"), ("denied", "products/")):
        glue.create_crawler(Name=name, Role="crawler", DatabaseName=DATABASE,
                            Targets={"S3Targets": [{"Path": f"s3://{OUTPUT}/{path}"}]})
    backend = crawlers._glue(REGION)
    outcomes = {}
    for name in ("allowed", "denied"):
        crawler = backend.crawlers[name]
        crawl = crawlers.LiveCrawl(name)
        crawler.crawls.append(crawl)
        crawlers._run(REGION, crawler, crawl)
        outcomes[name] = (crawl.status, crawl.error_message)
    assert outcomes["allowed"] == ("COMPLETED", None)
    assert glue.get_table(DatabaseName=DATABASE, Name="contours")["Table"]["Name"] == "contours"
    status, error = outcomes["denied"]
    assert status == "FAILED"
    assert error == (
        f"AccessDeniedException: User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/crawler/AWS-Crawler "
        f"is not authorized to perform: s3:ListBucket on resource: arn:aws:s3:::{OUTPUT} because "
        "no identity-based policy allows the s3:ListBucket action")
