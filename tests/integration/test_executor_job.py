"""The executor's Job engine against the real API server, on a control plane of its own where the test
plays the Job controller, the kubelet and the garbage collector to pin each status exactly
(test_job_engine_cluster.py runs a Job on the real ones)."""

from datetime import timedelta
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import JobResource, PipelineRunResource
from tests.integration.executor_support import (
    condition,
    create_wfe,
    parse_time,
    rfc3339,
    wait_phase,
    wait_status,
)
from tests.integration.harness import (
    OffsetClock,
    create_execution_namespace,
    eventually,
    get_or_none,
    hold_lock,
    running,
    settings_for,
    settled,
)
from tests.integration.job_support import (  # a control plane where the tests play the Job controller
    BACKOFF,
    DEADLINE,
    complete_job,
    create_job_pod,
    fail_job,
    job_body,
    play_garbage_collector,
    played_kube,  # noqa: F401 - the fixture `kube`
    played_kubeconfig,  # noqa: F401 - the fixture `kubeconfig`
    pod_status,
    start_job,
)

IMAGE = "registry.example/workflows/restart-job:1.0.0"
COMMAND = ["/bin/restart", "--graceful"]


def job_spec(**ref: Any) -> dict[str, Any]:
    """WFE spec keys of a job-engine execution, as the orchestrator snapshots them."""
    return {
        "executionEngine": "job",
        "workflowRef": {
            "workflowId": "restart-pod",
            "version": "1.0.0",
            "containerImage": IMAGE,
            "command": COMMAND,
            **ref,
        },
        "parameters": {"REPLICAS": "3", "NAMESPACE": "production"},
    }


