"""`kubernaut audit ...`: read and verify the audit trail."""

import typer

audit_app = typer.Typer(help="Read and verify the tamper-evident audit trail.", no_args_is_help=True)
