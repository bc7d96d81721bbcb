"""`kubernaut get remediations`, `describe remediation`, `clear-block`: the operator's view."""

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from rich.console import Console

from kubernaut.api.v1alpha1 import GROUP, VERSION, RemediationRequest, WorkflowExecution
from kubernaut.cli.audit import LOCAL_STATE_DIR, resolve_audit_url
from kubernaut.cli.output import Output, command_group, print_objects, print_table
from kubernaut.domain.duration import format_go_duration, format_rfc3339
from kubernaut.domain.execution import ANNOTATION_CLEAR_BLOCK
from kubernaut.domain.routing import build_rr_target
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.client import make_client, patch_object
from kubernaut.kube.resources import (
    NotificationRequestResource,
    PipelineRunResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)

console = Console(soft_wrap=True)  # long lines are the terminal's to wrap, not cut at 80 columns when piped
errors = Console(stderr=True)

KubeconfigOption = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="Kubeconfig; else $KUBECONFIG, ~/.kube/config, or the local default's."),
]
NamespaceOption = Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace (default: all).")]


def resolve_kubeconfig(path: Path | None) -> Path | None:
    """--kubeconfig, else the usual resolution, else the kubeconfig `kubernaut dev up` wrote here."""
    if path is not None:
        return path
    if os.environ.get("KUBECONFIG") or (Path.home() / ".kube" / "config").exists():
        return None
    local = Path.cwd() / LOCAL_STATE_DIR / "kubeconfig"
    return local if local.exists() else None


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


# -- pure presentation ------------------------------------------------------------------------------


def build_row(rr: RemediationRequest, now: datetime) -> dict[str, str]:
    """One line of `get remediations`: what it is, where it stands, and why."""
    status = rr.status
    left = ""
    if status.blocked_until and status.overall_phase == "Blocked":
        left = format_go_duration(max(status.blocked_until - now, now - now))
    why = status.block_reason or status.skip_reason or status.failure_reason or ""
    if status.block_reason and left:
        why = f"{status.block_reason} ({left} left)"
    return {
        "namespace": rr.metadata.namespace,
        "name": rr.metadata.name,
        "phase": str(status.overall_phase or "New"),
        "target": build_rr_target(rr),
        "why": why,
        "workflowExecution": status.workflow_execution_ref.name if status.workflow_execution_ref else "",
        "outcome": str(status.outcome or ""),
        "age": format_go_duration(now - rr.metadata.creation_timestamp) if rr.metadata.creation_timestamp else "",
        "signal": rr.spec.signal_name,
        "severity": rr.spec.severity.value,
        "blockedUntil": format_rfc3339(status.blocked_until) if status.blocked_until else "",
        "message": status.block_message or status.skip_message or status.message or "",
    }


COLUMNS = (
    ("NAMESPACE", "namespace"),
    ("NAME", "name"),
    ("PHASE", "phase"),
    ("TARGET", "target"),
    ("WHY", "why"),
    ("OUTCOME", "outcome"),
    ("AGE", "age"),
)
WIDE_COLUMNS = (
    *COLUMNS,
    ("WFE", "workflowExecution"),
    ("SIGNAL", "signal"),
    ("SEVERITY", "severity"),
    ("BLOCKED-UNTIL", "blockedUntil"),
    ("MESSAGE", "message"),
)


