"""How the CLI prints: help that never cuts an option, lists as kubectl prints them.

Piped (not a terminal) a table is printed at full width, so every row stays one greppable line;
on a terminal it is fitted to the terminal's width, so that a row never wraps.
"""

import json
import shutil
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import typer
import yaml

from kubernaut.domain.columns import layout


class Output(StrEnum):
    """`-o` of the `get` commands; without it, the usual columns."""

    wide = "wide"
    json = "json"
    yaml = "yaml"


def command_group(help: str) -> typer.Typer:
    # Plain click help wraps descriptions and never truncates option names or choices, at any width.
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for line in layout(headers, rows, width):
        typer.echo(line)


def as_list(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Objects as `kubectl get -o json` wraps them."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(items)}


def print_objects(items: Sequence[dict[str, Any]], output: Output) -> None:
    body = as_list(items)
    if output is Output.yaml:
        typer.echo(yaml.safe_dump(body, sort_keys=False), nl=False)
    else:
        typer.echo(json.dumps(body, indent=4))
