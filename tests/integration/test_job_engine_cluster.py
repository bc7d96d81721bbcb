"""The Job engine on the local cluster as users run it: the real Job controller and kube-scheduler,
kwok as the kubelet of the fake node and the real garbage collector run the executor's Job to its end
and clean up after the lock's release. (test_executor_job.py plays them instead, to pin each status.)

kwok's stages read a pod's environment, which the Job gets from the WFE's parameters:
`FAKE_KUBELET_EXIT_CODE` makes the container exit with that code, `FAKE_KUBELET_HANG` keeps it running."""

from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType

from kubernaut.devcluster.controlplane import NODE_NAME
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import JobResource, PodResource
from tests.integration.executor_support import condition, create_wfe, wait_phase
from tests.integration.harness import (
    OffsetClock,
    create_execution_namespace,
    eventually,
    get_or_none,
    running,
    settings_for,
)
from tests.integration.test_executor_job import job_spec


async def run_to_failure(
    kube: AsyncClient, kubeconfig: Path, namespace: str, **spec: Any
) -> tuple[dict[str, Any], str]:
    """Run one Job-engine WFE until it fails: (its status, the execution namespace)."""
    exec_ns = await create_execution_namespace(kube)
    target = f"{namespace}/deployment/web"
    async with running(kubeconfig, settings_for(exec_ns), ("executor",)):
        await create_wfe(kube, "wfe-real", namespace, target, **spec)
        status = await wait_phase(kube, "wfe-real", namespace, "Failed", timeout=90)
    return status, exec_ns


def failure_condition(job: dict[str, Any]) -> dict[str, Any]:
    """The Job controller's failure: FailureTarget at once, Failed (same reason) once its pods are gone."""
    return next(c for c in job["status"]["conditions"] if c["type"] in ("FailureTarget", "Failed"))


async def job_pods(kube: AsyncClient, job: str, namespace: str) -> list[dict[str, Any]]:
    return [p.to_dict() async for p in kube.list(PodResource, namespace=namespace, labels={"job-name": job})]


async def test_a_job_runs_on_the_real_job_controller_and_its_release_removes_its_pods(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    clock = OffsetClock()
    target = f"{namespace}/deployment/web"
    lock = build_lock_name(target)
    settings = settings_for(exec_ns, execution={"cooldown": "2m"})
    async with running(kubeconfig, settings, ("executor",), clock=clock):
        await create_wfe(kube, "wfe-real", namespace, target, **job_spec())
        status = await wait_phase(kube, "wfe-real", namespace, "Completed", timeout=60)
        assert "failureDetails" not in status
        assert condition(status, "TektonPipelineComplete")["status"] == "True"
        job = (await kube.get(JobResource, lock, namespace=exec_ns)).to_dict()
        assert {c["type"] for c in job["status"]["conditions"] if c["status"] == "True"} >= {"Complete"}
        [pod] = await job_pods(kube, lock, exec_ns)
        assert (pod["spec"]["nodeName"], pod["status"]["phase"]) == (NODE_NAME, "Succeeded")

        # After the cooldown the executor deletes the Job in the foreground; the garbage collector
        # removes its pod, then the Job.
        clock.advance(300)
        await kube.patch(
            JobResource, lock, {"metadata": {"labels": {"poke": "1"}}}, namespace=exec_ns, patch_type=PatchType.MERGE
        )

        async def cleaned_up() -> bool:
            gone = await get_or_none(kube, JobResource, lock, exec_ns) is None
            return gone and not await job_pods(kube, lock, exec_ns)

        await eventually(cleaned_up, timeout=60, what=f"Job {exec_ns}/{lock} and its pod removed")


async def test_a_container_that_exits_1_fails_the_execution_with_its_exit_code(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    spec = job_spec()
    spec["parameters"] = {"FAKE_KUBELET_EXIT_CODE": "1"}
    status, exec_ns = await run_to_failure(kube, kubeconfig, namespace, **spec)
    lock = build_lock_name(f"{namespace}/deployment/web")
    job = (await kube.get(JobResource, lock, namespace=exec_ns)).to_dict()
    failed = failure_condition(job)
    print(f"real Job controller exit 1 -> Job {failed}; failureDetails: {status['failureDetails']}")
    assert (failed["status"], failed["reason"]) == ("True", "BackoffLimitExceeded")
    details = status["failureDetails"]
    assert (details["reason"], details["exitCode"], details["failedTaskName"]) == ("TaskFailed", 1, lock)
    assert details["message"] == f"{failed['message']}; container workflow exited with code 1 (Error)"
    assert details["wasExecutionFailure"] is True


async def test_a_job_past_its_deadline_fails_the_execution_as_deadline_exceeded(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    spec = job_spec(activeDeadline="2s")
    spec["parameters"] = {"FAKE_KUBELET_HANG": "true"}
    status, exec_ns = await run_to_failure(kube, kubeconfig, namespace, **spec)
    lock = build_lock_name(f"{namespace}/deployment/web")
    job = (await kube.get(JobResource, lock, namespace=exec_ns)).to_dict()
    failed = failure_condition(job)
    print(f"real Job controller deadline -> Job {failed}; failureDetails: {status['failureDetails']}")
    details = status["failureDetails"]
    assert details["reason"] == "DeadlineExceeded"
    # The Job controller says DeadlineExceeded, or BackoffLimitExceeded when the sync that reached the
    # deadline deleted the pod before its expectations were met (and the next one counted it failed).
    if failed["reason"] == "DeadlineExceeded":
        assert details["message"] == failed["message"]
    else:
        assert failed["reason"] == "BackoffLimitExceeded"
        assert (
            details["message"]
            == f"Job was active longer than its deadline of 2s (the Job controller said: {failed['message']})"
        )
    assert "exitCode" not in details
    assert details["wasExecutionFailure"] is True
