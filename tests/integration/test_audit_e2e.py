"""The audit trail of whole remediations: the orchestrator, the executor and the notifier on the real
API server with the Tekton stand-in, recording through the real AuditWriter into a real SQLite file,
read back with `kubernaut audit list|verify` as a user runs them.

A scripted set of remediations (a success, a duplicate, a busy target that runs later, a failure
before execution, a failure during execution, a request that routing fails because of it, a cleared
block, a workflow that is nowhere) must leave exactly one event per transition: the expected events
are computed from every version of each request a watch saw and from the executions and
notifications the run left behind, and compared by event id.
"""

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.audit.factory import open_audit_sink
from kubernaut.config import Settings
from kubernaut.controllers.manager import Manager
from kubernaut.kube.resources import (
    NotificationRequestResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from tests.integration.audit_e2e_support import (
    assert_exactly_expected,
    build_expected_events,
    caught_up,
    list_audit_events,
    unique_workflow_id,
    verify_audit,
)
from tests.integration.executor_support import api_error
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.orchestrator_support import (
    annotate_wfe,
    create_rr,
    recording,
    wait_phase,
)
from tests.integration.rr import fingerprint, rr_manifest
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

CONTROLLERS = ("orchestrator", "executor", "notifier")
FINAL_PHASES = {
    "rr-ok": "Completed",
    "rr-ok-dup": "Completed",
    "rr-busy": "Completed",
    "rr-pull": "Failed",
    "rr-exec": "Failed",
    "rr-held": "Failed",
    "rr-after": "Completed",
    "rr-nowf": "Failed",
}


def story_settings(exec_ns: str, audit_url: str) -> Settings:
    channels = ["log"]
    return settings_for(
        exec_ns,
        execution={"cooldown": "1s"},
        routing={
            "recentlyRemediatedCooldown": "1s",
            "backoffBase": "1s",
            "backoffMax": "2s",
            "backoffJitterPercent": 0,
        },
        notifications={"critical": channels, "high": channels, "medium": channels, "low": channels},
        audit={"url": audit_url, "flushInterval": "50ms"},
    )


async def play_story(kube: AsyncClient, namespace: str) -> None:
    """The scripted remediations, until every request, execution and notification is final."""
    workflow_id = unique_workflow_id()

    def request(name: str, target: str, bundle: str, fp: str | None = None) -> dict[str, Any]:
        where = {"kind": "Deployment", "name": target, "namespace": namespace}
        return rr_manifest(name, namespace, target=where, fp=fp, bundle=played(bundle), workflow_id=workflow_id)

    # A success; meanwhile a duplicate of its signal, and another signal on the busy target.
    signal = fingerprint()
    await create_rr(kube, request("rr-ok", "api", "succeed:1tasks-2s", fp=signal))
    await wait_phase(kube, "rr-ok", namespace, "Executing")
    # (Requests created in the same second are ordered by name: the duplicate's sorts after.)
    await create_rr(kube, request("rr-ok-dup", "api", "succeed:1tasks-0s", fp=signal))
    await create_rr(kube, request("rr-busy", "api", "succeed:1tasks-0s"))
    await wait_phase(kube, "rr-ok-dup", namespace, "Blocked", blockReason="DuplicateInProgress")
    # A failure before execution: the bundle cannot be pulled.
    await create_rr(kube, request("rr-pull", "db", "imagepull:0s"))
    # A failure during execution; the next request on that target fails in routing until a person
    # clears the block; after that a request runs.
    await create_rr(kube, request("rr-exec", "cache", "fail:task1of1-exit1-0s"))
    await wait_phase(kube, "rr-exec", namespace, "Failed", timeout=30)
    await create_rr(kube, request("rr-held", "cache", "succeed:1tasks-0s"))
    held = await wait_phase(kube, "rr-held", namespace, "Failed", timeout=30)
    assert held["skipReason"] == "PreviousExecutionFailed"
    await annotate_wfe(kube, "we-rr-exec", namespace, {"kubernaut.ai/clear-execution-block": "checked by hand"})

    async def cleared() -> bool:
        body = (await kube.get(WorkflowExecutionResource, "we-rr-exec", namespace=namespace)).to_dict()
        return "blockClearance" in body["status"]

    await eventually(cleared, what="block clearance recorded")
    await create_rr(kube, request("rr-after", "cache", "succeed:1tasks-0s"))
    # A workflow that is neither in the catalog nor runnable from the request alone.
    nowhere = rr_manifest("rr-nowf", namespace, target={"kind": "Deployment", "name": "web", "namespace": namespace})
    nowhere["spec"]["workflowRef"] = {"workflowId": unique_workflow_id()}
    await create_rr(kube, nowhere)

    for name, phase in FINAL_PHASES.items():
        await wait_phase(kube, name, namespace, phase, timeout=60)
    await wait_all_final(kube, namespace)


async def wait_all_final(kube: AsyncClient, namespace: str) -> None:
    """Every execution terminal and every notification delivered (their last events are recorded)."""

    async def settled() -> bool:
        wfes = [w.to_dict() async for w in kube.list(WorkflowExecutionResource, namespace=namespace)]
        nrs = [n.to_dict() async for n in kube.list(NotificationRequestResource, namespace=namespace)]
        return all((w.get("status") or {}).get("phase") in ("Completed", "Failed") for w in wfes) and all(
            (n.get("status") or {}).get("phase") == "Sent" for n in nrs
        )

    await eventually(settled, timeout=60, what="executions and notifications final")


async def run_story(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path, *, conflicts: "StatusConflicts | None" = None
) -> tuple[str, Counter[str]]:
    exec_ns = await create_execution_namespace(kube)
    url = f"sqlite:///{tmp_path}/audit.db"
    settings = story_settings(exec_ns, url)
    async with recording(kube, RemediationRequestResource, namespace) as requests:
        async with (
            open_audit_sink(settings.audit) as audit,
            running(kubeconfig, settings, CONTROLLERS, audit=audit) as manager,
        ):
            if conflicts is not None:
                conflicts.install(manager)
            await play_story(kube, namespace)
        await caught_up(kube, requests, namespace)
        expected = await build_expected_events(kube, requests, namespace)
    counts = assert_exactly_expected(list_audit_events(url), expected)
    verified = verify_audit(url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"Audit trail intact: {sum(counts.values())} events" in verified.stdout
    return url, counts


def assert_story_counts(counts: Counter[str]) -> None:
    """What the script makes for sure; blocks may be renewed, so their number is only bounded below."""
    assert counts["orchestrator.lifecycle.started"] == len(FINAL_PHASES)
    assert counts["orchestrator.lifecycle.completed"] == len(FINAL_PHASES)
    # rr-ok, rr-busy, rr-pull, rr-exec, rr-after ran; rr-pull's image never came, rr-exec's task failed
    assert counts["workflow.started"] == 5
    assert counts["workflow.completed"] == 3
    assert counts["workflow.failed"] == 2
    assert counts["workflowexecution.block.cleared"] == 1
    # duplicate, busy target, previous execution failed; more when a block is renewed
    assert counts["orchestrator.routing.blocked"] >= 3
    # manual reviews of rr-exec, rr-held and rr-nowf, each delivered on one channel at the first try
    assert counts["notification.delivery.attempted"] == 3
    assert counts["notification.sent"] == 3


async def test_one_event_per_transition(kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    _, counts = await run_story(kube, kubeconfig, namespace, tmp_path)
    assert_story_counts(counts)
    print(f"\n{sum(counts.values())} events, each once: {dict(sorted(counts.items()))}")


class StatusConflicts:
    """Every `every`-th status write of the manager meets a 409 Conflict, as when someone else
    changed the object since it was read; the write does not happen."""

    def __init__(self, every: int = 3) -> None:
        self.every = every
        self.writes = itertools.count(1)
        self.injected = 0

    def install(self, manager: Manager) -> None:
        real_patch = manager.client.patch

        async def patch(res: Any, name: str, obj: Any, *args: Any, **kwargs: Any) -> Any:
            info = getattr(res, "_api_info", None)
            if info is not None and info.action == "status" and next(self.writes) % self.every == 0:
                self.injected += 1
                raise api_error(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {info.plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            return await real_patch(res, name, obj, *args, **kwargs)

        manager.client.patch = patch  # type: ignore[method-assign]


async def test_one_event_per_transition_through_write_conflicts(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    conflicts = StatusConflicts(every=3)
    _, counts = await run_story(kube, kubeconfig, namespace, tmp_path, conflicts=conflicts)
    assert conflicts.injected >= 20  # every kind of transition met some
    assert_story_counts(counts)
    print(f"\n{conflicts.injected} status writes met a 409; {sum(counts.values())} events, each once")
