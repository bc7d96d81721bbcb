"""The audit store at start-up and when it degrades.

A bad `audit.url` (a PostgreSQL server that is not there, a malformed URL) stops `kubernaut run`
and `kubernaut dev up` at once, naming the key and never printing the password. A store that
turns read-only while the controllers run blocks no remediation: the events wait in the outbox
and arrive, each once, when the store takes writes again.
"""

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from lightkube import AsyncClient
from prometheus_client import REGISTRY

from kubernaut.audit.factory import open_audit_sink
from kubernaut.audit.writer import AuditWriter
from kubernaut.kube.resources import RemediationRequestResource
from tests.conftest_postgres import free_port
from tests.integration.audit_e2e_support import (
    assert_exactly_expected,
    build_expected_events,
    caught_up,
    list_audit_events,
    run_kubernaut,
    unique_workflow_id,
    verify_audit,
)
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.orchestrator_support import create_rr, recording, wait_phase
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

PASSWORD = "s3cret-Pa55"


@pytest.mark.parametrize("command", ["run", "dev-up"])
@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://kubernaut:{PASSWORD}@127.0.0.1:{free_port()}/audit",  # nothing listens there
        f"postgresql://kubernaut:{PASSWORD}@[127.0.0.1/audit",
        f"postgresql://kubernaut:{PASSWORD}@127.0.0.1:notaport/audit",
        f"postgresql://kubernaut:{PASSWORD}@127.0.0.1:5432/audit?sslmode=sometimes",
        f"mysql://kubernaut:{PASSWORD}@127.0.0.1/audit",
        "sqlite://relative/audit.db",
    ],
    ids=["unreachable", "bad-host", "bad-port", "bad-option", "bad-scheme", "relative-sqlite"],
)
def test_a_bad_audit_url_stops_start_up_at_once(tmp_path: Path, kubeconfig: Path, command: str, url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"audit:\n  url: {url!r}\n  connectTimeout: 2s\n")
    state = tmp_path / "state"
    args = (
        ["run", "--config", str(config), "--kubeconfig", str(kubeconfig), "--controllers", "executor"]
        if command == "run"
        else ["dev", "up", "--config", str(config), "--state-dir", str(state)]
    )
    started = time.monotonic()
    result = run_kubernaut(*args, timeout=60, env={"COLUMNS": "200"})
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "audit.url" in output
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert elapsed < 10, f"took {elapsed:.1f}s"
    assert not (state / "etcd").exists()  # no control plane was started


# -- a store that turns read-only ------------------------------------------------------------------


class ReadOnlySwitch:
    """Makes one audit store refuse writes, and take them again."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url

    def _sql(self, *statements: str) -> None:
        database = self.url.rsplit("/", 1)[1]
        maintenance = self.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(maintenance, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.replace("DB", database).encode())

    def _sqlite_files(self) -> list[str]:
        # Not the -shm file: it is mapped into memory, and an immutable mapping hangs its writer.
        database = Path(self.url.removeprefix("sqlite://"))
        return [str(p) for p in (database, database.with_name(database.name + "-wal")) if p.exists()]

    def read_only(self) -> None:
        if self.kind == "postgres":
            # As an operator would (or a failover to a standby): sessions from now on are read-only.
            self._sql(
                'ALTER DATABASE "DB" SET default_transaction_read_only = on',
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'DB'"
                " AND pid <> pg_backend_pid()",
            )
        else:
            # Root ignores file modes; the immutable attribute stops root too.
            subprocess.run(["chattr", "+i", *self._sqlite_files()], check=True)

    def writable(self) -> None:
        if self.kind == "postgres":
            self._sql('ALTER DATABASE "DB" SET default_transaction_read_only = off')
        else:
            subprocess.run(["chattr", "-i", *self._sqlite_files()], check=True)

    @contextlib.contextmanager
    def while_read_only(self) -> Iterator[None]:
        self.read_only()
        try:
            yield
        finally:
            self.writable()


def write_failures() -> float:
    return REGISTRY.get_sample_value("kubernaut_audit_write_failures_total") or 0.0


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_a_read_only_store_blocks_no_remediation(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    url = request.getfixturevalue("postgres_database") if kind == "postgres" else f"sqlite:///{tmp_path}/audit.db"
    settings = settings_for(
        exec_ns,
        execution={"cooldown": "1s"},
        audit={"url": url, "bufferPath": str(tmp_path / "outbox.db"), "flushInterval": "50ms"},
    )
    switch = ReadOnlySwitch(kind, url)
    workflow_id = unique_workflow_id()

    async def remediate(names: list[str]) -> None:
        for name in names:
            target = {"kind": "Deployment", "name": f"app-{name}", "namespace": namespace}
            bundle = played("succeed:1tasks-0s")
            await create_rr(kube, rr_manifest(name, namespace, target=target, bundle=bundle, workflow_id=workflow_id))
        for name in names:
            await wait_phase(kube, name, namespace, "Completed", timeout=30)

    async with recording(kube, RemediationRequestResource, namespace) as requests:
        async with (
            open_audit_sink(settings.audit) as audit,
            running(kubeconfig, settings, ("orchestrator", "executor"), audit=audit),
        ):
            assert isinstance(audit, AuditWriter)
            await remediate(["rr-before"])
            await eventually(lambda: asyncio.sleep(0, audit.buffered == 0), what="the first events stored")
            stored_before = len(list_audit_events(url))

            with switch.while_read_only():
                failures = write_failures()
                await remediate([f"rr-ro-{i}" for i in range(5)])  # every one completes meanwhile
                await eventually(
                    lambda: asyncio.sleep(0, write_failures() > failures), what="the store refused a write"
                )
                buffered = audit.buffered
                assert buffered >= 5 * 6  # each remediation: 4 request events, 2 execution events
                assert len(list_audit_events(url)) == stored_before

            await eventually(lambda: asyncio.sleep(0, audit.buffered == 0), timeout=15, what="the outbox delivered")
        await caught_up(kube, requests, namespace)
        expected = await build_expected_events(kube, requests, namespace)

    stored = list_audit_events(url)
    counts = assert_exactly_expected(stored, expected)
    assert counts["orchestrator.lifecycle.completed"] == 6
    assert len(stored) == stored_before + buffered
    verified = verify_audit(url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
