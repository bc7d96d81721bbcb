"""The Kubernetes Job that runs a WorkflowExecution of engine `job`: rendering it, and reading its
outcome from the Job's conditions and its pod's container state.

The Job carries the lock name and the same labels and annotations as a PipelineRun, so that the
lock index and owner parsing do not care which engine holds a target. Its outcome mirrors the Job
controller's verdict: `SuccessCriteriaMet` / `Complete` succeed, `FailureTarget` / `Failed` fail.
Since Kubernetes 1.31 the first of each pair comes while the pods still terminate and the second
once they are gone; the verdict never changes between the two, so the first one decides (and the
pod, still there, tells whether the workflow container ran). The lock itself lives on until the
Job is deleted after the cooldown, pods first.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubernaut.api.v1alpha1.workflowexecution import (
    FailureDetails,
    FailureReason,
    PipelineRunStatusSummary,
    WorkflowExecution,
)
from kubernaut.domain.duration import format_go_duration, parse_go_duration, round_seconds
from kubernaut.domain.execution import RunObservation, RunOutcome, parse_time
from kubernaut.domain.failure import build_pre_execution_failure, build_summary
from kubernaut.domain.pipelinerun import build_lock_metadata

JOB_API_VERSION = "batch/v1"
CONTAINER = "workflow"
# Set by the Job controller on its pods (the legacy `job-name` too, on every version we support).
LABEL_JOB_NAME = "job-name"
# Only a fallback: the executor deletes the Job after the cooldown.
TTL_SECONDS_AFTER_FINISHED = 24 * 3600
_IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName"})
_OOM_EXIT_CODE = 137  # SIGKILL, which is how the kernel's OOM killer ends a container


def parse_active_deadline(text: str) -> int:
    """activeDeadlineSeconds from a Go duration; ValueError unless it is at least one second."""
    seconds = round_seconds(parse_go_duration(text))
    if seconds < 1:
        raise ValueError(f"activeDeadline {text!r} must be at least 1s")
    return seconds


def build_job(wfe: WorkflowExecution, *, namespace: str, service_account: str) -> dict[str, Any]:
    """The Job for a WFE: one pod, never retried, the parameters as env vars (sorted, then TARGET_RESOURCE)."""
    spec = wfe.spec
    ref = spec.workflow_ref
    env = [{"name": key, "value": value} for key, value in sorted((spec.parameters or {}).items())]
    env.append({"name": "TARGET_RESOURCE", "value": spec.target_resource})
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": service_account,
                "containers": [
                    {"name": CONTAINER, "image": ref.container_image, "command": list(ref.command or []), "env": env}
                ],
            }
        },
    }
    if ref.active_deadline:
        job_spec["activeDeadlineSeconds"] = parse_active_deadline(ref.active_deadline)
    return {
        "apiVersion": JOB_API_VERSION,
        "kind": "Job",
        "metadata": build_lock_metadata(wfe, namespace),
        "spec": job_spec,
    }


def validate_job_spec(wfe: WorkflowExecution) -> str | None:
    """What stops a job-engine WFE from running, as a message for people; None when it may run."""
    ref = wfe.spec.workflow_ref
    if not ref.command:
        return "workflowRef.command is required for execution engine job"
    if ref.active_deadline:
        try:
            parse_active_deadline(ref.active_deadline)
        except ValueError as exc:
            return f"workflowRef.{exc}"
    return None


# -- reading the outcome ---------------------------------------------------------------------------


def _true_condition(job: Mapping[str, Any], *types: str) -> Mapping[str, Any] | None:
    """The first of `types` the Job has with status True (in the order asked)."""
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if isinstance(c, Mapping)]
    for type_ in types:
        for condition in conditions:
            if condition.get("type") == type_ and condition.get("status") == "True":
                return condition
    return None


def _pods_of(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods this Job made (its controller reference), oldest first: a Job of the same name made
    earlier may have left pods behind."""
    uid = (job.get("metadata") or {}).get("uid")
    own = [
        pod
        for pod in pods
        if not uid
        or any(
            ref.get("uid") == uid and ref.get("controller")
            for ref in (pod.get("metadata") or {}).get("ownerReferences") or []
            if isinstance(ref, Mapping)
        )
    ]
    return sorted(own, key=lambda pod: str((pod.get("metadata") or {}).get("creationTimestamp") or ""))


def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if isinstance(s, Mapping) and s.get("name") == CONTAINER), {})


def _started(container: Mapping[str, Any]) -> bool:
    """The workflow container ran (is running, or terminated now or before)."""
    state = container.get("state") or {}
    last = container.get("lastState") or {}
    return bool(state.get("running") or state.get("terminated") or last.get("terminated"))


