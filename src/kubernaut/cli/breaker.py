"""`kubernaut breaker reset|status`: the circuit breaker, as the orchestrator derives it."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from lightkube.core.exceptions import ApiError

from kubernaut.api.v1alpha1 import WorkflowExecution
from kubernaut.cli.output import command_group
from kubernaut.cli.remediations import KubeconfigOption, console, resolve_kubeconfig
from kubernaut.config import load_settings
from kubernaut.domain.duration import format_rfc3339
from kubernaut.domain.gates import (
    ANNOTATION_RESET_REASON,
    ANNOTATION_RESET_REQUESTED_AT,
    BREAKER_CONFIGMAP,
    BREAKER_LABEL,
    BREAKER_NAMESPACE,
    BreakerState,
    GatePolicy,
    compute_breaker,
    parse_reset,
)
from kubernaut.errors import ConfigError
from kubernaut.kube.client import make_client, patch_object
from kubernaut.kube.resources import ConfigMapResource, WorkflowExecutionResource
from kubernaut.web.views import get_or_none

breaker_app = command_group("The circuit breaker: its state, and the reset a person makes.")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="The operator's settings file (breaker.failureThreshold, window).")
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@breaker_app.command("reset")
def reset(
    reason: Annotated[str, typer.Option("--reason", help="Why it is safe to run executions again (recorded).")],
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Close an open circuit breaker.

    Sets the reset annotations on the ConfigMap kubernaut-breaker; the admission webhook records
    your Kubernetes user name and the time, the orchestrator audits the reset once and routes the
    blocked requests again."""
    if not reason.strip():
        raise _fail("--reason must not be empty")
    try:
        body = asyncio.run(_reset(resolve_kubeconfig(kubeconfig), reason.strip()))
    except ApiError as exc:
        raise _fail(f"the reset was refused: {exc.status.message}") from None
    stamped = parse_reset((body.get("metadata") or {}).get("annotations"))
    who = f" by {stamped.by} at {format_rfc3339(stamped.at)}" if stamped else ""
    console.print(f"Circuit breaker reset{who}: {reason.strip()}", highlight=False)


@breaker_app.command("status")
def status(kubeconfig: KubeconfigOption = None, config: ConfigOption = None) -> None:
    """Show the breaker's state.

    Open or closed, the execution failures in its window, and who reset it last, when and why."""
    try:
        policy = load_settings(config).gate_policy()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    state = asyncio.run(_status(resolve_kubeconfig(kubeconfig), policy))
    for line in format_status(state, policy):
        console.print(line, highlight=False)


def format_status(state: BreakerState, policy: GatePolicy) -> list[str]:
    window = int(policy.breaker_window.total_seconds())
    if state.open and state.opened_at is not None:
        lines = [f"State:               Open (since {format_rfc3339(state.opened_at)})"]
        lines.append(f"Opened by failures:  {', '.join(state.failures)}")
    else:
        lines = ["State:               Closed"]
    lines.append(f"Failures in window:  {state.failures_in_window} of {policy.breaker_failure_threshold} ({window}s)")
    if state.reset is None:
        lines.append("Last reset:          never")
    else:
        lines.append(f"Last reset:          {format_rfc3339(state.reset.at)} by {state.reset.by}")
        lines.append(f"Reset reason:        {state.reset.reason}")
    return lines


async def _reset(kubeconfig: Path | None, reason: str) -> dict[str, Any]:
    annotations = {
        ANNOTATION_RESET_REASON: reason,
        ANNOTATION_RESET_REQUESTED_AT: datetime.now(UTC).isoformat(),
    }
    client = make_client(kubeconfig)
    try:
        if await get_or_none(client, ConfigMapResource, BREAKER_CONFIGMAP, BREAKER_NAMESPACE) is None:
            created = await client.create(
                ConfigMapResource(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": BREAKER_CONFIGMAP,
                            "namespace": BREAKER_NAMESPACE,
                            "labels": {BREAKER_LABEL: "true"},
                            "annotations": annotations,
                        },
                    }
                )
            )
            body: dict[str, Any] = created.to_dict()
            return body
        patched = await patch_object(
            client,
            ConfigMapResource,
            BREAKER_CONFIGMAP,
            BREAKER_NAMESPACE,
            {"metadata": {"labels": {BREAKER_LABEL: "true"}, "annotations": annotations}},
        )
        result: dict[str, Any] = patched.to_dict()
        return result
    finally:
        await client.close()


async def _status(kubeconfig: Path | None, policy: GatePolicy) -> BreakerState:
    client = make_client(kubeconfig)
    try:
        config_map = await get_or_none(client, ConfigMapResource, BREAKER_CONFIGMAP, BREAKER_NAMESPACE)
        executions = [
            WorkflowExecution.from_wire(obj.to_dict())
            async for obj in client.list(WorkflowExecutionResource, namespace="*")
        ]
    finally:
        await client.close()
    recorded = parse_reset(((config_map or {}).get("metadata") or {}).get("annotations"))
    return compute_breaker(executions, recorded, datetime.now(UTC), policy)
