"""The WorkflowExecution executor: a pure executor around the domain state machine.

It validates a WFE, creates its run through the WFE's engine (a PipelineRun or a Job, named by the
lock on the target), mirrors the run, records the outcome and, after the cooldown, deletes the run.
It makes no routing decision, and knows the engines only through `kubernaut.execution`.
"""

import logging
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kubernaut.api.audit import AuditEvent
from kubernaut.api.v1alpha1.common import ExecutionEngine
from kubernaut.api.v1alpha1.workflowexecution import (
    FailureDetails,
    FailureReason,
    WorkflowExecution,
    WorkflowExecutionPhase,
    WorkflowExecutionStatus,
)
from kubernaut.controllers.kinds import JOB_KIND, PIPELINERUN_KIND, TARGET_INDEX, WFE_KIND, index_wfe_by_target
from kubernaut.controllers.manager import Manager
from kubernaut.domain import execution as ex
from kubernaut.domain.audit_events import EXECUTOR_ACTOR, build_block_cleared_event, build_workflow_event
from kubernaut.domain.failure import build_execution_failure, build_pre_execution_failure
from kubernaut.domain.pipelinerun import is_owned_by, parse_owner
from kubernaut.domain.target import build_lock_name
from kubernaut.execution import BACKENDS, ExecutionBackend
from kubernaut.kube.api import (
    create_idempotent,
    get_object,
    patch_if_current,
    patch_status_if_current,
)
from kubernaut.kube.errors import NotFound, Refused
from kubernaut.kube.events import EventRecorder
from kubernaut.kube.faults import crash_point
from kubernaut.kube.patch import build_merge_patch
from kubernaut.kube.resources import WorkflowExecutionResource
from kubernaut.kube.runtime import Body, Cache, Controller, Result, object_key
from kubernaut.metrics import (
    WE_DURATION_SECONDS,
    WE_LOCK_HOLD_SECONDS,
    WE_PIPELINERUN_CREATIONS,
    WE_RECONCILER_TOTAL,
)

log = logging.getLogger(__name__)

RUNNING_RESYNC_SECONDS = 10.0
WORKERS = 32  # reconciles mostly wait on the API server; more in flight is more throughput, not more CPU

Phase = WorkflowExecutionPhase
_FINAL_PHASES = frozenset((Phase.COMPLETED.value, Phase.FAILED.value))
# A create the API server refuses for good fails the execution before it ran; other refusals are retried.
_REFUSED_CREATES = {
    400: FailureReason.CONFIGURATION_ERROR,
    422: FailureReason.CONFIGURATION_ERROR,
    403: FailureReason.FORBIDDEN,
}