def _terminated(container: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = container.get("state") or {}
    found = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    return found if isinstance(found, Mapping) else None


def _exit_code(terminated: Mapping[str, Any] | None) -> int | None:
    code = terminated.get("exitCode") if terminated else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _summary(status: str, condition: Mapping[str, Any] | None) -> PipelineRunStatusSummary:
    condition = condition or {}
    return PipelineRunStatusSummary(
        status=status,
        reason=str(condition.get("reason") or "") or None,
        message=str(condition.get("message") or "") or None,
        total_tasks=1,
    )


def observe_job(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    start_time: datetime | None,
    now: datetime,
    workflow_id: str,
    target: str,
) -> RunObservation:
    """What the Job (and its pods) say about the run; a failure comes with its details."""
    name = str((job.get("metadata") or {}).get("name") or "")
    own = _pods_of(job, pods)
    succeeded = _true_condition(job, "Complete", "SuccessCriteriaMet")
    if succeeded is not None:
        status = job.get("status") or {}
        completed = parse_time(status.get("completionTime")) or parse_time(succeeded.get("lastTransitionTime"))
        return RunObservation(RunOutcome.SUCCEEDED, _summary("True", succeeded), completion_time=completed)
    failed = _true_condition(job, "Failed", "FailureTarget")
    if failed is not None:
        failure = build_job_failure(
            name,
            failed,
            own,
            start_time=start_time,
            now=now,
            workflow_id=workflow_id,
            target=target,
            past_deadline=_ran_past_deadline(job, failed),
        )
        return RunObservation(RunOutcome.FAILED, _summary("False", failed), failure=failure)
    for pod in own:
        waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL_REASONS:
            # The Job controller would wait for the image forever (or until the deadline): the run cannot start.
            image = next(
                (c.get("image") for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name") == CONTAINER),
                "",
            )
            message = f"Job {name}: container {CONTAINER} cannot pull image {image} ({waiting['reason']})" + (
                f": {waiting['message']}" if waiting.get("message") else ""
            )
            failure = build_pre_execution_failure(
                reason=FailureReason.IMAGE_PULL_BACK_OFF,
                message=message,
                now=now,
                workflow_id=workflow_id,
                target=target,
            )
            return RunObservation(RunOutcome.CANNOT_START, _summary("False", waiting), failure=failure)
    running = next((pod for pod in own if _started(_container_status(pod))), None)
    if running is not None:
        message = f"Job executing (pod {running['metadata'].get('name', '')})"
    else:
        message = "Job created; waiting for its pod to start"
    return RunObservation(RunOutcome.RUNNING, _summary("Unknown", None), message=message)


def _ran_past_deadline(job: Mapping[str, Any], condition: Mapping[str, Any]) -> int | None:
    """The Job's activeDeadlineSeconds if it failed once it had been active that long."""
    deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
    started = parse_time((job.get("status") or {}).get("startTime"))
    failed = parse_time(condition.get("lastTransitionTime"))
    if not isinstance(deadline, int) or started is None or failed is None:
        return None
    return deadline if (failed - started).total_seconds() >= deadline else None


def build_job_failure(
    name: str,
    condition: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    start_time: datetime | None,
    now: datetime,
    workflow_id: str,
    target: str,
    past_deadline: int | None = None,
) -> FailureDetails:
    """Failure details of a failed Job, in the shape a PipelineRun's have (the Job is task 0).

    A Job whose deadline passed can report BackoffLimitExceeded: when the sync that reaches the
    deadline deletes the running pod before the controller's expectations are met, it records no
    condition, and the next sync counts the deleted pod as failed, which the backoff limit checks
    first. A Job that failed past its deadline with no container ended by an error failed at its
    deadline."""
    job_reason = str(condition.get("reason") or "")
    job_message = str(condition.get("message") or "") or job_reason
    containers = [_container_status(pod) for pod in pods]
    # The pod that failed the Job: the last whose container terminated with an error, else the last.
    failing = next(
        (c for c in reversed(containers) if (_exit_code(_terminated(c)) or 0) != 0),
        containers[-1] if containers else {},
    )
    terminated = _terminated(failing)
    exit_code = _exit_code(terminated)
    container_reason = str((terminated or {}).get("reason") or "")
    message = job_message
    if job_reason == "DeadlineExceeded":
        reason = FailureReason.DEADLINE_EXCEEDED
    elif past_deadline is not None and not exit_code and container_reason != "OOMKilled":
        reason = FailureReason.DEADLINE_EXCEEDED
        message = (
            f"Job was active longer than its deadline of {past_deadline}s (the Job controller said: {job_message})"
        )
    elif container_reason == "OOMKilled" or exit_code == _OOM_EXIT_CODE:
        reason = FailureReason.OOM_KILLED
    elif terminated is not None or job_reason in ("BackoffLimitExceeded", "PodFailurePolicy"):
        reason = FailureReason.TASK_FAILED
    else:
        reason = FailureReason.UNKNOWN
    if terminated is not None:
        message += f"; container {CONTAINER} exited with code {exit_code}" + (
            f" ({container_reason})" if container_reason else ""
        )
    failed_after = format_go_duration(now - start_time) if start_time else ""
    # With its pods gone (read too late) nothing says the container did not run: assume it may have.
    ran = any(_started(c) for c in containers) if pods else True
    return FailureDetails(
        failed_task_index=0,
        failed_task_name=name,
        reason=reason,
        message=message,
        exit_code=exit_code,
        failed_at=now,
        execution_time_before_failure=failed_after,
        natural_language_summary=build_summary(workflow_id, target, reason, message, failed_after),
        was_execution_failure=ran or None,
    )
