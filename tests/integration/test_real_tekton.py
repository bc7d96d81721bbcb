"""The executor against real Tekton Pipelines: its controller and bundles resolver run on a control
plane of their own, bundles come from a local registry, pods run on the kwok node.

What is asserted on Tekton's side is Tekton's own wording (the conditions its reconcilers write);
on ours, what the executor's failure analysis makes of it.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.audit.store import AuditSink
from kubernaut.devcluster.controlplane import NODE_NAME
from kubernaut.devcluster.registry import push_bundle
from kubernaut.devcluster.tekton import crash_controller
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource, TaskRunResource, WorkflowExecutionResource
from kubernaut.paths import project_dir
from tests.conftest import TektonCluster
from tests.integration.executor_support import create_wfe, wait_phase, wfe_status
from tests.integration.harness import (
    create_execution_namespace,
    create_namespace,
    eventually,
    get_or_none,
    running,
    settings_for,
)
from tests.integration.orchestrator_support import create_rr
from tests.integration.orchestrator_support import wait_phase as wait_rr_phase
from tests.integration.rr import rr_manifest

# Real Tekton reconciles, resolves a bundle over HTTP and waits for kwok: seconds, more on a busy
# machine; a wait that runs out prints every PipelineRun and TaskRun condition in the namespaces.
_RUN_TIMEOUT = 90.0
_RUNNER_SA = "kubernaut-workflow-runner"


def sample_pipeline() -> dict[str, Any]:
    """The sample bundle's Pipeline `workflow`: tasks `check`, then `remediate` (steps `restart`, `verify`)."""
    path = project_dir() / "config" / "tekton" / "bundles" / "succeed.yaml"
    pipeline: dict[str, Any] = yaml.safe_load(path.read_text())
    return pipeline


def failing_in_remediate(
    annotations: dict[str, str], task_name: str = "remediate", **task_fields: Any
) -> dict[str, Any]:
    """The sample Pipeline whose `remediate` task (or `task_name`) carries kwok's annotations (and
    `task_fields`, such as a timeout); Tekton copies an embedded task's metadata onto its TaskRun and pod."""
    pipeline = sample_pipeline()
    task = next(t for t in pipeline["spec"]["tasks"] if t["name"] == task_name)
    task["taskSpec"]["metadata"] = {"annotations": annotations}
    task.update(task_fields)
    return pipeline


@pytest.fixture(scope="module")
def bundles(tekton_cluster: TektonCluster) -> dict[str, str]:
    """Bundles pushed to the cluster's registry: name -> image reference."""
    pipelines = {
        "succeed": sample_pipeline(),
        "fail-step": failing_in_remediate({"fake.kubelet/fail": "remediate/restart"}),
        "oom-step": failing_in_remediate(
            {
                "fake.kubelet/fail": "remediate/restart",
                "fake.kubelet/exit-code": "137",
                "fake.kubelet/reason": "OOMKilled",
            }
        ),
        "hang": failing_in_remediate({"fake.kubelet/hang": "true"}),
        "hang-3s": failing_in_remediate({"fake.kubelet/hang": "true"}, timeout="3s"),
        "slow": failing_in_remediate({"fake.kubelet/run-duration": "8s"}),
        "image-pull": failing_in_remediate({"fake.kubelet/image-pull-backoff": "true"}, task_name="check"),
    }
    images = {}
    for name, pipeline in pipelines.items():
        images[name] = f"{tekton_cluster.registry}/workflows/{name}:1.0.0"
        push_bundle(images[name], [pipeline])
    return images


async def namespaces(kube: AsyncClient) -> tuple[str, str]:
    """(source, execution) namespaces; the execution one has the ServiceAccount the runs use."""
    return await create_namespace(kube, "src"), await create_execution_namespace(kube)


