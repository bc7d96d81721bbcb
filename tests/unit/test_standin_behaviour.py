"""The stand-in's bundle grammar, run plans and Tekton-shaped status fragments."""

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from kubernaut.api.v1alpha1 import RemediationWorkflow
from kubernaut.devcluster.behaviour import (
    Behaviour,
    BundleError,
    Outcome,
    build_child_references,
    build_final_condition,
    build_plan,
    build_running_condition,
    build_taskrun,
    build_taskrun_final_status,
    decide_behaviour,
    is_done,
    parse_bundle,
    parse_pipeline_timeout,
    parse_pipelinerun_params,
    parse_succeeded_condition,
)
from kubernaut.paths import samples_dir

P = "kubernaut.local/standin/"
NOW = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("bundle", "expected"),
    [
        (f"{P}succeed:3s", Behaviour(Outcome.SUCCEED, tasks=1, duration=3 * S)),
        (f"{P}succeed:2tasks-3s", Behaviour(Outcome.SUCCEED, tasks=2, duration=3 * S)),
        (f"{P}succeed:1task-0s", Behaviour(Outcome.SUCCEED, tasks=1, duration=timedelta(0))),
        (f"{P}succeed:3tasks-1m30s", Behaviour(Outcome.SUCCEED, tasks=3, duration=90 * S)),
        (f"{P}succeed:2tasks-750ms", Behaviour(Outcome.SUCCEED, tasks=2, duration=timedelta(milliseconds=750))),
        (f"{P}succeed:2tasks-3s@sha256:abc", Behaviour(Outcome.SUCCEED, tasks=2, duration=3 * S)),
        (f"{P}fail:task2of3-2s", Behaviour(Outcome.FAIL, 3, 2 * S, failing_task=2, exit_code=1)),
        (f"{P}fail:task2of3-exit1-2s", Behaviour(Outcome.FAIL, 3, 2 * S, failing_task=2, exit_code=1)),
        (f"{P}fail:task1of1-exit42-0s", Behaviour(Outcome.FAIL, 1, timedelta(0), failing_task=1, exit_code=42)),
        (f"{P}fail:exit3-task3of3-1s", Behaviour(Outcome.FAIL, 3, S, failing_task=3, exit_code=3)),
        (f"{P}oom:task1of2-2s", Behaviour(Outcome.OOM, 2, 2 * S, failing_task=1, exit_code=137)),
        (f"{P}timeout:2s", Behaviour(Outcome.TIMEOUT, tasks=1, duration=2 * S)),
        (f"{P}timeout:3tasks-2s", Behaviour(Outcome.TIMEOUT, tasks=3, duration=2 * S)),
        (f"{P}imagepull:1s", Behaviour(Outcome.IMAGEPULL, tasks=0, duration=S)),
        (f"{P}imagepull:0s", Behaviour(Outcome.IMAGEPULL, tasks=0, duration=timedelta(0))),
    ],
)
def test_parse_bundle_reads_every_form(bundle: str, expected: Behaviour) -> None:
    assert parse_bundle(bundle) == expected