async def wait_job(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    async def probe() -> Any:
        return await get_or_none(kube, JobResource, name, namespace)

    return (await eventually(probe, what=f"Job {namespace}/{name}")).to_dict()  # type: ignore[no-any-return]


async def wait_released(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    """The Job deleted in the foreground: it waits for the garbage collector, its pods first."""

    async def probe() -> dict[str, Any] | None:
        found = await get_or_none(kube, JobResource, name, namespace)
        body: dict[str, Any] | None = found.to_dict() if found is not None else None
        return body if body and body["metadata"].get("deletionTimestamp") else None

    return await eventually(probe, what=f"Job {namespace}/{name} deleted")


async def test_job_is_created_mirrored_to_completion_and_released(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit, clock = MemoryAuditSink(), OffsetClock()
    target = f"{namespace}/deployment/test-app"
    lock = build_lock_name(target)
    settings = settings_for(exec_ns, execution={"cooldown": "2m"})
    async with running(kubeconfig, settings, ("executor",), audit=audit, clock=clock) as manager:
        await create_wfe(kube, "wfe-a", namespace, target, **job_spec(activeDeadline="10m"))
        status = await wait_phase(kube, "wfe-a", namespace, "Running")
        assert status["pipelineRunRef"]["name"] == lock
        assert condition(status, "TektonPipelineCreated")["message"] == f"Created Job {exec_ns}/{lock}"

        job = await wait_job(kube, lock, exec_ns)
        assert job["metadata"]["labels"] == {
            "kubernaut.ai/workflow-execution": "wfe-a",
            "kubernaut.ai/workflow-id": "restart-pod",
            "kubernaut.ai/target-resource": f"{namespace}__deployment__test-app",
            "kubernaut.ai/source-namespace": namespace,
        }
        assert job["metadata"]["annotations"] == {"kubernaut.ai/target-resource": target}
        spec = job["spec"]
        assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"], spec["activeDeadlineSeconds"]) == (0, 86400, 600)
        pod_spec = spec["template"]["spec"]
        assert (pod_spec["restartPolicy"], pod_spec["serviceAccountName"]) == ("Never", "kubernaut-workflow-runner")
        [container] = pod_spec["containers"]
        assert (container["name"], container["image"], container["command"]) == ("workflow", IMAGE, COMMAND)
        assert container["env"] == [
            {"name": "NAMESPACE", "value": "production"},
            {"name": "REPLICAS", "value": "3"},
            {"name": "TARGET_RESOURCE", "value": target},
        ]
        assert await get_or_none(kube, PipelineRunResource, lock, exec_ns) is None

        # The Job controller starts it, the pod runs; then it succeeds 90 s after the start.
        started = parse_time(status["startTime"])
        await start_job(kube, lock, exec_ns, started)
        await create_job_pod(kube, job, pod_status("Running", {"running": {"startedAt": rfc3339(started)}}, IMAGE))
        await wait_status(
            kube,
            "wfe-a",
            namespace,
            lambda s: condition(s, "TektonPipelineRunning").get("message") == f"Job executing (pod {lock}-x7k2p)",
            "the running pod mirrored",
        )
        finished = started + timedelta(seconds=90)
        await complete_job(kube, lock, exec_ns, started, finished)
        status = await wait_phase(kube, "wfe-a", namespace, "Completed")
        assert (status["completionTime"], status["duration"]) == (rfc3339(finished), "1m30s")
        assert "failureDetails" not in status
        assert len(audit.of_type("workflow.completed", "wfe-a")) == 1

        # The lock is held for the cooldown, then deleted in the foreground.
        await settled(manager)
        assert (await job_body(kube, lock, exec_ns))["metadata"].get("deletionTimestamp") is None
        clock.advance(300)  # the completion lies 90 s after the real start: 2 min later, and more
        # Its cooldown pass is due in 2 real minutes: any event of the Job wakes the WFE sooner.
        await kube.patch(
            JobResource, lock, {"metadata": {"labels": {"poke": "1"}}}, namespace=exec_ns, patch_type=PatchType.MERGE
        )
        deleting = await wait_released(kube, lock, exec_ns)
        assert deleting["metadata"]["finalizers"] == ["foregroundDeletion"]
        await play_garbage_collector(kube, lock, exec_ns)

        async def gone() -> bool:
            return await get_or_none(kube, JobResource, lock, exec_ns) is None

        await eventually(gone, what="Job gone")


async def run_to_failure(
    kube: AsyncClient, kubeconfig: Path, namespace: str, fail: Any
) -> tuple[dict[str, Any], str, str]:
    """A job-engine WFE whose Job `fail(job, exec_ns, started)` fails; its final status."""
    exec_ns = await create_execution_namespace(kube)
    target = f"{namespace}/deployment/test-app"
    lock = build_lock_name(target)
    async with running(kubeconfig, settings_for(exec_ns), ("executor",)):
        await create_wfe(kube, "wfe-f", namespace, target, **job_spec())
        status = await wait_phase(kube, "wfe-f", namespace, "Running")
        job = await wait_job(kube, lock, exec_ns)
        started = parse_time(status["startTime"])
        await start_job(kube, lock, exec_ns, started)
        await fail(job, exec_ns, started)
        return await wait_phase(kube, "wfe-f", namespace, "Failed"), exec_ns, lock


async def test_backoff_limit_exceeded_reads_the_pods_exit_code(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    async def fail(job: dict[str, Any], exec_ns: str, started: Any) -> None:
        state = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": rfc3339(started),
                "finishedAt": rfc3339(started + timedelta(seconds=20)),
            }
        }
        await create_job_pod(kube, job, pod_status("Failed", state, IMAGE))
        await fail_job(kube, job["metadata"]["name"], exec_ns, started, started + timedelta(seconds=21), BACKOFF)

    status, _, lock = await run_to_failure(kube, kubeconfig, namespace, fail)
    details = status["failureDetails"]
    assert (details["reason"], details["exitCode"], details["failedTaskName"], details["failedTaskIndex"]) == (
        "TaskFailed",
        1,
        lock,
        0,
    )
    assert (
        details["message"]
        == "Job has reached the specified backoff limit; container workflow exited with code 1 (Error)"
    )
    assert details["wasExecutionFailure"] is True
    assert condition(status, "TektonPipelineComplete")["reason"] == "TaskFailed"


async def test_deadline_exceeded_fails_with_its_reason(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    async def fail(job: dict[str, Any], exec_ns: str, started: Any) -> None:
        # The pod was deleted by the Job controller at the deadline and is gone.
        await fail_job(kube, job["metadata"]["name"], exec_ns, started, started + timedelta(minutes=10), DEADLINE)

    status, _, _ = await run_to_failure(kube, kubeconfig, namespace, fail)
    details = status["failureDetails"]
    assert (details["reason"], details["message"]) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    assert "exitCode" not in details
    assert details["wasExecutionFailure"] is True
    assert condition(status, "TektonPipelineComplete")["reason"] == "DeadlineExceeded"


async def test_image_that_cannot_be_pulled_fails_before_execution_and_frees_the_target(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    async def fail(job: dict[str, Any], exec_ns: str, started: Any) -> None:
        waiting = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{IMAGE}"'}}
        await create_job_pod(kube, job, pod_status("Pending", waiting, IMAGE))

    status, exec_ns, lock = await run_to_failure(kube, kubeconfig, namespace, fail)
    details = status["failureDetails"]
    assert details["reason"] == "ImagePullBackOff"
    assert "wasExecutionFailure" not in details
    created = condition(status, "TektonPipelineCreated")
    assert (created["status"], created["reason"]) == ("False", "ImagePullFailed")
    assert created["message"].startswith(f"Failed to start Job: Job {lock}: container workflow cannot pull image")
    # Released at once, not after the cooldown: the Job would wait for the image forever.
    assert (await job_body(kube, lock, exec_ns))["metadata"].get("deletionTimestamp")


async def test_a_pipelinerun_of_another_execution_is_the_lock_for_a_job_too(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = f"{namespace}/deployment/test-app"
    lock = build_lock_name(target)
    await hold_lock(kube, lock, exec_ns, holder="wfe-other", source_namespace=namespace, target=target)
    async with running(kubeconfig, settings_for(exec_ns), ("executor",)):
        await create_wfe(kube, "wfe-j", namespace, target, **job_spec())
        status = await wait_phase(kube, "wfe-j", namespace, "Failed")
    details = status["failureDetails"]
    assert details["reason"] == "ExecutionRaceCondition"
    assert details["message"].startswith(
        f"Race condition: PipelineRun {lock} already exists for WorkflowExecution {namespace}/wfe-other"
    )
    assert "wasExecutionFailure" not in details
    assert await get_or_none(kube, JobResource, lock, exec_ns) is None
    assert await get_or_none(kube, PipelineRunResource, lock, exec_ns) is not None


async def test_a_create_that_finds_no_place_fails_as_configuration_error(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    missing = f"missing-{namespace}"  # an execution namespace nobody made
    async with running(kubeconfig, settings_for(missing), ("executor",)):
        await create_wfe(kube, "wfe-n", namespace, f"{namespace}/deployment/test-app", **job_spec())
        status = await wait_phase(kube, "wfe-n", namespace, "Failed")
    details = status["failureDetails"]
    assert details["reason"] == "ConfigurationError"
    assert details["message"].startswith(f"Failed to create Job in {missing}: ")
    assert details["message"].endswith("(is the job engine installed, does the namespace exist?)")
