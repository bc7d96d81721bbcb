"""Shared pieces of the audit end-to-end tests: the events a run must have left, computed from the
objects it left behind, and `kubernaut audit` run as a user runs it.

No tests live here; the module name only keeps it beside the tests that use it.
"""

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from lightkube import AsyncClient

from kubernaut.api.audit import build_event_id
from kubernaut.kube.resources import (
    NotificationRequestResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from tests.integration.harness import eventually
from tests.integration.orchestrator_support import Recorded

KUBERNAUT = [sys.executable, "-m", "kubernaut"]
TERMINAL_PHASES = {"Completed", "Failed", "TimedOut", "Skipped", "Cancelled"}
FINAL_NOTIFICATION_EVENTS = {
    "Sent": "notification.sent",
    "PartiallySent": "notification.partially_sent",
    "Failed": "notification.failed",
}

EventKey = tuple[str, str, str, str]
"""(event_type, resource_type, namespace, resource_id): what one event is about."""


def run_kubernaut(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUBERNAUT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def list_audit_events(url: str) -> list[dict[str, Any]]:
    """`kubernaut audit list -o json --audit-url URL`: every stored event, in chain order."""
    result = run_kubernaut("audit", "list", "-o", "json", "--audit-url", url)
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)
    return events


def verify_audit(url: str) -> subprocess.CompletedProcess[str]:
    return run_kubernaut("audit", "verify", "--audit-url", url)


def unique_workflow_id() -> str:
    """A workflow id no catalog entry of another test has, so that the request's own bundle runs."""
    return f"audit-e2e-{uuid.uuid4().hex[:8]}"


# -- the expected events -----------------------------------------------------------------------------


def build_request_expectations(history: Iterable[dict[str, Any]]) -> dict[str, EventKey]:
    """The orchestrator's events for one request, from every version of it a watch saw.

    Each transition raises `transitionCount` by one and has exactly one event whose id carries that
    number: n=1 lifecycle.started, a Blocked phase routing.blocked, a terminal phase
    lifecycle.completed (plus routing.blocked when routing failed it because a previous execution
    failed, plus effectiveness.assessed when its run was assessed), any other phase
    phase.transitioned. One write can carry several transitions: those that go on at once (the
    start, Pending passing its routing), so the numbers no version shows are never Blocked nor
    terminal.
    """
    phases: dict[int, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    for body in history:
        meta = body["metadata"]
        status = body.get("status") or {}
        count = status.get("transitionCount")
        if count and count not in phases:
            phases[count] = status
    if not phases:
        return {}
    for number in range(1, max(phases)):
        phases.setdefault(number, {"overallPhase": "Pending" if number == 1 else "(went on at once)"})
    uid, key = meta["uid"], ("RemediationRequest", meta["namespace"], meta["name"])
    expected: dict[str, EventKey] = {}

    def expect(event_type: str, number: int) -> None:
        expected[build_event_id(uid, event_type, str(number))] = (event_type, *key)

    for number, status in phases.items():
        phase = status.get("overallPhase")
        if number == 1:
            assert phase == "Pending", f"{meta['name']}: first transition to {phase}"
            expect("orchestrator.lifecycle.started", number)
        elif phase == "Blocked":
            expect("orchestrator.routing.blocked", number)
        elif phase in TERMINAL_PHASES:
            expect("orchestrator.lifecycle.completed", number)
            if status.get("skipReason") == "PreviousExecutionFailed":
                expect("orchestrator.routing.blocked", number)
            if status.get("effectiveness"):
                expect("orchestrator.effectiveness.assessed", number)
        else:
            expect("orchestrator.phase.transitioned", number)
    return expected


def build_execution_expectations(body: dict[str, Any]) -> dict[str, EventKey]:
    """One workflow.started once its PipelineRun existed, one terminal event, one block clearance."""
    meta, status = body["metadata"], body.get("status") or {}
    key = ("WorkflowExecution", meta["namespace"], meta["name"])
    types = []
    if status.get("pipelineRunRef"):
        types.append("workflow.started")
    if status.get("phase") == "Completed":
        types.append("workflow.completed")
    if status.get("phase") == "Failed":
        types.append("workflow.failed")
    if status.get("blockClearance"):
        types.append("workflowexecution.block.cleared")
    return {build_event_id(meta["uid"], event_type): (event_type, *key) for event_type in types}


def build_notification_expectations(body: dict[str, Any]) -> dict[str, EventKey]:
    """One delivery.attempted per recorded attempt, one final event once delivery ended."""
    meta, status = body["metadata"], body.get("status") or {}
    key = ("NotificationRequest", meta["namespace"], meta["name"])
    attempted = "notification.delivery.attempted"
    expected = {
        build_event_id(meta["uid"], attempted, a["channel"], str(a["attempt"])): (attempted, *key)
        for a in status.get("deliveryAttempts") or []
    }
    final = FINAL_NOTIFICATION_EVENTS.get(status.get("phase") or "")
    if final:
        expected[build_event_id(meta["uid"], final)] = (final, *key)
    return expected


async def build_expected_events(kube: AsyncClient, requests: Recorded, namespace: str) -> dict[str, EventKey]:
    """Every event the run must have stored: requests from their watched history, executions and
    notifications from what they ended as."""
    histories: dict[str, list[dict[str, Any]]] = {}
    for type_, _name, uid, body in requests.events:
        if type_ != "DELETED":
            histories.setdefault(uid, []).append(body)
    expected: dict[str, EventKey] = {}
    for history in histories.values():
        expected.update(build_request_expectations(history))
    async for wfe in kube.list(WorkflowExecutionResource, namespace=namespace):
        expected.update(build_execution_expectations(wfe.to_dict()))
    async for nr in kube.list(NotificationRequestResource, namespace=namespace):
        expected.update(build_notification_expectations(nr.to_dict()))
    return expected


async def caught_up(kube: AsyncClient, requests: Recorded, namespace: str) -> None:
    """The watch has seen the latest version of every request (so their history is complete)."""

    async def probe() -> bool:
        seen = {(body["metadata"]["name"], body["metadata"]["resourceVersion"]) for *_, body in requests.events}
        current = [rr async for rr in kube.list(RemediationRequestResource, namespace=namespace)]
        return all((rr.metadata.name, rr.metadata.resourceVersion) in seen for rr in current)

    await eventually(probe, what="the request watch caught up")


def event_key(event: dict[str, Any]) -> EventKey:
    return (event["event_type"], event["resource_type"], event["namespace"], event["resource_id"])


def assert_exactly_expected(stored: list[dict[str, Any]], expected: dict[str, EventKey]) -> Counter[str]:
    """Every expected event is stored once and nothing else is; returns the count per event type."""
    ids = [event["event_id"] for event in stored]
    assert len(ids) == len(set(ids)), "an event id is stored twice"
    by_id = {event["event_id"]: event for event in stored}
    missing = sorted(expected[i] for i in expected.keys() - by_id.keys())
    extra = sorted(event_key(by_id[i]) for i in by_id.keys() - expected.keys())
    assert (missing, extra) == ([], []), f"missing: {missing}\nnot expected: {extra}"
    for event_id, key in expected.items():
        assert event_key(by_id[event_id]) == key
    assert Counter(event_key(e) for e in stored) == Counter(expected.values())
    return Counter(event["event_type"] for event in stored)
