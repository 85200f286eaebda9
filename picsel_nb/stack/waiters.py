"""Waiters boto3 lacks: a Glue job run reaching a final state, a Glue crawler back to READY, a
CloudWatch alarm reaching a state, an Athena query finishing.

Both are declared like botocore's own (a ``WaiterModel`` of acceptors on a Get* call), so waiting
is boto3 polling with a delay and a bounded number of attempts, never a hand-written sleep loop.
The deadline of each wait becomes its number of attempts.
"""

from __future__ import annotations

import math
from typing import Any

from botocore.exceptions import WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from picsel_nb.stack.errors import StackError

JOB_RUN_FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED")
ALARM_STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")

WAITER_MODEL = WaiterModel({
    "version": 2,
    "waiters": {
        "JobRunFinished": {
            "operation": "GetJobRun", "delay": 5, "maxAttempts": 720,
            "acceptors": [{"matcher": "path", "argument": "JobRun.JobRunState",
                           "expected": state, "state": "success"}
                          for state in JOB_RUN_FINAL_STATES],
        },
        "CrawlerReady": {
            "operation": "GetCrawler", "delay": 5, "maxAttempts": 360,
            "acceptors": [{"matcher": "path", "argument": "Crawler.State", "expected": "READY",
                           "state": "success"}],
        },
        "QueryFinished": {
            "operation": "GetQueryExecution", "delay": 1, "maxAttempts": 300,
            "acceptors": [{"matcher": "path", "argument": "QueryExecution.Status.State",
                           "expected": state, "state": "success"}
                          for state in ("SUCCEEDED", "FAILED", "CANCELLED")],
        },
        **{f"Alarm{state}": {
            "operation": "DescribeAlarms", "delay": 5, "maxAttempts": 60,
            "acceptors": [{"matcher": "pathAll", "argument": "MetricAlarms[].StateValue",
                           "expected": state, "state": "success"}],
        } for state in ALARM_STATES},
    },
})


class DeadlineError(StackError, TimeoutError):
    """A wait ran out of time; the message names what was awaited and its last state."""


def waiter(client: Any, name: str):
    """One of this module's waiters ("JobRunFinished", "CrawlerReady", "AlarmOK", …) bound to a
    client of the service it polls."""
    return create_waiter_with_client(name, WAITER_MODEL, client)


def _wait(client: Any, name: str, deadline_s: float, delay_s: float, describe, **params) -> None:
    """Run waiter `name` until success or `deadline_s`; `describe(last_response)` words a
    timeout."""
    attempts = max(1, math.ceil(deadline_s / delay_s)) + 1  # the first poll is immediate
    try:
        waiter(client, name).wait(**params, WaiterConfig={"Delay": delay_s,
                                                          "MaxAttempts": attempts})
    except WaiterError as exc:
        last = exc.last_response or {}
        if "Error" in last:  # the Get* call itself failed (e.g. EntityNotFoundException)
            raise StackError(f"{name} wait failed: {exc.kwargs.get('reason')}") from None
        raise DeadlineError(f"{describe(last)} after {deadline_s:g} s (the deadline)") from None


def wait_for_job_run(glue: Any, job_name: str, run_id: str, deadline_s: float,
                     delay_s: float = 2.0) -> dict:
    """The JobRun once it has reached a final state; DeadlineError naming the run and its state."""
    def describe(last: dict) -> str:
        state = last.get("JobRun", {}).get("JobRunState", "unknown")
        return f"Glue job run {run_id} of {job_name} is still {state}"

    _wait(glue, "JobRunFinished", deadline_s, delay_s, describe, JobName=job_name, RunId=run_id)
    return glue.get_job_run(JobName=job_name, RunId=run_id)["JobRun"]


def wait_for_crawler(glue: Any, name: str, deadline_s: float, delay_s: float = 2.0) -> dict:
    """The crawler once it is READY again; DeadlineError naming it and its state."""
    def describe(last: dict) -> str:
        return f"Glue crawler {name} is still {last.get('Crawler', {}).get('State', 'unknown')}"

    _wait(glue, "CrawlerReady", deadline_s, delay_s, describe, Name=name)
    return glue.get_crawler(Name=name)["Crawler"]


def wait_for_alarm_state(cloudwatch: Any, name: str, state: str, deadline_s: float,
                         delay_s: float = 1.0) -> None:
    """Return once alarm `name` is in `state`; DeadlineError naming it and its last state."""
    def describe(last: dict) -> str:
        alarms = last.get("MetricAlarms") or [{}]
        return f"alarm {name} is still {alarms[0].get('StateValue', 'missing')}, not {state},"

    _wait(cloudwatch, f"Alarm{state}", deadline_s, delay_s, describe, AlarmNames=[name])


def wait_for_query(athena: Any, execution_id: str, deadline_s: float,
                   delay_s: float = 0.2) -> dict:
    """The Athena QueryExecution once it has reached a final state; DeadlineError otherwise."""
    def describe(last: dict) -> str:
        state = last.get("QueryExecution", {}).get("Status", {}).get("State", "unknown")
        return f"Athena query {execution_id} is still {state}"

    _wait(athena, "QueryFinished", deadline_s, delay_s, describe, QueryExecutionId=execution_id)
    return athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
