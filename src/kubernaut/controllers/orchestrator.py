"""The Remediation Orchestrator: every routing decision, WFE creation and reaction to outcomes.

Thin: it reads the request and what routing needs from the informer caches, calls the pure domain
(`routing`, `selection`, `remediation`), performs the resulting I/O and writes status.
"""

import asyncio
import contextlib
import logging
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubernaut.api.audit import AuditEvent
from kubernaut.api.v1alpha1.remediationrequest import (
    TERMINAL_PHASES,
    BlockReason,
    RemediationPhase,
    RemediationRequest,
    RemediationRequestStatus,
)
from kubernaut.api.v1alpha1.remediationworkflow import RemediationWorkflow
from kubernaut.api.v1alpha1.workflowexecution import WorkflowExecution, WorkflowExecutionPhase
from kubernaut.controllers.kinds import (
    BLOCKED_INDEX,
    BREAKER_KIND,
    DUPLICATE_OF_INDEX,
    FINGERPRINT_INDEX,
    JOB_KIND,
    NAMESPACE_KIND,
    NODE_KIND,
    NR_KIND,
    PIPELINERUN_KIND,
    RAR_KIND,
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
from kubernaut.controllers.prometheus import check_query
from kubernaut.controllers.slots import CreationSlots
from kubernaut.domain import transitions as tr
from kubernaut.domain.approval import PENDING_STATUS
from kubernaut.domain.effectiveness import MetricCheck
from kubernaut.domain.execution import ANNOTATION_CLEAR_BLOCK
from kubernaut.domain.gates import (
    BREAKER_NAMESPACE,
    RATE_WINDOW,
    BreakerReset,
    Gates,
    Scope,
    build_reset_event,
    build_scope_key,
    is_managed,
    parse_reset,
)
from kubernaut.domain.pipelinerun import ANNOTATION_TARGET_RESOURCE, parse_owner
from kubernaut.domain.routing import LockHolder, RoutingDecision, RoutingStage, build_rr_target
from kubernaut.domain.target import build_lock_name
from kubernaut.execution import BACKENDS
from kubernaut.kube.api import create_idempotent, get_object, kube_errors, patch_status_if_current
from kubernaut.kube.errors import AlreadyExists, Conflict, KubeError, NotFound, Refused
from kubernaut.kube.faults import crash_point
from kubernaut.kube.patch import build_merge_patch
from kubernaut.kube.resources import (
    NotificationRequestResource,
    RemediationApprovalRequestResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from kubernaut.kube.runtime import Body, Cache, Controller, Result, object_key
from kubernaut.metrics import (
    RO_ASSESSMENTS,
    RO_BLOCKED_COOLDOWN_EXPIRED,
    RO_BLOCKED_TOTAL,
    RO_CHILD_CREATIONS,
    RO_CURRENT_BLOCKED,
    RO_DUPLICATES_SKIPPED,
    RO_MANUAL_REVIEW,
    RO_PHASE_TRANSITIONS,
    RO_RECONCILE_DURATION,
    RO_RECONCILE_TOTAL,
    RO_TIME_TO_EXECUTION,
    RO_TIME_TO_RESOLUTION,
    RO_TIMEOUTS,
)

log = logging.getLogger(__name__)

Phase = RemediationPhase
WORKERS = 32  # reconciles mostly wait on the API server; more in flight is more throughput, not more CPU
WRITE_ATTEMPTS = 10  # status writes on conflict, while the request is still at the decided transition


class CreationRefused(Exception):
    """The API server will not create the WorkflowExecution as it is; retrying at once cannot help."""


def _parse_rr(body: Body) -> RemediationRequest:
    return RemediationRequest.from_wire(body)


def _parse_wfe(body: Body) -> WorkflowExecution:
    return WorkflowExecution.from_wire(body)


def _parse_workflow(body: Body) -> RemediationWorkflow:
    return RemediationWorkflow.from_wire(body)


@dataclass(frozen=True)
class _Unwritten:
    """A transition whose audit events are recorded but whose status write failed (the API server
    was unreachable, say). The next pass writes the same change again instead of deciding afresh,
    which could decide another transition under the same number: the audit trail then holds
    exactly the transitions the request made."""

    uid: str
    phase: str | None
    transition_count: int
    patch: dict[str, Any]
    counts_after_write: tuple[tr.Count, ...]
    requeue: timedelta | None

    def applies_to(self, rr: RemediationRequest) -> bool:
        phase = rr.status.overall_phase.value if rr.status.overall_phase else None
        return (rr.metadata.uid, phase, rr.status.transition_count or 0) == (
            self.uid,
            self.phase,
            self.transition_count,
        )


class Orchestrator:
    def __init__(self, manager: Manager) -> None:
        self.client = manager.client
        self.audit = manager.audit
        self.clock = manager.clock
        self._unwritten: dict[str, _Unwritten] = {}
        self._take_policies(manager)
        self._add_caches(manager)
        # Rate limits are cluster-wide: two workers must never both take the last free slot.
        self._slots = CreationSlots(self._headroom)
        # The requests deciding on an execution right now: an execution's end or a breaker reset
        # must reach one that is about to write a gate block it no longer has.
        self._deciding: set[str] = set()
        # One routing decision per target at a time (see _target_lock).
        self._target_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.controller = manager.add_controller(
            Controller("orchestrator", self.reconcile, workers=WORKERS, finished=self.finished)
        )
        self.breaker_controller = manager.add_controller(Controller("breaker-reset", self._record_reset, workers=1))
        self._subscribe(manager)

    def _take_policies(self, manager: Manager) -> None:
        settings = manager.settings
        self.routing = settings.routing_policy()
        self.timeouts = settings.timeouts.policy()
        self.effectiveness = settings.effectiveness.policy()
        self.policy = tr.PlanPolicy(
            self.routing,
            self.timeouts,
            settings.notifications.for_priority,
            approval=settings.approval.policy(),
            dry_run=settings.dry_run.enabled,
            effectiveness=self.effectiveness,
        )
        self.exec_namespace = settings.execution.namespace
        self.service_account = settings.execution.service_account
        self.gate_policy = settings.gate_policy()

    def _add_caches(self, manager: Manager) -> None:
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
        self.rrs.add_index(ACTIVE_BY_SCOPE, _index_active_rr_by_scope)
        self.rrs.add_index(GATE_WAITING, _index_gate_waiting)
        self.wfes = manager.cache(WFE_KIND, {TARGET_INDEX: index_wfe_by_target})
        self.wfes.add_index(ACTIVE_BY_TARGET, _index_active_wfe_by_target)
        self.wfes.add_index(FINISHED_BY_TARGET, _index_finished_wfe_by_target, order=_wfe_finish_order)
        self.wfes.add_index(ACTIVE_ANY, _index_active_wfe)
        self.wfes.add_index(CREATED, _index_every_wfe, order=_wfe_creation_order)
        self.wfes.add_index(CREATED_IN_NAMESPACE, _index_wfe_namespace, order=_wfe_creation_order)
        self.wfes.add_index(EXECUTION_FAILURES, _index_execution_failure, order=_wfe_finish_order)
        self.pipelineruns = manager.cache(PIPELINERUN_KIND)
        self.jobs = manager.cache(JOB_KIND)
        self.catalog = manager.cache(WORKFLOW_KIND)
        self.notifications = manager.cache(NR_KIND)
        self.approvals = manager.cache(RAR_KIND)
        # The gates: who opted in, every execution cluster-wide, the breaker's recorded reset.
        self.namespaces = manager.cache(NAMESPACE_KIND)
        self.nodes = manager.cache(NODE_KIND)
        self.breaker = manager.cache(BREAKER_KIND)

    def _subscribe(self, manager: Manager) -> None:
        manager.on_event(RR_KIND, self._on_request)
        manager.on_event(WFE_KIND, self._on_execution)
        manager.on_event(PIPELINERUN_KIND, self._on_pipelinerun)
        manager.on_event(JOB_KIND, self._on_pipelinerun)  # a Job is a lock like a PipelineRun
        manager.on_event(NR_KIND, self._on_notification)
        manager.on_event(RAR_KIND, self._on_notification)  # a decision wakes the request it belongs to
        manager.on_event(NAMESPACE_KIND, lambda _t, body, old: self._on_scope_object("Namespace", body, old))
        manager.on_event(NODE_KIND, lambda _t, body, old: self._on_scope_object("Node", body, old))
        manager.on_event(BREAKER_KIND, self._on_breaker)

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
        # A person cleared an ineffective request: the signal's request blocked on the chain resumes.
        if old is not None and _clearance(body) != _clearance(old):
            for fingerprint in index_rr_by_fingerprint(body):
                for active in self.rrs.keys_by_index(ACTIVE_BY_FINGERPRINT, fingerprint):
                    self.controller.enqueue(active)

    def _on_execution(self, type_: str, body: Body, old: Body | None) -> None:
        self._wake_owner(body)
        for target in index_wfe_by_target(body):
            self._wake_blocked_on(target)
        phase = (body.get("status") or {}).get("phase")
        was = (old.get("status") or {}).get("phase") if old is not None else None
        if type_ == "DELETED" or (phase in _TERMINAL_WFE and was not in _TERMINAL_WFE):
            # a slot may have freed, or a failure may have opened the breaker
            self._wake_gated(BlockReason.RATE_LIMITED)

    def _on_scope_object(self, kind: str, body: Body, old: Body | None) -> None:
        labels = (body.get("metadata") or {}).get("labels")
        if old is not None and is_managed(labels) == is_managed((old.get("metadata") or {}).get("labels")):
            return
        for key in self.rrs.keys_by_index(ACTIVE_BY_SCOPE, f"{kind}/{(body.get('metadata') or {}).get('name', '')}"):
            self.controller.enqueue(key)

    def _on_breaker(self, _type: str, body: Body, _old: Body | None) -> None:
        self.breaker_controller.enqueue(object_key(body))
        self._wake_gated(BlockReason.CIRCUIT_OPEN)

    def _wake_gated(self, reason: BlockReason) -> None:
        # Those blocked for the reason and those deciding now (perhaps about to write that block).
        for key in [*self.rrs.keys_by_index(GATE_WAITING, reason.value), *self._deciding]:
            self.controller.enqueue(key)

    async def _record_reset(self, key: str) -> Result:
        """The one audit event of the latest reset (its id is the reset's: seen again, it dedupes)."""
        reset = self._reset()
        if reset is not None:
            await self.audit.record(build_reset_event(reset, BREAKER_NAMESPACE))
        return Result.done()

    def _reset(self) -> BreakerReset | None:
        resets = [parse_reset((body.get("metadata") or {}).get("annotations")) for body in self.breaker.all()]
        return max((reset for reset in resets if reset is not None), key=lambda reset: reset.at, default=None)

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
        self._wake_owner(body)

    def _wake_owner(self, body: Body) -> None:
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
            self._unwritten.pop(key, None)
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
        unwritten = self._unwritten.pop(rr.key, None)
        if unwritten is not None and unwritten.applies_to(rr):
            return await self._write_transition(rr, unwritten)
        now = self.clock()
        step, carried = rr, tr.IDLE  # the request as this pass has moved it, and the moves not written
        while True:
            history = CachedHistory(self, step)
            match tr.reads_for(step, now, self.timeouts):
                case tr.Reads.TARGET:
                    return await self._decide_on_target(rr, step, carried, history)
                case tr.Reads.EXECUTION:
                    await self._read_execution(step, tr.execution_name(step))
                case tr.Reads.METRICS:
                    query = tr.metric_query(step, history)
                    if query:
                        history.metric = await check_query(self.effectiveness.prometheus_url, query)
            transition = tr.plan(step, history, now, self.policy)
            if not tr.goes_on_at_once(transition):
                transition = await self._create_child(step, transition, now)
                return await self._record_and_write(rr, tr.carried_into(carried, transition))
            step, carried = tr.advanced(step, transition), tr.carried_into(carried, transition)

    async def _decide_on_target(
        self, rr: RemediationRequest, step: RemediationRequest, carried: tr.Transition, history: "CachedHistory"
    ) -> Result:
        """Plan and create the execution holding the target's routing lock and a creation slot.

        Workers route concurrently: without the lock two requests for one target could both find it
        free and both create an execution, and the one losing the PipelineRun race would fail. The
        clock is read once held: an execution may have finished during the wait, and a decision from
        before it would see that completion in the future. Held until the execution exists (and is in
        the cache, where the next decision on the target, or under the rate limits, sees it); the
        audit and the status write of the transition need neither lock."""
        self._deciding.add(rr.key)
        try:
            async with self._target_lock(history.target), self._slots.taken(rr.metadata.namespace):
                now = self.clock()
                transition = await self._create_child(step, tr.plan(step, history, now, self.policy), now)
            return await self._record_and_write(rr, tr.carried_into(carried, transition))
        finally:
            self._deciding.discard(rr.key)

    def _target_lock(self, target: str) -> asyncio.Lock:
        """One routing decision per target at a time; a lock lives while someone holds it."""
        lock = self._target_locks.get(target)
        if lock is None:
            lock = self._target_locks[target] = asyncio.Lock()
        return lock

    async def _read_execution(self, rr: RemediationRequest, name: str) -> None:
        """Into the cache from the API server when the cache does not have it (yet)."""
        if self.wfes.get(f"{rr.metadata.namespace}/{name}") is None:
            await self._fetch_execution(rr, name)

    async def _record_and_write(self, rr: RemediationRequest, transition: tr.Transition) -> Result:
        """The rest of a transition once its execution exists: the approval, notices, audit events and
        notification, then the status write against `rr` as read (audit before the write: a retried
        transition records the same events again, deduplicated), then the counts."""
        if transition.approval is not None:
            await self._create_approval(transition.approval.manifest)
        if transition.approval_record is not None:
            await self._record_approval(rr, transition.approval_record)
        for notice in transition.notices:
            await self._create_notice(rr, notice)
        for event in transition.events:
            await self._record(rr, event)
        status = await self._notify(rr, transition.status, transition.notification)
        if transition.terminal:
            crash_point("orchestrator.terminal-recorded")
        _count(transition.counts_before_write)
        phase = rr.status.overall_phase.value if rr.status.overall_phase else None
        unwritten = _Unwritten(
            uid=rr.metadata.uid,
            phase=phase,
            transition_count=rr.status.transition_count or 0,
            patch=build_merge_patch(rr.status.to_wire(), status.to_wire()) if status is not None else {},
            counts_after_write=transition.counts_after_write,
            requeue=transition.requeue,
        )
        return await self._write_transition(rr, unwritten)

    async def _write_transition(self, rr: RemediationRequest, transition: _Unwritten) -> Result:
        """Write a transition's status change, then count it; kept for the next pass if the write fails."""
        self._unwritten[rr.key] = transition
        await self._write(rr, transition.patch)
        del self._unwritten[rr.key]
        _count(transition.counts_after_write)
        if transition.requeue is None:
            return Result.done()
        return Result.after(transition.requeue.total_seconds())

    async def _create_child(self, rr: RemediationRequest, transition: tr.Transition, now: datetime) -> tr.Transition:
        """Create the transition's execution (or validate its dry run); the transition to apply after it."""
        if transition.dry_run is not None:
            lock_name, refusal = await self._validate_dry_run(transition.dry_run.execution)
            transition = tr.plan_dry_run_validated(rr, transition.dry_run, lock_name, refusal, now)
        child = transition.execution
        if child is None:
            return transition
        try:
            await self._create_execution(rr, child.manifest)
        except CreationRefused as exc:
            return tr.plan_creation_refused(rr, str(exc), now)
        crash_point("orchestrator.execution-created")
        _count(child.counts)
        return transition

    # -- the history the plans read ----------------------------------------------------------------

    def _route(self, rr: RemediationRequest, *, workflow_id: str, stage: RoutingStage) -> RoutingDecision:
        """The routing decision the plans would make for rr now."""
        history = CachedHistory(self, rr)
        return tr.route(rr, history, workflow_id=workflow_id, stage=stage, now=self.clock(), policy=self.routing)

    def _same_fingerprint(self, rr: RemediationRequest) -> list[RemediationRequest]:
        """The requests of rr's signal that can still decide anything about it: every active one, and
        the history newest first down to (and with) the newest Completed one that was neither a dry
        run nor a link of an ineffective chain. Older requests are behind a success: the failure
        streak, the duplicate check, the streak notice and the ineffective chain all stop there, so
        leaving them out gives the same answers."""
        fingerprint = rr.spec.signal_fingerprint
        bodies: dict[str, Body] = {}
        for body in self.rrs.newest_first(HISTORY_BY_FINGERPRINT, fingerprint):
            key = object_key(body)
            bodies[key] = body
            status = body.get("status") or {}
            # a dry run changed nothing: the history behind it still decides
            if (
                key != rr.key
                and status.get("overallPhase") == Phase.COMPLETED.value
                and status.get("outcome") != "DryRun"
                and not _is_chain_link(body)
            ):
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

    async def _record(self, rr: RemediationRequest, event: AuditEvent) -> None:
        try:
            await self.audit.record(event)
        except Exception as exc:  # audit failures are logged and never change routing
            log.warning("Audit event %s for %s not recorded: %s", event.event_type, rr.key, exc)

    async def _write(self, rr: RemediationRequest, patch: dict[str, Any]) -> None:
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
        if not patch:
            return
        version = rr.metadata.resource_version
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await patch_status_if_current(
                    self.client,
                    RemediationRequestResource,
                    rr.metadata.name,
                    rr.metadata.namespace,
                    patch,
                    resource_version=version,
                    into=self.rrs,
                )
            except Exception as exc:
                fresh = await self._fetch_request(rr)
                if (
                    not isinstance(exc, Conflict)
                    or attempt == WRITE_ATTEMPTS - 1
                    or fresh is None
                    or not _same_transition(rr, fresh)
                ):
                    raise
                version = fresh["metadata"]["resourceVersion"]
                continue
            return

    async def _create_execution(self, rr: RemediationRequest, manifest: dict[str, Any]) -> Body:
        """Create `we-<rr>` (idempotent: an existing one owned by this request is reused)."""
        name = manifest["metadata"]["name"]
        try:
            body, created = await create_idempotent(self.client, WorkflowExecutionResource(manifest), into=self.wfes)
        except Refused as exc:
            if exc.code in (400, 403, 422):
                raise CreationRefused(exc.message or str(exc)) from exc
            await self._learn_execution(rr, name)
            raise
        except Exception:
            await self._learn_execution(rr, name)
            raise  # transient: retried with back-off
        owners = (body.get("metadata") or {}).get("ownerReferences") or []
        if not created and not any(owner.get("uid") == rr.metadata.uid for owner in owners):
            raise CreationRefused(f"WorkflowExecution {name} exists and belongs to another request")
        return body

    async def _validate_dry_run(self, manifest: dict[str, Any]) -> tuple[str, str | None]:
        """Server-side dry-run creates of the execution and of the run the executor would render for it
        (the same rendering): (the run's name, the API server's refusal or None). Nothing is stored."""
        wfe = WorkflowExecution.from_wire(manifest)
        backend = BACKENDS[wfe.spec.execution_engine]
        run = backend.render(wfe, namespace=self.exec_namespace, service_account=self.service_account)
        lock_name = run["metadata"]["name"]
        for kind, resource, body in (
            ("WorkflowExecution", WorkflowExecutionResource, manifest),
            (backend.kind, backend.resource, run),
        ):
            try:
                with kube_errors():
                    await self.client.create(resource(body), dry_run=True)
            except (Refused, AlreadyExists, NotFound) as exc:  # the answer, not a failure to ask
                return lock_name, f"{kind} {body['metadata']['name']}: {exc.message or exc}"
        return lock_name, None

    async def _create_approval(self, manifest: dict[str, Any]) -> None:
        """Create `rar-<rr>` (idempotent) and mark it Pending, so that `kubectl get rar` shows it waiting."""
        body, created = await create_idempotent(
            self.client, RemediationApprovalRequestResource(manifest), into=self.approvals
        )
        ref = manifest["spec"]["remediationRequestRef"]
        if ((body.get("spec") or {}).get("remediationRequestRef") or {}).get("uid") != ref["uid"]:
            # left by a deleted request of the same name: retried once the garbage collector removed it
            raise Conflict(f"RemediationApprovalRequest {manifest['metadata']['name']} belongs to another request")
        if created or not (body.get("status") or {}).get("phase"):
            meta = body["metadata"]
            await patch_status_if_current(
                self.client,
                RemediationApprovalRequestResource,
                meta["name"],
                meta["namespace"],
                PENDING_STATUS,
                resource_version=meta["resourceVersion"],
                into=self.approvals,
            )

    async def _record_approval(self, rr: RemediationRequest, record: tr.ApprovalRecord) -> None:
        """Copy the decision (or expiry) into the approval request's status, before the request moves on."""
        await patch_status_if_current(
            self.client,
            RemediationApprovalRequestResource,
            record.name,
            rr.metadata.namespace,
            record.status,
            resource_version=None,
            into=self.approvals,
        )

    async def _learn_execution(self, rr: RemediationRequest, name: str) -> None:
        """After a create whose answer was lost (a timeout, a 5xx) the execution may exist: read it now,
        while the target's routing lock is held, so that the next request does not find the target free
        and create a second execution that loses the race for the PipelineRun."""
        with contextlib.suppress(Exception):
            await self._fetch_execution(rr, name)

    async def _fetch_request(self, rr: RemediationRequest) -> Body | None:
        return await self._fetch(self.rrs, RemediationRequestResource, rr.metadata.name, rr.metadata.namespace)

    async def _fetch_execution(self, rr: RemediationRequest, name: str) -> Body | None:
        return await self._fetch(self.wfes, WorkflowExecutionResource, name, rr.metadata.namespace)

    async def _fetch(self, cache: Cache, resource: Any, name: str, namespace: str) -> Body | None:
        """Read an object from the API server into its cache; None when it does not exist."""
        return await get_object(self.client, resource, name, namespace, into=cache)

    async def _create_notice(self, rr: RemediationRequest, notice: tr.Child) -> None:
        name = notice.manifest["metadata"]["name"]
        try:
            await create_idempotent(self.client, NotificationRequestResource(notice.manifest))
        except KubeError as exc:
            log.warning("Notification %s (routing %s) not created: %s", name, rr.key, exc.message or exc)

    def _gates(self, rr: RemediationRequest) -> Gates:
        target = rr.spec.target_resource
        scope_key = build_scope_key(target.kind, target.name, target.namespace or "")
        return Gates(
            policy=self.gate_policy,
            scope=self._scope(scope_key),
            executions=self._cluster_executions(rr.metadata.namespace),
            reset=self._reset(),
        )

    def _scope(self, scope_key: str) -> Scope:
        kind, _, name = scope_key.partition("/")
        cache = {"Namespace": self.namespaces, "Node": self.nodes}.get(kind)
        if cache is None:
            return Scope(
                managed=False,
                where=f"{kind} {name} (the label is read on namespaces and on Node targets only)",
            )
        body = cache.get(name)
        managed = body is not None and is_managed((body.get("metadata") or {}).get("labels"))
        return Scope(managed=managed, where=f"{kind} {name}")

    def _headroom(self, namespace: str) -> int:
        """How many more executions every rate limit lets start now (in `namespace` for its own)."""
        policy = self.gate_policy
        free = policy.max_concurrent_executions - self.wfes.count_by_index(ACTIVE_ANY, _ALL)
        for index, value, limit in (
            (CREATED, _ALL, policy.max_executions_per_hour),
            (CREATED_IN_NAMESPACE, namespace, policy.max_executions_per_namespace_per_hour),
        ):
            free = min(free, limit - self._created_within_the_hour(index, value, limit))
        return free

    def _created_within_the_hour(self, index: str, value: str, limit: int) -> int:
        """The executions of an index created in the last hour, counted up to `limit`."""
        if self.wfes.count_by_index(index, value) < limit:
            return self.wfes.count_by_index(index, value)
        since = self.clock() - RATE_WINDOW
        counted = 0
        for body in self.wfes.newest_first(index, value):
            created = _parse_instant((body.get("metadata") or {}).get("creationTimestamp"))
            if counted >= limit or (created is not None and created <= since):
                break
            counted += 1
        return counted

    def _cluster_executions(self, namespace: str) -> list[WorkflowExecution]:
        """What the rate limits and the breaker can still decide on: every active execution, the
        newest ones created within the last hour (as many as a limit counts, and one more for the
        request's own), and the execution failures since the latest reset. An hourly limit is read
        only when there are at least as many executions at all."""
        now = self.clock()
        bodies: dict[str, Body] = {}
        for key in self.wfes.keys_by_index(ACTIVE_ANY, _ALL):
            body = self.wfes.get(key)
            if body is not None:
                bodies[key] = body
        policy = self.gate_policy
        for index, value, limit in (
            (CREATED, _ALL, policy.max_executions_per_hour),
            (CREATED_IN_NAMESPACE, namespace, policy.max_executions_per_namespace_per_hour),
        ):
            if self.wfes.count_by_index(index, value) < limit:
                continue
            for taken, body in enumerate(self.wfes.newest_first(index, value)):
                created = _parse_instant((body.get("metadata") or {}).get("creationTimestamp"))
                if taken > limit or (created is not None and created <= now - RATE_WINDOW):
                    break
                bodies[object_key(body)] = body
        reset = self._reset()
        for body in self.wfes.newest_first(EXECUTION_FAILURES, _ALL):
            completed = _parse_instant((body.get("status") or {}).get("completionTime"))
            if reset is not None and completed is not None and completed <= reset.at:
                break
            bodies[object_key(body)] = body
        return [self.wfes.parsed(body, _parse_wfe) for body in bodies.values()]

    async def _notify(
        self, rr: RemediationRequest, status: RemediationRequestStatus | None, child: tr.Child | None
    ) -> RemediationRequestStatus | None:
        """Create the notification (one per name) and reference it; errors never stop the transition."""
        if child is None or status is None:
            return status
        name = child.manifest["metadata"]["name"]
        try:
            body, created = await create_idempotent(self.client, NotificationRequestResource(child.manifest))
        except KubeError as exc:
            log.warning("Notification %s for %s not created: %s", name, rr.key, exc.message or exc)
            return status
        if created:
            _count(child.counts)
        return tr.with_notification(status, child.manifest, (body.get("metadata") or {}).get("uid") or "")


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
ACTIVE_BY_SCOPE = "activeScope"
GATE_WAITING = "gateWaiting"
ACTIVE_ANY = "activeAny"
CREATED = "created"
CREATED_IN_NAMESPACE = "createdInNamespace"
EXECUTION_FAILURES = "executionFailures"
_ALL = "all"
_GATE_BLOCKS = frozenset({BlockReason.RATE_LIMITED.value, BlockReason.CIRCUIT_OPEN.value})
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


def _clearance(body: Body) -> str:
    return str(((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_CLEAR_BLOCK) or "").strip()


def _is_chain_link(body: Body) -> bool:
    """`routing.is_chain_link` on the wire form (a Completed request is not parsed to walk past it)."""
    assessment = ((body.get("status") or {}).get("effectiveness") or {}).get("assessment")
    return assessment == "Ineffective" and not _clearance(body)


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


class CachedHistory:
    """The `RoutingHistory` of one request, read from the orchestrator's informer caches."""

    def __init__(self, ro: Orchestrator, rr: RemediationRequest) -> None:
        self._ro = ro
        self._rr = rr
        self.target = build_rr_target(rr)
        self.metric: MetricCheck | None = None

    def same_fingerprint(self) -> list[RemediationRequest]:
        return self._ro._same_fingerprint(self._rr)

    def executions_on(self, workflow_id: str = "", lock: LockHolder | None = None) -> list[WorkflowExecution]:
        return self._ro._executions_on(self.target, workflow_id=workflow_id, lock=lock)

    def lock(self) -> LockHolder | None:
        return self._ro._lock_on(self.target)

    def request(self, name: str) -> RemediationRequest | None:
        body = self._ro.rrs.get(f"{self._rr.metadata.namespace}/{name}")
        return self._ro.rrs.parsed(body, _parse_rr) if body is not None else None

    def execution(self, name: str) -> WorkflowExecution | None:
        body = self._ro.wfes.get(f"{self._rr.metadata.namespace}/{name}")
        return self._ro.wfes.parsed(body, _parse_wfe) if body is not None else None

    def catalog(self) -> list[RemediationWorkflow]:
        return self._ro._catalog()

    def approval(self, name: str) -> Body | None:
        return self._ro.approvals.get(f"{self._rr.metadata.namespace}/{name}")

    def metric_check(self) -> MetricCheck | None:
        return self.metric

    def gates(self) -> Gates:
        return self._ro._gates(self._rr)

    def notification(self, namespace: str, name: str) -> tr.TrackedNotification | None:
        notifications = self._ro.notifications
        body = notifications.get(f"{namespace}/{name}")
        if body is None:
            return tr.TrackedNotification(found=False) if notifications.synced.is_set() else None
        return tr.TrackedNotification(found=True, phase=(body.get("status") or {}).get("phase"))


_COUNTERS = {
    tr.Metric.PHASE_TRANSITIONS: RO_PHASE_TRANSITIONS,
    tr.Metric.BLOCKED: RO_BLOCKED_TOTAL,
    tr.Metric.DUPLICATES_SKIPPED: RO_DUPLICATES_SKIPPED,
    tr.Metric.BLOCKED_COOLDOWN_EXPIRED: RO_BLOCKED_COOLDOWN_EXPIRED,
    tr.Metric.TIMEOUTS: RO_TIMEOUTS,
    tr.Metric.CHILD_CREATIONS: RO_CHILD_CREATIONS,
    tr.Metric.MANUAL_REVIEW: RO_MANUAL_REVIEW,
    tr.Metric.ASSESSMENTS: RO_ASSESSMENTS,
}
_HISTOGRAMS = {tr.Metric.TIME_TO_EXECUTION: RO_TIME_TO_EXECUTION, tr.Metric.TIME_TO_RESOLUTION: RO_TIME_TO_RESOLUTION}


def _count(counts: tuple[tr.Count, ...]) -> None:
    for counted in counts:
        if counted.value is None:
            counter = _COUNTERS[counted.metric]
            (counter.labels(**dict(counted.labels)) if counted.labels else counter).inc()
        else:
            histogram = _HISTOGRAMS[counted.metric]
            (histogram.labels(**dict(counted.labels)) if counted.labels else histogram).observe(counted.value)


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


def _index_active_rr_by_scope(body: Body) -> list[str]:
    if (body.get("status") or {}).get("overallPhase") in _TERMINAL_RR:
        return []
    target = (body.get("spec") or {}).get("targetResource") or {}
    if not isinstance(target, dict) or not target.get("kind") or not target.get("name"):
        return []
    return [build_scope_key(str(target["kind"]), str(target["name"]), str(target.get("namespace") or ""))]


def _index_gate_waiting(body: Body) -> list[str]:
    """Requests an execution's end or a breaker reset may let on: those blocked by the gates."""
    status = body.get("status") or {}
    phase = status.get("overallPhase")
    if phase == Phase.BLOCKED.value:
        reason = status.get("blockReason")
        return [reason] if reason in _GATE_BLOCKS else []
    return []


def _index_active_wfe(body: Body) -> list[str]:
    return [] if (body.get("status") or {}).get("phase") in _TERMINAL_WFE else [_ALL]


def _index_every_wfe(_body: Body) -> list[str]:
    return [_ALL]


def _index_wfe_namespace(body: Body) -> list[str]:
    return [str((body.get("metadata") or {}).get("namespace", ""))]


def _index_execution_failure(body: Body) -> list[str]:
    status = body.get("status") or {}
    details = status.get("failureDetails") or {}
    failed = status.get("phase") == WorkflowExecutionPhase.FAILED.value and status.get("completionTime")
    return [_ALL] if failed and details.get("wasExecutionFailure") is True else []


def _wfe_creation_order(body: Body) -> tuple[datetime, str, str]:
    meta = body.get("metadata") or {}
    created = _parse_instant(meta.get("creationTimestamp")) or _LATEST
    return (created, str(meta.get("namespace", "")), str(meta.get("name", "")))


def setup(manager: Manager) -> Orchestrator:
    return Orchestrator(manager)
