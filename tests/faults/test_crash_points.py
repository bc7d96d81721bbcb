"""kill -9 at the chosen points of one remediation: the operator process dies at each crash point in
turn and is started again; the remediation ends once, with one PipelineRun and one audit event per
transition, and the lock is released after its cooldown."""

from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.api.audit import build_event_id
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.faults import EXIT_CODE
from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource
from tests.faults.support import (
    Operator,
    PipelineRunLedger,
    background,
    check_invariants,
    deadline,
    read_audit,
    read_outbox_ids,
    write_operator_config,
)
from tests.integration.harness import create_execution_namespace, eventually, get_or_none
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played

pytestmark = [pytest.mark.tekton, pytest.mark.usefixtures("clean_cluster")]

POINTS = (
    "orchestrator.execution-created",
    "executor.pipelinerun-created",
    "executor.terminal-written",
    "orchestrator.terminal-recorded",
    "executor.cooldown-waiting",
)


async def _status(kube: AsyncClient, resource: Any, name: str, namespace: str) -> dict[str, Any] | None:
    obj = await get_or_none(kube, resource, name, namespace)
    return None if obj is None else (obj.to_dict().get("status") or {})


@deadline()
async def test_kill_at_every_crash_point_of_one_remediation(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit_db = tmp_path / "audit.db"
    # The audit outbox is not delivered while crashes happen ("before the audit flush"), only at the end.
    crashing = write_operator_config(
        tmp_path / "crashing.yaml", exec_ns, audit_db, execution={"cooldown": "12s"}, audit={"flushInterval": "1h"}
    )
    final = write_operator_config(tmp_path / "final.yaml", exec_ns, audit_db, execution={"cooldown": "12s"})
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    lock = build_lock_name(f"{namespace}/Deployment/api")
    operator = Operator(kubeconfig, tmp_path)
    ledger = PipelineRunLedger(kube, exec_ns)
    try:
        async with background(ledger):
            await kube.create(
                RemediationRequestResource(
                    rr_manifest("rr-1", namespace, target=target, bundle=played("succeed:1tasks-1s"))
                )
            )
            rr_uid = (await kube.get(RemediationRequestResource, "rr-1", namespace=namespace)).metadata.uid
            remaining = list(POINTS)
            while remaining:
                # Arm every point not yet hit: whichever the remediation reaches first ends this run.
                operator.start(crashing, faults=",".join(f"{p}:1" for p in remaining))
                assert await operator.wait_exit(60) == EXIT_CODE, operator.tail()
                hit = next(p for p in remaining if f"exiting abruptly at {p}" in operator.tail())
                remaining.remove(hit)
                rr = await _status(kube, RemediationRequestResource, "rr-1", namespace) or {}
                wfe = await _status(kube, WorkflowExecutionResource, "we-rr-1", namespace) or {}
                pr = await get_or_none(kube, PipelineRunResource, lock, exec_ns)
                outbox = read_outbox_ids(audit_db)
                stored = {event.event_id for event in await read_audit(audit_db)}
                if hit == "orchestrator.execution-created":
                    assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-1", namespace) is not None
                    assert rr.get("overallPhase") is None, "the pass writes its status once the execution exists"
                elif hit == "executor.pipelinerun-created":
                    assert pr is not None
                    assert wfe.get("phase") in (None, "", "Pending"), wfe
                elif hit == "executor.terminal-written":
                    assert wfe["phase"] == "Completed"
                    completed = build_event_id(await _uid(kube, "we-rr-1", namespace), "workflow.completed")
                    assert completed in outbox
                    assert completed not in stored
                elif hit == "orchestrator.terminal-recorded":
                    assert rr.get("overallPhase") == "Executing", rr
                    transition = str(rr["transitionCount"] + 1)
                    finished = build_event_id(rr_uid, "orchestrator.lifecycle.completed", transition)
                    assert finished in outbox
                    assert finished not in stored
                else:
                    assert wfe["phase"] == "Completed"
                    assert pr is not None, "the lock is still held"

            operator.start(final)

            async def completed() -> bool:
                status = await _status(kube, RemediationRequestResource, "rr-1", namespace) or {}
                return status.get("overallPhase") == "Completed"

            await eventually(completed, timeout=30, what="rr-1 Completed")
            wfe_status = await _status(kube, WorkflowExecutionResource, "we-rr-1", namespace) or {}

            async def released() -> bool:
                return await get_or_none(kube, PipelineRunResource, lock, exec_ns) is None

            await eventually(released, timeout=30, what="lock released")
            assert await operator.stop() == 0, operator.tail()
        verdict = await check_invariants(kube, namespace, exec_ns, audit_db, ledger)
        assert verdict.problems == [], verdict.problems
        assert ledger.created == 1
        assert wfe_status["startTime"]
        assert not read_outbox_ids(audit_db)
    finally:
        operator.cleanup()


async def _uid(kube: AsyncClient, name: str, namespace: str) -> str:
    return str((await kube.get(WorkflowExecutionResource, name, namespace=namespace)).metadata.uid)
