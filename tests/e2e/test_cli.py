"""The command line as a user runs it: `kubernaut dev up`, `get`, `describe`, `audit`, bad config."""

import contextlib
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from kubernaut.cli import app
from kubernaut.devcluster.demo import STORY
from kubernaut.paths import project_dir

KUBERNAUT = [sys.executable, "-m", "kubernaut"]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KUBERNAUT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def run_in_terminal(args: list[str], *, cwd: Path, columns: int = 80, env: dict[str, str] | None = None) -> str:
    """What a user sees running `args` in a terminal `columns` wide (a pty)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": str(columns), **(env or {})},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(60) == 0, b"".join(chunks).decode()
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r\n", "\n")


def command_paths(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from command_paths(command, (*path, name))


HELP_PAGES = list(command_paths(typer.main.get_command(app)))


@pytest.mark.parametrize(("path", "command"), HELP_PAGES, ids=[" ".join(p) or "kubernaut" for p, _ in HELP_PAGES])
def test_help_in_an_80_column_terminal_cuts_no_option_or_choice(
    tmp_path: Path, path: tuple[str, ...], command: Any
) -> None:
    out = run_in_terminal([*KUBERNAUT, *path, "--help"], cwd=tmp_path)
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "…" not in out
    summaries = out.partition("Commands:")[2]
    assert not re.search(r"\.\.\.$", summaries, re.MULTILINE), out  # no command summary cut short either
    context = command.make_context(" ".join(path) or "kubernaut", [], resilient_parsing=True)
    for param in command.params:
        record = param.get_help_record(context)
        if record is not None:  # the option's names and its choices or metavar, as one unbroken piece
            assert re.search(rf"^  {re.escape(record[0])}(\s|$)", out, re.MULTILINE), (record[0], out)
    for name in getattr(command, "commands", {}):
        assert re.search(rf"^  {re.escape(name)}\s", out, re.MULTILINE), (name, out)


def test_kubectl_plugin_is_installed_and_answers_help(tmp_path: Path) -> None:
    plugin = Path(sys.executable).parent / "kubectl-kubernaut"
    assert os.access(plugin, os.X_OK), f"{plugin} missing: `make setup` installs it"
    direct = subprocess.run([str(plugin), "--help"], capture_output=True, text=True, check=False)
    assert direct.returncode == 0, direct.stderr
    assert "clear-block" in direct.stdout
    via_kubectl = subprocess.run(
        ["kubectl", "kubernaut", "get", "remediations", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": f"{plugin.parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert "--output" in via_kubectl.stdout


@pytest.mark.parametrize("command", [["dev", "up"], ["run"]])
@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("execution:\n  cooldown: banana\n", "execution.cooldown"),
        ("execution:\n  colldown: 5m\n", "execution.colldown"),
        ("routing:\n  backoffBase: 0s\n", "routing.backoffBase"),
    ],
)
def test_bad_config_stops_at_once_naming_the_key(tmp_path: Path, command: list[str], config: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    started = time.monotonic()
    result = run_cli(
        *command,
        "--config",
        str(path),
        "--state-dir" if command[0] == "dev" else "--controllers",
        str(tmp_path / "state") if command[0] == "dev" else "executor",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert key in result.stderr
    assert time.monotonic() - started < 15
    assert not (tmp_path / "state").exists()  # nothing was started


def test_help_explains_each_command(tmp_path: Path) -> None:
    out = run_cli("--help", cwd=tmp_path).stdout
    for command in ("run", "dev", "audit", "get", "describe", "clear-block", "breaker"):
        assert command in out
    assert "--no-tekton" in run_cli("dev", "up", "--help", cwd=tmp_path).stdout


@contextlib.contextmanager
def started_dev_up(cwd: Path, *args: str) -> Iterator[Path]:
    """`kubernaut dev up ARGS` as a user starts it in `cwd`, its output piped to a file (yielded
    once it is ready); stopped with SIGINT."""
    state = cwd / ".kubernaut" / "dev"
    output = cwd / "dev-up.log"
    log = output.open("w")
    proc = subprocess.Popen(
        [*KUBERNAUT, "dev", "up", *args],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBERNAUT_PROJECT_DIR": str(project_dir())},
    )
    try:
        deadline = time.monotonic() + 90
        while not (state / "endpoints.json").exists():
            assert proc.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "dev up did not become ready"
            time.sleep(0.2)
        time.sleep(1)
        yield output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log.close()
        assert proc.returncode == 0, output.read_text()[-3000:]
        leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True).stdout
        assert leftovers.strip() == "", f"processes left behind: {leftovers}"


@pytest.fixture
def dev_up(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    config = tmp_path / "config.yaml"
    config.write_text("execution: {cooldown: 1s}\nrouting: {recentlyRemediatedCooldown: 1s}\n")
    with started_dev_up(tmp_path, "--config", str(config)):
        yield tmp_path, json.loads((tmp_path / ".kubernaut" / "dev" / "endpoints.json").read_text())


def test_demo_piped_tells_the_story_in_plain_lines_and_logs_to_a_file(tmp_path: Path) -> None:
    operator_log = tmp_path / ".kubernaut" / "dev" / "operator.log"
    with started_dev_up(tmp_path, "--demo", "--config", str(project_dir() / "config/dev/demo.yaml")) as output:
        deadline = time.monotonic() + 180
        while "The story is told" not in output.read_text():
            assert time.monotonic() < deadline, f"the story did not end:\n{output.read_text()}"
            time.sleep(1)
    out = output.read_text()
    assert f"Operator log: {operator_log}" in out
    assert [line for line in out.splitlines() if line.startswith("▶ ")] == [f"▶ {step.say}" for step in STORY]
    assert "  checkout-crashloop: Completed, we-checkout-crashloop, outcome Remediated" in out.splitlines()
    assert " INFO " not in out
    assert "\x1b[" not in out
    assert " INFO " in operator_log.read_text()
    notifications = re.findall(r"^\((demo/nr-[^)]+)\)$", out, re.MULTILINE)
    assert notifications
    assert len(notifications) == len(set(notifications)) == out.count("--- notification ---")  # each once


def test_dev_up_runs_a_remediation_that_the_cli_shows(dev_up: tuple[Path, dict[str, str]]) -> None:
    cwd, endpoints = dev_up
    assert endpoints["apiserver"].startswith("https://127.0.0.1:")
    assert {"metrics", "gateway", "gatewayToken"} <= endpoints.keys()
    kubeconfig = cwd / ".kubernaut" / "dev" / "kubeconfig"
    env = {"KUBECONFIG": str(kubeconfig)}
    workflows = subprocess.run(
        ["kubectl", "get", "remediationworkflows", "-o", "name"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "remediationworkflow.kubernaut.ai/restart-deployment" in workflows
    subprocess.run(
        ["kubectl", "apply", "-f", str(project_dir() / "config/samples/requests/crashloop-api.yaml")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    deadline = time.monotonic() + 60
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        result = run_cli("get", "remediations", "-o", "json", cwd=cwd, env=env)
        assert result.returncode == 0, result.stderr
        listed = json.loads(result.stdout)
        items = listed["items"]
        if items and items[0].get("status", {}).get("overallPhase") == "Completed":
            break
        time.sleep(0.5)
    assert listed["kind"] == "List"
    assert items[0]["kind"] == "RemediationRequest"
    assert items[0]["metadata"]["name"] == "crashloop-api"
    assert items[0]["status"]["outcome"] == "Remediated"
    assert items[0]["status"]["workflowExecutionRef"]["name"] == "we-crashloop-api"
    piped = run_cli("get", "remediations", "-o", "wide", cwd=cwd, env=env).stdout.splitlines()
    assert len(piped) == 2
    assert piped[1].split()[:3] == ["demo", "crashloop-api", "Completed"]
    assert "we-crashloop-api" in piped[1]
    narrow = run_in_terminal([*KUBERNAUT, "get", "remediations", "-o", "wide"], cwd=cwd, columns=60, env=env)
    lines = narrow.splitlines()
    assert len(lines) == 2, narrow
    assert all(len(line) <= 60 for line in lines), narrow
    # dev up serves the web view too: the request's page shows it with its audit trail.
    with urllib.request.urlopen(f"{endpoints['ui']}remediations/demo/crashloop-api", timeout=10) as page:
        html = page.read().decode()
    assert "crashloop-api" in html
    assert "orchestrator.lifecycle.completed" in html
    described = run_cli("describe", "remediation", "crashloop-api", "-n", "demo", cwd=cwd, env=env)
    assert described.returncode == 0, described.stderr
    assert "restart-deployment" in described.stdout
    assert "orchestrator.lifecycle.completed" in described.stdout
    listed = run_cli("audit", "list", "-o", "json", "--resource", "WorkflowExecution/we-crashloop-api", cwd=cwd)
    types = sorted(event["event_type"] for event in json.loads(listed.stdout))
    assert types == ["workflow.completed", "workflow.started"]
    verified = run_cli("audit", "verify", cwd=cwd)
    assert verified.returncode == 0, verified.stdout + verified.stderr
