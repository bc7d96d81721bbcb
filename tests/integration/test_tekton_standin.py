"""The Tekton stand-in against a real kube-apiserver: the status it writes for every behaviour."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kubernaut.devcluster.tekton_standin import TektonStandIn
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource, TaskRunResource
from tests.integration.harness import eventually as wait_for

P = "kubernaut.local/standin/"
T = TypeVar("T")


@contextlib.asynccontextmanager
async def running_standin(kube: AsyncClient, namespace: str) -> AsyncIterator[TektonStandIn]:
    stop = asyncio.Event()
    standin = TektonStandIn(kube, namespace, retry_delay=0.1)
    task = asyncio.create_task(standin.run(stop))
    try:
        yield standin
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20.0) -> T:
    return await wait_for(probe, timeout=timeout, interval=0.02, what=what)


def pipelinerun_body(name: str, namespace: str, bundle: str, **params: str) -> dict[str, Any]:
    """Shaped like the executor's PipelineRun."""
    target = "payment/Deployment/payment-api"
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernaut.ai/workflow-execution": "we-rr-1",
                "kubernaut.ai/workflow-id": "restart-deployment",
                "kubernaut.ai/target-resource": "payment__Deployment__payment-api",
                "kubernaut.ai/source-namespace": "payment",
            },
            "annotations": {"kubernaut.ai/target-resource": target},
        },
        "spec": {
            "pipelineRef": {
                "resolver": "bundles",
                "params": [
                    {"name": "bundle", "value": bundle},
                    {"name": "name", "value": "workflow"},
                    {"name": "kind", "value": "pipeline"},
                ],
            },
            "params": [
                *({"name": key, "value": value} for key, value in sorted(params.items())),
                {"name": "TARGET_RESOURCE", "value": target},
            ],
            "taskRunTemplate": {"serviceAccountName": "kubernaut-workflow-runner"},
        },
    }


async def create_pipelinerun(kube: AsyncClient, namespace: str, bundle: str, **params: str) -> str:
    name = build_lock_name(f"{namespace}/Deployment/{bundle}")
    await kube.create(PipelineRunResource(pipelinerun_body(name, namespace, bundle, **params)))
    return name


