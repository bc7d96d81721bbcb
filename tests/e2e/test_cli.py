"""The command line as a user runs it: `kubernaut dev up`, `get`, `describe`, `audit`, bad config."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    for command in ("run", "dev", "audit", "get", "describe", "clear-block"):
        assert command in out
    assert "--no-tekton-standin" in run_cli("dev", "up", "--help", cwd=tmp_path).stdout


@pytest.fixture
def dev_up(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """`kubernaut dev up` as a user starts it, in its own directory; stopped with SIGINT."""
    state = tmp_path / ".kubernaut" / "dev"
    config = tmp_path / "config.yaml"
    config.write_text("execution: {cooldown: 1s}\nrouting: {recentlyRemediatedCooldown: 1s}\n")
    log = (tmp_path / "dev-up.log").open("w")
    proc = subprocess.Popen(
        [*KUBERNAUT, "dev", "up", "--config", str(config)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KUBERNAUT_PROJECT_DIR": str(project_dir())},
    )
    try:
        deadline = time.monotonic() + 90
        while not (state / "endpoints.json").exists():
            assert proc.poll() is None, (tmp_path / "dev-up.log").read_text()
            assert time.monotonic() < deadline, "dev up did not become ready"
            time.sleep(0.2)
        time.sleep(1)
        yield tmp_path, json.loads((state / "endpoints.json").read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log.close()
        assert proc.returncode == 0, (tmp_path / "dev-up.log").read_text()[-3000:]
        leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True).stdout
        assert leftovers.strip() == "", f"processes left behind: {leftovers}"


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
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        result = run_cli("get", "remediations", "-o", "json", cwd=cwd, env=env)
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        if rows and rows[0]["phase"] == "Completed":
            break
        time.sleep(0.5)
    assert rows[0]["name"] == "crashloop-api"
    assert rows[0]["phase"] == "Completed"
    assert rows[0]["outcome"] == "Remediated"
    assert rows[0]["workflowExecution"] == "we-crashloop-api"
    described = run_cli("describe", "remediation", "crashloop-api", "-n", "demo", cwd=cwd, env=env)
    assert described.returncode == 0, described.stderr
    assert "restart-deployment" in described.stdout
    assert "orchestrator.lifecycle.completed" in described.stdout
    listed = run_cli("audit", "list", "-o", "json", "--resource", "WorkflowExecution/we-crashloop-api", cwd=cwd)
    types = sorted(event["event_type"] for event in json.loads(listed.stdout))
    assert types == ["workflow.completed", "workflow.started"]
    verified = run_cli("audit", "verify", cwd=cwd)
    assert verified.returncode == 0, verified.stdout + verified.stderr
