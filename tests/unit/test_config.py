from datetime import timedelta
from pathlib import Path

import pytest

from kubernaut.config import load_settings, parse_settings
from kubernaut.domain.gates import GatePolicy
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
    assert settings.manager.resync_period == timedelta(seconds=30)
    assert (settings.client.qps, settings.client.burst) == (500, 1000)
    assert settings.effectiveness.window == timedelta(minutes=10)
    assert settings.effectiveness.prometheus_url == ""
    assert settings.routing_policy().ineffective_chain_threshold == 3
    assert settings.routing_policy().ineffective_chain_cooldown == timedelta(hours=4)
    assert settings.gate_policy() == GatePolicy()


def test_gate_defaults_are_the_documented_ones() -> None:
    policy = parse_settings(None).gate_policy()
    assert policy.require_managed_label is True
    assert policy.unmanaged_timeout == timedelta(hours=1)
    assert (policy.max_concurrent_executions, policy.max_executions_per_hour) == (10, 100)
    assert policy.max_executions_per_namespace_per_hour == 20
    assert (policy.breaker_failure_threshold, policy.breaker_window) == (5, timedelta(minutes=10))


def test_gate_keys() -> None:
    settings = parse_settings(
        {
            "scope": {"requireManagedLabel": False, "unmanagedTimeout": "30m"},
            "limits": {
                "maxConcurrentExecutions": 3,
                "maxExecutionsPerHour": 50,
                "perNamespace": {"maxExecutionsPerHour": 7},
            },
            "breaker": {"failureThreshold": 2, "window": "1m"},
        }
    )
    assert settings.gate_policy() == GatePolicy(
        require_managed_label=False,
        unmanaged_timeout=timedelta(minutes=30),
        max_concurrent_executions=3,
        max_executions_per_hour=50,
        max_executions_per_namespace_per_hour=7,
        breaker_failure_threshold=2,
        breaker_window=timedelta(minutes=1),
    )


def test_every_documented_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "execution: {namespace: wf, serviceAccount: sa, cooldown: 90s}\n"
        "routing: {consecutiveFailureThreshold: 2, consecutiveFailureCooldown: 30m,"
        " recentlyRemediatedCooldown: 1m, backoffBase: 10s, backoffMax: 1m, backoffJitterPercent: 0}\n"
        "timeouts: {global: 2h, analyzing: 1m, executing: 1h30m}\n"
        "audit: {url: 'sqlite:///tmp/a.db'}\n"
        "manager: {resyncPeriod: 1m30s}\n"
        "client: {qps: 12.5, burst: 20}\n"
        "effectiveness: {window: 2m, prometheusUrl: 'http://prom:9090', ineffectiveChainThreshold: 5,"
        " ineffectiveChainCooldown: 1h}\n"
    )
    settings = load_settings(path)
    assert settings.execution.cooldown == timedelta(seconds=90)
    assert settings.routing.backoff_max == timedelta(minutes=1)
    assert settings.timeouts.executing == timedelta(minutes=90)
    assert settings.routing.policy().backoff_max == timedelta(minutes=1)
    assert settings.timeouts.policy() == TimeoutPolicy(
        global_=timedelta(hours=2), analyzing=timedelta(minutes=1), executing=timedelta(minutes=90)
    )
    assert settings.manager.resync_period == timedelta(seconds=90)
    assert (settings.client.qps, settings.client.burst) == (12.5, 20)
    assert settings.effectiveness.policy().window == timedelta(minutes=2)
    assert settings.effectiveness.policy().prometheus_url == "http://prom:9090"
    assert settings.routing_policy().ineffective_chain_threshold == 5
    assert settings.routing_policy().ineffective_chain_cooldown == timedelta(hours=1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"execution": {"cooldown": "banana"}}, "'execution.cooldown'"),
        ({"execution": {"colldown": "5m"}}, "unknown configuration key 'execution.colldown'"),
        ({"nonsense": 1}, "unknown configuration key 'nonsense'"),
        ({"routing": {"backoffBase": "0s"}}, "'routing.backoffBase'"),
        ({"audit": {"url": "mysql://x"}}, "'audit.url'"),
        ({"manager": {"resyncPeriod": "0s"}}, "'manager.resyncPeriod'"),
        ({"manager": {"resyncPeriod": "-5s"}}, "'manager.resyncPeriod'"),
        ({"manager": {"resyncPeriod": "soon"}}, "'manager.resyncPeriod'"),
        ({"client": {"qps": 0}}, "'client.qps'"),
        ({"client": {"qps": -1}}, "'client.qps'"),
        ({"client": {"qps": ".inf"}}, "'client.qps'"),
        ({"client": {"qps": float("inf")}}, "'client.qps'"),
        ({"client": {"qps": True}}, "'client.qps'"),
        ({"client": {"qps": "fast"}}, "'client.qps'"),
        ({"client": {"burst": 0}}, "'client.burst'"),
        ({"client": {"burst": 1.5}}, "'client.burst'"),
        ({"client": {"burst": False}}, "'client.burst'"),
        ({"client": {"qpps": 5}}, "unknown configuration key 'client.qpps'"),
        ({"effectiveness": {"window": "0s"}}, "'effectiveness.window'"),
        ({"effectiveness": {"ineffectiveChainThreshold": 0}}, "'effectiveness.ineffectiveChainThreshold'"),
        ({"scope": {"unmanagedTimeout": "0s"}}, "'scope.unmanagedTimeout'"),
        ({"scope": {"requireManagedLabels": True}}, "unknown configuration key 'scope.requireManagedLabels'"),
        ({"limits": {"maxConcurrentExecutions": 0}}, "'limits.maxConcurrentExecutions'"),
        ({"limits": {"perNamespace": {"maxExecutionsPerHour": 0}}}, "'limits.perNamespace.maxExecutionsPerHour'"),
        ({"breaker": {"failureThreshold": 0}}, "'breaker.failureThreshold'"),
        ({"breaker": {"window": "0s"}}, "'breaker.window'"),
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


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("client: {qps: 0}\n", "client.qps"),
        ("client: {burst: -1}\n", "client.burst"),
        ("manager: {resyncPeriod: 0s}\n", "manager.resyncPeriod"),
    ],
)
def test_a_bad_value_stops_kubernaut_run_with_exit_2_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    from typer.testing import CliRunner

    from kubernaut.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 2
    assert f"'{key}'" in result.output
