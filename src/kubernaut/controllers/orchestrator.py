"""The Remediation Orchestrator: every routing decision, WFE creation and reaction to outcomes.

Thin: it reads the request and what routing needs from the informer caches, calls the pure domain
(`routing`, `selection`, `remediation`), performs the resulting I/O and writes status.
"""

import asyncio
import contextlib
import logging
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

from lightkube.core.exceptions import ApiError
from pydantic import ValidationError

from kubernaut.api.audit import AuditEvent
from kubernaut.api.v1alpha1.notificationrequest import NotificationPhase
from kubernaut.api.v1alpha1.remediationrequest import (
    TERMINAL_PHASES,
    BlockReason,
    NotificationStatus,
    RemediationPhase,
    RemediationRequest,
    RemediationRequestStatus,
)
from kubernaut.api.v1alpha1.remediationworkflow import RemediationWorkflow
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution, WorkflowExecutionPhase
from kubernaut.controllers.kinds import (
    BLOCKED_INDEX,
    DUPLICATE_OF_INDEX,
    FINGERPRINT_INDEX,
    JOB_KIND,
    NR_KIND,
    PIPELINERUN_KIND,
    RR_KIND,
    TARGET_INDEX,
    WFE_KIND,
    WORKFLOW_KIND,
    index_rr_blocked,
    index_rr_by_duplicate_of,
    index_rr_by_fingerprint,
    index_rr_by_target,
    index_wfe_by_target,
)
from kubernaut.controllers.manager import Manager
from kubernaut.domain import remediation as rem
from kubernaut.domain.pipelinerun import ANNOTATION_TARGET_RESOURCE, parse_owner
from kubernaut.domain.routing import (
    BlockedAction,
    DecisionKind,
    LockHolder,
    RoutingDecision,
    RoutingStage,
    build_rr_target,
    compute_consecutive_failures,
    compute_target_backoff,
    decide_blocked,
    decide_routing,
)
from kubernaut.domain.selection import SelectionFailure, select_workflow
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.client import patch_status
from kubernaut.kube.faults import crash_point
from kubernaut.kube.patch import build_merge_patch
from kubernaut.kube.resources import (
    NotificationRequestResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from kubernaut.kube.runtime import Body, Controller, Result, object_key
from kubernaut.metrics import (
    RO_BLOCKED_COOLDOWN_EXPIRED,
    RO_BLOCKED_TOTAL,
    RO_CHILD_CREATIONS,
    RO_CURRENT_BLOCKED,
    RO_DUPLICATES_SKIPPED,
    RO_MANUAL_REVIEW,
    RO_PHASE_TRANSITIONS,
    RO_RECONCILE_DURATION,
    RO_RECONCILE_TOTAL,
    RO_TIMEOUTS,
)

log = logging.getLogger(__name__)

Phase = RemediationPhase
WORKERS = 32  # reconciles mostly wait on the API server; more in flight is more throughput, not more CPU
WRITE_ATTEMPTS = 10  # status writes on conflict, while the request is still at the decided transition
CREATION_RETRY = timedelta(seconds=5)


class CreationRefused(Exception):
    """The API server will not create the WorkflowExecution as it is; retrying at once cannot help."""


def _parse_rr(body: Body) -> RemediationRequest:
    return RemediationRequest.from_wire(body)


def _parse_wfe(body: Body) -> WorkflowExecution:
    return WorkflowExecution.from_wire(body)


def _parse_workflow(body: Body) -> RemediationWorkflow:
    return RemediationWorkflow.from_wire(body)


class Orchestrator:
    def __init__(self, manager: Manager) -> None:
        self.client = manager.client
        self.settings = manager.settings
        self.routing = manager.settings.routing.policy()
        self.timeouts = manager.settings.timeouts.policy()
        self.audit = manager.audit
        self.clock = manager.clock
        self.exec_namespace = manager.settings.execution.namespace
        self.rrs = manager.cache(
            RR_KIND,
            {
                FINGERPRINT_INDEX: index_rr_by_fingerprint,
                TARGET_INDEX: index_rr_by_target,
                DUPLICATE_OF_INDEX: index_rr_by_duplicate_of,
                BLOCKED_INDEX: index_rr_blocked,
            },
        )
        # Routing reads only the part of a long history that can still decide (see _same_fingerprint
        # and _executions_on), through indexes kept in order, so a decision costs the same at 10 or
        # 10,000 finished requests on a signal or target.
        self.rrs.add_index(HISTORY_BY_FINGERPRINT, index_rr_by_fingerprint, order=_rr_order)
        self.rrs.add_index(ACTIVE_BY_FINGERPRINT, _index_active_rr_by_fingerprint)
        self.rrs.add_index(ACTIVE_RR_BY_TARGET, _index_active_rr_by_target)
        self.wfes = manager.cache(WFE_KIND, {TARGET_INDEX: index_wfe_by_target})
        self.wfes.add_index(ACTIVE_BY_TARGET, _index_active_wfe_by_target)
        self.wfes.add_index(FINISHED_BY_TARGET, _index_finished_wfe_by_target, order=_wfe_finish_order)
        self.pipelineruns = manager.cache(PIPELINERUN_KIND)
        self.jobs = manager.cache(JOB_KIND)
        self.catalog = manager.cache(WORKFLOW_KIND)
        self.notifications = manager.cache(NR_KIND)
        # One routing decision per target at a time (see _analyze); a lock lives while someone holds it.
        self._target_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.controller = manager.add_controller(
            Controller("orchestrator", self.reconcile, workers=WORKERS, finished=self.finished)
        )
        manager.on_event(RR_KIND, self._on_request)
        manager.on_event(WFE_KIND, self._on_execution)
        manager.on_event(PIPELINERUN_KIND, self._on_pipelinerun)
        manager.on_event(JOB_KIND, self._on_pipelinerun)  # a Job is a lock like a PipelineRun
        manager.on_event(NR_KIND, self._on_notification)

    # -- wake-ups: the events that clear blocks or finish phases ----------------------------------

    def _on_request(self, type_: str, body: Body, old: Body | None) -> None:
        key = object_key(body)
        self.controller.enqueue(key)
        namespace = (body.get("metadata") or {}).get("namespace", "")
        RO_CURRENT_BLOCKED.labels(namespace=namespace).set(self.rrs.count_by_index(BLOCKED_INDEX, namespace))
        phase = (body.get("status") or {}).get("overallPhase")
        # A deleted original ends its duplicates too (its last body still shows the old phase).
        if type_ == "DELETED" or old is None or phase != (old.get("status") or {}).get("overallPhase"):
            for dependent in self.rrs.keys_by_index(DUPLICATE_OF_INDEX, key):
                self.controller.enqueue(dependent)

    def _on_execution(self, _type: str, body: Body, _old: Body | None) -> None:
        meta = body.get("metadata") or {}
        for owner in meta.get("ownerReferences") or []:
            if owner.get("kind") == "RemediationRequest":
                self.controller.enqueue(f"{meta.get('namespace', '')}/{owner.get('name')}")
        for target in index_wfe_by_target(body):
            self._wake_blocked_on(target)

    def _on_pipelinerun(self, _type: str, body: Body, _old: Body | None) -> None:
        meta = body.get("metadata") or {}
        if meta.get("namespace") != self.exec_namespace:
            return
        target = (meta.get("annotations") or {}).get(ANNOTATION_TARGET_RESOURCE)
        if target:
            self._wake_blocked_on(target)

    def _wake_blocked_on(self, target: str) -> None:
        # Every active request on the target, not only those the cache shows Blocked: one being routed
        # right now is about to write Blocked, and this wake-up must not fall between the two.
        for key in self.rrs.keys_by_index(ACTIVE_RR_BY_TARGET, target):
            self.controller.enqueue(key)

    def _on_notification(self, _type: str, body: Body, _old: Body | None) -> None:
        meta = body.get("metadata") or {}
        for owner in meta.get("ownerReferences") or []:
            if owner.get("kind") == "RemediationRequest":
                self.controller.enqueue(f"{meta.get('namespace', '')}/{owner.get('name')}")

    def finished(self, key: str) -> bool:
        """Nothing is left to do for a request that is gone, being deleted or terminal; every other one
        is resynced (a terminal one's notification mirror is woken by its NotificationRequest)."""
        body = self.rrs.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return True
        return (body.get("status") or {}).get("overallPhase") in _TERMINAL_RR

    # -- reconcile -------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result:
        body = self.rrs.get(key)
        if body is None:
            return Result.done()
        try:
            # A finished request's model is not kept: with a long history that would be a second,
            # parsed copy of every request in memory (routing keeps only the few it reads).
            finished = (body.get("status") or {}).get("overallPhase") in _TERMINAL_RR
            rr = _parse_rr(body) if finished else self.rrs.parsed(body, _parse_rr)
        except ValidationError as exc:
            log.error("RemediationRequest %s cannot be read: %s", key, exc.errors()[0]["msg"])
            return Result.done()
        if rr.metadata.deletion_timestamp is not None:
            return Result.done()
        phase = rr.status.overall_phase
        started = self.clock()
        namespace = rr.metadata.namespace
        try:
            return await self._reconcile(rr)
        finally:
            label = phase.value if phase else "New"
            RO_RECONCILE_TOTAL.labels(namespace=namespace, phase=label).inc()
            RO_RECONCILE_DURATION.labels(namespace=namespace, phase=label).observe(
                (self.clock() - started).total_seconds()
            )

    async def _reconcile(self, rr: RemediationRequest) -> Result:
        now = self.clock()
        phase = rr.status.overall_phase
        if phase is None:
            status = rem.build_initial_status(rr, now)
            await self._record(rr, status, "orchestrator.lifecycle.started", "pending", {}, now)
            await self._write(rr, status)
            return Result.after(0)
        if rr.is_terminal:
            return await self._mirror_notification(rr)
        timeout = rem.decide_timeout(rr, now, self.timeouts)
        if timeout is not None:
            return await self._time_out(rr, timeout)
        match phase:
            case Phase.PENDING:
                return await self._route_pending(rr)
            case Phase.ANALYZING:
                return await self._analyze(rr)
            case Phase.EXECUTING:
                return await self._executing(rr)
            case Phase.BLOCKED:
                return await self._blocked(rr)
        return Result.done()  # Processing and AwaitingApproval are not used by this orchestrator

    async def _route_pending(self, rr: RemediationRequest) -> Result:
        now = self.clock()
        # The workflow is already known here (workflowRef or catalog), so the recent-remediation check
        # looks at that workflow only: another workflow's success on the target must not hold it back.
        selected = select_workflow(rr, self._catalog())
        workflow_id = "" if isinstance(selected, SelectionFailure) else selected.workflow_id
        decision = self._route(rr, workflow_id=workflow_id, stage=RoutingStage.PENDING)
        if decision.kind == DecisionKind.BLOCK:
            return await self._block(rr, decision, Phase.PENDING, workflow_id)
        status = rem.build_analyzing_status(rr, now)
        await self._transitioned(rr, status, Phase.PENDING, now)
        return Result.after(0)

    async def _analyze(self, rr: RemediationRequest) -> Result:
        now = self.clock()
        selected = select_workflow(rr, self._catalog())
        if isinstance(selected, SelectionFailure):
            status = rem.build_failed_status(
                rr,
                now,
                failure_phase=rem.FAILURE_PHASE_ANALYSIS,
                failure_reason=selected.message,
                message=selected.message,
            )
            status.requires_manual_review = True
            status = await self._notify(
                rr,
                status,
                self._manual_review(
                    rr,
                    rem.ManualReview(
                        source="WorkflowSelection",
                        reason="WorkflowNotFound",
                        message=selected.message,
                        priority="high",
                    ),
                ),
                "WorkflowSelection",
                "WorkflowNotFound",
            )
            await self._finish(rr, status, now, Phase.ANALYZING)
            return Result.done()
        # Workers route concurrently: without the lock two requests for one target could both find it
        # free and both create an execution, and the one losing the PipelineRun race would fail.
        target = build_rr_target(rr)
        lock = self._target_locks.get(target)
        if lock is None:
            lock = self._target_locks[target] = asyncio.Lock()
        async with lock:
            decision = self._route(rr, workflow_id=selected.workflow_id, stage=RoutingStage.ANALYZING)
            if decision.kind == DecisionKind.BLOCK:
                return await self._block(rr, decision, Phase.ANALYZING, selected.workflow_id)
            if decision.kind == DecisionKind.FAIL:
                return await self._previous_execution_failed(rr, decision, selected.workflow_id)
            manifest = rem.build_workflow_execution(rr, selected)
            try:
                created = await self._create_execution(rr, manifest)
            except CreationRefused as exc:
                # The request stays in Analyzing (its timeout bounds the wait) and says why.
                await self._write(rr, rem.build_creation_failed_status(rr, str(exc), now))
                return Result.after(CREATION_RETRY.total_seconds())
        if created is None:
            return Result.after(5)
        crash_point("orchestrator.execution-created")
        status = rem.build_executing_status(rr, manifest["metadata"]["name"], selected, now)
        RO_CHILD_CREATIONS.labels(child_type="WorkflowExecution", namespace=rr.metadata.namespace).inc()
        await self._transitioned(rr, status, Phase.ANALYZING, now)
        return Result.done()  # the execution's events wake it; the resync period bounds the wait

    async def _executing(self, rr: RemediationRequest) -> Result:
        now = self.clock()
        ref = rr.status.workflow_execution_ref
        name = ref.name if ref else rem.build_child_name("we-", rr.metadata.name)
        body = self.wfes.get(f"{rr.metadata.namespace}/{name}") or await self._fetch_execution(rr, name)
        if body is not None and _deleted_unfinished(body):
            body = None  # deleted before it finished: gone as far as the request is concerned
        if body is None:
            status = rem.build_failed_status(
                rr,
                now,
                failure_phase=rem.FAILURE_PHASE_WORKFLOW_EXECUTION,
                failure_reason="WorkflowExecution not found",
            )
            await self._finish(rr, status, now, Phase.EXECUTING)
            return Result.done()
        wfe = self.wfes.parsed(body, _parse_wfe)
        if wfe.phase == WorkflowExecutionPhase.COMPLETED:
            await self._finish(rr, rem.build_completed_status(rr, now), now, Phase.EXECUTING)
            return Result.done()
        if wfe.phase != WorkflowExecutionPhase.FAILED:
            return Result.done()  # the execution's events wake it; the resync period bounds the wait
        details = wfe.status.failure_details
        was_execution = bool(details and details.was_execution_failure)
        target = build_rr_target(rr)
        count, next_allowed = compute_target_backoff(self._executions_on(target), target, now, self.routing)
        status = rem.build_workflow_failed_status(
            rr,
            now,
            summary=details.natural_language_summary if details else None,
            was_execution_failure=was_execution,
            failure_count=count,
            next_allowed=next_allowed,
        )
        if was_execution and details is not None:
            status = await self._notify(
                rr,
                status,
                self._manual_review(
                    rr,
                    rem.ManualReview(
                        source="WorkflowExecution",
                        reason="ExecutionFailure",
                        message=details.message,
                        priority="critical",
                        previous_execution=wfe.metadata.name,
                        last_exit_code=details.exit_code,
                    ),
                ),
                "WorkflowExecution",
                "ExecutionFailure",
            )
        await self._finish(rr, status, now, Phase.EXECUTING)
        return Result.done()

    async def _blocked(self, rr: RemediationRequest) -> Result:
        now = self.clock()
        original: RemediationRequest | None = None
        original_exists = True
        if rr.status.block_reason == BlockReason.DUPLICATE_IN_PROGRESS and rr.status.duplicate_of:
            original_body = self.rrs.get(f"{rr.metadata.namespace}/{rr.status.duplicate_of}")
            original_exists = original_body is not None
            original = self.rrs.parsed(original_body, _parse_rr) if original_body else None
        target = build_rr_target(rr)
        lock = self._lock_on(target)
        decision = decide_blocked(
            rr,
            original=original,
            original_exists=original_exists,
            same_target=self._executions_on(target, lock=lock),
            lock=lock,
            now=now,
        )
        match decision.action:
            case BlockedAction.STAY:
                if decision.requeue_after is None:
                    return Result.done()
                return Result.after(decision.requeue_after.total_seconds())
            case BlockedAction.RESUME:
                status = rem.build_resumed_status(rr)
                await self._transitioned(rr, status, Phase.BLOCKED, now)
                return Result.after(0)
            case BlockedAction.COMPLETE:
                await self._finish(rr, rem.build_completed_status(rr, now, from_duplicate=True), now, Phase.BLOCKED)
                return Result.done()
            case BlockedAction.FAIL:
                status = rem.build_failed_status(
                    rr, now, failure_phase=decision.failure_phase, failure_reason=decision.failure_reason
                )
                if decision.failure_phase == rem.FAILURE_PHASE_BLOCKED:
                    RO_BLOCKED_COOLDOWN_EXPIRED.inc()
                await self._finish(rr, status, now, Phase.BLOCKED)
                return Result.done()
        return Result.done()  # pragma: no cover

    async def _block(
        self, rr: RemediationRequest, decision: RoutingDecision, from_phase: Phase, workflow_id: str
    ) -> Result:
        now = self.clock()
        status = rem.build_blocked_status(rr, decision, from_phase)
        data = rem.build_blocked_event_data(rr, decision, from_phase, Phase.BLOCKED, workflow_id, now)
        await self._record(rr, status, "orchestrator.routing.blocked", "pending", data, now)
        if decision.reason == BlockReason.CONSECUTIVE_FAILURES and self._first_exhausted_block(rr):
            status = await self._notify(
                rr,
                status,
                self._manual_review(
                    rr,
                    rem.ManualReview(
                        source="RemediationOrchestrator",
                        reason="ExhaustedRetries",
                        message=decision.message,
                        priority="critical",
                        # the block decision carries no count; the streak it was decided on does
                        retry_count=compute_consecutive_failures(rr, self._same_fingerprint(rr))[0],
                        max_retries=self.routing.consecutive_failure_threshold,
                    ),
                ),
                "RemediationOrchestrator",
                "ExhaustedRetries",
            )
        await self._write(rr, status)
        namespace = rr.metadata.namespace
        RO_BLOCKED_TOTAL.labels(namespace=namespace, reason=decision.reason).inc()
        if decision.duplicate_of:
            RO_DUPLICATES_SKIPPED.labels(skip_reason="DuplicateInProgress", namespace=namespace).inc()
        RO_PHASE_TRANSITIONS.labels(from_phase=from_phase.value, to_phase="Blocked", namespace=namespace).inc()
        if decision.requeue_after is None:
            return Result.done()
        return Result.after(decision.requeue_after.total_seconds())

    def _first_exhausted_block(self, rr: RemediationRequest) -> bool:
        return rem.decide_exhausted_retries_notice(rr, self._same_fingerprint(rr))

    async def _previous_execution_failed(
        self, rr: RemediationRequest, decision: RoutingDecision, workflow_id: str
    ) -> Result:
        now = self.clock()
        status = rem.build_previous_execution_failed_status(rr, decision, now)
        data = rem.build_blocked_event_data(rr, decision, Phase.ANALYZING, Phase.FAILED, workflow_id, now)
        await self._record(rr, status, "orchestrator.routing.blocked", "pending", data, now)
        status = await self._notify(
            rr,
            status,
            self._manual_review(
                rr,
                rem.ManualReview(
                    source="WorkflowExecution",
                    reason="PreviousExecutionFailed",
                    message=decision.message,
                    priority="critical",
                    previous_execution=decision.blocking_workflow_execution,
                ),
            ),
            "WorkflowExecution",
            "PreviousExecutionFailed",
        )
        await self._finish(rr, status, now, Phase.ANALYZING)
        return Result.done()

    async def _time_out(self, rr: RemediationRequest, decision: rem.TimeoutDecision) -> Result:
        now = self.clock()
        status = rem.build_timed_out_status(rr, decision, now)
        status = await self._notify(
            rr,
            status,
            rem.build_timeout_notification(rr, decision, self.settings.notifications.for_priority(decision.priority)),
            "",
            "",
        )
        RO_TIMEOUTS.labels(phase=decision.phase, namespace=rr.metadata.namespace).inc()
        await self._finish(rr, status, now, rr.status.overall_phase or Phase.PENDING)
        return Result.done()

    async def _mirror_notification(self, rr: RemediationRequest) -> Result:
        refs = rr.status.notification_request_refs or []
        if not refs:
            return Result.done()
        ref = refs[-1]
        body = self.notifications.get(f"{ref.namespace or rr.metadata.namespace}/{ref.name}")
        if body is None and not self.notifications.synced.is_set():
            return Result.done()
        raw = (body or {}).get("status", {}).get("phase")
        phase = NotificationPhase(raw) if raw in NotificationPhase._value2member_map_ else None
        status = rem.build_notification_mirror(rr, phase, body is None, self.clock())
        await self._write(rr, status)
        return Result.done()

    # -- shared steps ----------------------------------------------------------------------------

    def _manual_review(self, rr: RemediationRequest, review: rem.ManualReview) -> dict[str, Any]:
        channels = self.settings.notifications.for_priority(review.priority)
        return rem.build_manual_review_notification(rr, review, channels)

    def _route(self, rr: RemediationRequest, *, workflow_id: str, stage: RoutingStage) -> RoutingDecision:
        target = build_rr_target(rr)
        lock = self._lock_on(target)
        return decide_routing(
            rr,
            workflow_id=workflow_id,
            stage=stage,
            same_fingerprint=self._same_fingerprint(rr),
            same_target=self._executions_on(target, workflow_id=workflow_id, lock=lock),
            lock=lock,
            now=self.clock(),
            config=self.routing,
        )

    def _same_fingerprint(self, rr: RemediationRequest) -> list[RemediationRequest]:
        """The requests of rr's signal that can still decide anything about it: every active one, and
        the history newest first down to (and with) the newest Completed one. Older requests are
        behind a success: the failure streak, the duplicate check and the streak notice all stop
        there, so leaving them out gives the same answers."""
        fingerprint = rr.spec.signal_fingerprint
        bodies: dict[str, Body] = {}
        for body in self.rrs.newest_first(HISTORY_BY_FINGERPRINT, fingerprint):
            key = object_key(body)
            bodies[key] = body
            if key != rr.key and (body.get("status") or {}).get("overallPhase") == Phase.COMPLETED.value:
                break
        for key in self.rrs.keys_by_index(ACTIVE_BY_FINGERPRINT, fingerprint):
            active = self.rrs.get(key)
            if active is not None:
                bodies.setdefault(key, active)
        return [self.rrs.parsed(body, _parse_rr) for body in bodies.values()]

    def _catalog(self) -> list[RemediationWorkflow]:
        return [self.catalog.parsed(body, _parse_workflow) for body in self.catalog.all()]

    def _executions_on(
        self, target: str, *, workflow_id: str = "", lock: LockHolder | None = None
    ) -> list[WorkflowExecution]:
        """The executions on a target that can still decide anything: the active ones, the one named
        by the lock, and the finished ones newest completion first down to (and with) the newest
        Completed one of `workflow_id` (any workflow when empty). Busy, recently remediated,
        back-off and previous-failure checks look no further back than that."""
        bodies: dict[str, Body] = {}
        for key in self.wfes.keys_by_index(ACTIVE_BY_TARGET, target):
            active = self.wfes.get(key)
            if active is not None:
                bodies[key] = active
        if lock is not None and lock.workflow_execution:
            key = f"{lock.namespace}/{lock.workflow_execution}"
            holder = self.wfes.get(key)
            if holder is not None:
                bodies[key] = holder
        for body in self.wfes.newest_first(FINISHED_BY_TARGET, target):
            bodies[object_key(body)] = body
            if (body.get("status") or {}).get("phase") == WorkflowExecutionPhase.COMPLETED.value and (
                not workflow_id or ((body.get("spec") or {}).get("workflowRef") or {}).get("workflowId") == workflow_id
            ):
                break
        return [self.wfes.parsed(body, _parse_wfe) for body in bodies.values()]

    def _lock_on(self, target: str) -> LockHolder | None:
        name = build_lock_name(target)
        key = f"{self.exec_namespace}/{name}"
        body = self.pipelineruns.get(key) or self.jobs.get(key)  # P10: a lock of either engine
        if body is None:
            return None
        namespace, wfe = parse_owner(body)
        return LockHolder(pipeline_run=name, workflow_execution=wfe, namespace=namespace)

    async def _transitioned(
        self, rr: RemediationRequest, status: RemediationRequestStatus, from_phase: Phase, now: datetime
    ) -> None:
        to_phase = status.overall_phase or Phase.PENDING
        data = {"from_phase": from_phase.value, "to_phase": to_phase.value}
        await self._record(rr, status, "orchestrator.phase.transitioned", "success", data, now)
        await self._write(rr, status)
        RO_PHASE_TRANSITIONS.labels(
            from_phase=from_phase.value, to_phase=to_phase.value, namespace=rr.metadata.namespace
        ).inc()

    async def _finish(
        self, rr: RemediationRequest, status: RemediationRequestStatus, now: datetime, from_phase: Phase
    ) -> None:
        """A terminal transition: lifecycle.completed audit, then the status write."""
        to_phase = status.overall_phase or Phase.FAILED
        success = to_phase == Phase.COMPLETED
        data: dict[str, Any] = {
            "outcome": status.outcome.value if success and status.outcome else to_phase.value,
            "duration_ms": rem.duration_ms(rr, now),
        }
        if not success:
            data["failure_phase"] = status.failure_phase or (status.timeout_phase and rem.FAILURE_PHASE_TIMEOUT) or ""
            data["failure_reason"] = status.failure_reason or status.message or to_phase.value
        await self._record(
            rr, status, "orchestrator.lifecycle.completed", "success" if success else "failure", data, now
        )
        crash_point("orchestrator.terminal-recorded")
        await self._write(rr, status)
        RO_PHASE_TRANSITIONS.labels(
            from_phase=from_phase.value, to_phase=to_phase.value, namespace=rr.metadata.namespace
        ).inc()

    async def _record(
        self,
        rr: RemediationRequest,
        status: RemediationRequestStatus,
        event_type: str,
        outcome: str,
        data: dict[str, Any],
        now: datetime,
    ) -> None:
        event: AuditEvent = rem.build_rr_event(rr, status, event_type, outcome, data, now)
        try:
            await self.audit.record(event)
        except Exception as exc:  # audit failures are logged and never change routing
            log.warning("Audit event %s for %s not recorded: %s", event_type, rr.key, exc)

    async def _write(self, rr: RemediationRequest, status: RemediationRequestStatus) -> None:
        """Merge-patch the status, with the resourceVersion the pass decided from as precondition.

        The audit event of a transition is recorded before this write, so the write must not be given
        up lightly: after a conflict (someone else wrote, e.g. the gateway counting a repeat) the same
        change is written on top of the new version as long as the request is still at the transition
        this pass decided from. Otherwise, and after any failure that may have written (a lost
        response), the request is read again so that the next pass decides from what is stored.

        The patch is the change this pass made to the status it read, not a diff against the cache:
        the cache may already hold someone else's newer write (a raised deduplication count), and a
        diff against it would carry the stale value back, on this write or on a retry after a conflict.
        """
        patch = build_merge_patch(rr.status.to_wire(), status.to_wire())
        if not patch:
            return
        version = rr.metadata.resource_version
        for attempt in range(WRITE_ATTEMPTS):
            try:
                updated = await patch_status(
                    self.client,
                    RemediationRequestResource,
                    rr.metadata.name,
                    rr.metadata.namespace,
                    patch,
                    resource_version=version,
                )
            except Exception as exc:
                conflict = isinstance(exc, ApiError) and exc.status.code == 409
                fresh = await self._fetch_request(rr)
                if not conflict or attempt == WRITE_ATTEMPTS - 1 or fresh is None or not _same_transition(rr, fresh):
                    raise
                version = fresh["metadata"]["resourceVersion"]
                continue
            self.rrs.apply("MODIFIED", updated.to_dict())
            return

    async def _fetch_request(self, rr: RemediationRequest) -> Body | None:
        try:
            found = await self.client.get(RemediationRequestResource, rr.metadata.name, namespace=rr.metadata.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        body: Body = found.to_dict()
        self.rrs.apply("MODIFIED", body)
        return body

    async def _create_execution(self, rr: RemediationRequest, manifest: dict[str, Any]) -> Body | None:
        """Create `we-<rr>` (idempotent: an existing one owned by this request is reused)."""
        name = manifest["metadata"]["name"]
        try:
            created = await self.client.create(WorkflowExecutionResource(manifest))
        except ApiError as exc:
            if exc.status.code in (400, 403, 422):
                raise CreationRefused(exc.status.message or str(exc)) from exc
            if exc.status.code != 409:
                await self._learn_execution(rr, name)
                raise  # transient: retried with back-off
            existing = await self._fetch_execution(rr, name)
            if existing is None:
                return None
            owners = (existing.get("metadata") or {}).get("ownerReferences") or []
            if not any(owner.get("uid") == rr.metadata.uid for owner in owners):
                raise CreationRefused(f"WorkflowExecution {name} exists and belongs to another request") from exc
            return existing
        except Exception:
            await self._learn_execution(rr, name)
            raise
        body: Body = created.to_dict()
        self.wfes.apply("MODIFIED", body)
        return body

    async def _learn_execution(self, rr: RemediationRequest, name: str) -> None:
        """After a create whose answer was lost (a timeout, a 5xx) the execution may exist: read it now,
        while the target's routing lock is held, so that the next request does not find the target free
        and create a second execution that loses the race for the PipelineRun."""
        with contextlib.suppress(Exception):
            await self._fetch_execution(rr, name)

    async def _fetch_execution(self, rr: RemediationRequest, name: str) -> Body | None:
        try:
            found = await self.client.get(WorkflowExecutionResource, name, namespace=rr.metadata.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        body: Body = found.to_dict()
        self.wfes.apply("MODIFIED", body)
        return body

    async def _notify(
        self,
        rr: RemediationRequest,
        status: RemediationRequestStatus,
        manifest: dict[str, Any],
        source: str,
        reason: str,
    ) -> RemediationRequestStatus:
        """Create the notification (one per name) and reference it; errors never stop the transition."""
        name = manifest["metadata"]["name"]
        try:
            created = await self.client.create(NotificationRequestResource(manifest))
            manifest["metadata"]["uid"] = created.metadata.uid
            if source:
                RO_MANUAL_REVIEW.labels(
                    source=source, reason=reason, sub_reason="none", namespace=rr.metadata.namespace
                ).inc()
        except ApiError as exc:
            if exc.status.code != 409:
                log.warning("Notification %s for %s not created: %s", name, rr.key, exc.status.message)
                return status
            try:
                existing = await self.client.get(NotificationRequestResource, name, namespace=rr.metadata.namespace)
                manifest["metadata"]["uid"] = existing.metadata.uid
            except ApiError:
                pass
        status = rem.with_notification_ref(status, manifest)
        status.notification_status = status.notification_status or NotificationStatus.PENDING
        return status


def _same_transition(rr: RemediationRequest, body: Body) -> bool:
    """Whether a freshly read request is still in the phase and transition `rr` was read at."""
    status = body.get("status") or {}
    phase = rr.status.overall_phase.value if rr.status.overall_phase else None
    return status.get("overallPhase") == phase and (status.get("transitionCount") or 0) == (
        rr.status.transition_count or 0
    )


HISTORY_BY_FINGERPRINT = "fingerprintByAge"
ACTIVE_BY_FINGERPRINT = "activeFingerprint"
ACTIVE_RR_BY_TARGET = "activeRequestTarget"
ACTIVE_BY_TARGET = "activeTarget"
FINISHED_BY_TARGET = "finishedTarget"
_TERMINAL_RR = frozenset(phase.value for phase in TERMINAL_PHASES)
_TERMINAL_WFE = frozenset((WorkflowExecutionPhase.COMPLETED.value, WorkflowExecutionPhase.FAILED.value))
_LATEST = datetime.max.replace(tzinfo=UTC)


def _parse_instant(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _rr_order(body: Body) -> tuple[datetime, str, str, str]:
    """The routing's order of requests (creation, then name, namespace, uid)."""
    meta = body.get("metadata") or {}
    created = _parse_instant(meta.get("creationTimestamp")) or _LATEST
    return (created, str(meta.get("name", "")), str(meta.get("namespace", "")), str(meta.get("uid", "")))


def _wfe_finish_order(body: Body) -> tuple[datetime, datetime, str, str]:
    """The routing's order of finished executions (completion, then creation, namespace, name)."""
    meta = body.get("metadata") or {}
    completed = _parse_instant((body.get("status") or {}).get("completionTime")) or _LATEST
    created = _parse_instant(meta.get("creationTimestamp")) or _LATEST
    return (completed, created, str(meta.get("namespace", "")), str(meta.get("name", "")))


def _deleted_unfinished(body: Body) -> bool:
    """A WFE being deleted before it finished (it may linger while the executor's finalizer releases its lock)."""
    return (
        bool((body.get("metadata") or {}).get("deletionTimestamp"))
        and (body.get("status") or {}).get("phase") not in _TERMINAL_WFE
    )


def _index_active_rr_by_fingerprint(body: Body) -> list[str]:
    if (body.get("status") or {}).get("overallPhase") in _TERMINAL_RR:
        return []
    return index_rr_by_fingerprint(body)


def _index_active_rr_by_target(body: Body) -> list[str]:
    if (body.get("status") or {}).get("overallPhase") in _TERMINAL_RR:
        return []
    return index_rr_by_target(body)


def _index_active_wfe_by_target(body: Body) -> list[str]:
    if (body.get("status") or {}).get("phase") in _TERMINAL_WFE:
        return []
    return index_wfe_by_target(body)


def _index_finished_wfe_by_target(body: Body) -> list[str]:
    status = body.get("status") or {}
    if status.get("phase") not in _TERMINAL_WFE or not status.get("completionTime"):
        return []
    return index_wfe_by_target(body)


def setup(manager: Manager) -> Orchestrator:
    return Orchestrator(manager)
