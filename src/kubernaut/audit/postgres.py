"""The PostgreSQL audit store: psycopg 3 async with a small connection pool.

Appends are serialized by `SELECT ... FOR UPDATE` on the single chain-head row, so the chain stays
linear with any number of writers. After a connection failure the pool is replaced on the next
call (once a probe connection succeeds): reconnection then follows the caller's retry pace
instead of the pool's own back-off, which grows to minutes.
"""

import asyncio
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from kubernaut.api.audit import AuditEvent, StoredAuditEvent
from kubernaut.audit.chain import ChainWalker, VerifyResult, build_chain_links, build_stored_fields
from kubernaut.audit.rows import (
    ALL_COLUMNS,
    CHAIN_COLUMNS,
    EVENT_COLUMNS,
    build_chain_row,
    build_since_bound,
    build_stored_event,
    parse_resource_filter,
)
from kubernaut.audit.store import AuditError

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x6B6E_6175_6474  # pg_advisory_xact_lock key: one migrator at a time

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE audit_events (
                sequence BIGINT PRIMARY KEY,
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
                event_time TIMESTAMPTZ NOT NULL,
                event_data TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )""",
            "CREATE INDEX audit_events_correlation ON audit_events (correlation_id)",
            "CREATE INDEX audit_events_resource ON audit_events (resource_id, resource_type)",
            "CREATE INDEX audit_events_type ON audit_events (event_type)",
            "CREATE INDEX audit_events_time ON audit_events (event_time)",
            """CREATE TABLE audit_chain_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                last_sequence BIGINT NOT NULL,
                last_hash TEXT NOT NULL
            )""",
            "INSERT INTO audit_chain_head (id, last_sequence, last_hash) VALUES (1, 0, '')",
            """CREATE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'audit_events is append-only'; END $$""",
            """CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
               FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()""",
            """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
               FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()""",
        ],
    ),
]

_INSERT_COLUMNS = (*CHAIN_COLUMNS, *EVENT_COLUMNS)
_INSERT = (
    f"INSERT INTO audit_events ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in _INSERT_COLUMNS)})"
)

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


def find_url_secrets(url: str) -> list[str]:
    """The password of a connection URL (userinfo or `password=` parameter), as written and
    percent-decoded, longest first; found by pattern, so a malformed URL gives it up too."""
    found = {m.group(1) for m in re.finditer(r"://[^:/?#@]*:([^@/?#]*)@", url)}
    found.update(re.findall(r"[?&]password=([^&#]*)", url))
    found |= {unquote(secret) for secret in found}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def redact_secrets(text: str, url: str) -> str:
    """`text` (a message, possibly quoting the URL) with the URL's password replaced by ***."""
    for secret in find_url_secrets(url):
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    return redact_secrets(url, url)


