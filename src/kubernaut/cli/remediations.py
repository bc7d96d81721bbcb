"""`kubernaut get remediations`, `describe remediation`, `clear-block`, `approve`, `reject`: the operator's view."""

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType
from rich.console import Console

from kubernaut.api.v1alpha1 import GROUP, VERSION, RemediationRequest, WorkflowExecution
from kubernaut.api.v1alpha1.remediationrequest import Assessment
from kubernaut.cli.audit import LOCAL_STATE_DIR, resolve_audit_url
from kubernaut.cli.output import Output, command_group, print_objects, print_table
from kubernaut.domain.approval import (
    ANNOTATION_DECISION,
    ANNOTATION_DECISION_REASON,
    CLI_FIELD_MANAGER,
    build_approval_name,
    decide_approval,
)
from kubernaut.domain.duration import format_rfc3339
from kubernaut.domain.execution import ANNOTATION_CLEAR_BLOCK
from kubernaut.domain.routing import build_rr_target
from kubernaut.kube.client import make_client, patch_object
from kubernaut.kube.resources import (
    RemediationApprovalRequestResource,
    RemediationRequestResource,
    WorkflowExecutionResource,
)
from kubernaut.web.views import (
    build_pipelinerun_state,
    build_row,
    build_timeline,
    get_or_none,
    read_audit_trail,
    read_remediation,
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


COLUMNS = (
    ("NAMESPACE", "namespace"),
    ("NAME", "name"),
    ("PHASE", "phase"),
    ("TARGET", "target"),
    ("WHY", "why"),
    ("OUTCOME", "outcome"),
    ("ASSESSMENT", "assessment"),
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

        Their phase, target, why they wait (and how long), outcome and whether it worked
        (assessment); -o wide adds the
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
        name: Annotated[
            str,
            typer.Argument(
                help="The failed WorkflowExecution that blocks its target, or the newest ineffective "
                "RemediationRequest of an IneffectiveChain block."
            ),
        ],
        reason: Annotated[str, typer.Option("--reason", help="Why it is safe to run again (recorded).")],
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the object.")] = "default",
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """Unblock after a mid-execution failure or ineffective runs.

        Once you have checked the target, allow workflows on it again.

        Sets the annotation kubernaut.ai/clear-execution-block on the WFE (or the request); the
        admission webhook stamps your Kubernetes user name next to it."""
        if not reason.strip():
            raise _fail("--reason must not be empty")
        try:
            kind = asyncio.run(_clear_block(resolve_kubeconfig(kubeconfig), name, namespace, reason.strip()))
        except LookupError as exc:
            raise _fail(str(exc)) from None
        console.print(f"Block cleared on {kind} {namespace}/{name}: {reason.strip()}")

    @app.command("approve")
    def approve(
        rr: Annotated[str, typer.Argument(help="The RemediationRequest awaiting approval.")],
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the request.")] = "default",
        reason: Annotated[str, typer.Option("--reason", help="Why it may run (recorded).")] = "",
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """Approve a remediation awaiting approval: it runs.

        Routing runs again first (the world may have changed while it waited). Sets
        kubernaut.ai/decision=Approved on its RemediationApprovalRequest; the admission webhook
        records your Kubernetes user name. An approval decides once."""
        _decide(kubeconfig, rr, namespace, "Approved", reason.strip())

    @app.command("reject")
    def reject(
        rr: Annotated[str, typer.Argument(help="The RemediationRequest awaiting approval.")],
        reason: Annotated[str, typer.Option("--reason", help="Why it must not run (recorded).")],
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the request.")] = "default",
        kubeconfig: KubeconfigOption = None,
    ) -> None:
        """Reject a remediation awaiting approval: it fails.

        The request ends Failed with failurePhase approval and your reason. Sets
        kubernaut.ai/decision=Rejected on its RemediationApprovalRequest; the admission webhook
        records your Kubernetes user name. An approval decides once."""
        if not reason.strip():
            raise _fail("--reason must not be empty")
        _decide(kubeconfig, rr, namespace, "Rejected", reason.strip())


def _decide(kubeconfig: Path | None, rr: str, namespace: str, decision: str, reason: str) -> None:
    try:
        name = asyncio.run(_set_decision(resolve_kubeconfig(kubeconfig), rr, namespace, decision, reason))
    except LookupError as exc:
        raise _fail(str(exc)) from None
    said = f": {reason}" if reason else ""
    console.print(f"{decision} RemediationRequest {namespace}/{rr} (RemediationApprovalRequest {name}){said}")


async def _set_decision(kubeconfig: Path | None, rr: str, namespace: str, decision: str, reason: str) -> str:
    """Annotate `rar-<rr>`; a decision already made or an expired deadline is refused (here, and by
    the webhook, which has the last word)."""
    name = build_approval_name(rr)
    client = make_client(kubeconfig)
    try:
        body = await get_or_none(client, RemediationApprovalRequestResource, name, namespace)
        if body is None:
            raise LookupError(f"RemediationRequest {namespace}/{rr} is not awaiting approval (no {name})")
        state = decide_approval(body, datetime.now(UTC))
        if state.decided:
            raise LookupError(f"{name}: already {state.phase.value} ({state.decided_by}); an approval decides once")
        annotations = {ANNOTATION_DECISION: decision, ANNOTATION_DECISION_REASON: reason}
        try:
            await client.patch(
                RemediationApprovalRequestResource,
                name,
                {"metadata": {"annotations": annotations}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
                field_manager=CLI_FIELD_MANAGER,
            )
        except ApiError as exc:
            raise LookupError(exc.status.message or str(exc)) from None
    finally:
        await client.close()
    return name


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


async def _describe(
    kubeconfig: Path | None, name: str, namespace: str, audit_url: str | None
) -> tuple[RemediationRequest, WorkflowExecution | None, dict[str, Any] | None, list[dict[str, Any]], list[Any]]:
    client = make_client(kubeconfig)
    try:
        details = await read_remediation(client, name, namespace)
    finally:
        await client.close()
    events: list[Any] = []
    if audit_url:
        trail = await read_audit_trail(audit_url, details)
        if trail.error:
            errors.print(f"[yellow]audit trail unavailable:[/yellow] {trail.error}")
        events = list(trail.events)
    return details.rr, details.wfe, details.pipelinerun, details.notes, events


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
    if status.effectiveness:
        said = f": {status.effectiveness.message}" if status.effectiveness.message else ""
        console.print(f"  Assessed: {status.effectiveness.assessment}{said}")
    if status.block_reason:
        console.print(f"  Blocked:  {status.block_reason}: {status.block_message}")
    if status.skip_reason:
        console.print(f"  Skipped:  {status.skip_reason}: {status.skip_message}")
    if status.failure_reason:
        console.print(f"  Failure:  {status.failure_phase}: {status.failure_reason}")
    if status.dry_run:
        dry = status.dry_run
        verdict = "validated" if dry.validated else "refused"
        console.print(
            f"  Dry run:  {dry.workflow_id} as {dry.execution_name} / {dry.lock_name} {verdict}: {dry.message}"
        )
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
        state = build_pipelinerun_state(pipelinerun)
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


async def _clear_block(kubeconfig: Path | None, name: str, namespace: str, reason: str) -> str:
    """Annotate the execution (or request) named; the kind it was."""
    client = make_client(kubeconfig)
    annotation = {"metadata": {"annotations": {ANNOTATION_CLEAR_BLOCK: reason}}}
    try:
        body = await get_or_none(client, WorkflowExecutionResource, name, namespace)
        if body is None:
            request = await get_or_none(client, RemediationRequestResource, name, namespace)
            if request is None:
                raise LookupError(f"No WorkflowExecution or RemediationRequest {namespace}/{name}")
            assessment = ((request.get("status") or {}).get("effectiveness") or {}).get("assessment")
            if assessment != Assessment.INEFFECTIVE:
                raise LookupError(
                    f"RemediationRequest {namespace}/{name} was not assessed Ineffective; "
                    "there is no ineffective chain to clear"
                )
            await patch_object(client, RemediationRequestResource, name, namespace, annotation)
            return "RemediationRequest"
        details = ((body.get("status") or {}).get("failureDetails")) or {}
        if (body.get("status") or {}).get("phase") != "Failed" or not details.get("wasExecutionFailure"):
            raise LookupError(
                f"WorkflowExecution {namespace}/{name} did not fail during execution; "
                "there is no execution block to clear"
            )
        await patch_object(client, WorkflowExecutionResource, name, namespace, annotation)
        return "WorkflowExecution"
    finally:
        await client.close()