async def fetch(kube: AsyncClient, resource: Any, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        return dict(await kube.get(resource, name, namespace=namespace))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def succeeded(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Succeeded"), None)


async def wait_done(kube: AsyncClient, name: str, namespace: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        pipelinerun = await fetch(kube, PipelineRunResource, name, namespace)
        condition = succeeded(pipelinerun)
        return pipelinerun if condition and condition["status"] != "Unknown" else None

    return await eventually(probe, f"PipelineRun {name} to finish")


async def taskruns(kube: AsyncClient, namespace: str) -> dict[str, dict[str, Any]]:
    return {tr["metadata"]["name"]: dict(tr) async for tr in kube.list(TaskRunResource, namespace=namespace)}


def summary(obj: dict[str, Any]) -> tuple[str, str, str]:
    condition = succeeded(obj)
    assert condition is not None
    assert set(condition) == {"type", "status", "reason", "message", "lastTransitionTime"}
    return condition["status"], condition["reason"], condition["message"]


def steps(taskrun: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    return [
        (s["name"], s["container"], s["terminated"]["exitCode"], s["terminated"]["reason"])
        for s in taskrun["status"]["steps"]
    ]


def child_references(name: str, count: int) -> list[dict[str, str]]:
    return [
        {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": f"{name}-task-{i}", "pipelineTaskName": f"task-{i}"}
        for i in range(1, count + 1)
    ]


async def test_success_runs_through_running_to_succeeded(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, f"{P}succeed:2tasks-2s")

        async def running() -> dict[str, Any] | None:
            return succeeded(await fetch(kube, PipelineRunResource, name, namespace))

        first = await eventually(running, "the Running condition")
        assert (first["status"], first["reason"]) == ("Unknown", "Running")
        assert first["message"] == "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 2, Skipped: 0"

        pipelinerun = await wait_done(kube, name, namespace)

    status = pipelinerun["status"]
    assert summary(pipelinerun) == ("True", "Succeeded", "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0")
    assert status["startTime"] <= status["completionTime"]
    assert status["childReferences"] == child_references(name, 2)
    children = await taskruns(kube, namespace)
    assert sorted(children) == [f"{name}-task-1", f"{name}-task-2"]
    for task, taskrun in [(f"task-{i}", children[f"{name}-task-{i}"]) for i in (1, 2)]:
        labels = taskrun["metadata"]["labels"]
        assert labels["tekton.dev/pipelineRun"] == name
        assert labels["tekton.dev/pipelineTask"] == task
        owner = taskrun["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("PipelineRun", name, pipelinerun["metadata"]["uid"])
        assert summary(taskrun) == ("True", "Succeeded", "All Steps have completed executing")
        assert steps(taskrun) == [("prepare", "step-prepare", 0, "Completed"), ("run", "step-run", 0, "Completed")]
        assert taskrun["status"]["startTime"] <= taskrun["status"]["completionTime"]


async def test_task_failure_fails_the_run_and_skips_later_tasks(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, f"{P}fail:task2of3-exit1-1s")
        pipelinerun = await wait_done(kube, name, namespace)

    assert summary(pipelinerun) == ("False", "Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1")
    assert "startTime" in pipelinerun["status"]
    assert "completionTime" in pipelinerun["status"]
    assert pipelinerun["status"]["childReferences"] == child_references(name, 2)
    children = await taskruns(kube, namespace)
    assert sorted(children) == [f"{name}-task-1", f"{name}-task-2"]
    assert summary(children[f"{name}-task-1"])[0] == "True"
    assert summary(children[f"{name}-task-2"]) == ("False", "Failed", '"step-run" exited with code 1')
    assert steps(children[f"{name}-task-2"]) == [
        ("prepare", "step-prepare", 0, "Completed"),
        ("run", "step-run", 1, "Error"),
    ]


async def test_oom_kill_fails_the_run_naming_oomkilled(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, f"{P}oom:task1of2-1s")
        pipelinerun = await wait_done(kube, name, namespace)

    status, reason, message = summary(pipelinerun)
    assert (status, reason) == ("False", "Failed")
    assert message == (
        "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1; "
        f'TaskRun "{name}-task-1" was OOMKilled (exit code 137)'
    )
    assert pipelinerun["status"]["childReferences"] == child_references(name, 1)
    taskrun = (await taskruns(kube, namespace))[f"{name}-task-1"]
    assert summary(taskrun) == ("False", "Failed", '"step-run" exited with code 137: OOMKilled')
    assert steps(taskrun) == [("prepare", "step-prepare", 0, "Completed"), ("run", "step-run", 137, "OOMKilled")]


async def test_timeout_cancels_the_hanging_task(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, f"{P}timeout:2tasks-1s")
        pipelinerun = await wait_done(kube, name, namespace)

    assert summary(pipelinerun) == (
        "False",
        "PipelineRunTimeout",
        f'PipelineRun "{name}" failed to finish within "1h0m0s"',
    )
    assert "startTime" in pipelinerun["status"]
    assert pipelinerun["status"]["childReferences"] == child_references(name, 2)
    children = await taskruns(kube, namespace)
    assert summary(children[f"{name}-task-1"])[0] == "True"
    assert summary(children[f"{name}-task-2"])[:2] == ("False", "TaskRunCancelled")
    assert steps(children[f"{name}-task-2"])[1] == ("run", "step-run", 1, "TaskRunCancelled")


async def test_image_pull_failure_never_starts(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, f"{P}imagepull:1s")
        pipelinerun = await wait_done(kube, name, namespace)

    status, reason, message = summary(pipelinerun)
    assert (status, reason) == ("False", "CouldntGetPipeline")
    assert "ImagePullBackOff" in message
    assert "image pull" in message
    assert "startTime" not in pipelinerun["status"]
    assert "completionTime" in pipelinerun["status"]
    assert not pipelinerun["status"].get("childReferences")
    assert await taskruns(kube, namespace) == {}


async def test_other_bundles_succeed_with_one_task_and_the_duration_param_overrides(
    kube: AsyncClient, namespace: str
) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, "quay.io/acme/restart:1.0", STANDIN_DURATION="0s")
        pipelinerun = await wait_done(kube, name, namespace)

    assert summary(pipelinerun) == ("True", "Succeeded", "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 0")
    assert pipelinerun["status"]["childReferences"] == child_references(name, 1)


async def test_malformed_standin_bundle_fails_before_starting(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, f"{P}fail:task3of2-1s")
        pipelinerun = await wait_done(kube, name, namespace)

    status, reason, message = summary(pipelinerun)
    assert (status, reason) == ("False", "CouldntGetPipeline")
    assert "invalid stand-in bundle" in message
    assert "task3of2 names no task" in message
    assert "startTime" not in pipelinerun["status"]
    assert await taskruns(kube, namespace) == {}


async def test_zero_duration_runs_all_finish(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        names = [await create_pipelinerun(kube, namespace, f"{P}succeed:{i + 1}tasks-0s") for i in range(5)]
        done = [await wait_done(kube, name, namespace) for name in names]

    assert [summary(pr)[:2] for pr in done] == [("True", "Succeeded")] * 5
    assert len(await taskruns(kube, namespace)) == 1 + 2 + 3 + 4 + 5


async def test_deleted_pipelinerun_is_dropped_and_its_name_reused(
    kube: AsyncClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kubernaut.devcluster.tekton_standin")
    bundle = f"{P}succeed:2tasks-10s"
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, bundle)

        async def first_task() -> dict[str, Any] | None:
            return await fetch(kube, TaskRunResource, f"{name}-task-1", namespace)

        old_taskrun = await eventually(first_task, "the first TaskRun")
        await kube.delete(PipelineRunResource, name, namespace=namespace)

        async def children_gone() -> bool:
            return not await taskruns(kube, namespace)

        await eventually(children_gone, "the TaskRuns of the deleted PipelineRun to go")

        # The lock name is free again: a new run under it starts from scratch.
        await kube.create(PipelineRunResource(pipelinerun_body(name, namespace, bundle, STANDIN_DURATION="0s")))
        pipelinerun = await wait_done(kube, name, namespace)

    assert summary(pipelinerun)[:2] == ("True", "Succeeded")
    children = await taskruns(kube, namespace)
    assert sorted(children) == [f"{name}-task-1", f"{name}-task-2"]
    assert children[f"{name}-task-1"]["metadata"]["uid"] != old_taskrun["metadata"]["uid"]
    assert all(
        tr["metadata"]["ownerReferences"][0]["uid"] == pipelinerun["metadata"]["uid"] for tr in children.values()
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("deleted, dropped" in r.getMessage() for r in caplog.records)


async def test_restart_mid_run_finishes_without_duplicate_taskruns(kube: AsyncClient, namespace: str) -> None:
    async with running_standin(kube, namespace):
        name = await create_pipelinerun(kube, namespace, f"{P}succeed:3tasks-3s")

        async def second_task() -> dict[str, Any] | None:
            return await fetch(kube, TaskRunResource, f"{name}-task-2", namespace)

        await eventually(second_task, "the second TaskRun")

    before = await fetch(kube, PipelineRunResource, name, namespace)
    assert before is not None
    assert summary(before)[0] == "Unknown"
    uids_before = {n: tr["metadata"]["uid"] for n, tr in (await taskruns(kube, namespace)).items()}
    assert set(uids_before) == {f"{name}-task-1", f"{name}-task-2"}

    async with running_standin(kube, namespace):
        pipelinerun = await wait_done(kube, name, namespace)

    assert summary(pipelinerun) == ("True", "Succeeded", "Tasks Completed: 3 (Failed: 0, Cancelled 0), Skipped: 0")
    assert pipelinerun["status"]["startTime"] == before["status"]["startTime"]
    assert pipelinerun["status"]["childReferences"] == child_references(name, 3)
    children = await taskruns(kube, namespace)
    assert sorted(children) == [f"{name}-task-{i}" for i in (1, 2, 3)]
    assert all(children[n]["metadata"]["uid"] == uid for n, uid in uids_before.items())
    assert all(summary(tr)[0] == "True" for tr in children.values())


class CleanupWinsTheRace:
    """The real client, except that a leftover TaskRun vanishes just before the stand-in's `verb` on it:
    the clean-up of the earlier PipelineRun of the same name, deleting concurrently, got there first."""

    def __init__(self, kube: AsyncClient, verb: str) -> None:
        self._kube = kube
        self._verb = verb
        self.raced = 0

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._kube, attribute)

    async def _race(self, verb: str, resource: Any, name: str, namespace: str | None) -> None:
        if verb == self._verb and resource is TaskRunResource and not self.raced:
            self.raced += 1
            await self._kube.delete(resource, name, namespace=namespace)

    async def get(self, resource: Any, name: str, *, namespace: str | None = None) -> Any:
        await self._race("get", resource, name, namespace)
        return await self._kube.get(resource, name, namespace=namespace)

    async def delete(self, resource: Any, name: str, *, namespace: str | None = None) -> Any:
        await self._race("delete", resource, name, namespace)
        return await self._kube.delete(resource, name, namespace=namespace)


@pytest.mark.parametrize("verb", ["get", "delete"])
async def test_a_leftover_taskrun_deleted_meanwhile_does_not_stall_the_run(
    kube: AsyncClient, namespace: str, verb: str
) -> None:
    """A PipelineRun reusing a lock name meets the TaskRun of its predecessor (create -> 409); that TaskRun
    is gone by the time it is read or deleted (404). The run must still get its TaskRun and finish."""
    name = build_lock_name(f"{namespace}/Deployment/reused")
    leftover = {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {
            "name": f"{name}-task-1",
            "namespace": namespace,
            "labels": {"tekton.dev/pipelineRun": name},
            # No owner: the garbage collector would delete a TaskRun whose owner is gone, at a moment
            # of its choosing; this test makes the delete win the race at a moment of its own.
        },
        "spec": {},
    }
    await kube.create(TaskRunResource(leftover))
    client = CleanupWinsTheRace(kube, verb)
    stop = asyncio.Event()
    task = asyncio.create_task(TektonStandIn(client, namespace, retry_delay=0.1).run(stop))  # type: ignore[arg-type]
    try:
        await kube.create(PipelineRunResource(pipelinerun_body(name, namespace, f"{P}succeed:1tasks-0s")))
        pipelinerun = await wait_done(kube, name, namespace)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    assert client.raced == 1
    assert summary(pipelinerun)[:2] == ("True", "Succeeded")
    children = await taskruns(kube, namespace)
    assert list(children) == [f"{name}-task-1"]
    assert children[f"{name}-task-1"]["metadata"]["ownerReferences"][0]["uid"] == pipelinerun["metadata"]["uid"]


class NotServedAtFirst:
    """The real client, except that the first read of a PipelineRun answers 404, as a restarted API
    server does until it serves the custom resource again."""

    def __init__(self, kube: AsyncClient) -> None:
        self._kube = kube
        self.refused = 0

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._kube, attribute)

    async def get(self, resource: Any, name: str, *, namespace: str | None = None) -> Any:
        if resource is PipelineRunResource and not self.refused:
            self.refused += 1
            return await self._kube.get(resource, f"{name}-not-served", namespace=namespace)  # a real 404
        return await self._kube.get(resource, name, namespace=namespace)


async def test_a_pipelinerun_read_as_404_for_a_moment_is_carried_on(kube: AsyncClient, namespace: str) -> None:
    """Only the watch says that a run is gone: a 404 on a read does not end its progress."""
    client = NotServedAtFirst(kube)
    stop = asyncio.Event()
    task = asyncio.create_task(TektonStandIn(client, namespace, retry_delay=0.1).run(stop))  # type: ignore[arg-type]
    try:
        name = await create_pipelinerun(kube, namespace, f"{P}succeed:1tasks-0s")
        pipelinerun = await wait_done(kube, name, namespace)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    assert client.refused == 1
    assert summary(pipelinerun)[:2] == ("True", "Succeeded")
