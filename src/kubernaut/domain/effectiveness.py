"""Did the remediation work? The Verifying phase's decision, from what the gateway recorded.

Pure: the gateway annotates a request when its alert resolves (`kubernaut.ai/signal-resolved-at`,
the alert's endsAt, or the last repeat heard before the resolution if later) and raises
`status.deduplication.lastSeenAt` on every repeat of it. The alert is resolved when the newest
resolution is not older than the newest repeat: a repeat after it means the alert fired again.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from kubernaut.api.v1alpha1.remediationrequest import Assessment, BlockReason, Effectiveness, RemediationRequest
from kubernaut.api.v1alpha1.remediationworkflow import RemediationWorkflow, WorkflowVerification
from kubernaut.domain.duration import format_go_duration, parse_go_duration
from kubernaut.domain.signals import SOURCE, recorded_resolution


@dataclass(frozen=True)
class EffectivenessPolicy:
    """The settings' `effectiveness` section, as the Verifying phase takes it."""

    window: timedelta = timedelta(minutes=10)
    prometheus_url: str = ""


class MetricCheck(StrEnum):
    """The answer of a workflow's `spec.verification.promql` query."""

    HOLDS = "Holds"  # a non-empty result
    FAILS = "Fails"  # an empty result
    UNREACHABLE = "Unreachable"  # no answer (Prometheus down, not configured, or a bad query)


def is_assessed(rr: RemediationRequest) -> bool:
    """Only a request from an alert has an alert to watch resolve."""
    return rr.spec.source == SOURCE


def find_verification(rr: RemediationRequest, catalog: Sequence[RemediationWorkflow]) -> WorkflowVerification | None:
    """The selected workflow's verification settings (from the catalog entry of its id)."""
    selected = rr.status.selected_workflow
    if selected is None:
        return None
    for workflow in catalog:
        if workflow.spec.workflow_id == selected.workflow_id and workflow.spec.verification is not None:
            return workflow.spec.verification
    return None


def verification_window(verification: WorkflowVerification | None, policy: EffectivenessPolicy) -> timedelta:
    """The workflow's window when it sets a valid positive one, else the settings'."""
    if verification is None or not verification.window:
        return policy.window
    try:
        window = parse_go_duration(verification.window)
    except ValueError:
        return policy.window
    return window if window > timedelta(0) else policy.window


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def find_resolution(rr: RemediationRequest) -> datetime | None:
    """When the alert resolved, or None while it is firing (never resolved, or repeated since)."""
    resolved = recorded_resolution(rr.metadata.annotations)
    if resolved is None:
        return None
    dedup = rr.status.deduplication
    last_seen = dedup.last_seen_at if dedup is not None else None
    if last_seen is not None and _utc(last_seen) > resolved:
        return None
    return resolved


def pending_metric_query(rr: RemediationRequest, verification: WorkflowVerification | None) -> str:
    """The PromQL query to run before deciding ("" when none is due): only once the alert resolved."""
    if verification is None or not verification.promql or find_resolution(rr) is None:
        return ""
    return verification.promql


@dataclass(frozen=True)
class VerifyingDecision:
    """Stay (requeue at the window's end), or complete with this effectiveness."""

    effectiveness: Effectiveness | None = None
    requeue_after: timedelta | None = None


def decide_verifying(
    rr: RemediationRequest,
    *,
    window: timedelta,
    promql: str,
    metric: MetricCheck | None,
    now: datetime,
) -> VerifyingDecision:
    """The alert resolved within the window (and the metric check holds): Effective; it kept firing
    through the window, or the metric check fails: Ineffective; Prometheus gave no answer: Inconclusive."""
    now = _utc(now)
    started = _utc(rr.status.verifying_start_time or now)
    ends = started + window
    resolved = find_resolution(rr)
    if resolved is not None and resolved <= ends:
        if not promql:
            return _complete(Assessment.EFFECTIVE, resolved, now, "The alert resolved")
        if metric == MetricCheck.HOLDS:
            return _complete(Assessment.EFFECTIVE, resolved, now, "The alert resolved and the metric check holds")
        if metric == MetricCheck.FAILS:
            return _complete(
                Assessment.INEFFECTIVE, resolved, now, f"The alert resolved but the metric check is empty: {promql}"
            )
        return _complete(
            Assessment.INCONCLUSIVE, resolved, now, "The alert resolved; the metric check got no answer from Prometheus"
        )
    if now < ends:
        return VerifyingDecision(requeue_after=ends - now)
    return _complete(
        Assessment.INEFFECTIVE, None, now, f"The alert kept firing through the {format_go_duration(window)} window"
    )


def _complete(assessment: Assessment, resolved: datetime | None, now: datetime, message: str) -> VerifyingDecision:
    return VerifyingDecision(
        effectiveness=Effectiveness(assessment=assessment, resolved_at=resolved, checked_at=now, message=message)
    )


def build_not_assessed(now: datetime) -> Effectiveness:
    return Effectiveness(
        assessment=Assessment.NOT_ASSESSED, checked_at=now, message="The request did not come from an alert"
    )


def decide_chain_notice(rr: RemediationRequest, same_fingerprint: Sequence[RemediationRequest]) -> bool:
    """One manual review per IneffectiveChain block: none while another request of the signal already
    holds that block (it told people)."""
    return not any(
        other.metadata.uid != rr.metadata.uid
        and not other.is_terminal
        and other.status.block_reason == BlockReason.INEFFECTIVE_CHAIN
        for other in same_fingerprint
    )
