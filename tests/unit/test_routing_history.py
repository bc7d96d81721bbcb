"""The orchestrator reads only the part of a history that can still decide: same answers as the whole.

Random histories of one signal and one target (requests and executions in every phase, with and
without completion times) are put into the orchestrator's caches as the watches would; every
routing answer computed from the pruned lookups must equal the one computed from the full lists.
"""

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kubernaut.api.v1alpha1.remediationrequest import RemediationRequest
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution
from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.config import parse_settings
from kubernaut.controllers import orchestrator
from kubernaut.controllers.kinds import FINGERPRINT_INDEX, RR_KIND, TARGET_INDEX, WFE_KIND
from kubernaut.controllers.manager import Manager
from kubernaut.domain import remediation as rem
from kubernaut.domain.gates import Gates, Scope, check_breaker, check_rate_limits
from kubernaut.domain.routing import (
    RoutingStage,
    build_rr_target,
    check_ineffective_chain,
    compute_consecutive_failures,
    compute_ineffective_chain,
    compute_target_backoff,
    decide_routing,
)
from kubernaut.kube.client import make_client
from kubernaut.kube.runtime import Cache

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NS = "team"
FINGERPRINT = "f" * 64
RR_PHASES = ["Completed", "Failed", "Failed", "Blocked", "Executing", "Pending", None, "TimedOut", "Analyzing"]
WFE_PHASES = ["Completed", "Failed", "Failed", "Running", "Pending", None]
WORKFLOWS = ["restart", "scale"]


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_rr(name: str, created: datetime, status: dict[str, Any], version: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "creationTimestamp": _ts(created),
        },
        "spec": {
            "signalFingerprint": FINGERPRINT,
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "targetResource": {"kind": "Deployment", "name": "api", "namespace": NS},
        },
        "status": status,
    }


def build_wfe(name: str, owner: str, created: datetime, status: dict[str, Any], version: int, workflow: str) -> Any:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "creationTimestamp": _ts(created),
            "ownerReferences": [
                {
                    "apiVersion": "kubernaut.ai/v1alpha1",
                    "kind": "RemediationRequest",
                    "name": owner,
                    "uid": f"uid-{owner}",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "remediationRequestRef": {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "RemediationRequest",
                "name": owner,
            },
            "workflowRef": {"workflowId": workflow, "version": "1", "containerImage": "bundle"},
            "targetResource": f"{NS}/Deployment/api",
        },
        "status": status,
    }


def random_history(rng: random.Random) -> Iterator[tuple[str, dict[str, Any]]]:
    version = 100
    for i in range(rng.randint(0, 25)):
        name = f"rr-{i:03d}"
        created = NOW - timedelta(seconds=rng.randint(0, 20_000))
        phase = rng.choice(RR_PHASES)
        status: dict[str, Any] = {}
        if phase:
            status["overallPhase"] = phase
            if phase in ("Completed", "Failed", "TimedOut"):
                status["completedAt"] = _ts(created + timedelta(seconds=rng.randint(0, 3000)))
            if phase == "Failed":
                status["failurePhase"] = rng.choice(["workflow_execution", "workflow_execution", "analysis"])
            if phase == "Completed":
                assessment = rng.choice(["Ineffective", "Ineffective", "Ineffective", "Effective", "NotAssessed", None])
                if assessment:
                    status["effectiveness"] = {"assessment": assessment}
                status["selectedWorkflow"] = {
                    "workflowId": rng.choice(WORKFLOWS),
                    "version": "1",
                    "containerImage": "b",
                }
            if phase == "Blocked":
                status["blockReason"] = rng.choice(["ConsecutiveFailures", "ResourceBusy"])
        version += 1
        body = build_rr(name, created, status, version)
        if rng.random() < 0.1:
            body["metadata"]["annotations"] = {"kubernaut.ai/clear-execution-block": "checked"}
        yield RR_KIND.plural, body
        if rng.random() < 0.7:
            wfe_phase = rng.choice(WFE_PHASES)
            wfe_status: dict[str, Any] = {}
            if wfe_phase:
                wfe_status["phase"] = wfe_phase
                if wfe_phase in ("Completed", "Failed") and rng.random() < 0.9:
                    wfe_status["completionTime"] = _ts(created + timedelta(seconds=rng.randint(0, 3000)))
                if wfe_phase == "Failed":
                    wfe_status["failureDetails"] = {
                        "reason": rng.choice(["TaskFailed", "ExecutionRaceCondition", "Forbidden"]),
                        "message": "m",
                        "failedTaskName": "t",
                        "failedTaskIndex": 0,
                        "executionTimeBeforeFailure": "1s",
                        "failedAt": _ts(created),
                        "wasExecutionFailure": rng.random() < 0.3,
                        "naturalLanguageSummary": "s",
                    }
            version += 1
            yield WFE_KIND.plural, build_wfe(f"we-{name}", name, created, wfe_status, version, rng.choice(WORKFLOWS))