async def pipelinerun(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = (await kube.get(PipelineRunResource, name, namespace=namespace)).to_dict()
    return body


async def taskruns(kube: AsyncClient, namespace: str) -> dict[str, dict[str, Any]]:
    """TaskRuns by their pipeline task (label `tekton.dev/pipelineTask`)."""
    found = {}
    async for obj in kube.list(TaskRunResource, namespace=namespace):
        body = obj.to_dict()
        found[body["metadata"]["labels"]["tekton.dev/pipelineTask"]] = body
    return found


def succeeded(body: dict[str, Any]) -> dict[str, Any]:
    conditions = (body.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Succeeded"), {})


async def run_to_phase(
    kube: AsyncClient, kubeconfig: Path, image: str, phase: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run one WFE of `image` through the executor until `phase`: (WFE status, PipelineRun, exec namespace)."""
    source, execution = await namespaces(kube)
    target = f"{source}/deployment/app"
    async with running(kubeconfig, settings_for(execution), ("executor",)):
        await create_wfe(kube, "wfe-real", source, target, containerImage=image)
        status = await wait_phase(kube, "wfe-real", source, phase, timeout=_RUN_TIMEOUT)
    return status, await pipelinerun(kube, build_lock_name(target), execution), execution


@contextlib.asynccontextmanager
async def remediating(
    cluster: TektonCluster, kube: AsyncClient, image: str, audit: AuditSink | None = None
) -> AsyncIterator[tuple[str, str, str]]:
    """The executor running one WFE `wfe-real` of `image`, once its `remediate` TaskRun runs:
    (source namespace, execution namespace, lock name)."""
    source, execution = await namespaces(kube)
    target = f"{source}/deployment/app"
    async with running(cluster.plane.kubeconfig, settings_for(execution), ("executor",), audit=audit):
        await create_wfe(kube, "wfe-real", source, target, containerImage=image)

        async def started() -> bool:
            runs = await taskruns(kube, execution)
            return "remediate" in runs and succeeded(runs["remediate"]).get("reason") == "Running"

        await eventually(started, timeout=_RUN_TIMEOUT, what="the remediate TaskRun running")
        yield source, execution, build_lock_name(target)


async def test_a_bundle_that_succeeds_completes_the_execution(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    status, pr, execution = await run_to_phase(
        tekton_kube, tekton_cluster.plane.kubeconfig, bundles["succeed"], "Completed"
    )
    assert succeeded(pr) | {"lastTransitionTime": None} == {
        "type": "Succeeded",
        "status": "True",
        "reason": "Succeeded",
        "message": "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0",
        "lastTransitionTime": None,
    }
    runs = await taskruns(tekton_kube, execution)
    assert sorted(runs) == ["check", "remediate"]
    for run in runs.values():
        assert succeeded(run)["reason"] == "Succeeded"
        assert succeeded(run)["message"] == "All Steps have completed executing"
    pods = [pod async for pod in tekton_kube.list(Pod, namespace=execution)]
    assert sorted(pod.metadata.labels["tekton.dev/pipelineTask"] for pod in pods) == ["check", "remediate"]
    assert {pod.spec.nodeName for pod in pods} == {NODE_NAME}
    assert {pod.status.phase for pod in pods} == {"Succeeded"}
    assert "failureDetails" not in status


async def test_a_step_that_exits_1_fails_the_execution_with_its_task(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    status, pr, execution = await run_to_phase(
        tekton_kube, tekton_cluster.plane.kubeconfig, bundles["fail-step"], "Failed"
    )
    runs = await taskruns(tekton_kube, execution)
    assert succeeded(runs["check"])["reason"] == "Succeeded"
    failed = succeeded(runs["remediate"])
    assert (failed["status"], failed["reason"]) == ("False", "Failed")
    assert failed["message"].startswith('"step-restart" exited with code 1')
    steps = {step["name"]: step["terminated"]["exitCode"] for step in runs["remediate"]["status"]["steps"]}
    assert steps == {"restart": 1, "verify": 0}
    pr_condition = succeeded(pr)
    assert (pr_condition["status"], pr_condition["reason"]) == ("False", "Failed")
    assert pr_condition["message"] == "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0"

    details = status["failureDetails"]
    print(f"real Tekton step failure -> failureDetails: {details}")
    assert details["reason"] == "TaskFailed"
    assert details["message"] == failed["message"]  # the TaskRun's words, not the PipelineRun's count
    assert details["failedTaskName"] == runs["remediate"]["metadata"]["name"]
    assert details["failedTaskIndex"] == 1
    assert details["exitCode"] == 1
    assert details["wasExecutionFailure"] is True


async def test_a_bundle_that_does_not_exist_fails_the_execution_before_it_runs(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient
) -> None:
    missing = f"{tekton_cluster.registry}/workflows/missing:1.0.0"
    status, pr, execution = await run_to_phase(tekton_kube, tekton_cluster.plane.kubeconfig, missing, "Failed")
    pr_condition = succeeded(pr)
    print(f"real Tekton missing bundle -> PipelineRun {pr_condition}; failureDetails: {status['failureDetails']}")
    assert (pr_condition["status"], pr_condition["reason"]) == ("False", "CouldntGetPipeline")
    assert "workflows/missing" in pr_condition["message"]
    assert await taskruns(tekton_kube, execution) == {}
    details = status["failureDetails"]
    assert details["message"] == pr_condition["message"]
    assert details["failedTaskName"] == ""
    # Nothing ran: a configuration error before execution (Tekton set startTime before resolving).
    assert details["reason"] == "ConfigurationError"
    assert "wasExecutionFailure" not in details


async def test_a_step_killed_for_memory_fails_the_execution(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    status, pr, execution = await run_to_phase(
        tekton_kube, tekton_cluster.plane.kubeconfig, bundles["oom-step"], "Failed"
    )
    runs = await taskruns(tekton_kube, execution)
    failed = succeeded(runs["remediate"])
    assert (failed["reason"], failed["message"]) == ("Failed", '"step-restart" exited with code 137: OOMKilled')
    pr_condition = succeeded(pr)
    assert pr_condition["message"] == "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0"
    details = status["failureDetails"]
    print(f"real Tekton OOM -> TaskRun {failed}; failureDetails: {details}")
    assert details["failedTaskName"] == runs["remediate"]["metadata"]["name"]
    assert details["exitCode"] == 137
    assert details["reason"] == "OOMKilled"
    assert details["wasExecutionFailure"] is True


async def test_a_missing_service_account_fails_the_execution_at_pod_creation(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    source, execution = await create_namespace(tekton_kube, "src"), await create_namespace(tekton_kube, "exec")
    target = f"{source}/deployment/app"
    async with running(tekton_cluster.plane.kubeconfig, settings_for(execution), ("executor",)):
        await create_wfe(tekton_kube, "wfe-real", source, target, containerImage=bundles["succeed"])
        status = await wait_phase(tekton_kube, "wfe-real", source, "Failed", timeout=_RUN_TIMEOUT)
    pr = await pipelinerun(tekton_kube, build_lock_name(target), execution)
    runs = await taskruns(tekton_kube, execution)
    failed = succeeded(runs["check"])
    print(
        f"real Tekton missing ServiceAccount -> TaskRun {failed}; PipelineRun {succeeded(pr)}; "
        f"failureDetails: {status['failureDetails']}"
    )
    assert (failed["status"], failed["reason"]) == ("False", "PodCreationFailed")
    assert f'serviceaccounts "{_RUNNER_SA}" not found' in failed["message"]
    assert succeeded(pr)["reason"] == "Failed"
    details = status["failureDetails"]
    assert details["failedTaskName"] == runs["check"]["metadata"]["name"]
    # No pod, no step: a configuration error, and no person needs to review before another run.
    assert (details["reason"], details["message"]) == ("ConfigurationError", failed["message"])
    assert "wasExecutionFailure" not in details


async def test_a_task_past_its_timeout_fails_the_execution_as_deadline_exceeded(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    status, pr, execution = await run_to_phase(
        tekton_kube, tekton_cluster.plane.kubeconfig, bundles["hang-3s"], "Failed"
    )
    runs = await taskruns(tekton_kube, execution)
    failed = succeeded(runs["remediate"])
    details = status["failureDetails"]
    print(f"real Tekton task timeout -> TaskRun {failed}; PipelineRun {succeeded(pr)}; failureDetails: {details}")
    assert (failed["status"], failed["reason"]) == ("False", "TaskRunTimeout")
    assert failed["message"] == f'TaskRun "{runs["remediate"]["metadata"]["name"]}" failed to finish within "3s"'
    assert succeeded(pr)["reason"] == "Failed"
    assert (details["reason"], details["message"]) == ("DeadlineExceeded", failed["message"])
    assert details["failedTaskName"] == runs["remediate"]["metadata"]["name"]
    assert details["wasExecutionFailure"] is True  # its step had started: the target may have changed


async def test_an_image_that_cannot_be_pulled_fails_the_execution_before_it_runs(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    status, _, execution = await run_to_phase(
        tekton_kube, tekton_cluster.plane.kubeconfig, bundles["image-pull"], "Failed"
    )
    runs = await taskruns(tekton_kube, execution)
    assert sorted(runs) == ["check"]  # the first task: nothing ran
    failed = succeeded(runs["check"])
    details = status["failureDetails"]
    print(f"real Tekton image pull -> TaskRun {failed}; failureDetails: {details}")
    assert (failed["status"], failed["reason"]) == ("False", "TaskRunImagePullFailed")
    assert "failed to pull the image" in failed["message"]
    assert (details["reason"], details["message"]) == ("ImagePullBackOff", failed["message"])
    assert details["failedTaskName"] == runs["check"]["metadata"]["name"]
    # Tekton marks the steps terminated with exit code 1; none ran, so no review is needed before a retry.
    assert "exitCode" not in details
    assert "wasExecutionFailure" not in details


async def test_a_pipelinerun_deleted_while_running_fails_the_execution(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    async with remediating(tekton_cluster, tekton_kube, bundles["hang"]) as (source, execution, lock):
        await tekton_kube.delete(PipelineRunResource, lock, namespace=execution)
        status = await wait_phase(tekton_kube, "wfe-real", source, "Failed", timeout=_RUN_TIMEOUT)
    details = status["failureDetails"]
    assert (details["reason"], details["message"]) == ("Unknown", "PipelineRun was deleted externally")

    async def collected() -> bool:  # the real garbage collector removes its TaskRuns and pods
        pods = [pod async for pod in tekton_kube.list(Pod, namespace=execution)]
        return not pods and not await taskruns(tekton_kube, execution)

    await eventually(collected, timeout=_RUN_TIMEOUT, what=f"TaskRuns and pods of {execution}/{lock} removed")


async def test_a_pipelinerun_cancelled_by_a_person_fails_the_execution_as_it_ran(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    async with remediating(tekton_cluster, tekton_kube, bundles["hang"]) as (source, execution, lock):
        await tekton_kube.patch(
            PipelineRunResource,
            lock,
            {"spec": {"status": "Cancelled"}},
            namespace=execution,
            patch_type=PatchType.MERGE,
        )
        status = await wait_phase(tekton_kube, "wfe-real", source, "Failed", timeout=_RUN_TIMEOUT)
    pr_condition = succeeded(await pipelinerun(tekton_kube, lock, execution))

    async def taskrun_cancelled() -> dict[str, Any] | None:  # Tekton cancels the TaskRuns after the run
        runs = await taskruns(tekton_kube, execution)
        return runs if succeeded(runs["remediate"]).get("status") == "False" else None

    runs = await eventually(taskrun_cancelled, timeout=_RUN_TIMEOUT, what="the remediate TaskRun cancelled")
    cancelled = succeeded(runs["remediate"])
    details = status["failureDetails"]
    print(f"real Tekton cancel -> TaskRun {cancelled}; PipelineRun {pr_condition}; failureDetails: {details}")
    assert (pr_condition["status"], pr_condition["reason"]) == ("False", "Cancelled")
    assert pr_condition["message"] == f'PipelineRun "{lock}" was cancelled'
    assert (cancelled["status"], cancelled["reason"]) == ("False", "TaskRunCancelled")
    assert cancelled["message"].startswith(f'TaskRun "{runs["remediate"]["metadata"]["name"]}" was cancelled.')
    # Someone stopped it: no task failed, and no exit code is the workflow's own.
    assert (details["reason"], details["message"]) == ("Unknown", pr_condition["message"])
    assert (details["failedTaskName"], "exitCode" in details) == ("", False)
    assert details["wasExecutionFailure"] is True  # its step had started: the target may have changed


async def test_tekton_crashing_mid_run_runs_the_workflow_once(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    audit = MemoryAuditSink()
    async with remediating(tekton_cluster, tekton_kube, bundles["slow"], audit) as (source, execution, lock):
        uid = (await pipelinerun(tekton_kube, lock, execution))["metadata"]["uid"]
        restart = crash_controller(tekton_cluster.plane)

        async def pod_finished() -> bool:  # the kubelet goes on without Tekton
            pods = [pod async for pod in tekton_kube.list(Pod, namespace=execution)]
            return any(
                p.metadata.labels["tekton.dev/pipelineTask"] == "remediate" and p.status.phase == "Succeeded"
                for p in pods
            )

        await eventually(pod_finished, timeout=_RUN_TIMEOUT, what="the remediate pod finished while Tekton was down")
        assert (await wfe_status(tekton_kube, "wfe-real", source))["phase"] == "Running"
        await asyncio.to_thread(restart)
        status = await wait_phase(tekton_kube, "wfe-real", source, "Completed", timeout=_RUN_TIMEOUT)
    assert "failureDetails" not in status
    pipelineruns = [body async for body in tekton_kube.list(PipelineRunResource, namespace=execution)]
    assert [(p.metadata.name, p.metadata.uid) for p in pipelineruns] == [(lock, uid)]  # created once
    runs = await taskruns(tekton_kube, execution)
    assert sorted(runs) == ["check", "remediate"]  # each task ran once
    pods = [pod async for pod in tekton_kube.list(Pod, namespace=execution)]
    assert len(pods) == 2
    assert len(audit.of_type("workflow.started", "wfe-real")) == 1
    assert len(audit.of_type("workflow.completed", "wfe-real")) == 1


# -- whole remediations: the orchestrator and the executor on real Tekton ---------------------------


async def remediate(
    tekton_cluster: TektonCluster, kube: AsyncClient, source: str, execution: str, requests: list[tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """Create each (request, bundle) in turn on one target, each once the one before has ended; the
    requests' final statuses. Cooldowns are 1 s, so the lock is free again by the next request."""
    settings = settings_for(execution, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "0s"})
    target = {"kind": "Deployment", "name": "api", "namespace": source}
    ended: dict[str, dict[str, Any]] = {}
    async with running(tekton_cluster.plane.kubeconfig, settings, ("orchestrator", "executor")):
        for name, bundle in requests:
            await create_rr(kube, rr_manifest(name, source, target=target, bundle=bundle))
            ended[name] = await wait_rr_phase(
                kube, name, source, "Completed", "Failed", "Blocked", timeout=_RUN_TIMEOUT
            )
            if ended[name]["overallPhase"] != "Blocked":
                await eventually(
                    lambda: lock_released(kube, build_lock_name(f"{source}/Deployment/api"), execution),
                    timeout=_RUN_TIMEOUT,
                    what="the lock released and its TaskRuns and pods collected",
                )
    return ended


async def lock_released(kube: AsyncClient, lock: str, execution: str) -> bool:
    """The PipelineRun deleted after the cooldown; the real garbage collector removes its TaskRuns and pods."""
    if await get_or_none(kube, PipelineRunResource, lock, execution) is not None:
        return False
    pods = [pod async for pod in kube.list(Pod, namespace=execution)]
    return not pods and not await taskruns(kube, execution)


async def test_a_remediation_on_real_tekton_completes_and_releases_the_lock(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    source, execution = await namespaces(tekton_kube)
    ended = await remediate(tekton_cluster, tekton_kube, source, execution, [("rr-ok", bundles["succeed"])])
    assert (ended["rr-ok"]["overallPhase"], ended["rr-ok"]["outcome"]) == ("Completed", "Remediated")


async def test_a_step_failure_on_real_tekton_holds_the_target_for_a_person(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    source, execution = await namespaces(tekton_kube)
    requests = [("rr-fail", bundles["fail-step"]), ("rr-next", bundles["succeed"])]
    ended = await remediate(tekton_cluster, tekton_kube, source, execution, requests)
    failed = ended["rr-fail"]
    assert (failed["overallPhase"], failed["failurePhase"], failed["requiresManualReview"]) == (
        "Failed",
        "workflow_execution",
        True,
    )
    wfe = await wfe_status(tekton_kube, "we-rr-fail", source)
    assert (wfe["failureDetails"]["reason"], wfe["failureDetails"]["wasExecutionFailure"]) == ("TaskFailed", True)
    # The run may have changed the target: the next request does not run until a person clears it.
    assert (ended["rr-next"]["overallPhase"], ended["rr-next"]["skipReason"]) == ("Failed", "PreviousExecutionFailed")
    assert await get_or_none(tekton_kube, WorkflowExecutionResource, "we-rr-next", source) is None


async def test_an_image_pull_failure_on_real_tekton_backs_the_target_off(
    tekton_cluster: TektonCluster, tekton_kube: AsyncClient, bundles: dict[str, str]
) -> None:
    source, execution = await namespaces(tekton_kube)
    requests = [("rr-pull", bundles["image-pull"]), ("rr-next", bundles["succeed"])]
    ended = await remediate(tekton_cluster, tekton_kube, source, execution, requests)
    assert (ended["rr-pull"]["overallPhase"], ended["rr-pull"]["failurePhase"]) == ("Failed", "workflow_execution")
    assert not ended["rr-pull"].get("requiresManualReview")  # nothing ran
    wfe = await wfe_status(tekton_kube, "we-rr-pull", source)
    assert wfe["failureDetails"]["reason"] == "ImagePullBackOff"
    # Failed before executing: the next request waits out the back-off instead of needing a person.
    assert (ended["rr-next"]["overallPhase"], ended["rr-next"]["blockReason"]) == ("Blocked", "ExponentialBackoff")
