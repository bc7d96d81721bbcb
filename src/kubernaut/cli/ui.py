"""`kubernaut ui`: the read-only web view of remediations, served on this machine."""

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kubernaut.cli.audit import resolve_audit_url
from kubernaut.cli.remediations import KubeconfigOption, resolve_kubeconfig
from kubernaut.config import load_settings
from kubernaut.errors import ConfigError

errors = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui(
        kubeconfig: KubeconfigOption = None,
        port: Annotated[int, typer.Option("--port", help="Port to serve on (0: any free port).")] = 8484,
        address: Annotated[
            str, typer.Option("--address", help="Address to serve on; keep it loopback, the UI has no login.")
        ] = "127.0.0.1",
        config: Annotated[
            Path | None,
            typer.Option("--config", help="YAML settings file: its execution.namespace and audit.url are used."),
        ] = None,
        audit_url: Annotated[
            str | None,
            typer.Option("--audit-url", help="Audit store to read events from; else audit.url of --config."),
        ] = None,
    ) -> None:
        """Serve the read-only web view of remediations.

        The list of requests, one request's timeline, and the targets with their locks, read with the
        kubeconfig's identity. Runs until Ctrl-C."""
        from kubernaut.web.server import UiConfig, serving

        try:
            settings = load_settings(config)
            url = resolve_audit_url(audit_url, config)
        except ConfigError as exc:
            errors.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        # Without --audit-url or --config, only the local default's store, and only when it exists.
        readable = not url.startswith("sqlite://") or Path(url.removeprefix("sqlite://")).exists()
        ui_config = UiConfig(
            kubeconfig=resolve_kubeconfig(kubeconfig),
            execution_namespace=settings.execution.namespace,
            audit_url=url if readable else None,
        )

        async def serve() -> None:
            # Handlers of our own: a process started in the background inherits SIGINT ignored.
            stop = asyncio.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            async with serving(ui_config, address, port) as base:
                typer.echo(f"kubernaut ui: serving {base}/ (Ctrl-C stops it)", err=True)
                await stop.wait()

        try:
            asyncio.run(serve())
        except OSError as exc:  # the port is taken, or the address is not this machine's
            errors.print(f"[red]error:[/red] cannot serve on {address}:{port}: {exc}", highlight=False)
            raise typer.Exit(2) from None