@pytest.mark.parametrize(
    ("bundle", "error"),
    [
        (f"{P}explode:1s", "unknown behaviour 'explode'"),
        (f"{P}succeed", "missing tag, expected succeed:[<N>tasks-]<duration>"),
        (f"{P}succeed:", "missing tag"),
        (f"{P}succeed:2tasks", "'2tasks' is not a Go duration"),
        (f"{P}succeed:2tasks-soon", "'soon' is not a Go duration"),
        (f"{P}succeed:0tasks-1s", "1 to 20 tasks, not 0"),
        (f"{P}succeed:21tasks-1s", "1 to 20 tasks, not 21"),
        (f"{P}succeed:2tasks-2tasks-1s", "'2tasks' given twice"),
        (f"{P}succeed:task1of2-1s", "unexpected 'task1of2', expected succeed:"),
        (f"{P}succeed:exit1-1s", "unexpected 'exit1'"),
        (f"{P}fail:2s", "missing task<I>of<N>, expected fail:task<I>of<N>[-exit<C>]-<duration>"),
        (f"{P}fail:2tasks-2s", "unexpected '2tasks'"),
        (f"{P}fail:task3of2-2s", "task3of2 names no task"),
        (f"{P}fail:task0of2-2s", "task0of2 names no task"),
        (f"{P}fail:task1of2-exit0-2s", "exit0 must be between 1 and 255"),
        (f"{P}fail:task1of2-exit256-2s", "exit256 must be between 1 and 255"),
        (f"{P}oom:task1of2-exit1-2s", "unexpected 'exit1', expected oom:task<I>of<N>-<duration>"),
        (f"{P}oom:1s", "missing task<I>of<N>"),
        (f"{P}timeout:task1of2-1s", "unexpected 'task1of2'"),
        (f"{P}imagepull:2tasks-1s", "unexpected '2tasks', expected imagepull:<duration>"),
        (f"{P}succeed:-1s", "unexpected ''"),
        ("quay.io/acme/workflow:1.0", "is not under kubernaut.local/standin/"),
    ],
)
def test_parse_bundle_rejects_malformed_bundles_clearly(bundle: str, error: str) -> None:
    with pytest.raises(BundleError) as raised:
        parse_bundle(bundle)
    assert error in str(raised.value)


def test_decide_behaviour_plays_one_second_success_for_other_bundles() -> None:
    assert decide_behaviour("quay.io/acme/restart:1.0") == Behaviour(Outcome.SUCCEED, tasks=1, duration=S)


def test_decide_behaviour_applies_the_duration_override() -> None:
    assert decide_behaviour(f"{P}fail:task2of3-2s", "0s") == Behaviour(Outcome.FAIL, 3, timedelta(0), 2, 1)
    assert decide_behaviour("quay.io/acme/restart:1.0", "5s").duration == 5 * S


@pytest.mark.parametrize(
    ("bundle", "override", "error"),
    [
        (None, None, "names no bundle"),
        ("", None, "names no bundle"),
        (f"{P}succeed:1s", "later", "param STANDIN_DURATION: 'later' is not a Go duration"),
        (f"{P}succeed:1s", "-2s", "is negative"),
        (f"{P}nope:1s", None, "unknown behaviour"),
    ],
)
def test_decide_behaviour_errors(bundle: str | None, override: str | None, error: str) -> None:
    with pytest.raises(BundleError, match=error):
        decide_behaviour(bundle, override)


@pytest.mark.parametrize(
    ("bundle", "tasks", "skipped"),
    [
        # (index, starts_after s, ends_after s, result, exit code)
        (f"{P}succeed:2tasks-4s", [(1, 0, 2, "Succeeded", 0), (2, 2, 4, "Succeeded", 0)], 0),
        (f"{P}fail:task2of3-exit7-4s", [(1, 0, 2, "Succeeded", 0), (2, 2, 4, "Failed", 7)], 1),
        (f"{P}oom:task1of2-2s", [(1, 0, 2, "OOMKilled", 137)], 1),
        (f"{P}timeout:2tasks-6s", [(1, 0, 3, "Succeeded", 0), (2, 3, 6, "Cancelled", 1)], 0),
        (f"{P}imagepull:3s", [], 0),
        (f"{P}succeed:3tasks-0s", [(i, 0, 0, "Succeeded", 0) for i in (1, 2, 3)], 0),
    ],
)
def test_build_plan_shares_the_duration_between_the_tasks_that_run(
    bundle: str, tasks: list[tuple[int, float, float, str, int]], skipped: int
) -> None:
    plan = build_plan(parse_bundle(bundle))
    got = [
        (t.index, t.starts_after.total_seconds(), t.ends_after.total_seconds(), t.result.value, t.exit_code)
        for t in plan.tasks
    ]
    assert got == tasks
    assert [t.name for t in plan.tasks] == [f"task-{i}" for i, *_ in tasks]
    assert plan.skipped == skipped
    assert plan.ends_after == plan.behaviour.duration


