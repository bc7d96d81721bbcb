"""The writer's durable outbox: a small SQLite file of events recorded but not yet in the store.

Blocking calls; the writer runs them in a worker thread. Every `put` is one fsync'd transaction,
so an event that `put` accepted survives a crash of the process (or of the machine).
"""

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from kubernaut.api.audit import AuditEvent
from kubernaut.audit.chain import build_canonical_json


class Outbox:
    def __init__(self, path: Path, *, max_events: int, busy_timeout: float = 1.0) -> None:
        self.path = path
        self.max_events = max_events
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.count = 0

    def open(self) -> int:
        """Open (creating the file and its directory) and return how many events wait in it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                "id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL)"
            )
            (self.count,) = conn.execute("SELECT count(*) FROM outbox").fetchone()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self.count

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError(f"outbox {self.path} is closed")
        return self._conn

    def put(self, events: Sequence[AuditEvent]) -> list[bool]:
        """Store the events in one transaction; False for each one refused because the outbox is full.

        An id already waiting in the outbox is accepted without a second copy.
        """
        accepted: list[bool] = []
        with self._lock:
            conn = self._connection()
            count = self.count
            conn.execute("BEGIN IMMEDIATE")
            try:
                for event in events:
                    if count >= self.max_events:
                        waiting = conn.execute("SELECT 1 FROM outbox WHERE event_id = ?", (event.event_id,)).fetchone()
                        accepted.append(waiting is not None)
                        continue
                    cursor = conn.execute(
                        "INSERT OR IGNORE INTO outbox (event_id, body) VALUES (?, ?)",
                        (event.event_id, build_canonical_json(event)),
                    )
                    count += cursor.rowcount
                    accepted.append(True)
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
            self.count = count
        return accepted

    def take(self, limit: int) -> list[tuple[int, AuditEvent]]:
        """The oldest `limit` events with their outbox ids (they stay until `remove_through`)."""
        with self._lock:
            rows = self._connection().execute("SELECT id, body FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [(row_id, AuditEvent.model_validate_json(body)) for row_id, body in rows]

    def remove_through(self, last_id: int) -> None:
        """Drop the events up to `last_id`: ids only grow, so these are exactly the ones taken before."""
        with self._lock:
            cursor = self._connection().execute("DELETE FROM outbox WHERE id <= ?", (last_id,))
            self.count -= cursor.rowcount

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
