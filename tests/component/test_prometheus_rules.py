"""The alert rules pass `promtool check rules`, and `promtool test rules` (config/prometheus/rules_test.yaml)
shows every alert firing on its series and staying silent on the others."""

import subprocess
from pathlib import Path
from typing import Any

import yaml

from kubernaut.paths import project_dir
from tests.prometheus_tools import prometheus_tool

PROMETHEUS_DIR = project_dir() / "config" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yaml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yaml"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_every_alert_fires_on_its_series_and_not_on_the_others() -> None:
    result = promtool("test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    # Each alert has a case expecting it (firing) and a case expecting nothing.
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for alert in alerts():
        mine = [check for check in checks if check["alertname"] == alert["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"{alert['alert']} is never expected to fire"
        assert any(not check["exp_alerts"] for check in mine), f"{alert['alert']} is never expected to stay silent"


def test_every_alert_has_for_severity_summary_description_and_a_runbook() -> None:
    observability = (project_dir() / "docs" / "observability.md").read_text()
    assert [group["name"] for group in yaml.safe_load(RULES.read_text())["groups"]] == ["kubernaut"]
    for alert in alerts():
        name = alert["alert"]
        assert "for" in alert, name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"], name
        assert alert["annotations"]["description"], name
        assert alert["annotations"]["runbook"] == f"docs/observability.md#{name.lower()}"
        assert f"### {name}" in observability, f"docs/observability.md has no section {name}"
