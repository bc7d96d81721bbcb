"""The SQLite audit store: one file, WAL mode, every append one `BEGIN IMMEDIATE` transaction."""

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernaut.api.audit import AuditEvent, StoredAuditEvent
from kubernaut.audit.chain import ChainWalker, VerifyResult, build_chain_links, build_stored_fields
from kubernaut.audit.rows import (
    ALL_COLUMNS,
    CHAIN_COLUMNS,
    EVENT_COLUMNS,
    build_chain_row,
    build_since_bound,
    build_stored_event,
    format_event_time,
    parse_resource_filter,
)
from kubernaut.audit.store import AuditError

log = logging.getLogger(__name__)
T = TypeVar("T")

_ID_CHUNK = 500  # stays well below SQLite's limit on bound parameters
_APPEND_ONLY = "SELECT RAISE(ABORT, 'audit_events is append-only')"

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE audit_events (
                sequence INTEGER PRIMARY KEY,
                event_id TEXT NOT NULL UNIQUE,
                version TEXT NOT NULL,
                event_type TEXT NOT NULL,
                event_category TEXT NOT NULL,
                event_action TEXT NOT NULL,
                event_outcome TEXT NOT NULL,
                actor_type TEXT NOT NULL,
                actor_id TEXT NOT NULL,
                resource_type TEXT NOT NULL,
                resource_id TEXT NOT NULL,
                correlation_id TEXT NOT NULL,
                namespace TEXT NOT NULL,
                event_time TEXT NOT NULL,
                event_data TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                recorded_at TEXT NOT NULL
            )""",
            "CREATE INDEX audit_events_correlation ON audit_events (correlation_id)",
            "CREATE INDEX audit_events_resource ON audit_events (resource_id, resource_type)",
            "CREATE INDEX audit_events_type ON audit_events (event_type)",
            "CREATE INDEX audit_events_time ON audit_events (event_time)",
            """CREATE TABLE audit_chain_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                last_sequence INTEGER NOT NULL,
                last_hash TEXT NOT NULL
            )""",
            "INSERT INTO audit_chain_head (id, last_sequence, last_hash) VALUES (1, 0, '')",
            f"CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN {_APPEND_ONLY}; END",
            f"CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events BEGIN {_APPEND_ONLY}; END",
        ],
    ),
]

_INSERT = (
    f"INSERT INTO audit_events ({', '.join((*CHAIN_COLUMNS, *EVENT_COLUMNS, 'recorded_at'))}) "
    f"VALUES ({', '.join(':' + c for c in (*CHAIN_COLUMNS, *EVENT_COLUMNS, 'recorded_at'))})"
)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class SqliteAuditStore:
    """Blocking sqlite3 calls run in a worker thread; one connection, one call at a time."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path, *, create: bool = True, busy_timeout: float = 5.0) -> "SqliteAuditStore":
        """Open (creating the file and its parent directories when `create`) and migrate."""
        store = cls(path, busy_timeout=busy_timeout)
        await asyncio.to_thread(store._open_sync, create)
        return store

    def _open_sync(self, create: bool) -> None:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise AuditError(f"no audit store at {self.path}")
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open audit store {self.path}: {exc}") from exc
        try:
            conn.row_factory = _dict_row
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed append survives power loss, not just a process crash.
            conn.execute("PRAGMA synchronous=FULL")
            if create:
                apply_migrations(conn)
            elif conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_events'").fetchone() is None:
                # A reader does not migrate, so that it reads a store it may not write (read-only file).
                raise AuditError(f"no audit store at {self.path}")
        except sqlite3.Error as exc:
            conn.close()
            raise AuditError(f"cannot open audit store {self.path}: {exc}") from exc
        self._conn = conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._conn is None:
                    raise AuditError(f"audit store {self.path} is closed")
                try:
                    return fn(self._conn)
                except sqlite3.Error as exc:
                    if self._conn.in_transaction:
                        self._conn.rollback()
                    raise AuditError(f"audit store {self.path}: {exc}") from exc

        return await asyncio.to_thread(locked)

    async def append(self, events: Sequence[AuditEvent]) -> int:
        if not events:
            return 0
        return await self._run(lambda conn: _append(conn, events))

    async def list_events(
        self,
        *,
        correlation_id: str | None = None,
        resource: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[StoredAuditEvent]:
        where: list[str] = []
        params: list[Any] = []
        if correlation_id is not None:
            where.append("correlation_id = ?")
            params.append(correlation_id)
        if resource is not None:
            kind, name = parse_resource_filter(resource)
            where.append("resource_id = ?")
            params.append(name)
            if kind is not None:
                where.append("resource_type = ?")
                params.append(kind)
        if event_type is not None:
            where.append("event_type = ?")
            params.append(event_type)
        if since is not None:
            where.append("event_time >= ?")
            params.append(format_event_time(build_since_bound(since)))
        query = f"SELECT {', '.join(ALL_COLUMNS)} FROM audit_events"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY sequence"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)

        def fetch(conn: sqlite3.Connection) -> list[StoredAuditEvent]:
            return [build_stored_event(row) for row in conn.execute(query, params)]

        return await self._run(fetch)

    async def verify(self) -> VerifyResult:
        return await self._run(_verify)

    async def close(self) -> None:
        def close_conn() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close_conn)


def apply_migrations(conn: sqlite3.Connection) -> None:
    """Apply the versions not yet in `schema_migrations`, each in its own write transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for version, statements in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone() is None:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, datetime.now(UTC).isoformat()),
                )
                log.info("Applied audit schema migration %d", version)
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise


def _append(conn: sqlite3.Connection, events: Sequence[AuditEvent]) -> int:
    # IMMEDIATE takes the write lock before reading the head, so chains from several writers stay linear.
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [event.event_id for event in events]
        known: set[str] = set()
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            query = f"SELECT event_id FROM audit_events WHERE event_id IN ({', '.join('?' * len(chunk))})"
            known.update(row["event_id"] for row in conn.execute(query, chunk))
        head = conn.execute("SELECT last_sequence, last_hash FROM audit_chain_head WHERE id = 1").fetchone()
        links = build_chain_links(
            head["last_sequence"], head["last_hash"], (event for event in events if event.event_id not in known)
        )
        if links:
            recorded_at = datetime.now(UTC).isoformat()
            rows = build_stored_fields(links)
            for row in rows:
                row["recorded_at"] = recorded_at
            conn.executemany(_INSERT, rows)
            conn.execute(
                "UPDATE audit_chain_head SET last_sequence = ?, last_hash = ? WHERE id = 1",
                (links[-1].sequence, links[-1].hash),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise
    return len(links)


def _verify(conn: sqlite3.Connection) -> VerifyResult:
    conn.execute("BEGIN")  # one snapshot for the head and the rows
    try:
        head = conn.execute("SELECT last_sequence, last_hash FROM audit_chain_head WHERE id = 1").fetchone()
        walker = ChainWalker()
        cursor = conn.execute(f"SELECT {', '.join(ALL_COLUMNS)} FROM audit_events ORDER BY sequence")
        for row in cursor:
            if walker.check(build_chain_row(row)) is not None:
                break
        cursor.close()
        return walker.finish(head["last_sequence"], head["last_hash"])
    finally:
        conn.rollback()