@pytest.mark.parametrize(
    ("bundle", "status", "reason", "message"),
    [
        (f"{P}succeed:2tasks-1s", "True", "Succeeded", "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"),
        (f"{P}fail:task2of2-1s", "False", "Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0"),
        (f"{P}fail:task2of3-1s", "False", "Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1"),
        (
            f"{P}oom:task1of2-1s",
            "False",
            "Failed",
            'Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1; TaskRun "wfe-0123-task-1" was OOMKilled'
            " (exit code 137)",
        ),
        (
            f"{P}timeout:1s",
            "False",
            "PipelineRunTimeout",
            'PipelineRun "wfe-0123" failed to finish within "1h0m0s"',
        ),
        (
            f"{P}imagepull:1s",
            "False",
            "CouldntGetPipeline",
            f'Error retrieving pipeline for pipelinerun wfe-0123: image pull failed for bundle "{P}imagepull:1s": '
            f'Back-off pulling image "{P}imagepull:1s": ImagePullBackOff',
        ),
    ],
)
def test_build_final_condition(bundle: str, status: str, reason: str, message: str) -> None:
    plan = build_plan(parse_bundle(bundle))
    condition = build_final_condition(plan, "wfe-0123", bundle, timedelta(hours=1), NOW)
    assert condition == {
        "type": "Succeeded",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-03-01T10:00:00Z",
    }


def test_timeout_message_names_the_pipelineruns_own_timeout() -> None:
    plan = build_plan(parse_bundle(f"{P}timeout:1s"))
    condition = build_final_condition(
        plan, "wfe-0123", "", parse_pipeline_timeout({"timeouts": {"pipeline": "90m"}}), NOW
    )
    assert condition["message"] == 'PipelineRun "wfe-0123" failed to finish within "1h30m0s"'


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, timedelta(hours=1)),
        ({"timeouts": {"pipeline": "10m"}}, timedelta(minutes=10)),
        ({"timeouts": {"pipeline": "x"}}, timedelta(hours=1)),
    ],
)
def test_parse_pipeline_timeout(spec: dict[str, object], expected: timedelta) -> None:
    assert parse_pipeline_timeout(spec) == expected


def test_running_condition_counts_completed_and_incomplete_tasks() -> None:
    behaviour = parse_bundle(f"{P}fail:task2of3-1s")
    assert build_running_condition(behaviour, 1, NOW) == {
        "type": "Succeeded",
        "status": "Unknown",
        "reason": "Running",
        "message": "Tasks Completed: 1 (Failed: 0, Cancelled 0), Incomplete: 2, Skipped: 0",
        "lastTransitionTime": "2026-03-01T10:00:00Z",
    }


def test_child_references() -> None:
    assert build_child_references("wfe-0123", 2) == [
        {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "wfe-0123-task-1", "pipelineTaskName": "task-1"},
        {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "wfe-0123-task-2", "pipelineTaskName": "task-2"},
    ]