class Executor:
    def __init__(self, manager: Manager) -> None:
        self.client = manager.client
        self.settings = manager.settings
        self.namespace = manager.settings.execution.namespace
        self.audit = manager.audit
        self.clock = manager.clock
        self.wfes = manager.cache(WFE_KIND, {TARGET_INDEX: index_wfe_by_target})
        self.pipelineruns = manager.cache(PIPELINERUN_KIND)
        self.jobs = manager.cache(JOB_KIND)
        self.runs: dict[ExecutionEngine, Cache] = {
            ExecutionEngine.TEKTON: self.pipelineruns,
            ExecutionEngine.JOB: self.jobs,
        }
        self.events = EventRecorder(manager.client, EXECUTOR_ACTOR)
        self.controller = manager.add_controller(
            Controller("executor", self.reconcile, workers=WORKERS, finished=self.finished)
        )
        manager.on_event(WFE_KIND, lambda _t, body, _o: self.controller.enqueue(object_key(body)))
        manager.on_event(PIPELINERUN_KIND, self._on_run)
        manager.on_event(JOB_KIND, self._on_run)

    def _on_run(self, _type: str, body: Body, _old: Body | None) -> None:
        """A run's event (PipelineRun or Job) wakes exactly the WFE named by its labels; unlabelled runs are ignored."""
        if (body.get("metadata") or {}).get("namespace") != self.namespace:
            return
        namespace, name = parse_owner(body)
        if namespace and name:
            self.controller.enqueue(f"{namespace}/{name}")

    def finished(self, key: str) -> bool:
        """Gone, or Completed or Failed: its cooldown asks for its own pass (`Result.after`), block
        clearance comes with an annotation event. Being deleted, it is finished once our finalizer is off."""
        body = self.wfes.get(key)
        if body is None:
            return True
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return ex.FINALIZER not in (meta.get("finalizers") or [])
        return (body.get("status") or {}).get("phase") in _FINAL_PHASES

    # -- reconcile ---------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result:
        body = self.wfes.get(key)
        if body is None:
            return Result.done()
        try:
            wfe = WorkflowExecution.from_wire(body)
        except ValidationError as exc:
            log.error("WorkflowExecution %s cannot be read: %s", key, exc.errors()[0]["msg"])
            return Result.done()
        meta = wfe.metadata
        if meta.deletion_timestamp is not None:
            return await self._finalize(wfe)
        if ex.FINALIZER not in meta.finalizers:
            await patch_if_current(
                self.client,
                WorkflowExecutionResource,
                meta.name,
                meta.namespace,
                {"metadata": {"finalizers": [*meta.finalizers, ex.FINALIZER]}},
                resource_version=meta.resource_version,
                into=self.wfes,
            )
            return Result.after(0)
        match wfe.phase:
            case Phase.PENDING:
                return await self._pending(wfe)
            case Phase.RUNNING:
                return await self._running(wfe)
            case Phase.COMPLETED | Phase.FAILED:
                return await self._terminal(wfe)
        return Result.done()  # pragma: no cover - the CRD enum admits no other phase

    async def _pending(self, wfe: WorkflowExecution) -> Result:
        now = self.clock()
        backend = BACKENDS[wfe.spec.execution_engine]
        problem = ex.validate_workflow_execution(wfe) or backend.validate(wfe)
        if problem:
            return await self._fail_before_execution(wfe, FailureReason.CONFIGURATION_ERROR, problem)
        manifest = backend.render(
            wfe, namespace=self.namespace, service_account=self.settings.execution.service_account
        )
        name = manifest["metadata"]["name"]
        # One lock per target across engines: the API server keeps names apart per kind only.
        for rival in BACKENDS.values():
            held = self.runs[rival.engine].get(f"{self.namespace}/{name}") if rival is not backend else None
            if held is not None and not is_owned_by(held, wfe):
                return await self._fail_race(wfe, held, name, rival.kind, backend.kind)
        created = await self._create_run(wfe, backend, manifest)
        if isinstance(created, Result):
            return created
        run, is_new = created
        if is_new:
            WE_PIPELINERUN_CREATIONS.inc()
            crash_point("executor.pipelinerun-created")
            await self._start(wfe, name, start_time=now, adopted=False)
            return Result.after(RUNNING_RESYNC_SECONDS)
        if is_owned_by(run, wfe):
            created_at = ex.parse_time(run["metadata"].get("creationTimestamp")) or self.clock()
            await self._start(wfe, name, start_time=created_at, adopted=True)
            return Result.after(RUNNING_RESYNC_SECONDS)
        return await self._fail_race(wfe, run, name, backend.kind, backend.kind)

    async def _create_run(
        self, wfe: WorkflowExecution, backend: ExecutionBackend, manifest: dict[str, Any]
    ) -> tuple[dict[str, Any], bool] | Result:
        """The run's object and whether this call created it; or the failure that ends the WFE."""
        try:
            return await create_idempotent(self.client, backend.resource(manifest), into=self.runs[backend.engine])
        except NotFound as exc:  # the kind is not served (no Tekton), or the execution namespace is missing
            return await self._fail_before_execution(
                wfe,
                FailureReason.CONFIGURATION_ERROR,
                f"Failed to create {backend.kind} in {self.namespace}: {exc.message} (is the "
                f"{backend.engine.value} engine installed, does the namespace exist?)",
                failed_to=f"create {backend.kind}",
            )
        except Refused as exc:
            reason = _REFUSED_CREATES.get(exc.code)
            if reason is None:
                raise  # other refusals (401, 413, ...) are retried with back-off
            return await self._fail_before_execution(
                wfe, reason, f"Failed to create {backend.kind}: {exc.message}", failed_to=f"create {backend.kind}"
            )

    async def _fail_race(
        self, wfe: WorkflowExecution, held: dict[str, Any], name: str, held_kind: str, creating_kind: str
    ) -> Result:
        """The lock `name` is held by another WFE's `held_kind`: this one fails before execution."""
        other_ns, other_wfe = parse_owner(held)
        return await self._fail_before_execution(
            wfe,
            FailureReason.EXECUTION_RACE_CONDITION,
            ex.build_race_message(name, other_wfe, other_ns, held_kind),
            failed_to=f"create {creating_kind}",
        )

    async def _start(self, wfe: WorkflowExecution, name: str, *, start_time: datetime, adopted: bool) -> None:
        now = self.clock()
        kind = BACKENDS[wfe.spec.execution_engine].kind
        status = ex.build_started_status(
            wfe, pipelinerun=name, namespace=self.namespace, start_time=start_time, adopted=adopted, now=now, kind=kind
        )
        # Recorded on adoption too: after a crash between create and status write, the event id dedupes.
        status = await self._record(build_workflow_event(wfe, status, "started", now), status, now)
        body = await self._write_status(wfe, status)
        message = (
            f"{kind} {self.namespace}/{name} already exists, ours; adopted"
            if adopted
            else f"Created {kind} {self.namespace}/{name}"
        )
        await self.events.emit(body, "Normal", f"{kind}Created", message, now)

    async def _running(self, wfe: WorkflowExecution) -> Result:
        now = self.clock()
        backend = BACKENDS[wfe.spec.execution_engine]
        ref = wfe.status.pipeline_run_ref
        name = ref.name if ref else build_lock_name(wfe.spec.target_resource)
        run = self.runs[backend.engine].get(f"{self.namespace}/{name}") or await self._fetch_run(backend, name)
        if run is not None and not is_owned_by(run, wfe):
            run = None  # ours is gone and another execution holds the lock now
        if run is None:
            failure = build_execution_failure(
                pipelinerun=None,
                taskruns={},
                start_time=wfe.status.start_time,
                now=now,
                workflow_id=wfe.spec.workflow_ref.workflow_id,
                target=wfe.spec.target_resource,
                kind=backend.kind,
            )
            return await self._fail_during_execution(wfe, failure)
        observation = await backend.observe(self.client, wfe, run, now=now)
        match observation.outcome:
            case ex.RunOutcome.RUNNING:
                await self._write_status(wfe, ex.build_running_status(wfe, observation, now))
                return Result.after(RUNNING_RESYNC_SECONDS)
            case ex.RunOutcome.SUCCEEDED:
                return await self._complete(wfe, observation)
            case ex.RunOutcome.FAILED:
                assert observation.failure is not None  # every engine details its failures
                return await self._fail_during_execution(wfe, observation.failure)
            case ex.RunOutcome.CANNOT_START:
                assert observation.failure is not None
                # It never ran and never will: fail before execution, and free the target at once.
                result = await self._fail_before_execution(
                    wfe, observation.failure.reason, observation.failure.message, failed_to=f"start {backend.kind}"
                )
                await self._release_lock(wfe)
                return result

    async def _complete(self, wfe: WorkflowExecution, observation: ex.RunObservation) -> Result:
        now = self.clock()
        status = ex.build_completed_status(wfe, observation, now)
        message = f"Workflow {wfe.spec.workflow_ref.workflow_id} completed successfully in {status.duration}"
        return await self._end(wfe, status, now, message, executed=True)

    async def _fail_during_execution(self, wfe: WorkflowExecution, failure: FailureDetails) -> Result:
        now = self.clock()
        status = ex.build_execution_failed_status(wfe, failure, now)
        message = f"Workflow {wfe.spec.workflow_ref.workflow_id} failed: {failure.reason.value}"
        return await self._end(wfe, status, now, message, executed=True)

    async def _fail_before_execution(
        self, wfe: WorkflowExecution, reason: FailureReason, message: str, *, failed_to: str = "create PipelineRun"
    ) -> Result:
        now = self.clock()
        failure = build_pre_execution_failure(
            reason=reason,
            message=message,
            now=now,
            workflow_id=wfe.spec.workflow_ref.workflow_id,
            target=wfe.spec.target_resource,
        )
        status = ex.build_pre_execution_failed_status(wfe, failure, now, failed_to=failed_to)
        return await self._end(wfe, status, now, f"Pre-execution failure: {reason.value} - {message}", executed=False)

    async def _end(
        self, wfe: WorkflowExecution, status: WorkflowExecutionStatus, now: datetime, message: str, *, executed: bool
    ) -> Result:
        """The one way an execution ends: audit event, status write, metrics, Event, in that order.
        A run that executed holds the lock for the cooldown; one that failed before execution took
        no time and holds none."""
        outcome = "Completed" if status.phase == Phase.COMPLETED else "Failed"
        status = await self._record(build_workflow_event(wfe, status, outcome.lower(), now), status, now)
        body = await self._write_status(wfe, status)
        if executed:
            crash_point("executor.terminal-written")
        WE_RECONCILER_TOTAL.labels(outcome=outcome).inc()
        WE_DURATION_SECONDS.labels(outcome=outcome).observe(_seconds(status) if executed else 0)
        event_type = "Normal" if outcome == "Completed" else "Warning"
        await self.events.emit(body, event_type, f"Workflow{outcome}", message, now)
        if executed:
            return Result.after(self.settings.execution.cooldown.total_seconds())
        return Result.done()

    async def _terminal(self, wfe: WorkflowExecution) -> Result:
        now = self.clock()
        clearance = ex.decide_block_clearance(wfe, now)
        if clearance is not None:
            status = wfe.status.model_copy(deep=True)
            status.block_clearance = clearance
            try:
                await self.audit.record(build_block_cleared_event(wfe, status, now))
            except Exception as exc:  # audit never blocks the transition
                log.warning("Audit event for block clearance of %s not recorded: %s", wfe.key, exc)
            body = await self._write_status(wfe, status)
            await self.events.emit(
                body,
                "Normal",
                "ExecutionBlockCleared",
                f"Execution block cleared by {clearance.cleared_by}: {clearance.clear_reason}",
                now,
            )
        decision = ex.decide_cooldown(wfe, cooldown=self.settings.execution.cooldown, now=now)
        if not decision.release:
            crash_point("executor.cooldown-waiting")
            return Result.after(decision.requeue_after.total_seconds()) if decision.requeue_after else Result.done()
        if await self._release_lock(wfe):
            if wfe.status.start_time is not None:
                WE_LOCK_HOLD_SECONDS.observe(max(0.0, (now - wfe.status.start_time).total_seconds()))
            body = self.wfes.get(wfe.key) or {}
            await self.events.emit(
                body, "Normal", "LockReleased", f"Lock released for {wfe.spec.target_resource} after cooldown", now
            )
        return Result.done()

    async def _finalize(self, wfe: WorkflowExecution) -> Result:
        meta = wfe.metadata
        if ex.FINALIZER not in meta.finalizers:
            return Result.done()
        await self._release_lock(wfe, confirm_miss=True)
        body = self.wfes.get(wfe.key) or {}
        try:
            after = await patch_if_current(
                self.client,
                WorkflowExecutionResource,
                meta.name,
                meta.namespace,
                {"metadata": {"finalizers": [f for f in meta.finalizers if f != ex.FINALIZER]}},
                resource_version=meta.resource_version,
            )
        except NotFound:
            return Result.done()
        # The cache must not offer the finalizer again to a pass woken by our own PipelineRun delete.
        # Without finalizers the object is gone: record that (re-adding it could outlive its DELETED event).
        self.wfes.apply("MODIFIED" if after["metadata"].get("finalizers") else "DELETED", after)
        # After the finalizer is gone, so a retried pass (409) does not announce the cleanup twice.
        await self.events.emit(
            body,
            "Normal",
            "WorkflowExecutionDeleted",
            f"WorkflowExecution cleanup completed (phase: {wfe.phase.value})",
            self.clock(),
        )
        return Result.done()

    # -- I/O helpers -------------------------------------------------------------------------------

    async def _release_lock(self, wfe: WorkflowExecution, *, confirm_miss: bool = False) -> bool:
        """Delete the target's run (PipelineRun or Job) if (and only if) it belongs to this WFE.

        After the cooldown a cache miss means released: once the cache is synced our own runs are
        all in it (listed, or put there when we created or adopted them), and asking the API server
        on every later pass would cost a request per finished execution. A deletion (`confirm_miss`)
        asks anyway: the finalizer must never be dropped while the lock may still exist."""
        backend = BACKENDS[wfe.spec.execution_engine]
        cache = self.runs[backend.engine]
        name = build_lock_name(wfe.spec.target_resource)
        run = cache.get(f"{self.namespace}/{name}")
        if run is None and (confirm_miss or not cache.synced.is_set()):
            run = await self._fetch_run(backend, name)
        if run is None or not is_owned_by(run, wfe):
            return False
        if run["metadata"].get("deletionTimestamp"):
            return False  # released already; a run being deleted still holds the lock until its children are gone
        uid = run["metadata"]["uid"]  # every body the API server answers carries one
        # False when it was replaced since it was read: the new one is another execution's lock.
        return await backend.delete(self.client, name, self.namespace, uid=uid)

    async def _fetch_run(self, backend: ExecutionBackend, name: str) -> Body | None:
        return await get_object(self.client, backend.resource, name, self.namespace, into=self.runs[backend.engine])

    async def _record(
        self, event: AuditEvent, status: WorkflowExecutionStatus, now: datetime
    ) -> WorkflowExecutionStatus:
        try:
            await self.audit.record(event)
        except Exception as exc:  # audit never blocks the transition; the condition tells
            log.warning("Audit event %s for %s not recorded: %s", event.event_type, event.resource_id, exc)
            return ex.with_audit_condition(status, event.event_type, str(exc), now)
        return ex.with_audit_condition(status, event.event_type, None, now)

    async def _write_status(self, wfe: WorkflowExecution, status: WorkflowExecutionStatus) -> Body:
        """Merge-patch the status with the read resourceVersion as precondition (409 -> retry)."""
        current = self.wfes.get(wfe.key) or {}
        patch = build_merge_patch(current.get("status") or {}, status.to_wire())
        if not patch:
            return current
        return await patch_status_if_current(
            self.client,
            WorkflowExecutionResource,
            wfe.metadata.name,
            wfe.metadata.namespace,
            patch,
            resource_version=wfe.metadata.resource_version,
            into=self.wfes,
        )


def _seconds(status: WorkflowExecutionStatus) -> float:
    if status.start_time and status.completion_time:
        return max(0.0, (status.completion_time - status.start_time).total_seconds())
    return 0.0


def setup(manager: Manager) -> Executor:
    return Executor(manager)
