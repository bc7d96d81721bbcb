"""The sample bundles built for real Tekton: their names, and what kwok is told to play for each task's pod."""

from datetime import timedelta
from typing import Any

import pytest

from kubernaut.devcluster.bundles import Behaviour, BundleError, Outcome, build_pipeline, localize_catalog, parse_sample

P = "kubernaut.local/samples/"
S = timedelta(seconds=1)


def played(bundle: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(task, its pod's annotations, its other fields) of the bundle's Pipeline."""
    pipeline = build_pipeline(parse_sample(bundle))
    assert (pipeline["kind"], pipeline["metadata"]["name"]) == ("Pipeline", "workflow")
    rows = []
    for task in pipeline["spec"]["tasks"]:
        fields = {k: v for k, v in task.items() if k not in ("name", "params", "taskSpec", "runAfter")}
        rows.append((task["name"], task["taskSpec"]["metadata"]["annotations"], fields))
    return rows


def test_tasks_run_in_sequence_and_share_the_duration() -> None:
    pipeline = build_pipeline(parse_sample("succeed:3tasks-3s"))
    assert [t.get("runAfter") for t in pipeline["spec"]["tasks"]] == [None, ["task-1"], ["task-2"]]
    assert played("succeed:3tasks-3s") == [(f"task-{i}", {"fake.kubelet/run-duration": "1s"}, {}) for i in (1, 2, 3)]


def test_the_failing_task_exits_with_its_code() -> None:
    rows = played("fail:task2of3-exit4-6s")
    assert rows[1][1] == {
        "fake.kubelet/run-duration": "2s",
        "fake.kubelet/fail": "task-2/run",
        "fake.kubelet/exit-code": "4",
    }
    assert rows[0][1] == rows[2][1] == {"fake.kubelet/run-duration": "2s"}


def test_oom_is_exit_137_with_its_reason() -> None:
    [(_, annotations, _)] = played("oom:task1of1-1s")
    assert (annotations["fake.kubelet/exit-code"], annotations["fake.kubelet/reason"]) == ("137", "OOMKilled")


def test_a_timeout_hangs_its_last_task_until_its_timeout() -> None:
    rows = played("timeout:2tasks-10s")
    assert rows == [
        ("task-1", {"fake.kubelet/run-duration": "5s"}, {}),
        ("task-2", {"fake.kubelet/hang": "true"}, {"timeout": "5s"}),
    ]


def test_an_image_pull_failure_stops_the_first_task() -> None:
    assert played("imagepull:2s") == [("task-1", {"fake.kubelet/image-pull-backoff": "true"}, {})]


def test_the_catalog_points_at_the_local_registry_and_each_bundle_is_pushed_once() -> None:
    pushed: list[str] = []

    def push(image: str, objects: list[dict[str, Any]]) -> str:
        pushed.append(image)
        return "sha256:x"

    def workflow(name: str, image: str) -> dict[str, Any]:
        return {"kind": "RemediationWorkflow", "metadata": {"name": name}, "spec": {"containerImage": image}}

    catalog = [
        workflow("a", "kubernaut.local/samples/succeed:1tasks-1s"),
        workflow("b", "kubernaut.local/samples/succeed:1tasks-1s"),
        workflow("c", "registry.example/workflows/real:1.0.0"),
        {"kind": "ConfigMap", "metadata": {"name": "x"}},
    ]
    localized = localize_catalog(catalog, "127.0.0.1:5000", push)
    assert [o.get("spec", {}).get("containerImage") for o in localized] == [
        "127.0.0.1:5000/samples/succeed:1tasks-1s",
        "127.0.0.1:5000/samples/succeed:1tasks-1s",
        "registry.example/workflows/real:1.0.0",
        None,
    ]
    assert pushed == ["127.0.0.1:5000/samples/succeed:1tasks-1s"]
    assert catalog[0]["spec"]["containerImage"] == "kubernaut.local/samples/succeed:1tasks-1s"  # not changed


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
def test_parse_sample_reads_every_form(bundle: str, expected: Behaviour) -> None:
    assert parse_sample(bundle) == expected


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
    ],
)
def test_parse_sample_rejects_malformed_bundles_clearly(bundle: str, error: str) -> None:
    with pytest.raises(BundleError) as raised:
        parse_sample(bundle)
    assert error in str(raised.value)


def test_a_name_without_the_placeholder_prefix_is_read_the_same() -> None:
    assert parse_sample("fail:task2of3-exit4-6s") == parse_sample(f"{P}fail:task2of3-exit4-6s")
