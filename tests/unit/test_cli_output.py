"""How `kubernaut get remediations` prints: plain full-width columns when piped, one line per row
fitted to a terminal, and -o wide|json|yaml; the demo's plain story lines."""

import contextlib
import fcntl
import json
import os
import pty
import struct
import sys
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubernaut.api.v1alpha1 import RemediationRequest
from kubernaut.cli import app
from kubernaut.cli import remediations as cli_remediations
from kubernaut.devcluster.demo import build_status_line
from kubernaut.domain.columns import layout

NOW = datetime.now(UTC).replace(microsecond=0)
LONG_MESSAGE = "Target Deployment/payments is locked by WorkflowExecution we-payments-stuck; " * 3


def rr_body(name: str, namespace: str, status: dict[str, Any], target: str = "checkout") -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": (NOW - timedelta(minutes=3)).isoformat().replace("+00:00", "Z"),
        },
        "spec": {
            "signalFingerprint": "f" * 64,
            "signalName": "KubeDeploymentRolloutStuck",
            "severity": "critical",
            "targetResource": {"kind": "Deployment", "name": target, "namespace": namespace},
        },
        "status": status,
    }


BODIES = [
    rr_body(
        "checkout-crashloop",
        "demo",
        {
            "overallPhase": "Completed",
            "outcome": "Remediated",
            "effectiveness": {"assessment": "Effective"},
            "workflowExecutionRef": {"name": "we-checkout-crashloop"},
        },
    ),
    rr_body(
        "payments-stuck-again-with-a-rather-long-name",
        "payments-production-eu-west",
        {
            "overallPhase": "Blocked",
            "blockReason": "PreviousExecutionFailed",
            "blockMessage": LONG_MESSAGE,
            "blockedUntil": (NOW + timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        },
        target="payments-api-with-a-long-deployment-name",
    ),
]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path | None, str | None]]:
    """`get remediations` reads these bodies instead of a server; returns the calls it made."""
    calls: list[tuple[Path | None, str | None]] = []

    async def list_rrs(kubeconfig: Path | None, namespace: str | None) -> list[dict[str, Any]]:
        calls.append((kubeconfig, namespace))
        return [b for b in BODIES if namespace in (None, b["metadata"]["namespace"])]

    monkeypatch.setattr(cli_remediations, "_list_rrs", list_rrs)
    return calls


def get(*args: str) -> str:
    result = CliRunner().invoke(app, ["get", "remediations", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


# -- layout --------------------------------------------------------------------------------------


def test_layout_pads_columns_to_their_widest_cell() -> None:
    lines = layout(["NAME", "PHASE"], [["a", "Completed"], ["longer-name", "New"]], None)
    assert lines == ["NAME          PHASE", "a             Completed", "longer-name   New"]


def test_layout_keeps_every_row_on_one_line() -> None:
    assert layout(["NAME", "WHY"], [["a", "two\nlines"]], None)[1] == "a      two lines"


@pytest.mark.parametrize("width", [80, 60, 40, 12])
def test_layout_fits_a_width_by_cutting_the_widest_column_first_and_the_name_last(width: int) -> None:
    rows = [["checkout-crashloop", "Completed", "x" * 100], ["p", "Blocked", "short"]]
    lines = layout(["NAME", "PHASE", "WHY"], rows, width)
    assert all(len(line) <= width for line in lines)
    if width >= 40:
        assert lines[0].split() == ["NAME", "PHASE", "WHY"]  # headers are never cut
        assert "checkout-crashloop" in lines[1]  # the NAME gives way last
    if width >= 60:
        assert "Completed" in lines[1]  # short cells stay whole
        assert lines[1].endswith("…")


# -- get remediations, piped ---------------------------------------------------------------------


def test_piped_table_is_plain_full_width_one_line_per_row(api: list[Any]) -> None:
    out = get()
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "TARGET", "WHY", "OUTCOME", "ASSESSMENT", "AGE"]
    assert "payments-stuck-again-with-a-rather-long-name" in lines[2]
    assert "payments-production-eu-west/Deployment/payments-api-with-a-long-deployment-name" in lines[2]
    assert "PreviousExecutionFailed (" in lines[2]
    assert "Effective" in lines[1]
    assert len(lines[2]) > 120  # not folded to 80 columns
    assert "…" not in out
    assert not set(out) & set("│─┃━╭╮╰╯\x1b")  # no box drawing, no colour
    # aligned: every column starts where its header does
    start = lines[0].index("PHASE")
    assert lines[1][start:].startswith("Completed")
    assert lines[2][start:].startswith("Blocked")


def test_one_namespace_drops_the_namespace_column(api: list[Any]) -> None:
    lines = get("-n", "demo").splitlines()
    assert [namespace for _, namespace in api] == ["demo"]
    assert lines[0].split()[0] == "NAME"
    assert len(lines) == 2


def test_wide_adds_signal_severity_block_end_and_message(api: list[Any]) -> None:
    lines = get("-o", "wide").splitlines()
    assert lines[0].split()[-5:] == ["WFE", "SIGNAL", "SEVERITY", "BLOCKED-UNTIL", "MESSAGE"]
    assert "we-checkout-crashloop" in lines[1]
    assert "KubeDeploymentRolloutStuck   critical" in lines[2]
    assert LONG_MESSAGE.strip() in lines[2]


def test_json_is_a_kubectl_list_of_the_objects_as_the_api_returns_them(api: list[Any]) -> None:
    listed = json.loads(get("-o", "json"))
    assert listed == {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": BODIES}


def test_yaml_is_the_same_list(api: list[Any]) -> None:
    assert yaml.safe_load(get("-o", "yaml")) == json.loads(get("-o", "json"))


def test_an_unknown_output_format_is_refused_naming_the_choices(api: list[Any]) -> None:
    result = CliRunner().invoke(app, ["get", "remediations", "-o", "table"])
    assert result.exit_code == 2
    assert "wide" in result.output
    assert "yaml" in result.output


# -- get remediations, on an 80-column terminal --------------------------------------------------


def test_on_a_terminal_each_row_fits_on_one_line(api: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    monkeypatch.setenv("COLUMNS", "80")
    terminal = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stdout", terminal)
    with contextlib.suppress(SystemExit):
        app(["get", "remediations"])
    terminal.close()
    out = os.read(master, 65536).decode()
    os.close(master)
    lines = out.replace("\r\n", "\n").splitlines()
    assert len(lines) == 3, out
    assert all(len(line) <= 80 for line in lines), out
    assert lines[0].split() == ["NAMESPACE", "NAME", "PHASE", "TARGET", "WHY", "OUTCOME", "ASSESSMENT", "AGE"]
    assert "…" in lines[2]  # the long cells were cut, not wrapped
    assert "payments-stuck-" in lines[2]  # the name gave way last
    start = lines[0].index("PHASE")  # still aligned
    assert lines[1][start:].startswith("Comp")
    assert lines[2][start:].startswith("Bloc")


# -- the demo's plain story ----------------------------------------------------------------------


def test_plain_story_line_leaves_out_the_countdown() -> None:
    rr = RemediationRequest.from_wire(BODIES[1])
    assert build_status_line(rr) == "  payments-stuck-again-with-a-rather-long-name: Blocked (PreviousExecutionFailed)"
    done = RemediationRequest.from_wire(BODIES[0])
    assert build_status_line(done) == "  checkout-crashloop: Completed, we-checkout-crashloop, outcome Remediated"
