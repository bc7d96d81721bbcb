"""The Job engine's pure parts: the Job rendered for a WFE, and the outcome read from the Job and its
pod. The fixtures are written as the Job controller (1.31+) and the kubelet write them."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from kubernaut.api.v1alpha1 import RemediationWorkflow
from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.api.v1alpha1.workflowexecution import FailureReason, WorkflowExecution
from kubernaut.domain.execution import RunOutcome
from kubernaut.domain.job import TTL_SECONDS_AFTER_FINISHED, build_job, observe_job, validate_job_spec
from kubernaut.domain.pipelinerun import build_pipelinerun, is_owned_by
from kubernaut.domain.target import build_lock_name

NOW = datetime(2025, 12, 15, 10, 5, tzinfo=UTC)
STARTED = datetime(2025, 12, 15, 10, 0, tzinfo=UTC)
TARGET = "default/deployment/test-app"
LOCK = build_lock_name(TARGET)
JOB_UID = "3f1c2a9e-6c1b-4c55-9d7e-0b5a0e7f1a01"
IMAGE = "registry.example/workflows/restart:1.0.0"


def make_wfe(**ref: Any) -> WorkflowExecution:
    workflow_ref = {"workflowId": "restart-pod", "version": "1.0.0", "containerImage": IMAGE, **ref}
    return WorkflowExecution.from_wire(
        {
            "metadata": {"name": "we-rr-1", "namespace": "team-a", "uid": "u-1"},
            "spec": {
                "remediationRequestRef": {"kind": "RemediationRequest", "name": "rr-1", "namespace": "team-a"},
                "workflowRef": workflow_ref,
                "executionEngine": "job",
                "targetResource": TARGET,
                "parameters": {"REPLICAS": "3", "NAMESPACE": "default"},
            },
        }
    )


def render(wfe: WorkflowExecution) -> dict[str, Any]:
    return build_job(wfe, namespace="kubernaut-workflows", service_account="kubernaut-workflow-runner")


# -- rendering -------------------------------------------------------------------------------------


def test_the_job_is_the_lock_with_the_pipelineruns_labels() -> None:
    wfe = make_wfe(command=["/bin/restart", "--all"])
    job = render(wfe)
    pipelinerun = build_pipelinerun(wfe, namespace="kubernaut-workflows", service_account="kubernaut-workflow-runner")
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"] == pipelinerun["metadata"]
    assert job["metadata"]["name"] == LOCK
    assert is_owned_by(job, wfe)


def test_job_spec_runs_one_pod_once_with_the_parameters_as_env() -> None:
    job = render(make_wfe(command=["/bin/restart", "--all"], activeDeadline="10m"))
    assert job["spec"] == {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
        "activeDeadlineSeconds": 600,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "kubernaut-workflow-runner",
                "containers": [
                    {
                        "name": "workflow",
                        "image": IMAGE,
                        "command": ["/bin/restart", "--all"],
                        "env": [
                            {"name": "NAMESPACE", "value": "default"},
                            {"name": "REPLICAS", "value": "3"},
                            {"name": "TARGET_RESOURCE", "value": TARGET},
                        ],
                    }
                ],
            }
        },
    }


def test_without_active_deadline_the_job_has_none() -> None:
    assert "activeDeadlineSeconds" not in render(make_wfe(command=["run"]))["spec"]


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ({"command": ["run"]}, None),
        ({"command": ["run"], "activeDeadline": "1h30m"}, None),
        ({}, "workflowRef.command is required for execution engine job"),
        ({"command": []}, "workflowRef.command is required for execution engine job"),
        ({"command": ["run"], "activeDeadline": "400ms"}, "workflowRef.activeDeadline '400ms' must be at least 1s"),
    ],
)
def test_validation_of_a_job_wfe(ref: dict[str, Any], problem: str | None) -> None:
    assert validate_job_spec(make_wfe(**ref)) == problem


def test_wfe_engine_defaults_to_tekton() -> None:
    wfe = make_wfe()
    body = wfe.to_wire()
    del body["spec"]["executionEngine"]
    assert WorkflowExecution.from_wire(body).spec.execution_engine is ExecutionEngine.TEKTON


# -- the catalog entry ----------------------------------------------------------------------------


def catalog_entry(execution: dict[str, Any] | None) -> RemediationWorkflow:
    spec: dict[str, Any] = {"workflowId": "restart-pod", "version": "1", "containerImage": IMAGE}
    if execution is not None:
        spec["execution"] = execution
    return RemediationWorkflow.from_wire({"metadata": {"name": "restart"}, "spec": spec})


def test_catalog_entry_engine_defaults_to_tekton() -> None:
    assert catalog_entry(None).spec.execution is None
    settings = catalog_entry({}).spec.execution
    assert settings is not None
    assert settings.engine is ExecutionEngine.TEKTON


def test_catalog_job_entry_carries_command_and_deadline() -> None:
    settings = catalog_entry({"engine": "job", "command": ["run"], "activeDeadline": "10m"}).spec.execution
    assert settings is not None
    assert (settings.engine, settings.command, settings.active_deadline) == (ExecutionEngine.JOB, ["run"], "10m")


@pytest.mark.parametrize(
    ("execution", "message"),
    [
        ({"engine": "job"}, "execution.command is required when execution.engine is job"),
        ({"engine": "tekton", "command": ["run"]}, "apply only to execution.engine job"),
        ({"activeDeadline": "10m"}, "apply only to execution.engine job"),
        ({"engine": "job", "command": ["run"], "activeDeadline": "ten minutes"}, "String should match pattern"),
        ({"engine": "argo"}, "Input should be 'tekton' or 'job'"),
    ],
)
def test_catalog_entry_refuses_what_cannot_run(execution: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        catalog_entry(execution)


# -- outcome: fixtures as the Job controller and the kubelet write them ----------------------------


def job(*conditions: tuple[str, str, str], **status: Any) -> dict[str, Any]:
    """The Job with its status; each condition (type, reason, message) is True."""
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": LOCK, "namespace": "kubernaut-workflows", "uid": JOB_UID},
        "status": {"startTime": "2025-12-15T10:00:00Z", "uncountedTerminatedPods": {}, **status},
    }
    if conditions:
        body["status"]["conditions"] = [
            {
                "type": type_,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": "2025-12-15T10:04:00Z",
                "lastTransitionTime": "2025-12-15T10:04:00Z",
            }
            for type_, reason, message in conditions
        ]
    return body


def pod(state: dict[str, Any], *, phase: str, owner: str = JOB_UID, **meta: Any) -> dict[str, Any]:
    started = "running" in state or "terminated" in state
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{LOCK}-x7k2p",
            "namespace": "kubernaut-workflows",
            "creationTimestamp": "2025-12-15T10:00:00Z",
            "labels": {
                "batch.kubernetes.io/controller-uid": owner,
                "batch.kubernetes.io/job-name": LOCK,
                "controller-uid": owner,
                "job-name": LOCK,
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": LOCK,
                    "uid": owner,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            **meta,
        },
        "spec": {"containers": [{"name": "workflow", "image": IMAGE}], "restartPolicy": "Never"},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "workflow",
                    "image": IMAGE,
                    "imageID": "" if not started else f"{IMAGE}@sha256:{'a' * 64}",
                    "ready": "running" in state,
                    "restartCount": 0,
                    "started": "running" in state,
                    "state": state,
                }
            ],
        },
    }


def terminated(exit_code: int, reason: str) -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": "2025-12-15T10:00:05Z",
            "finishedAt": "2025-12-15T10:03:55Z",
            "containerID": "containerd://0123",
        }
    }


RUNNING = {"running": {"startedAt": "2025-12-15T10:00:05Z"}}
BACKOFF = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS = ("CompletionsReached", "Reached expected number of succeeded pods")


def observe(job_body: dict[str, Any], *pods: dict[str, Any]) -> Any:
    return observe_job(job_body, list(pods), start_time=STARTED, now=NOW, workflow_id="restart-pod", target=TARGET)


def test_created_job_without_pod_is_running() -> None:
    seen = observe(job(active=1, ready=0, terminating=0))
    assert seen.outcome is RunOutcome.RUNNING
    assert seen.message == "Job created; waiting for its pod to start"
    assert (seen.summary.status, seen.summary.total_tasks) == ("Unknown", 1)


def test_running_container_is_running() -> None:
    seen = observe(job(active=1, ready=1, terminating=0), pod(RUNNING, phase="Running"))
    assert (seen.outcome, seen.message) == (RunOutcome.RUNNING, f"Job executing (pod {LOCK}-x7k2p)")


@pytest.mark.parametrize(
    "conditions",
    [
        [("SuccessCriteriaMet", *COMPLETIONS), ("Complete", *COMPLETIONS)],
        [("SuccessCriteriaMet", *COMPLETIONS)],  # pods still terminating: the verdict is final
        [("Complete", *COMPLETIONS)],  # before 1.31
    ],
)
def test_success_criteria_met_or_complete_succeeds(conditions: list[tuple[str, str, str]]) -> None:
    extra = {"completionTime": "2025-12-15T10:04:00Z"} if conditions[-1][0] == "Complete" else {}
    seen = observe(
        job(*conditions, succeeded=1, ready=0, terminating=0, **extra),
        pod(terminated(0, "Completed"), phase="Succeeded"),
    )
    assert seen.outcome is RunOutcome.SUCCEEDED
    assert seen.completion_time == datetime(2025, 12, 15, 10, 4, tzinfo=UTC)
    assert (seen.summary.status, seen.summary.reason) == ("True", "CompletionsReached")
    assert seen.failure is None


@pytest.mark.parametrize(
    "conditions",
    [[("FailureTarget", *BACKOFF), ("Failed", *BACKOFF)], [("FailureTarget", *BACKOFF)], [("Failed", *BACKOFF)]],
)
def test_backoff_limit_exceeded_with_exit_1_is_task_failed(conditions: list[tuple[str, str, str]]) -> None:
    seen = observe(job(*conditions, failed=1, ready=0, terminating=0), pod(terminated(1, "Error"), phase="Failed"))
    assert seen.outcome is RunOutcome.FAILED
    assert (seen.summary.status, seen.summary.reason) == ("False", "BackoffLimitExceeded")
    failure = seen.failure
    assert failure is not None
    assert (failure.reason, failure.exit_code, failure.failed_task_name, failure.failed_task_index) == (
        FailureReason.TASK_FAILED,
        1,
        LOCK,
        0,
    )
    assert (
        failure.message == "Job has reached the specified backoff limit; container workflow exited with code 1 (Error)"
    )
    assert failure.was_execution_failure is True
    assert failure.failed_at == NOW
    assert failure.execution_time_before_failure == "5m0s"
    assert "Reason: TaskFailed" in failure.natural_language_summary


@pytest.mark.parametrize(("exit_code", "reason"), [(137, "OOMKilled"), (137, "Error"), (1, "OOMKilled")])
def test_oom_killed_container(exit_code: int, reason: str) -> None:
    seen = observe(
        job(("FailureTarget", *BACKOFF), ("Failed", *BACKOFF), failed=1),
        pod(terminated(exit_code, reason), phase="Failed"),
    )
    assert seen.failure is not None
    assert (seen.failure.reason, seen.failure.exit_code) == (FailureReason.OOM_KILLED, exit_code)
    assert seen.failure.was_execution_failure is True


def test_deadline_exceeded_while_the_pod_terminates() -> None:
    """FailureTarget first: the Job controller is deleting the pod, which still shows the container running."""
    terminating = pod(RUNNING, phase="Running", deletionTimestamp="2025-12-15T10:04:00Z", deletionGracePeriodSeconds=30)
    seen = observe(job(("FailureTarget", *DEADLINE), active=0, terminating=1), terminating)
    assert seen.outcome is RunOutcome.FAILED
    assert seen.failure is not None
    assert (seen.failure.reason, seen.failure.exit_code) == (FailureReason.DEADLINE_EXCEEDED, None)
    assert seen.failure.message == "Job was active longer than specified deadline"
    assert seen.failure.was_execution_failure is True


def test_deadline_exceeded_after_the_pod_is_gone_may_have_run() -> None:
    seen = observe(job(("FailureTarget", *DEADLINE), ("Failed", *DEADLINE), failed=1, terminating=0))
    assert seen.failure is not None
    assert seen.failure.reason is FailureReason.DEADLINE_EXCEEDED
    assert seen.failure.was_execution_failure is True


@pytest.mark.parametrize("pods", [[], [pod(RUNNING, phase="Running", deletionTimestamp="2025-12-15T10:04:00Z")]])
def test_backoff_limit_reported_past_the_deadline_without_an_error_is_deadline_exceeded(
    pods: list[dict[str, Any]],
) -> None:
    """The sync that reached the deadline deleted the pod without a condition; the next counted it failed."""
    body = job(("FailureTarget", *BACKOFF), failed=1, terminating=len(pods))
    body["spec"] = {"activeDeadlineSeconds": 240}
    seen = observe(body, *pods)
    assert seen.failure is not None
    assert (seen.failure.reason, seen.failure.exit_code) == (FailureReason.DEADLINE_EXCEEDED, None)
    assert seen.failure.message == (
        "Job was active longer than its deadline of 240s "
        "(the Job controller said: Job has reached the specified backoff limit)"
    )


@pytest.mark.parametrize(("deadline", "state"), [(241, RUNNING), (240, terminated(1, "Error"))])
def test_backoff_limit_before_the_deadline_or_with_an_error_is_task_failed(
    deadline: int, state: dict[str, Any]
) -> None:
    body = job(("FailureTarget", *BACKOFF), failed=1)
    body["spec"] = {"activeDeadlineSeconds": deadline}
    seen = observe(body, pod(state, phase="Failed"))
    assert seen.failure is not None
    assert seen.failure.reason is FailureReason.TASK_FAILED


def test_deadline_exceeded_before_the_image_was_pulled_did_not_execute() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    seen = observe(job(("FailureTarget", *DEADLINE), terminating=1), pod(waiting, phase="Pending"))
    assert seen.failure is not None
    assert seen.failure.reason is FailureReason.DEADLINE_EXCEEDED
    assert seen.failure.was_execution_failure is None


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"])
def test_image_that_cannot_be_pulled_cannot_start(reason: str) -> None:
    waiting = {"waiting": {"reason": reason, "message": f'Back-off pulling image "{IMAGE}"'}}
    seen = observe(job(active=1, ready=0, terminating=0), pod(waiting, phase="Pending"))
    assert seen.outcome is RunOutcome.CANNOT_START
    failure = seen.failure
    assert failure is not None
    assert failure.reason is FailureReason.IMAGE_PULL_BACK_OFF
    assert failure.message == (
        f'Job {LOCK}: container workflow cannot pull image {IMAGE} ({reason}): Back-off pulling image "{IMAGE}"'
    )
    assert failure.was_execution_failure is None
    assert failure.exit_code is None


def test_container_creating_is_still_running() -> None:
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    assert observe(job(active=1), pod(waiting, phase="Pending")).outcome is RunOutcome.RUNNING


def test_pods_of_an_earlier_job_of_the_same_name_are_not_read() -> None:
    stale = pod(terminated(1, "Error"), phase="Failed", owner="uid-of-an-earlier-job")
    seen = observe(job(active=1), stale)
    assert (seen.outcome, seen.message) == (RunOutcome.RUNNING, "Job created; waiting for its pod to start")


def test_conditions_that_are_not_true_decide_nothing() -> None:
    body = job(active=1)
    body["status"]["conditions"] = [{"type": "Suspended", "status": "False", "reason": "JobResumed"}]
    assert observe(body, pod(RUNNING, phase="Running")).outcome is RunOutcome.RUNNING
