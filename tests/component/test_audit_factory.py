"""open_audit_sink: the store named by audit.url behind a durable writer; bad URLs stop the start."""

import socket
from pathlib import Path

import pytest

from kubernaut.audit.factory import open_audit_sink, open_audit_store
from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.audit.writer import AuditWriter
from kubernaut.config import AuditConfig, parse_settings
from kubernaut.errors import ConfigError
from tests.component.conftest import AuditEventFactory


async def test_memory_url_gives_the_in_memory_sink(audit_event: AuditEventFactory) -> None:
    async with open_audit_sink(AuditConfig(url="memory://")) as sink:
        assert isinstance(sink, MemoryAuditSink)
        await sink.record(audit_event())
        assert len(sink.events) == 1


async def test_sqlite_url_creates_the_file_and_delivers_on_close(
    tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    database = tmp_path / "state" / "deep" / "audit.db"
    events = [audit_event() for _ in range(3)]

    async with open_audit_sink(parse_settings({"audit": {"url": f"sqlite://{database}"}}).audit) as sink:
        assert isinstance(sink, AuditWriter)
        for event in events:
            await sink.record(event)

    assert (tmp_path / "state" / "deep" / "audit.db.outbox").exists()
    async with open_audit_store(f"sqlite://{database}", create=False) as store:
        assert [e.event_id for e in await store.list_events()] == [e.event_id for e in events]


async def test_postgres_url_with_the_outbox_under_the_state_dir(
    postgres_database: str, tmp_path: Path, audit_event: AuditEventFactory
) -> None:
    event = audit_event()
    async with open_audit_sink(AuditConfig(url=postgres_database), state_dir=tmp_path) as sink:
        await sink.record(event)
    assert (tmp_path / "audit-outbox.db").exists()
    async with open_audit_store(postgres_database) as store:
        assert [e.event_id for e in await store.list_events()] == [event.event_id]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql://kubernaut:secret@127.0.0.1:{closed_port()}/audit", id="unreachable"),
        pytest.param("postgresql://kubernaut@127.0.0.1:notaport/audit", id="bad-port"),
        pytest.param("postgresql://[::1/audit", id="malformed"),
        pytest.param("sqlite://relative/audit.db", id="relative-sqlite"),
    ],
)
async def test_a_store_that_cannot_be_opened_stops_the_start_naming_audit_url(url: str, tmp_path: Path) -> None:
    config = AuditConfig(url=url, connect_timeout=2)
    with pytest.raises(ConfigError, match=r"audit\.url") as error:
        async with open_audit_sink(config, state_dir=tmp_path):
            pytest.fail("the sink must not open")
    assert "secret" not in str(error.value)


async def test_an_outbox_that_cannot_be_created_stops_the_start_naming_buffer_path(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config = AuditConfig(url=f"sqlite://{tmp_path}/audit.db", buffer_path=str(tmp_path / "a-file" / "outbox.db"))
    with pytest.raises(ConfigError, match=r"audit\.bufferPath"):
        async with open_audit_sink(config):
            pytest.fail("the sink must not open")
