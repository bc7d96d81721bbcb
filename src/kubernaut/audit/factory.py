"""Open the audit sink (or store) named by `audit.url`: `sqlite:///ABS/PATH`, `postgresql://...`, `memory://`."""

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.audit.postgres import PostgresAuditStore, redact_url
from kubernaut.audit.sqlite import SqliteAuditStore
from kubernaut.audit.store import AuditError, AuditSink, AuditStore
from kubernaut.audit.writer import AuditWriter
from kubernaut.config import AuditConfig
from kubernaut.errors import ConfigError

DEFAULT_OUTBOX_DIR = Path("/var/lib/kubernaut")
OUTBOX_FILE = "audit-outbox.db"


def parse_sqlite_path(url: str) -> Path:
    """`sqlite:///var/lib/x.db` -> /var/lib/x.db; the path must be absolute."""
    rest = url.removeprefix("sqlite://")
    if rest == url or not rest.startswith("/") or rest.strip("/") == "":
        raise ConfigError(f"audit.url {url!r}: use sqlite:///ABSOLUTE/PATH (three slashes, then the path)")
    return Path("/" + rest.lstrip("/"))


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def build_outbox_path(config: AuditConfig, state_dir: Path | None) -> Path:
    """`audit.bufferPath`, else next to the SQLite file, else under the state dir (or /var/lib/kubernaut)."""
    if config.buffer_path:
        return Path(config.buffer_path)
    if config.url.startswith("sqlite://"):
        database = parse_sqlite_path(config.url)
        return database.with_name(database.name + ".outbox")
    return (state_dir or DEFAULT_OUTBOX_DIR) / OUTBOX_FILE


@contextlib.asynccontextmanager
async def open_audit_store(
    url: str, *, create: bool = True, connect_timeout: float = 10.0
) -> AsyncIterator[AuditStore]:
    """The store itself (for reading and verifying); ConfigError naming `audit.url` when it cannot be opened.

    `create=False` is a reader's open: nothing is created or migrated, so a read-only store reads.
    """
    store: AuditStore
    try:
        if url.startswith("sqlite://"):
            store = await SqliteAuditStore.open(parse_sqlite_path(url), create=create)
        elif is_postgres_url(url):
            store = await PostgresAuditStore.open(url, connect_timeout=connect_timeout, migrate=create)
        else:
            raise ConfigError(f"audit.url {redact_url(url)!r}: only sqlite:/// and postgresql:// URLs name a store")
    except AuditError as exc:  # its message names the URL or path
        raise ConfigError(f"audit.url: {exc}") from None
    try:
        yield store
    finally:
        await store.close()


async def check_audit_store(config: AuditConfig) -> None:
    """Open the configured store once and close it: ConfigError naming `audit.url` when it cannot be
    opened, so that a process can refuse to start before it starts anything else."""
    if config.url.startswith("memory://"):
        return
    async with open_audit_store(config.url, connect_timeout=config.connect_timeout.total_seconds()):
        pass


@contextlib.asynccontextmanager
async def open_audit_sink(config: AuditConfig, state_dir: Path | None = None) -> AsyncIterator[AuditSink]:
    """A started AuditWriter over the configured store (closed, and flushed within the timeout, on exit).

    `memory://` gives the in-memory sink of the component tests.
    """
    if config.url.startswith("memory://"):
        yield MemoryAuditSink()
        return
    outbox = build_outbox_path(config, state_dir)
    async with open_audit_store(config.url, connect_timeout=config.connect_timeout.total_seconds()) as store:
        writer = AuditWriter(
            store,
            outbox,
            batch_size=config.batch_size,
            flush_interval=config.flush_interval.total_seconds(),
            max_buffered=config.buffer_max_events,
            close_timeout=config.close_timeout.total_seconds(),
        )
        try:
            await writer.start()
        except AuditError as exc:
            raise ConfigError(f"audit.bufferPath {str(outbox)!r}: {exc}") from None
        try:
            yield writer
        finally:
            await writer.close()
