"""Garbage settings files: `kubernaut run --config` stops at once (exit 2) with a message naming the
key or saying what is wrong with the file, never with a traceback; and no generated file makes
loading the settings fail any other way."""

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubernaut.config import Settings, load_settings, parse_settings
from kubernaut.errors import ConfigError

# (file content, what stderr must say)
GARBAGE: list[tuple[bytes, str]] = [
    (b"{{{", "not valid YAML"),
    (b"- a\n- b\n", "must hold a mapping"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"executon: {}\n", "executon"),
    (b"audit:\n  urll: sqlite:///x.db\n", "audit.urll"),
    (b"audit:\n  url: ftp://example.com/x\n", "audit.url"),
    (b"execution: 5\n", "execution"),
    (b"execution:\n  cooldown: 99999999999999999h\n", "execution.cooldown"),
    (b"execution:\n  cooldown: .inf\n", "execution.cooldown"),
    (b"routing:\n  consecutiveFailureThreshold: many\n", "routing.consecutiveFailureThreshold"),
    (b"routing:\n  backoffJitterPercent: 101\n", "routing.backoffJitterPercent"),
    (b"gateway:\n  listen: nowhere\n", "gateway.listen"),
    (b"notifier:\n  slack:\n    webhookUrlSecret: not-a-reference\n", "notifier.slack.webhookUrlSecret"),
    (b"manager:\n  leaderElection:\n    retryPeriod: 1h\n", "manager.leaderElection"),
    (b"execution: " + b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
]


async def _run(config: Path, slots: asyncio.Semaphore) -> tuple[int, str]:
    async with slots:
        return await _run_one(config)


async def _run_one(config: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubernaut",
        "run",
        "--config",
        str(config),
        "--kubeconfig",
        str(config.with_suffix(".kubeconfig")),  # never read: the settings fail first
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)  # a start that hangs fails here
    return int(process.returncode or 0), stderr.decode(errors="replace")


async def test_run_with_a_garbage_config_stops_at_once_naming_the_problem(tmp_path: Path) -> None:
    paths = []
    for index, (content, _) in enumerate(GARBAGE):
        path = tmp_path / f"bad-{index}.yaml"
        path.write_bytes(content)
        paths.append(path)
    slots = asyncio.Semaphore(4)
    results = await asyncio.gather(*(_run(path, slots) for path in paths))
    for (content, expected), (code, raw) in zip(GARBAGE, results, strict=True):
        shown, stderr = content[:60], " ".join(raw.split())  # the console wraps long lines
        assert code == 2, (shown, code, stderr[-2000:])
        assert expected in stderr, (shown, stderr[-2000:])
        assert "Traceback" not in stderr, (shown, stderr[-2000:])


KEYS = [
    "execution",
    "routing",
    "timeouts",
    "audit",
    "manager",
    "gateway",
    "notifier",
    "notifications",
    "namespace",
    "cooldown",
    "url",
    "global",
    "listen",
    "backoffBase",
    "leaderElection",
    "retryPeriod",
    "slack",
    "to",
    "critical",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["5m", "-1s", "0s", "1e9h", "sqlite:///tmp/x.db", "127.0.0.1:99999", "ns/name:key", "9" * 40])
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(document=st.dictionaries(st.sampled_from(KEYS), documents, max_size=4))
def test_any_settings_mapping_loads_or_names_its_key(document: dict[str, Any]) -> None:
    problem = _problem(lambda: parse_settings(document))
    assert problem is None or "'" in problem, problem  # a refusal names the key


@pytest.mark.parametrize("seed", range(3))
def test_any_file_loads_or_says_why(tmp_path: Path, seed: int) -> None:
    @settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(content=st.binary(max_size=200) | documents.map(lambda d: yaml.safe_dump({"execution": d}).encode()))
    def check(content: bytes) -> None:
        path = tmp_path / f"settings-{seed}.yaml"
        path.write_bytes(bytes([seed]) * (seed > 0) + content)
        assert _problem(lambda: load_settings(path)) != ""

    check()


def _problem(load: Any) -> str | None:
    """None when the settings load, else the ConfigError's message (any other exception propagates)."""
    try:
        assert isinstance(load(), Settings)
    except ConfigError as exc:
        return str(exc)
    return None
