"""`kubernaut audit ...`: read and verify the audit trail."""

import asyncio
import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kubernaut.api.audit import StoredAuditEvent
from kubernaut.audit.chain import VerifyResult
from kubernaut.audit.factory import open_audit_store
from kubernaut.cli.output import command_group, print_table
from kubernaut.config import load_settings
from kubernaut.domain.duration import format_rfc3339, parse_go_duration
from kubernaut.errors import ConfigError

audit_app = command_group("Read and verify the tamper-evident audit trail.")
errors = Console(stderr=True)

LOCAL_STATE_DIR = Path(".kubernaut/dev")


class Output(StrEnum):
    table = "table"
    json = "json"


AuditUrlOption = Annotated[
    str | None,
    typer.Option(
        "--audit-url",
        help="sqlite:///ABS/PATH or postgresql://...; else audit.url from --config, "
        "else the local default .kubernaut/dev/audit.db.",
    ),
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML settings file; its audit.url is used.")]


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def resolve_audit_url(audit_url: str | None, config: Path | None) -> str:
    """--audit-url, else the config file's audit.url, else the store `kubernaut dev up` writes in this directory."""
    if audit_url:
        return audit_url
    if config is not None:
        return load_settings(config).audit.url
    return f"sqlite:///{(Path.cwd() / LOCAL_STATE_DIR / 'audit.db').as_posix().lstrip('/')}"


async def _fetch_events(
    url: str, *, correlation_id: str | None, resource: str | None, event_type: str | None, since: datetime | None
) -> list[StoredAuditEvent]:
    async with open_audit_store(url, create=False) as store:
        return list(
            await store.list_events(
                correlation_id=correlation_id, resource=resource, event_type=event_type, since=since
            )
        )


async def _verify(url: str) -> VerifyResult:
    async with open_audit_store(url, create=False) as store:
        return await store.verify()


def _print_table(events: list[StoredAuditEvent]) -> None:
    print_table(
        ("SEQ", "TIME", "TYPE", "OUTCOME", "RESOURCE", "NAMESPACE", "CORRELATION", "ACTOR"),
        [
            (
                str(event.sequence),
                format_rfc3339(event.event_time),
                event.event_type,
                event.event_outcome,
                f"{event.resource_type}/{event.resource_id}",
                event.namespace,
                event.correlation_id,
                event.actor_id,
            )
            for event in events
        ],
    )


@audit_app.command("list")
def list_command(
    correlation_id: Annotated[str | None, typer.Option("--correlation-id", help="Events of one remediation.")] = None,
    resource: Annotated[
        str | None, typer.Option("--resource", help="KIND/NAME (e.g. WorkflowExecution/we-rr-1), or just NAME.")
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="e.g. workflow.failed.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only events of the last D (Go duration: 1h).")] = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="table, or json with every field.")] = Output.table,
    audit_url: AuditUrlOption = None,
    config: ConfigOption = None,
) -> None:
    """List audit events in chain order, optionally filtered."""
    since_time: datetime | None = None
    if since is not None:
        try:
            since_time = datetime.now(UTC) - parse_go_duration(since)
        except ValueError as exc:
            raise _fail(f"--since: {exc}") from None
    try:
        url = resolve_audit_url(audit_url, config)
        events = asyncio.run(
            _fetch_events(
                url, correlation_id=correlation_id, resource=resource, event_type=event_type, since=since_time
            )
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if output is Output.json:
        typer.echo(json.dumps([event.model_dump(mode="json") for event in events], indent=2))
    else:
        _print_table(events)


@audit_app.command("verify")
def verify_command(audit_url: AuditUrlOption = None, config: ConfigOption = None) -> None:
    """Verify the hash chain.

    Exit 0 when intact, 1 naming the first broken event."""
    try:
        result = asyncio.run(_verify(resolve_audit_url(audit_url, config)))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if result.ok:
        typer.echo(
            f"Audit trail intact: {result.count} events; head sequence {result.head_sequence}, "
            f"hash {result.head_hash or '(none)'}"
        )
        return
    event = f"event_id {result.broken_event_id}" if result.broken_event_id else "event missing"
    typer.echo(
        f"Audit trail BROKEN at sequence {result.broken_sequence} ({event}): {result.reason}. "
        f"{result.count} events before it are intact."
    )
    raise typer.Exit(1)
