from datetime import timedelta
from pathlib import Path

import pytest

from kubernaut.config import load_settings, parse_settings
from kubernaut.domain.remediation import TimeoutPolicy
from kubernaut.domain.routing import RoutingPolicy
from kubernaut.errors import ConfigError


def test_defaults() -> None:
    settings = parse_settings(None)
    assert settings.execution.namespace == "kubernaut-workflows"
    assert settings.execution.cooldown == timedelta(minutes=5)
    assert settings.routing.consecutive_failure_threshold == 3
    assert settings.timeouts.global_ == timedelta(hours=1)
    assert settings.routing.policy() == RoutingPolicy()
    assert settings.timeouts.policy() == TimeoutPolicy()


def test_every_documented_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "execution: {namespace: wf, serviceAccount: sa, cooldown: 90s}\n"
        "routing: {consecutiveFailureThreshold: 2, consecutiveFailureCooldown: 30m,"
        " recentlyRemediatedCooldown: 1m, backoffBase: 10s, backoffMax: 1m, backoffJitterPercent: 0}\n"
        "timeouts: {global: 2h, analyzing: 1m, executing: 1h30m}\n"
        "audit: {url: 'sqlite:///tmp/a.db'}\n"
    )
    settings = load_settings(path)
    assert settings.execution.cooldown == timedelta(seconds=90)
    assert settings.routing.backoff_max == timedelta(minutes=1)
    assert settings.timeouts.executing == timedelta(minutes=90)
    assert settings.routing.policy().backoff_max == timedelta(minutes=1)
    assert settings.timeouts.policy() == TimeoutPolicy(
        global_=timedelta(hours=2), analyzing=timedelta(minutes=1), executing=timedelta(minutes=90)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"execution": {"cooldown": "banana"}}, "'execution.cooldown'"),
        ({"execution": {"colldown": "5m"}}, "unknown configuration key 'execution.colldown'"),
        ({"nonsense": 1}, "unknown configuration key 'nonsense'"),
        ({"routing": {"backoffBase": "0s"}}, "'routing.backoffBase'"),
        ({"audit": {"url": "mysql://x"}}, "'audit.url'"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(data)


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(path)