@pytest.mark.parametrize("seed", range(60))
def test_pruned_history_routes_like_the_whole_history(kubeconfig: Path, seed: int) -> None:
    rng = random.Random(seed)
    settings = parse_settings(
        {
            "execution": {"namespace": "exec"},
            "audit": {"url": "memory://"},
            "scope": {"requireManagedLabel": rng.random() < 0.5},
            "limits": {
                "maxConcurrentExecutions": rng.choice([1, 3, 10]),
                "maxExecutionsPerHour": rng.choice([1, 3, 100]),
                "perNamespace": {"maxExecutionsPerHour": rng.choice([1, 2, 20])},
            },
            "breaker": {"failureThreshold": rng.choice([1, 2, 5]), "window": rng.choice(["1m", "10m", "2h"])},
            "routing": {
                "recentlyRemediatedCooldown": rng.choice(["0s", "5m", "2h"]),
                "consecutiveFailureThreshold": rng.choice([1, 2, 3]),
            },
            "effectiveness": {
                "ineffectiveChainThreshold": rng.choice([1, 2, 3]),
                "ineffectiveChainCooldown": rng.choice(["30m", "4h", "10h"]),
            },
        }
    )
    manager = Manager(client=make_client(kubeconfig), settings=settings, audit=MemoryAuditSink(), clock=lambda: NOW)
    ro = orchestrator.setup(manager)
    for plural, body in random_history(rng):
        manager.dispatch(plural, "ADDED", body)
    created = NOW - timedelta(seconds=rng.randint(0, 20_000))
    new = build_rr("rr-new", created, {"overallPhase": "Analyzing"}, 10_000)
    manager.dispatch(RR_KIND.plural, "ADDED", new)
    rr = RemediationRequest.from_wire(new)
    target = build_rr_target(rr)
    everyone = [RemediationRequest.from_wire(b) for b in ro.rrs.by_index(FINGERPRINT_INDEX, FINGERPRINT)]
    everything = [WorkflowExecution.from_wire(b) for b in ro.wfes.by_index(TARGET_INDEX, target)]
    # the gates read every execution cluster-wide: the pruned reads must decide as all of them do
    gates = Gates(
        policy=settings.gate_policy(),
        scope=Scope(managed=False, where=f"Namespace {NS}"),
        executions=[WorkflowExecution.from_wire(b) for b in ro.wfes.all()],
    )

    for workflow_id in ["", *WORKFLOWS]:
        for stage in RoutingStage:
            expected = decide_routing(
                rr,
                workflow_id=workflow_id,
                stage=stage,
                same_fingerprint=everyone,
                same_target=everything,
                lock=None,
                now=NOW,
                config=settings.routing_policy(),
                gates=gates,
            )
            assert ro._route(rr, workflow_id=workflow_id, stage=stage) == expected, (workflow_id, stage)
    # the gates on their own (earlier checks often decide first): the pruned executions give the same
    pruned_gates = ro._gates(rr)
    assert check_rate_limits(rr, pruned_gates, NOW) == check_rate_limits(rr, gates, NOW)
    assert check_breaker(pruned_gates, NOW) == check_breaker(gates, NOW)
    pruned_rrs = ro._same_fingerprint(rr)
    assert rem.decide_exhausted_retries_notice(rr, pruned_rrs) == rem.decide_exhausted_retries_notice(rr, everyone)
    assert compute_consecutive_failures(rr, pruned_rrs) == compute_consecutive_failures(rr, everyone)
    for workflow_id in WORKFLOWS:  # on its own too: routing's earlier checks often decide first
        assert compute_ineffective_chain(rr, pruned_rrs, workflow_id) == compute_ineffective_chain(
            rr, everyone, workflow_id
        )
        assert check_ineffective_chain(rr, workflow_id, pruned_rrs, NOW, ro.routing) == check_ineffective_chain(
            rr, workflow_id, everyone, NOW, ro.routing
        )
    policy = settings.routing.policy()
    assert compute_target_backoff(ro._executions_on(target), target, NOW, policy) == compute_target_backoff(
        everything, target, NOW, policy
    )


def body(name: str, version: int, rank: int, uid: str = "") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(version), "uid": uid or f"uid-{name}"},
        "spec": {"group": "g"},
        "rank": rank,
    }


def test_ordered_index_walks_newest_first_and_follows_updates_and_deletes() -> None:
    cache = Cache()
    cache.add_index("group", lambda b: [b["spec"]["group"]], order=lambda b: b["rank"])
    for i, rank in enumerate([5, 1, 9, 3]):
        cache.upsert(body(f"o{i}", 1, rank))
    assert [b["metadata"]["name"] for b in cache.newest_first("group", "g")] == ["o2", "o0", "o3", "o1"]
    cache.upsert(body("o1", 2, 10))  # a new version moves within the order
    cache.delete(body("o2", 1, 9))
    assert [b["metadata"]["name"] for b in cache.newest_first("group", "g")] == ["o1", "o0", "o3"]
    assert cache.count_by_index("group", "g") == 3
    assert list(cache.newest_first("group", "other")) == []


def test_a_deleted_object_stays_deleted_and_a_stale_deletion_spares_its_successor() -> None:
    cache = Cache()
    cache.upsert(body("a", 5, 0, uid="first"))
    cache.delete(body("a", 5, 0, uid="first"))
    assert cache.upsert(body("a", 6, 0, uid="first")) == (None, False)  # a late event of the deleted one
    cache.upsert(body("a", 7, 0, uid="second"))  # recreated under the same name
    assert cache.delete(body("a", 5, 0, uid="first")) is None
    assert (cache.get("ns/a") or {})["metadata"]["uid"] == "second"


def test_managed_fields_are_not_kept() -> None:
    cache = Cache()
    stored = body("a", 1, 0)
    stored["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    cache.upsert(stored)
    assert "managedFields" not in cache.get("ns/a")["metadata"]  # type: ignore[index]
    assert stored["metadata"]["managedFields"] == [{"manager": "kubectl"}]  # the caller's body is left alone
