"""Failure analysis of a PipelineRun: classification, failed task, execution vs pre-execution, summary."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubernaut.api.v1alpha1.workflowexecution import FailureReason
from kubernaut.domain.failure import (
    FailedTask,
    build_execution_failure,
    build_pre_execution_failure,
    build_summary,
    classify_failure_reason,
    decide_was_execution_failure,
    find_failed_task,
    find_succeeded_condition,
)

R = FailureReason
NOW = datetime(2025, 12, 15, 10, 30, tzinfo=UTC)


# -- reason classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        # row 1: the message mentions OOM
        ("Failed", "step-run was OOMKilled", R.OOM_KILLED),
        ("Failed", "container oom", R.OOM_KILLED),
        ("Failed", "zoom meeting ended", R.UNKNOWN),  # whole words only
        ("Failed", "boom: the room was full", R.UNKNOWN),
        ("OOMKilled", "bland", R.UNKNOWN),  # row 1 reads the message only
        # row 2: timeouts and deadlines
        ("PipelineRunTimeout", 'PipelineRun "x" failed to finish within "1h0m0s"', R.DEADLINE_EXCEEDED),
        ("PipelineRunTimeout", "", R.DEADLINE_EXCEEDED),
        ("Failed", "request TIMEOUT reached", R.DEADLINE_EXCEEDED),
        ("Failed", "context deadline exceeded", R.DEADLINE_EXCEEDED),
        # row 3: permissions
        ("Failed", "pods is Forbidden: user cannot create", R.FORBIDDEN),
        ("Failed", "missing RBAC rule", R.FORBIDDEN),
        ("Failed", "Permission denied writing /data", R.FORBIDDEN),
        ("Forbidden", "bland", R.UNKNOWN),  # rows 3-6 read the message only
        # row 4: quota
        ("Failed", "exceeded quota: compute resources", R.RESOURCE_EXHAUSTED),
        ("Failed", "Resource exhausted on node", R.RESOURCE_EXHAUSTED),
        # row 5: images
        ("Failed", "step image: ImagePullBackOff", R.IMAGE_PULL_BACK_OFF),
        ("Failed", "image pull failed for bundle", R.IMAGE_PULL_BACK_OFF),
        # row 6: configuration
        ("Failed", "invalid parameter value", R.CONFIGURATION_ERROR),
        ("Failed", "bad Configuration of the pipeline", R.CONFIGURATION_ERROR),
        # row 7: task failures
        ("TaskFailed", "bland", R.TASK_FAILED),
        ("Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0", R.TASK_FAILED),
        ("Failed", "the task has failed", R.TASK_FAILED),
        ("Failed", "task cancelled", R.UNKNOWN),  # needs both `task` and `failed`
        # row 8: everything else
        ("TaskRunFailed", "bland", R.UNKNOWN),
        ("", "", R.UNKNOWN),
    ],
)
def test_each_row_of_the_classification_table(reason: str, message: str, expected: FailureReason) -> None:
    assert classify_failure_reason(reason, message) is expected


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        # Every message below matches several rows; the earliest row wins.
        ("Failed", "OOMKilled after timeout, forbidden, quota, image pull, invalid task failed", R.OOM_KILLED),
        ("PipelineRunTimeout", "forbidden quota image pull invalid task failed", R.DEADLINE_EXCEEDED),
        ("Failed", "deadline hit while forbidden", R.DEADLINE_EXCEEDED),
        ("Failed", "forbidden: exceeded quota, image pull invalid, task failed", R.FORBIDDEN),
        ("Failed", "quota reached during image pull of an invalid task that failed", R.RESOURCE_EXHAUSTED),
        ("Failed", "image pull of an invalid reference; task failed", R.IMAGE_PULL_BACK_OFF),
        ("TaskFailed", "invalid configuration; task failed", R.CONFIGURATION_ERROR),
        ("TaskFailed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0", R.TASK_FAILED),
    ],
)
def test_first_matching_row_wins(reason: str, message: str, expected: FailureReason) -> None:
    assert classify_failure_reason(reason, message) is expected


# -- the failed task -------------------------------------------------------------------------------


def taskrun(succeeded: str | None, *exit_codes: int | None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if succeeded is not None:
        status["conditions"] = [{"type": "Succeeded", "status": succeeded, "reason": "x"}]
    steps = []
    for code in exit_codes:
        steps.append({"name": "s", "running": {}} if code is None else {"name": "s", "terminated": {"exitCode": code}})
    status["steps"] = steps
    return {"metadata": {"name": "x"}, "status": status}


def ref(name: str, kind: str = "TaskRun") -> dict[str, str]:
    return {"apiVersion": "tekton.dev/v1", "kind": kind, "name": name, "pipelineTaskName": name}


@pytest.mark.parametrize(
    ("refs", "taskruns", "expected"),
    [
        pytest.param(
            [ref("tr-a"), ref("tr-b")],
            {"tr-a": taskrun("True", 0, 0), "tr-b": taskrun("False", 0, 137)},
            FailedTask(index=1, name="tr-b", exit_code=137),
            id="second-taskrun-failed-exit-137",
        ),
        pytest.param(
            [ref("run-1", "Run"), ref("cr-1", "CustomRun"), ref("tr-b")],
            {"run-1": taskrun("False", 2), "tr-b": taskrun("False", 1)},
            FailedTask(index=2, name="tr-b", exit_code=1),
            id="non-taskrun-refs-counted-in-index-but-never-chosen",
        ),
        pytest.param(
            [ref("tr-gone"), ref("tr-b")],
            {"tr-b": taskrun("False", 3)},
            FailedTask(index=1, name="tr-b", exit_code=3),
            id="missing-taskrun-skipped",
        ),
        pytest.param(
            [ref("tr-a"), ref("tr-b"), ref("tr-c")],
            {"tr-a": taskrun("True", 0), "tr-b": taskrun("False", 5), "tr-c": taskrun("False", 6)},
            FailedTask(index=1, name="tr-b", exit_code=5),
            id="first-failed-wins",
        ),
        pytest.param(
            [ref("tr-a")],
            {"tr-a": taskrun("False", 0, None)},
            FailedTask(index=0, name="tr-a", exit_code=None),
            id="failed-without-nonzero-exit",
        ),
        pytest.param(
            [ref("tr-a"), ref("tr-b")],
            {"tr-a": taskrun("Unknown", None), "tr-b": taskrun(None)},
            FailedTask(),
            id="nothing-failed",
        ),
        pytest.param([], {}, FailedTask(), id="no-children"),
    ],
)
def test_find_failed_task(
    refs: list[dict[str, str]], taskruns: dict[str, dict[str, Any]], expected: FailedTask
) -> None:
    assert find_failed_task(refs, taskruns) == expected


def test_exit_code_ignores_booleans_and_non_integers() -> None:
    weird = {
        "status": {
            "conditions": [{"type": "Succeeded", "status": "False"}],
            "steps": [{"terminated": {"exitCode": True}}, {"terminated": {"exitCode": "9"}}, {"terminated": {}}],
        }
    }
    assert find_failed_task([ref("tr")], {"tr": weird}) == FailedTask(index=0, name="tr", exit_code=None)


def test_find_succeeded_condition() -> None:
    body = {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Succeeded", "status": "False"}]}}
    assert find_succeeded_condition(body) == {"type": "Succeeded", "status": "False"}
    assert find_succeeded_condition({"status": {"conditions": [{"type": "Ready"}]}}) is None
    assert find_succeeded_condition(None) is None
    assert find_succeeded_condition({}) is None


# -- execution vs pre-execution --------------------------------------------------------------------

STARTED = {"status": {"startTime": "2025-12-15T10:00:00Z"}}
WITH_CHILDREN = {"status": {"childReferences": [ref("tr-a")]}}
NEITHER: dict[str, Any] = {"status": {}}


@pytest.mark.parametrize(
    ("pipelinerun", "reason", "expected"),
    [
        # 1. no PipelineRun at all
        (None, R.TASK_FAILED, False),
        (None, R.OOM_KILLED, False),
        # 2. it started: everything but the pre-execution reasons ran
        (STARTED, R.IMAGE_PULL_BACK_OFF, False),
        (STARTED, R.CONFIGURATION_ERROR, False),
        (STARTED, R.RESOURCE_EXHAUSTED, False),
        (STARTED, R.UNKNOWN, True),
        (STARTED, R.TASK_FAILED, True),
        (STARTED, R.FORBIDDEN, True),
        # 3. no start time but children exist: it ran, whatever the reason
        (WITH_CHILDREN, R.IMAGE_PULL_BACK_OFF, True),
        (WITH_CHILDREN, R.UNKNOWN, True),
        # 4. neither: only reasons that imply running
        (NEITHER, R.OOM_KILLED, True),
        (NEITHER, R.DEADLINE_EXCEEDED, True),
        (NEITHER, R.FORBIDDEN, True),
        (NEITHER, R.TASK_FAILED, True),
        (NEITHER, R.RESOURCE_EXHAUSTED, False),
        (NEITHER, R.IMAGE_PULL_BACK_OFF, False),
        (NEITHER, R.CONFIGURATION_ERROR, False),
        (NEITHER, R.UNKNOWN, False),
        ({}, R.UNKNOWN, False),
    ],
)
def test_decide_was_execution_failure(
    pipelinerun: dict[str, Any] | None, reason: FailureReason, expected: bool
) -> None:
    assert decide_was_execution_failure(pipelinerun, reason) is expected


# -- summary ---------------------------------------------------------------------------------------


def test_summary_lines() -> None:
    summary = build_summary("restart-pod", "prod/Deployment/api", R.TASK_FAILED, "boom", "45s")
    assert summary == (
        "Workflow 'restart-pod' failed on target 'prod/Deployment/api'.\n"
        "Reason: TaskFailed\n"
        "Error: boom\n"
        "Failed after: 45s\n"
    )


def test_summary_omits_empty_message_and_duration() -> None:
    summary = build_summary("wf", "Node/n1", R.UNKNOWN, "", "")
    assert summary == "Workflow 'wf' failed on target 'Node/n1'.\nReason: Unknown\n"


@pytest.mark.parametrize("reason", list(FailureReason))
def test_recommendation_only_for_actionable_reasons(reason: FailureReason) -> None:
    lines = build_summary("wf", "Node/n1", reason, "boom", "1s").splitlines()
    recommendations = [line for line in lines if line.startswith("Recommendation:")]
    actionable = {R.OOM_KILLED, R.FORBIDDEN, R.DEADLINE_EXCEEDED, R.IMAGE_PULL_BACK_OFF}
    assert len(recommendations) == (1 if reason in actionable else 0)
    if recommendations:
        assert lines[-1] == recommendations[0]  # the advice comes last


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (R.OOM_KILLED, "memory"),
        (R.FORBIDDEN, "RBAC"),
        (R.DEADLINE_EXCEEDED, "timeout"),
        (R.IMAGE_PULL_BACK_OFF, "pull credentials"),
    ],
)
def test_recommendation_gives_matching_advice(reason: FailureReason, words: str) -> None:
    assert words in build_summary("wf", "Node/n1", reason, "", "").splitlines()[-1]


# -- failure details -------------------------------------------------------------------------------


def failed_pipelinerun(reason: str, message: str, **status: Any) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [{"type": "Succeeded", "status": "False", "reason": reason, "message": message}],
            **status,
        }
    }


def test_task_failure_after_150_seconds() -> None:
    pipelinerun = failed_pipelinerun(
        "Failed",
        "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0",
        startTime="2025-12-15T10:28:00Z",
        childReferences=[ref("tr-a"), ref("tr-b")],
    )
    details = build_execution_failure(
        pipelinerun=pipelinerun,
        taskruns={"tr-a": taskrun("True", 0), "tr-b": taskrun("False", 0, 137)},
        start_time=NOW - timedelta(seconds=150),
        now=NOW,
        workflow_id="restart-pod",
        target="prod/Deployment/api",
    )
    assert details.reason is R.TASK_FAILED
    assert details.was_execution_failure is True
    assert details.execution_time_before_failure == "2m30s"
    assert details.message == "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0"
    assert (details.failed_task_index, details.failed_task_name, details.exit_code) == (1, "tr-b", 137)
    assert details.failed_at == NOW
    assert details.failed_step_name is None
    assert "Failed after: 2m30s\n" in details.natural_language_summary


def test_quota_failure_before_start_is_not_an_execution_failure() -> None:
    details = build_execution_failure(
        pipelinerun=failed_pipelinerun("Failed", "exceeded quota: compute resources"),
        taskruns={},
        start_time=NOW - timedelta(seconds=3),
        now=NOW,
        workflow_id="wf",
        target="Node/n1",
    )
    assert details.reason is R.RESOURCE_EXHAUSTED
    assert details.was_execution_failure is None  # omitted on the wire when false
    assert "wasExecutionFailure" not in details.to_wire()


def test_oom_failure_recommends() -> None:
    details = build_execution_failure(
        pipelinerun=failed_pipelinerun("Failed", 'TaskRun "x" was OOMKilled', startTime="2025-12-15T10:00:00Z"),
        taskruns={},
        start_time=NOW,
        now=NOW,
        workflow_id="wf",
        target="Node/n1",
    )
    assert details.reason is R.OOM_KILLED
    assert any(line.startswith("Recommendation:") for line in details.natural_language_summary.splitlines())


def test_vanished_pipelinerun() -> None:
    details = build_execution_failure(
        pipelinerun=None, taskruns={}, start_time=NOW - timedelta(seconds=45), now=NOW, workflow_id="wf", target="a/B/c"
    )
    assert details.reason is R.UNKNOWN
    assert details.message == "PipelineRun was deleted externally"
    assert details.was_execution_failure is None
    assert (details.failed_task_index, details.failed_task_name, details.exit_code) == (0, "", None)
    assert details.execution_time_before_failure == "45s"


def test_no_start_time_leaves_duration_empty() -> None:
    details = build_execution_failure(
        pipelinerun=failed_pipelinerun("Failed", "boom"),
        taskruns={},
        start_time=None,
        now=NOW,
        workflow_id="w",
        target="a/B/c",
    )
    assert details.execution_time_before_failure == ""
    assert "Failed after" not in details.natural_language_summary


def test_pre_execution_failure() -> None:
    details = build_pre_execution_failure(
        reason=R.EXECUTION_RACE_CONDITION, message="Race condition: x", now=NOW, workflow_id="wf", target="a/B/c"
    )
    assert details.reason is R.EXECUTION_RACE_CONDITION
    assert details.was_execution_failure is None
    assert (details.failed_task_index, details.failed_task_name, details.execution_time_before_failure) == (0, "", "")
    assert details.natural_language_summary == (
        "Workflow 'wf' failed on target 'a/B/c'.\nReason: ExecutionRaceCondition\nError: Race condition: x\n"
    )


# -- what real Tekton reports (statuses as Tekton Pipelines v1.6.0 wrote them on the local cluster) --


def tekton_taskrun(name: str, reason: str, message: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    condition = {"type": "Succeeded", "status": "False", "reason": reason, "message": message}
    return {"metadata": {"name": name}, "status": {"conditions": [condition], "steps": steps}}


def tekton_step(name: str, exit_code: int, reason: str) -> dict[str, Any]:
    started = "2025-12-15T10:29:00Z"
    return {
        "name": name,
        "container": f"step-{name}",
        "terminated": {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": started},
    }


def tekton_pipelinerun(reason: str, message: str, children: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "wfe-0123456789abcdef"},
        "status": {
            "startTime": "2025-12-15T10:28:00Z",
            "conditions": [{"type": "Succeeded", "status": "False", "reason": reason, "message": message}],
            "childReferences": [ref(name) for name in children],
        },
    }


def analyse(pipelinerun: dict[str, Any], taskruns: dict[str, Any]) -> Any:
    return build_execution_failure(
        pipelinerun=pipelinerun,
        taskruns=taskruns,
        start_time=NOW - timedelta(minutes=2),
        now=NOW,
        workflow_id="restart-deployment",
        target="prod/Deployment/api",
    )


def test_a_step_that_exits_1_is_a_task_failure_with_tektons_words() -> None:
    check = tekton_taskrun("wfe-x-check", "Succeeded", "", [tekton_step("check", 0, "Completed")])
    check["status"]["conditions"][0]["status"] = "True"
    failed = tekton_taskrun(
        "wfe-x-remediate",
        "Failed",
        '"step-restart" exited with code 1: Error',
        [tekton_step("prepare", 0, "Completed"), tekton_step("restart", 1, "Error")],
    )
    run = tekton_pipelinerun(
        "Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0", ["wfe-x-check", "wfe-x-remediate"]
    )
    details = analyse(run, {"wfe-x-check": check, "wfe-x-remediate": failed})
    assert (details.reason, details.message) == (R.TASK_FAILED, '"step-restart" exited with code 1: Error')
    assert (details.failed_task_name, details.failed_task_index, details.exit_code) == ("wfe-x-remediate", 1, 1)
    assert details.was_execution_failure is True


def test_a_step_killed_for_memory_is_oomkilled() -> None:
    failed = tekton_taskrun(
        "wfe-x-remediate",
        "Failed",
        '"step-restart" exited with code 137: OOMKilled',
        [tekton_step("restart", 137, "OOMKilled")],
    )
    run = tekton_pipelinerun("Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0", ["wfe-x-remediate"])
    details = analyse(run, {"wfe-x-remediate": failed})
    assert (details.reason, details.exit_code, details.was_execution_failure) == (R.OOM_KILLED, 137, True)
    assert "memory" in details.natural_language_summary


def test_a_pod_that_could_not_be_created_never_ran() -> None:
    message = (
        'failed to create task run pod "wfe-x-check": translating TaskSpec to Pod: serviceaccounts '
        '"kubernaut-workflow-runner" not found. Maybe invalid TaskSpec'
    )
    failed = tekton_taskrun("wfe-x-check", "PodCreationFailed", message, [])
    run = tekton_pipelinerun("Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1", ["wfe-x-check"])
    details = analyse(run, {"wfe-x-check": failed})
    assert (details.reason, details.message) == (R.CONFIGURATION_ERROR, message)
    assert details.was_execution_failure is None  # no step started: another run needs no review first


def test_a_pod_refused_for_quota_is_resource_exhaustion() -> None:
    message = 'failed to create task run pod "wfe-x-check": pods "wfe-x-check-pod" is forbidden: exceeded quota: q'
    failed = tekton_taskrun("wfe-x-check", "PodCreationFailed", message, [])
    run = tekton_pipelinerun("Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0", ["wfe-x-check"])
    assert analyse(run, {"wfe-x-check": failed}).reason is R.RESOURCE_EXHAUSTED


def test_a_bundle_that_does_not_exist_is_a_configuration_error_before_execution() -> None:
    message = (
        "Error retrieving pipeline for pipelinerun ns/wfe-x: resolver failed to get Pipeline : error requesting "
        'remote resource: error getting "bundleresolver" "ns/bundles-1": cannot retrieve the oci image: GET '
        "http://127.0.0.1:5000/v2/workflows/missing/manifests/1.0.0: NAME_UNKNOWN: Unknown name"
    )
    details = analyse(tekton_pipelinerun("CouldntGetPipeline", message, []), {})
    assert (details.reason, details.message, details.was_execution_failure) == (R.CONFIGURATION_ERROR, message, None)


def test_a_bundle_that_cannot_be_pulled_is_an_image_pull_failure_before_execution() -> None:
    message = 'Error retrieving pipeline for pipelinerun ns/wfe-x: Back-off pulling image "b": ImagePullBackOff'
    details = analyse(tekton_pipelinerun("CouldntGetPipeline", message, []), {})
    assert (details.reason, details.was_execution_failure) == (R.IMAGE_PULL_BACK_OFF, None)


def test_a_taskrun_we_could_not_read_counts_as_run() -> None:
    run = tekton_pipelinerun("Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0", ["wfe-x-gone"])
    details = analyse(run, {})
    assert details.was_execution_failure is True


def test_steps_whose_image_was_never_pulled_never_ran() -> None:
    # Tekton stops the pod and marks each step terminated with exit code 1: no step container ran.
    message = (
        'the step "restart" in TaskRun "wfe-x-check" failed to pull the image "". The pod errored with the '
        'message: "Back-off pulling image "fake.local/tools/kubectl"."'
    )
    steps = [tekton_step("restart", 1, "TaskRunImagePullFailed"), tekton_step("verify", 1, "TaskRunImagePullFailed")]
    for step in steps:
        step["terminationReason"] = "TaskRunImagePullFailed"
    failed = tekton_taskrun("wfe-x-check", "TaskRunImagePullFailed", message, steps)
    run = tekton_pipelinerun("Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1", ["wfe-x-check"])
    details = analyse(run, {"wfe-x-check": failed})
    assert (details.reason, details.message) == (R.IMAGE_PULL_BACK_OFF, message)
    assert (details.exit_code, details.was_execution_failure) == (None, None)


def test_a_pipelinerun_cancelled_while_a_step_ran_fails_no_task_and_ran() -> None:
    # Real Tekton writes the PipelineRun's reason first and cancels its TaskRuns after: whether the
    # executor reads the TaskRun before or after, the details are the same, and even a stopped step's
    # non-zero exit is no failure of the workflow's own.
    cancelled = tekton_taskrun(
        "wfe-x-remediate",
        "TaskRunCancelled",
        'TaskRun "wfe-x-remediate" was cancelled. '
        "TaskRun cancelled as the PipelineRun it belongs to has been cancelled.",
        [tekton_step("restart", 1, "TaskRunCancelled")],
    )
    run = tekton_pipelinerun("Cancelled", 'PipelineRun "wfe-x" was cancelled', ["wfe-x-remediate"])
    for taskruns in ({"wfe-x-remediate": cancelled}, {"wfe-x-remediate": {**cancelled, "status": {}}}):
        details = analyse(run, taskruns)
        assert (details.reason, details.message) == (R.UNKNOWN, 'PipelineRun "wfe-x" was cancelled')
        assert (details.failed_task_name, details.exit_code) == ("", None)
    assert analyse(run, {"wfe-x-remediate": cancelled}).was_execution_failure is True