def test_build_taskrun_is_labelled_and_owned_like_tektons() -> None:
    pipelinerun = {
        "metadata": {"name": "wfe-0123", "namespace": "ns", "uid": "u-1", "labels": {"kubernaut.ai/workflow-id": "w"}},
        "spec": {"taskRunTemplate": {"serviceAccountName": "runner"}},
    }
    task = build_plan(parse_bundle(f"{P}succeed:2tasks-1s")).tasks[1]
    assert build_taskrun(pipelinerun, task) == {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {
            "name": "wfe-0123-task-2",
            "namespace": "ns",
            "labels": {
                "kubernaut.ai/workflow-id": "w",
                "tekton.dev/pipeline": "workflow",
                "tekton.dev/pipelineRun": "wfe-0123",
                "tekton.dev/pipelineTask": "task-2",
            },
            "ownerReferences": [
                {
                    "apiVersion": "tekton.dev/v1",
                    "kind": "PipelineRun",
                    "name": "wfe-0123",
                    "uid": "u-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"taskRef": {"kind": "Task", "name": "task-2"}, "serviceAccountName": "runner"},
    }


@pytest.mark.parametrize(
    ("bundle", "condition", "run_step"),
    [
        (f"{P}succeed:1s", ("True", "Succeeded", "All Steps have completed executing"), (0, "Completed")),
        (f"{P}fail:task1of1-exit3-1s", ("False", "Failed", '"step-run" exited with code 3'), (3, "Error")),
        (f"{P}oom:task1of1-1s", ("False", "Failed", '"step-run" exited with code 137: OOMKilled'), (137, "OOMKilled")),
        (
            f"{P}timeout:1s",
            (
                "False",
                "TaskRunCancelled",
                'TaskRun "tr" was cancelled. TaskRun cancelled as the PipelineRun it belongs to has timed out.',
            ),
            (1, "TaskRunCancelled"),
        ),
    ],
)
def test_build_taskrun_final_status(bundle: str, condition: tuple[str, str, str], run_step: tuple[int, str]) -> None:
    task = build_plan(parse_bundle(bundle)).tasks[-1]
    status = build_taskrun_final_status("tr", task, NOW, NOW + 4 * S)
    got = status["conditions"][0]
    assert (got["type"], got["status"], got["reason"], got["message"]) == ("Succeeded", *condition)
    assert status["completionTime"] == "2026-03-01T10:00:04Z"
    assert status["steps"] == [
        {
            "name": "prepare",
            "container": "step-prepare",
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": "2026-03-01T10:00:00Z",
                "finishedAt": "2026-03-01T10:00:02Z",
            },
        },
        {
            "name": "run",
            "container": "step-run",
            "terminated": {
                "exitCode": run_step[0],
                "reason": run_step[1],
                "startedAt": "2026-03-01T10:00:02Z",
                "finishedAt": "2026-03-01T10:00:04Z",
            },
        },
    ]


def test_parse_pipelinerun_params() -> None:
    spec = {
        "pipelineRef": {
            "resolver": "bundles",
            "params": [
                {"name": "bundle", "value": f"{P}succeed:1s"},
                {"name": "name", "value": "workflow"},
                {"name": "kind", "value": "pipeline"},
            ],
        },
        "params": [{"name": "STANDIN_DURATION", "value": "0s"}, {"name": "TARGET_RESOURCE", "value": "Node/n"}],
    }
    assert parse_pipelinerun_params(spec) == (f"{P}succeed:1s", "0s")
    assert parse_pipelinerun_params({}) == (None, None)


@pytest.mark.parametrize(
    ("status", "done"),
    [
        (None, False),
        ({}, False),
        ({"conditions": [{"type": "Ready", "status": "True"}]}, False),
        ({"conditions": [{"type": "Succeeded", "status": "Unknown"}]}, False),
        ({"conditions": [{"type": "Succeeded", "status": "True"}]}, True),
        ({"conditions": [{"type": "Succeeded", "status": "False"}]}, True),
    ],
)
def test_is_done(status: dict[str, object] | None, done: bool) -> None:
    assert is_done(status) is done


def test_parse_succeeded_condition_ignores_other_types() -> None:
    status = {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Succeeded", "status": "Unknown"}]}
    assert parse_succeeded_condition(status) == {"type": "Succeeded", "status": "Unknown"}
    assert parse_succeeded_condition({"conditions": [{"type": "Ready", "status": "True"}]}) is None


def test_sample_catalog_plays_every_behaviour_with_distinct_signals() -> None:
    with (samples_dir() / "workflows.yaml").open() as handle:
        workflows = [RemediationWorkflow.from_wire(doc) for doc in yaml.safe_load_all(handle)]
    outcomes = {w.metadata.name: parse_bundle(w.spec.container_image).outcome for w in workflows}
    assert outcomes == {
        "restart-deployment": Outcome.SUCCEED,
        "scale-deployment": Outcome.SUCCEED,
        "rollback-deployment": Outcome.FAIL,
        "cordon-node": Outcome.IMAGEPULL,
        "drain-node-slow": Outcome.TIMEOUT,
        "bump-memory": Outcome.OOM,
    }
    signals = [signal for w in workflows for signal in (w.spec.match and w.spec.match.signal_names) or []]
    assert len(signals) == len(set(signals))
    assert all(w.spec.workflow_id == w.metadata.name for w in workflows)