class PostgresAuditStore:
    def __init__(self, url: str, *, connect_timeout: float = 10.0, max_connections: int = 4) -> None:
        self.url = url
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._pool: Pool | None = None
        self._healthy = False
        self._reset_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, connect_timeout: float = 10.0, migrate: bool = True) -> "PostgresAuditStore":
        """Connect and migrate (a reader, `migrate=False`, only checks that the schema is there, so
        that it reads a store it may not write); AuditError when the server cannot be reached, the
        URL is malformed or, for a reader, there is no store."""
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise AuditError(f"malformed PostgreSQL URL {redact_url(url)}: {redact_secrets(str(exc), url)}") from None
        store = cls(url, connect_timeout=connect_timeout)
        await store._ensure_pool()
        try:
            await (store._migrate() if migrate else store._require_schema())
        except BaseException:
            await store.close()
            raise
        return store

    def _new_pool(self) -> Pool:
        return AsyncConnectionPool(
            self.url,
            connection_class=AsyncConnection[DictRow],
            kwargs={"row_factory": dict_row, "connect_timeout": max(1, round(self._connect_timeout))},
            min_size=1,
            max_size=self._max_connections,
            timeout=self._connect_timeout,
            open=False,
            name="kubernaut-audit",
        )

    async def _ensure_pool(self) -> Pool:
        if self._closed:
            raise AuditError("audit store is closed")
        if self._healthy and self._pool is not None:
            return self._pool
        async with self._reset_lock:
            if self._healthy and self._pool is not None:
                return self._pool
            if self._pool is not None:
                # Stop the broken pool's own reconnection attempts; a fresh pool replaces it below.
                broken, self._pool = self._pool, None
                await close_pool(broken, within=1.0)
            try:
                # A direct probe fails at once while the server is down; a fresh pool would wait out its timeout.
                probe = await AsyncConnection.connect(self.url, connect_timeout=max(1, round(self._connect_timeout)))
                await probe.close()
                pool = self._new_pool()
                await pool.open(wait=True, timeout=self._connect_timeout)
            except (psycopg.Error, OSError) as exc:
                raise self._error(f"cannot connect to PostgreSQL at {redact_url(self.url)}", exc) from exc
            self._pool, self._healthy = pool, True
            return pool

    async def _migrate(self) -> None:
        pool = await self._ensure_pool()
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                cursor = await conn.execute("SELECT version FROM schema_migrations")
                applied = {row["version"] for row in await cursor.fetchall()}
                for version, statements in MIGRATIONS:
                    if version in applied:
                        continue
                    for statement in statements:
                        await conn.execute(statement.encode())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                    log.info("Applied audit schema migration %d", version)
        except psycopg.Error as exc:
            raise self._error(f"cannot migrate the audit schema at {redact_url(self.url)}", exc) from exc

    async def _require_schema(self) -> None:
        pool = await self._ensure_pool()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT to_regclass('audit_events') IS NOT NULL AS present")
                row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise self._error(f"cannot read the audit schema at {redact_url(self.url)}", exc) from exc
        if row is None or not row["present"]:
            raise AuditError(f"no audit store at {redact_url(self.url)}")

    def _error(self, what: str, exc: BaseException) -> AuditError:
        return AuditError(f"{what}: {redact_secrets(str(exc), self.url)}")

    def _failed(self, exc: BaseException) -> AuditError:
        # Whatever failed, the next call gets fresh connections: a pooled session can stay unusable
        # after the server recovers (cut, or read-only while the database or server was read-only).
        self._healthy = False
        return self._error(f"audit store {redact_url(self.url)}", exc)

    async def append(self, events: Sequence[AuditEvent]) -> int:
        if not events:
            return 0
        pool = await self._ensure_pool()
        try:
            async with pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(
                    "SELECT last_sequence, last_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE"
                )
                head = await cursor.fetchone()
                assert head is not None, "the chain head row is created by the first migration"
                # Read after taking the head lock: this statement sees every append committed before ours.
                cursor = await conn.execute(
                    "SELECT event_id FROM audit_events WHERE event_id = ANY(%s)",
                    ([event.event_id for event in events],),
                )
                known = {row["event_id"] for row in await cursor.fetchall()}
                links = build_chain_links(
                    head["last_sequence"],
                    head["last_hash"],
                    (event for event in events if event.event_id not in known),
                )
                if links:
                    rows = build_stored_fields(links)
                    for row in rows:
                        row["event_time"] = datetime.fromisoformat(row["event_time"])
                    async with conn.cursor() as insert:
                        await insert.executemany(_INSERT, rows)
                    await conn.execute(
                        "UPDATE audit_chain_head SET last_sequence = %s, last_hash = %s WHERE id = 1",
                        (links[-1].sequence, links[-1].hash),
                    )
        except (psycopg.Error, OSError) as exc:
            raise self._failed(exc) from exc
        return len(links)

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
        params: dict[str, Any] = {}
        if correlation_id is not None:
            where.append("correlation_id = %(correlation_id)s")
            params["correlation_id"] = correlation_id
        if resource is not None:
            kind, name = parse_resource_filter(resource)
            where.append("resource_id = %(resource_id)s")
            params["resource_id"] = name
            if kind is not None:
                where.append("resource_type = %(resource_type)s")
                params["resource_type"] = kind
        if event_type is not None:
            where.append("event_type = %(event_type)s")
            params["event_type"] = event_type
        if since is not None:
            where.append("event_time >= %(since)s")
            params["since"] = build_since_bound(since)
        query = f"SELECT {', '.join(ALL_COLUMNS)} FROM audit_events"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY sequence"
        if limit is not None:
            query += " LIMIT %(limit)s"
            params["limit"] = limit
        pool = await self._ensure_pool()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(query.encode(), params)
                return [build_stored_event(row) for row in await cursor.fetchall()]
        except (psycopg.Error, OSError) as exc:
            raise self._failed(exc) from exc

    async def verify(self) -> VerifyResult:
        pool = await self._ensure_pool()
        try:
            async with pool.connection() as conn, conn.transaction():
                # One snapshot for the head and the rows, while appends go on.
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor = await conn.execute("SELECT last_sequence, last_hash FROM audit_chain_head WHERE id = 1")
                head = await cursor.fetchone()
                assert head is not None, "the chain head row is created by the first migration"
                walker = ChainWalker()
                async with conn.cursor(name="audit_verify") as rows:
                    rows.itersize = 2000
                    await rows.execute(f"SELECT {', '.join(ALL_COLUMNS)} FROM audit_events ORDER BY sequence".encode())
                    async for row in rows:
                        if walker.check(build_chain_row(row)) is not None:
                            break
                return walker.finish(head["last_sequence"], head["last_hash"])
        except (psycopg.Error, OSError) as exc:
            raise self._failed(exc) from exc

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await close_pool(pool)


async def close_pool(pool: Pool, within: float = 5.0) -> None:
    """Close a pool whose worker tasks may have been cancelled by someone else already (an event loop
    that is shutting down cancels every task left). Their cancellation is not ours to pass on; our
    own still is."""
    try:
        await pool.close(timeout=within)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("The audit store's connection pool workers were already cancelled")
