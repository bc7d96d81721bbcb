"""The sample bundles built for real Tekton: what kwok is told to play for each task's pod."""

from typing import Any

from kubernaut.devcluster.behaviour import parse_bundle
from kubernaut.devcluster.bundles import build_pipeline, localize_catalog


def played(bundle: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(task, its pod's annotations, its other fields) of the bundle's Pipeline."""
    pipeline = build_pipeline(parse_bundle(bundle))
    assert (pipeline["kind"], pipeline["metadata"]["name"]) == ("Pipeline", "workflow")
    rows = []
    for task in pipeline["spec"]["tasks"]:
        fields = {k: v for k, v in task.items() if k not in ("name", "params", "taskSpec", "runAfter")}
        rows.append((task["name"], task["taskSpec"]["metadata"]["annotations"], fields))
    return rows


def test_tasks_run_in_sequence_and_share_the_duration() -> None:
    pipeline = build_pipeline(parse_bundle("kubernaut.local/standin/succeed:3tasks-3s"))
    assert [t.get("runAfter") for t in pipeline["spec"]["tasks"]] == [None, ["task-1"], ["task-2"]]
    assert played("kubernaut.local/standin/succeed:3tasks-3s") == [
        (f"task-{i}", {"fake.kubelet/run-duration": "1s"}, {}) for i in (1, 2, 3)
    ]


def test_the_failing_task_exits_with_its_code() -> None:
    rows = played("kubernaut.local/standin/fail:task2of3-exit4-6s")
    assert rows[1][1] == {
        "fake.kubelet/run-duration": "2s",
        "fake.kubelet/fail": "task-2/run",
        "fake.kubelet/exit-code": "4",
    }
    assert rows[0][1] == rows[2][1] == {"fake.kubelet/run-duration": "2s"}


def test_oom_is_exit_137_with_its_reason() -> None:
    [(_, annotations, _)] = played("kubernaut.local/standin/oom:task1of1-1s")
    assert (annotations["fake.kubelet/exit-code"], annotations["fake.kubelet/reason"]) == ("137", "OOMKilled")


def test_a_timeout_hangs_its_last_task_until_its_timeout() -> None:
    rows = played("kubernaut.local/standin/timeout:2tasks-10s")
    assert rows == [
        ("task-1", {"fake.kubelet/run-duration": "5s"}, {}),
        ("task-2", {"fake.kubelet/hang": "true"}, {"timeout": "5s"}),
    ]


def test_an_image_pull_failure_stops_the_first_task() -> None:
    assert played("kubernaut.local/standin/imagepull:2s") == [
        ("task-1", {"fake.kubelet/image-pull-backoff": "true"}, {})
    ]


def test_the_catalog_points_at_the_local_registry_and_each_bundle_is_pushed_once() -> None:
    pushed: list[str] = []

    def push(image: str, objects: list[dict[str, Any]]) -> str:
        pushed.append(image)
        return "sha256:x"

    def workflow(name: str, image: str) -> dict[str, Any]:
        return {"kind": "RemediationWorkflow", "metadata": {"name": name}, "spec": {"containerImage": image}}

    catalog = [
        workflow("a", "kubernaut.local/standin/succeed:1tasks-1s"),
        workflow("b", "kubernaut.local/standin/succeed:1tasks-1s"),
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
    assert catalog[0]["spec"]["containerImage"] == "kubernaut.local/standin/succeed:1tasks-1s"  # not changed
