"""One lock per target across engines: a Job holds a target against a Tekton execution and a
PipelineRun against a Job execution (the orchestrator's ResourceBusy), and the engine a catalog
entry names is what the WorkflowExecution runs on."""

import uuid
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType

from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import JobResource, PipelineRunResource, WorkflowExecutionResource
from tests.integration.executor_support import parse_time
from tests.integration.harness import (
    OffsetClock,
    create_execution_namespace,
    eventually,
    get_or_none,
    hold_lock,
    running,
    settings_for,
)
from tests.integration.job_support import (  # a control plane where the tests play the Job controller
    complete_job,
    play_garbage_collector,
    played_kube,  # noqa: F401 - the fixture `kube`
    played_kubeconfig,  # noqa: F401 - the fixture `kubeconfig`
    start_job,
)
from tests.integration.orchestrator_support import create_rr, wait_phase
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import UNRESOLVED_BUNDLE
from tests.integration.test_orchestrator_bad_input import catalog

IMAGE = "registry.example/workflows/restart-job:1.0.0"


def job_entry(workflow_id: str) -> dict[str, Any]:
    return {
        "workflowId": workflow_id,
        "version": "1.0.0",
        "containerImage": IMAGE,
        "execution": {"engine": "job", "command": ["/bin/restart"], "activeDeadline": "5m"},
    }


def tekton_entry(workflow_id: str) -> dict[str, Any]:
    return {
        "workflowId": workflow_id,
        "version": "1.0.0",
        "containerImage": UNRESOLVED_BUNDLE,
    }


def request(name: str, namespace: str, workflow_id: str) -> dict[str, Any]:
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    return rr_manifest(name, namespace, target=target, bundle=None, workflowRef={"workflowId": workflow_id})


async def wait_wfe(kube: AsyncClient, name: str, namespace: str, phase: str | None = None) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await get_or_none(kube, WorkflowExecutionResource, name, namespace)
        body: dict[str, Any] | None = found.to_dict() if found is not None else None
        if body is None or (phase and (body.get("status") or {}).get("phase") != phase):
            return None
        return body

    return await eventually(probe, what=f"WorkflowExecution {namespace}/{name} {phase or 'created'}")


async def test_a_job_lock_blocks_a_tekton_execution_until_it_is_released(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    clock = OffsetClock()
    lock = build_lock_name(f"{namespace}/Deployment/api")
    job_wf, tekton_wf = f"restart-job-{uuid.uuid4().hex[:8]}", f"restart-tekton-{uuid.uuid4().hex[:8]}"
    settings = settings_for(exec_ns, execution={"cooldown": "5m"})
    async with (
        catalog(kube, job_entry(job_wf), tekton_entry(tekton_wf)),
        running(kubeconfig, settings, ("orchestrator", "executor"), clock=clock),
    ):
        await create_rr(kube, request("rr-job", namespace, job_wf))
        wfe = await wait_wfe(kube, "we-rr-job", namespace, "Running")
        assert wfe["spec"]["executionEngine"] == "job"
        ref = wfe["spec"]["workflowRef"]
        assert (ref["containerImage"], ref["command"], ref["activeDeadline"]) == (IMAGE, ["/bin/restart"], "5m")
        assert await get_or_none(kube, JobResource, lock, exec_ns) is not None
        started = parse_time(wfe["status"]["startTime"])
        await start_job(kube, lock, exec_ns, started)
        await complete_job(kube, lock, exec_ns, started, started)
        await wait_wfe(kube, "we-rr-job", namespace, "Completed")

        # The finished execution's Job is the lock for the cooldown: another engine waits for it.
        await create_rr(kube, request("rr-tekton", namespace, tekton_wf))
        status = await wait_phase(kube, "rr-tekton", namespace, "Blocked")
        assert status["blockReason"] == "ResourceBusy"
        assert status["blockingWorkflowExecution"] == "we-rr-job"
        assert lock in status["blockMessage"]
        assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-tekton", namespace) is None

        # After the cooldown the executor deletes the Job (foreground; the test plays the garbage
        # collector): the block clears by itself and the Tekton execution takes the lock.
        clock.advance(600)
        await kube.patch(  # any event of the Job wakes its WFE before its cooldown pass is due
            JobResource, lock, {"metadata": {"labels": {"poke": "1"}}}, namespace=exec_ns, patch_type=PatchType.MERGE
        )

        async def deleting() -> bool:
            found = await get_or_none(kube, JobResource, lock, exec_ns)
            return found is not None and found.to_dict()["metadata"].get("deletionTimestamp") is not None

        await eventually(deleting, what="the Job deleted after the cooldown")
        assert (await wait_phase(kube, "rr-tekton", namespace, "Blocked"))["blockReason"] == "ResourceBusy"
        await play_garbage_collector(kube, lock, exec_ns)
        await wait_phase(kube, "rr-tekton", namespace, "Executing")
        wfe = await wait_wfe(kube, "we-rr-tekton", namespace)
        assert wfe["spec"]["executionEngine"] == "tekton"
        assert "command" not in wfe["spec"]["workflowRef"]

        async def pipelinerun() -> Any:
            return await get_or_none(kube, PipelineRunResource, lock, exec_ns)

        await eventually(pipelinerun, what="the Tekton execution's PipelineRun")


async def test_a_pipelinerun_lock_blocks_a_job_execution(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    canonical = f"{namespace}/Deployment/api"
    lock = build_lock_name(canonical)
    await hold_lock(kube, lock, exec_ns, holder="we-old", source_namespace=namespace, target=canonical)
    job_wf = f"restart-job-{uuid.uuid4().hex[:8]}"
    async with catalog(kube, job_entry(job_wf)), running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):
        await create_rr(kube, request("rr-job", namespace, job_wf))
        status = await wait_phase(kube, "rr-job", namespace, "Blocked")
        assert status["blockReason"] == "ResourceBusy"
        assert status["blockingWorkflowExecution"] == "we-old"
        await kube.delete(PipelineRunResource, lock, namespace=exec_ns)
        await wait_phase(kube, "rr-job", namespace, "Executing")
        assert (await wait_wfe(kube, "we-rr-job", namespace))["spec"]["executionEngine"] == "job"
