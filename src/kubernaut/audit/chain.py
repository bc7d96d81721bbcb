"""The hash chain of the audit trail: canonical form, link hashes and verification. No I/O.

Every stored event carries `hash = sha256(prev_hash + canonical JSON of the event)`, where the
canonical JSON is the event's own fields (not its place in the chain) with sorted keys and no
spaces. Changing, removing or reordering a stored event therefore breaks the chain at that point.
"""

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernaut.api.audit import AuditEvent

GENESIS_HASH = ""
"""The `prev_hash` of the first event in a chain."""


def build_event_fields(event: AuditEvent) -> dict[str, Any]:
    """The event's own fields in JSON form (an extended model's extra fields are left out)."""
    fields = event.model_dump(mode="json")
    return {name: fields[name] for name in AuditEvent.model_fields}


def build_json_text(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, ASCII only (so the bytes are stable)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def build_canonical_json(event: AuditEvent) -> str:
    return build_json_text(build_event_fields(event))


def compute_link_hash(prev_hash: str, canonical_json: str) -> str:
    return hashlib.sha256((prev_hash + canonical_json).encode()).hexdigest()


@dataclass(frozen=True)
class ChainLink:
    """The place one new event takes in the chain."""

    event: AuditEvent
    sequence: int
    prev_hash: str
    hash: str


def build_chain_links(head_sequence: int, head_hash: str, events: Iterable[AuditEvent]) -> list[ChainLink]:
    """Links for `events` appended after the head, in order; repeated ids in the batch keep the first."""
    links: list[ChainLink] = []
    seen: set[str] = set()
    sequence, prev_hash = head_sequence, head_hash
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        sequence += 1
        link_hash = compute_link_hash(prev_hash, build_canonical_json(event))
        links.append(ChainLink(event=event, sequence=sequence, prev_hash=prev_hash, hash=link_hash))
        prev_hash = link_hash
    return links


@dataclass(frozen=True)
class ChainRow:
    """An event as a store holds it: the event plus the chain fields it was stored with."""

    event: AuditEvent
    sequence: int
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking a chain: intact, or the first place where it breaks."""

    count: int
    head_sequence: int
    head_hash: str
    broken_sequence: int | None = None
    broken_event_id: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_sequence is None


class ChainWalker:
    """Checks rows fed in sequence order; stops at the first break. Pure state, no I/O."""

    def __init__(self) -> None:
        self.count = 0
        self.sequence = 0
        self.hash = GENESIS_HASH
        self.broken: VerifyResult | None = None

    def _break(self, sequence: int, event_id: str | None, reason: str) -> VerifyResult:
        self.broken = VerifyResult(
            count=self.count,
            head_sequence=self.sequence,
            head_hash=self.hash,
            broken_sequence=sequence,
            broken_event_id=event_id,
            reason=reason,
        )
        return self.broken

    def check(self, row: ChainRow) -> VerifyResult | None:
        """The break this row reveals, or None while the chain holds."""
        if self.broken is not None:
            return self.broken
        expected = self.sequence + 1
        event_id = row.event.event_id
        if row.sequence != expected:
            return self._break(
                expected,
                None,
                f"event at sequence {expected} is missing (next stored is sequence {row.sequence}, event {event_id})",
            )
        if row.prev_hash != self.hash:
            return self._break(row.sequence, event_id, "prev_hash does not match the hash of the previous event")
        if compute_link_hash(row.prev_hash, build_canonical_json(row.event)) != row.hash:
            return self._break(row.sequence, event_id, "content does not match its hash (the event was altered)")
        self.count += 1
        self.sequence = row.sequence
        self.hash = row.hash
        return None

    def finish(self, head_sequence: int, head_hash: str) -> VerifyResult:
        """Compare the last row with the recorded chain head (catches removal of the newest events)."""
        if self.broken is not None:
            return self.broken
        if head_sequence > self.sequence:
            return self._break(
                self.sequence + 1,
                None,
                f"events {self.sequence + 1}..{head_sequence} are missing (the chain head records {head_sequence})",
            )
        if head_sequence < self.sequence or head_hash != self.hash:
            return self._break(self.sequence, None, "the recorded chain head does not match the last event")
        return VerifyResult(count=self.count, head_sequence=self.sequence, head_hash=self.hash)


def verify_chain(rows: Iterable[ChainRow], head_sequence: int, head_hash: str) -> VerifyResult:
    """Walk `rows` (ascending sequence) and the recorded head; return the first break or success."""
    walker = ChainWalker()
    for row in rows:
        if walker.check(row) is not None:
            break
    return walker.finish(head_sequence, head_hash)


def find_unstorable_field(event: AuditEvent) -> str | None:
    """The name of a field no store can keep verbatim (a NUL character in text), else None."""
    try:
        fields = build_event_fields(event)
        build_json_text(fields)
    except (TypeError, ValueError):
        return "event_data"
    for name, value in fields.items():
        if isinstance(value, str) and "\x00" in value:
            return name
    return None


def build_stored_fields(links: Sequence[ChainLink]) -> list[dict[str, Any]]:
    """Column values of new rows (event fields in their stored form plus the chain fields)."""
    rows: list[dict[str, Any]] = []
    for link in links:
        fields = build_event_fields(link.event)
        # Kept as canonical text, not a JSON column type, so it reads back byte-identical.
        fields["event_data"] = build_json_text(fields["event_data"])
        fields.update(sequence=link.sequence, prev_hash=link.prev_hash, hash=link.hash)
        rows.append(fields)
    return rows