def build_table(rows: list[dict[str, str]], *, wide: bool, namespaced: bool) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of `get remediations`; one namespace asked for needs no NAMESPACE column."""
    columns = [c for c in (WIDE_COLUMNS if wide else COLUMNS) if not (namespaced and c[1] == "namespace")]
    return [header for header, _ in columns], [[row[key] for _, key in columns] for row in rows]


def build_timeline(rr: RemediationRequest, wfe: WorkflowExecution | None) -> list[tuple[datetime, str]]:
    """The moments of one remediation, in order."""
    status = rr.status
    moments: list[tuple[datetime | None, str]] = [
        (rr.metadata.creation_timestamp, "Created"),
        (status.start_time, "Pending: seen by the orchestrator"),
        (status.analyzing_start_time, "Analyzing: selecting a workflow"),
        (
            status.executing_start_time,
            f"Executing: {status.workflow_execution_ref.name}" if status.workflow_execution_ref else "Executing",
        ),
    ]
    if wfe is not None:
        moments.append(
            (
                wfe.status.start_time,
                f"PipelineRun {wfe.status.pipeline_run_ref.name if wfe.status.pipeline_run_ref else ''} started",
            )
        )
        if wfe.status.completion_time:
            moments.append(
                (
                    wfe.status.completion_time,
                    f"Workflow {wfe.phase.value}" + (f" ({wfe.status.duration})" if wfe.status.duration else ""),
                )
            )
    if status.overall_phase == "Blocked":
        until = f" until {format_rfc3339(status.blocked_until)}" if status.blocked_until else ""
        moments.append((None, f"Blocked: {status.block_reason}{until} - {status.block_message}"))
    if status.completed_at:
        moments.append(
            (
                status.completed_at,
                f"{status.overall_phase}" + (f": {status.failure_reason}" if status.failure_reason else ""),
            )
        )
    timed = [(m, text) for m, text in moments if m is not None]
    timed.sort(key=lambda item: item[0])
    untimed = [(datetime.max.replace(tzinfo=UTC), text) for m, text in moments if m is None]
    return timed + untimed


# -- commands -----------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    get_app = command_group("List resources.")
    describe_app = command_group("Show one resource in detail.")
    app.add_typer(get_app, name="get")
    app.add_typer(describe_app, name="describe")

    @get_app.command("remediations")
    def get_remediations(
        namespace: NamespaceOption = None,
        output: Annotated[
            Output | None,
            typer.Option(
                "--output", "-o", help="wide (more columns), or json / yaml (the objects as the API returns them)."
            ),
        ] = None,
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """RemediationRequests and why they wait.

        Their phase, target, why they wait (and how long) and outcome; -o wide adds the
        WorkflowExecution, the signal, its severity, when a block ends and the message."""
        bodies = asyncio.run(_list_rrs(resolve_kubeconfig(kubeconfig), namespace))
        if output in (Output.json, Output.yaml):
            print_objects(bodies, output)
            return
        now = datetime.now(UTC)
        rows = [build_row(RemediationRequest.from_wire(body), now) for body in bodies]
        print_table(*build_table(rows, wide=output is Output.wide, namespaced=namespace is not None))

    @describe_app.command("remediation")
    def describe_remediation(
        name: Annotated[str, typer.Argument(help="RemediationRequest name.")],
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace.")] = "default",
        kubeconfig: KubeconfigOption = None,
        audit_url: Annotated[str | None, typer.Option("--audit-url", help="Audit store to read events from.")] = None,
    ) -> None:
        """The timeline of one remediation.

        Phases, blocks, WFE, PipelineRun, notifications and audit events."""
        url = resolve_audit_url(audit_url, None)
        readable = not url.startswith("sqlite://") or Path(url.removeprefix("sqlite://")).exists()
        try:
            details = asyncio.run(_describe(resolve_kubeconfig(kubeconfig), name, namespace, url if readable else None))
        except LookupError as exc:
            raise _fail(str(exc)) from None
        _print_description(*details)

    @app.command("clear-block")
    def clear_block(
        wfe: Annotated[str, typer.Argument(help="The failed WorkflowExecution that blocks its target.")],
        reason: Annotated[str, typer.Option("--reason", help="Why it is safe to run again (recorded).")],
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the WFE.")] = "default",
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """Unblock a target after a failure during execution.

        Once you have checked the target, allow workflows on it again.

        Sets the annotation kubernaut.ai/clear-execution-block on the WFE; the executor records who
        cleared it (the admission webhook stamps your Kubernetes user name)."""
        if not reason.strip():
            raise _fail("--reason must not be empty")
        try:
            asyncio.run(_clear_block(resolve_kubeconfig(kubeconfig), wfe, namespace, reason.strip()))
        except LookupError as exc:
            raise _fail(str(exc)) from None
        console.print(f"Block cleared on WorkflowExecution {namespace}/{wfe}: {reason.strip()}")


async def _list_rrs(kubeconfig: Path | None, namespace: str | None) -> list[dict[str, Any]]:
    """The RemediationRequests as the API returns them, by namespace, then age."""
    client = make_client(kubeconfig)
    try:
        found = [obj.to_dict() async for obj in client.list(RemediationRequestResource, namespace=namespace or "*")]
    finally:
        await client.close()
    for body in found:  # list items carry no kind of their own; kubectl adds it
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        body.setdefault("kind", "RemediationRequest")
    return sorted(
        found,
        key=lambda body: (
            body["metadata"].get("namespace", ""),
            body["metadata"].get("creationTimestamp", ""),
            body["metadata"]["name"],
        ),
    )


async def _get(client: AsyncClient, resource: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
    try:
        obj = await client.get(resource, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    body: dict[str, Any] = obj.to_dict()
    return body


async def _describe(
    kubeconfig: Path | None, name: str, namespace: str, audit_url: str | None
) -> tuple[RemediationRequest, WorkflowExecution | None, dict[str, Any] | None, list[dict[str, Any]], list[Any]]:
    client = make_client(kubeconfig)
    try:
        body = await _get(client, RemediationRequestResource, name, namespace)
        if body is None:
            raise LookupError(f"RemediationRequest {namespace}/{name} not found")
        rr = RemediationRequest.from_wire(body)
        wfe = None
        pipelinerun = None
        if rr.status.workflow_execution_ref:
            wfe_body = await _get(client, WorkflowExecutionResource, rr.status.workflow_execution_ref.name, namespace)
            wfe = WorkflowExecution.from_wire(wfe_body) if wfe_body else None
        if wfe is not None:
            lock = build_lock_name(wfe.spec.target_resource)
            async for pr in client.list(PipelineRunResource, namespace="*"):
                if pr.metadata.name == lock:
                    pipelinerun = pr.to_dict()
        notes = []
        for ref in rr.status.notification_request_refs or []:
            note = await _get(client, NotificationRequestResource, ref.name, ref.namespace or namespace)
            if note:
                notes.append(note)
    finally:
        await client.close()
    events: list[Any] = []
    if audit_url:
        from kubernaut.audit.factory import open_audit_store

        url = audit_url
        try:
            async with open_audit_store(url, create=False) as store:
                events = list(await store.list_events(correlation_id=rr.metadata.uid))
                if wfe is not None:
                    events += list(
                        await store.list_events(
                            correlation_id=wfe.metadata.labels.get("kubernaut.ai/correlation-id", wfe.metadata.name)
                        )
                    )
        except Exception as exc:  # the timeline is still useful without the audit trail
            errors.print(f"[yellow]audit trail unavailable:[/yellow] {exc}")
    events.sort(key=lambda e: e.event_time)
    return rr, wfe, pipelinerun, notes, events


def _print_description(
    rr: RemediationRequest,
    wfe: WorkflowExecution | None,
    pipelinerun: dict[str, Any] | None,
    notes: list[dict[str, Any]],
    events: list[Any],
) -> None:
    status = rr.status
    console.print(f"[bold]RemediationRequest[/bold] {rr.metadata.namespace}/{rr.metadata.name}")
    console.print(
        f"  Signal:   {rr.spec.signal_name} ({rr.spec.severity.value}), fingerprint "
        f"{rr.spec.signal_fingerprint[:12]}..."
    )
    console.print(f"  Target:   {build_rr_target(rr)}")
    console.print(
        f"  Phase:    {status.overall_phase or 'New'}" + (f", outcome {status.outcome}" if status.outcome else "")
    )
    if status.block_reason:
        console.print(f"  Blocked:  {status.block_reason}: {status.block_message}")
    if status.skip_reason:
        console.print(f"  Skipped:  {status.skip_reason}: {status.skip_message}")
    if status.failure_reason:
        console.print(f"  Failure:  {status.failure_phase}: {status.failure_reason}")
    if status.message:
        console.print("  Message:  " + status.message.strip().replace("\n", "\n            "))
    console.print("\n[bold]Timeline[/bold]")
    for moment, text in build_timeline(rr, wfe):
        shown = format_rfc3339(moment) if moment.year < 9999 else "now".ljust(20)
        console.print(f"  {shown}  {text}")
    if wfe is not None:
        console.print(
            f"\n[bold]WorkflowExecution[/bold] {wfe.metadata.name}: {wfe.phase.value}, workflow "
            f"{wfe.spec.workflow_ref.workflow_id} {wfe.spec.workflow_ref.version}"
        )
        if wfe.status.failure_details:
            details = wfe.status.failure_details
            console.print(
                f"  Failure: {details.reason.value}"
                + (" during execution" if details.was_execution_failure else " before execution")
            )
        if wfe.status.block_clearance:
            console.print(
                f"  Block cleared by {wfe.status.block_clearance.cleared_by}: {wfe.status.block_clearance.clear_reason}"
            )
    if pipelinerun is not None:
        conditions = (pipelinerun.get("status") or {}).get("conditions") or []
        state = next(
            (f"{c.get('status')} {c.get('reason', '')}" for c in conditions if c.get("type") == "Succeeded"),
            "not started",
        )
        console.print(f"  PipelineRun {pipelinerun['metadata']['name']} (holds the lock): Succeeded={state}")
    for note in notes:
        phase = (note.get("status") or {}).get("phase", "Pending")
        console.print(
            f"\n[bold]Notification[/bold] {note['metadata']['name']}: {note['spec']['type']}, "
            f"{note['spec']['priority']}, {phase}"
        )
    if events:
        console.print("\n[bold]Audit events[/bold]")
        for event in events:
            console.print(
                f"  {format_rfc3339(event.event_time)}  {event.event_type} ({event.event_outcome}) "
                f"{event.resource_type}/{event.resource_id}"
            )


async def _clear_block(kubeconfig: Path | None, name: str, namespace: str, reason: str) -> None:
    client = make_client(kubeconfig)
    try:
        body = await _get(client, WorkflowExecutionResource, name, namespace)
        if body is None:
            raise LookupError(f"WorkflowExecution {namespace}/{name} not found")
        details = ((body.get("status") or {}).get("failureDetails")) or {}
        if (body.get("status") or {}).get("phase") != "Failed" or not details.get("wasExecutionFailure"):
            raise LookupError(
                f"WorkflowExecution {namespace}/{name} did not fail during execution; "
                "there is no execution block to clear"
            )
        await patch_object(
            client,
            WorkflowExecutionResource,
            name,
            namespace,
            {"metadata": {"annotations": {ANNOTATION_CLEAR_BLOCK: reason}}},
        )
    finally:
        await client.close()
