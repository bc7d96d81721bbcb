"""The Tekton stand-in: plays Tekton's part on a control plane without nodes (dev and tests only).

It watches PipelineRuns in one namespace and moves each through the status real Tekton would
write (the `Succeeded` condition, start and completion times, child TaskRuns with step states),
following the behaviour its bundle names (see `behaviour.py`). Everything it does is derived from
what is stored, so a restarted stand-in carries on where the previous one stopped.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from kubernaut.devcluster.behaviour import (
    Behaviour,
    BundleError,
    Outcome,
    TaskPlan,
    build_child_references,
    build_final_condition,
    build_invalid_bundle_condition,
    build_plan,
    build_resolving_condition,
    build_running_condition,
    build_taskrun,
    build_taskrun_final_status,
    build_taskrun_running_status,
    decide_behaviour,
    is_done,
    is_standin_bundle,
    parse_pipeline_timeout,
    parse_pipelinerun_params,
    parse_rfc3339,
    parse_succeeded_condition,
    taskrun_name,
)
from kubernaut.domain.duration import format_rfc3339
from kubernaut.kube.client import is_status, patch_status
from kubernaut.kube.resources import PipelineRunResource, TaskRunResource

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


_REPLACE_ATTEMPTS = 5


class _Gone(Exception):
    """The PipelineRun was replaced by another of the same name."""


@dataclass
class _Run:
    uid: str
    task: asyncio.Task[None]


class TektonStandIn:
    """Stand-in for Tekton's PipelineRun controller in `namespace`. `run(stop)` until stop is set."""

    def __init__(
        self, client: AsyncClient, namespace: str, *, clock: Clock = utc_now, retry_delay: float = 1.0
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._clock = clock
        self._retry_delay = retry_delay
        self._runs: dict[str, _Run] = {}
        self._cleanups: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        sync = asyncio.create_task(self._sync_forever(), name=f"tekton-standin-{self._namespace}")
        try:
            await stop.wait()
        finally:
            tasks = [sync, *(run.task for run in self._runs.values()), *self._cleanups]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._runs.clear()

    # Watching

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # 410 Gone, a dropped connection, a restarting API server
                log.warning("Tekton stand-in: PipelineRun watch in %s ended (%s); listing again", self._namespace, exc)
                await asyncio.sleep(self._retry_delay)

    async def _list_and_watch(self) -> None:
        listing = self._client.list(PipelineRunResource, namespace=self._namespace)
        present: set[str] = set()
        async for pipelinerun in listing:
            present.add(pipelinerun["metadata"]["name"])
            self._observe(pipelinerun)
        for name in set(self._runs) - present:  # deleted while we were not watching
            self._runs.pop(name).task.cancel()
        events = self._client.watch(
            PipelineRunResource, namespace=self._namespace, resource_version=listing.resourceVersion
        )
        async for event, pipelinerun in events:
            if event == "DELETED":
                self._forget(pipelinerun)
            elif event in ("ADDED", "MODIFIED"):
                self._observe(pipelinerun)

    def _observe(self, pipelinerun: dict[str, Any]) -> None:
        name, uid = pipelinerun["metadata"]["name"], pipelinerun["metadata"]["uid"]
        current = self._runs.get(name)
        if current and current.uid == uid and not current.task.done():
            return
        if current and current.uid != uid:  # replaced under the same name
            current.task.cancel()
        if is_done(pipelinerun.get("status")):
            self._runs.pop(name, None)
            return
        task = asyncio.create_task(self._progress(name, uid), name=f"tekton-standin-{name}")
        self._runs[name] = _Run(uid, task)

    def _forget(self, pipelinerun: dict[str, Any]) -> None:
        name, uid = pipelinerun["metadata"]["name"], pipelinerun["metadata"]["uid"]
        current = self._runs.get(name)
        if current and current.uid == uid:
            current.task.cancel()
            del self._runs[name]
            log.info("Tekton stand-in: PipelineRun %s/%s deleted, dropped", self._namespace, name)
        # No garbage collector runs on the local control plane: remove the children ourselves.
        cleanup = asyncio.create_task(self._delete_children(name, uid))
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)

    async def _delete_children(self, name: str, uid: str) -> None:
        try:
            async for taskrun in self._client.list(
                TaskRunResource, namespace=self._namespace, labels={"tekton.dev/pipelineRun": name}
            ):
                if uid in _owner_uids(taskrun):
                    with contextlib.suppress(ApiError):
                        await self._client.delete(
                            TaskRunResource, taskrun["metadata"]["name"], namespace=self._namespace
                        )
        except ApiError as exc:
            log.warning("Tekton stand-in: could not delete the TaskRuns of %s: %s", name, exc)

    # Progress of one PipelineRun

    async def _progress(self, name: str, uid: str) -> None:
        """Advance the run until it is done or replaced; after any error start again from what is stored.

        A 404 never ends this task: it may be a child that the clean-up of an earlier run of the same
        name deleted meanwhile, or a restarted API server that does not serve the kind yet. The watch
        (its DELETED event, or the next listing without the run) is what says the run is gone, and it
        cancels this task."""
        while True:
            try:
                await self._advance(name, uid)
                return
            except asyncio.CancelledError:
                raise
            except _Gone:
                log.info("Tekton stand-in: PipelineRun %s/%s was replaced; stopped", self._namespace, name)
                return
            except ApiError as exc:
                level = logging.DEBUG if is_status(exc, 404) else logging.WARNING
                log.log(level, "Tekton stand-in: %s/%s: %s; retrying", self._namespace, name, exc)
            except Exception as exc:
                log.warning("Tekton stand-in: %s/%s: %s; retrying", self._namespace, name, exc)
            await asyncio.sleep(self._retry_delay)

    async def _advance(self, name: str, uid: str) -> None:
        pipelinerun = dict(await self._client.get(PipelineRunResource, name, namespace=self._namespace))
        if pipelinerun["metadata"]["uid"] != uid:
            raise _Gone
        status = pipelinerun.get("status") or {}
        if is_done(status):
            return
        spec = pipelinerun.get("spec") or {}
        bundle, duration_override = parse_pipelinerun_params(spec)
        try:
            behaviour = decide_behaviour(bundle, duration_override)
        except BundleError as exc:
            log.warning("Tekton stand-in: PipelineRun %s/%s fails: %s", self._namespace, name, exc)
            condition = build_invalid_bundle_condition(name, exc, self._clock())
            await self._patch_pipelinerun(
                name, {"conditions": [condition], "completionTime": condition_time(condition)}
            )
            return
        if bundle and not is_standin_bundle(bundle):
            log.info("Tekton stand-in: bundle %s is not a stand-in bundle; %s plays one succeeding task", bundle, name)
        plan = build_plan(behaviour)

        origin = await self._start(pipelinerun, behaviour)
        listed = len(status.get("childReferences") or [])
        for task in plan.tasks:
            taskrun = await self._ensure_taskrun(pipelinerun, task)
            if task.index > listed:  # never shrink what is shown (a restart walks the finished tasks again)
                running = build_running_condition(behaviour, task.index - 1, self._clock())
                references = build_child_references(name, task.index)
                await self._patch_pipelinerun(name, {"conditions": [running], "childReferences": references})
                listed = task.index
            if is_done(taskrun.get("status")):
                continue
            await self._sleep_until(origin + task.ends_after)
            started = (taskrun.get("status") or {}).get("startTime")
            final = build_taskrun_final_status(
                taskrun_name(name, task.index), task, parse_rfc3339(started) if started else origin, self._clock()
            )
            await patch_status(self._client, TaskRunResource, taskrun_name(name, task.index), self._namespace, final)

        await self._sleep_until(origin + plan.ends_after)
        condition = build_final_condition(plan, name, bundle or "", parse_pipeline_timeout(spec), self._clock())
        await self._patch_pipelinerun(name, {"conditions": [condition], "completionTime": condition_time(condition)})
        log.info(
            "Tekton stand-in: PipelineRun %s/%s %s (%s)",
            self._namespace,
            name,
            condition["reason"],
            condition["message"],
        )

    async def _start(self, pipelinerun: dict[str, Any], behaviour: Behaviour) -> datetime:
        """Mark the run started (unless it already is) and return when it started."""
        name, status = pipelinerun["metadata"]["name"], pipelinerun.get("status") or {}
        if behaviour.outcome is Outcome.IMAGEPULL:  # fails while resolving: never starts, no startTime
            if parse_succeeded_condition(status) is None:
                await self._patch_pipelinerun(name, {"conditions": [build_resolving_condition(self._clock())]})
            return parse_rfc3339(pipelinerun["metadata"]["creationTimestamp"])
        if status.get("startTime"):
            return parse_rfc3339(status["startTime"])
        now = self._clock()
        running = build_running_condition(behaviour, 0, now)
        await self._patch_pipelinerun(
            name, {"startTime": format_rfc3339(now), "conditions": [running], "childReferences": []}
        )
        return now

    async def _ensure_taskrun(self, pipelinerun: dict[str, Any], task: TaskPlan) -> dict[str, Any]:
        """Create the TaskRun, or take the one that exists (never a second one); mark it running."""
        body = build_taskrun(pipelinerun, task)
        name = body["metadata"]["name"]
        taskrun = await self._own_taskrun(pipelinerun, body)
        if parse_succeeded_condition(taskrun.get("status")) is None:
            taskrun = dict(
                await patch_status(
                    self._client,
                    TaskRunResource,
                    name,
                    self._namespace,
                    build_taskrun_running_status(name, self._clock()),
                )
            )
        return taskrun

    async def _own_taskrun(self, pipelinerun: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The TaskRun of this PipelineRun under `body`'s name: created, or the one already there.

        A TaskRun of that name left by an earlier PipelineRun of the same name is replaced. The clean-up
        of that earlier run deletes it concurrently, so it may vanish between any two of these calls:
        a 404 here means "not there (any more)", and the create is tried again."""
        name, uid = body["metadata"]["name"], pipelinerun["metadata"]["uid"]
        for _ in range(_REPLACE_ATTEMPTS):
            try:
                return dict(await self._client.create(TaskRunResource(body)))
            except ApiError as exc:
                if not is_status(exc, 409):
                    raise
            try:
                existing = dict(await self._client.get(TaskRunResource, name, namespace=self._namespace))
                if uid in _owner_uids(existing):
                    return existing
                await self._client.delete(TaskRunResource, name, namespace=self._namespace)
            except ApiError as exc:
                if not is_status(exc, 404):
                    raise
        raise RuntimeError(f"TaskRun {name} is held by another PipelineRun after {_REPLACE_ATTEMPTS} replacements")

    async def _patch_pipelinerun(self, name: str, status: dict[str, Any]) -> None:
        await patch_status(self._client, PipelineRunResource, name, self._namespace, status)

    async def _sleep_until(self, moment: datetime) -> None:
        delay = (moment - self._clock()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


def condition_time(condition: dict[str, Any]) -> str:
    return str(condition["lastTransitionTime"])


def _owner_uids(obj: dict[str, Any]) -> set[str]:
    return {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}
