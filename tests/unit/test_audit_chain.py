"""The pure parts of the audit trail: canonical form, hash chain, verification, URL and filter parsing."""

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubernaut.api.audit import AuditEvent, StoredAuditEvent
from kubernaut.audit.chain import (
    ChainRow,
    build_canonical_json,
    build_chain_links,
    compute_link_hash,
    find_unstorable_field,
    verify_chain,
)
from kubernaut.audit.factory import build_outbox_path, parse_sqlite_path
from kubernaut.audit.rows import build_since_bound, parse_resource_filter
from kubernaut.config import AuditConfig
from kubernaut.errors import ConfigError

T0 = datetime(2025, 12, 15, 10, 30, 0, 123456, tzinfo=UTC)


def event(n: int, **overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "event_id": f"id-{n}",
        "event_type": "workflow.started",
        "event_category": "workflow",
        "event_action": "started",
        "event_outcome": "success",
        "actor_type": "service",
        "actor_id": "workflowexecution-controller",
        "resource_type": "WorkflowExecution",
        "resource_id": f"we-{n}",
        "correlation_id": "c",
        "event_time": T0,
        "event_data": {"z": 1, "a": "é"},
    }
    fields.update(overrides)
    return AuditEvent.model_validate(fields)


def chain(count: int) -> list[ChainRow]:
    links = build_chain_links(0, "", [event(n) for n in range(1, count + 1)])
    return [
        ChainRow(event=link.event, sequence=link.sequence, prev_hash=link.prev_hash, hash=link.hash) for link in links
    ]


def test_canonical_json_sorts_keys_drops_spaces_and_escapes_non_ascii() -> None:
    text = build_canonical_json(event(1))
    assert text.startswith('{"actor_id":"workflowexecution-controller","actor_type":"service",')
    assert '"event_data":{"a":"\\u00e9","z":1}' in text
    assert '"event_time":"2025-12-15T10:30:00Z"' in text
    assert " " not in text


def test_canonical_json_is_the_event_alone_not_its_place_in_a_chain() -> None:
    stored = StoredAuditEvent(**event(1).model_dump(), sequence=7, prev_hash="p", hash="h")
    assert build_canonical_json(stored) == build_canonical_json(event(1))


def test_link_hash_is_sha256_of_prev_hash_and_canonical_json() -> None:
    canonical = build_canonical_json(event(1))
    assert compute_link_hash("abc", canonical) == hashlib.sha256(("abc" + canonical).encode()).hexdigest()


def test_links_continue_the_head_and_keep_the_first_of_repeated_ids() -> None:
    links = build_chain_links(41, "head", [event(1), event(2), event(1, event_outcome="failure"), event(3)])
    assert [(link.sequence, link.event.event_id) for link in links] == [(42, "id-1"), (43, "id-2"), (44, "id-3")]
    assert links[0].prev_hash == "head"
    assert [link.prev_hash for link in links[1:]] == [link.hash for link in links[:-1]]
    assert links[0].event.event_outcome == "success"


def build_case(case: str) -> tuple[list[ChainRow], int, str]:
    """Five chained rows, changed as `case` says; returns (rows, head sequence, head hash)."""
    rows = chain(5)
    head = (5, rows[-1].hash)
    match case:
        case "empty":
            return [], 0, ""
        case "edited":
            rows[2] = replace(rows[2], event=event(3, event_outcome="failure"))
        case "relinked":
            rows[1] = replace(rows[1], prev_hash="x")
        case "gap":
            del rows[2]
        case "first-gone":
            del rows[0]
        case "newest-gone":
            del rows[4]
        case "head-hash":
            head = (5, "other")
        case "head-behind":
            head = (4, rows[3].hash)
    return rows, *head


@pytest.mark.parametrize(
    ("case", "broken_sequence", "broken_id", "reason"),
    [
        ("intact", None, None, ""),
        ("empty", None, None, ""),
        ("edited", 3, "id-3", "altered"),
        ("relinked", 2, "id-2", "prev_hash"),
        ("gap", 3, None, "missing"),
        ("first-gone", 1, None, "missing"),
        ("newest-gone", 5, None, "missing"),
        ("head-hash", 5, None, "head"),
        ("head-behind", 5, None, "head"),
    ],
)
def test_verify_chain_finds_the_first_break(
    case: str, broken_sequence: int | None, broken_id: str | None, reason: str
) -> None:
    rows, head_sequence, head_hash = build_case(case)
    result = verify_chain(rows, head_sequence, head_hash)
    assert result.broken_sequence == broken_sequence
    assert result.broken_event_id == broken_id
    assert result.ok is (broken_sequence is None)
    assert reason in result.reason
    if result.ok:
        assert (result.count, result.head_sequence, result.head_hash) == (len(rows), head_sequence, head_hash)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({}, None),
        ({"resource_id": "a\x00b"}, "resource_id"),
        ({"event_data": {"text": "a\x00b"}}, None),  # escaped inside the JSON text: storable
    ],
)
def test_find_unstorable_field(overrides: dict[str, object], field: str | None) -> None:
    assert find_unstorable_field(event(1, **overrides)) == field


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/kubernaut/audit.db", Path("/var/lib/kubernaut/audit.db")),
        ("sqlite:////tmp/a.db", Path("/tmp/a.db")),
        ("sqlite://relative.db", None),
        ("sqlite:///", None),
        ("postgresql://h/db", None),
    ],
)
def test_parse_sqlite_path(url: str, path: Path | None) -> None:
    if path is None:
        with pytest.raises(ConfigError, match=r"audit\.url"):
            parse_sqlite_path(url)
    else:
        assert parse_sqlite_path(url) == path


@pytest.mark.parametrize(
    ("url", "buffer_path", "state_dir", "expected"),
    [
        ("sqlite:///data/audit.db", "", None, Path("/data/audit.db.outbox")),
        ("sqlite:///data/audit.db", "/spool/o.db", None, Path("/spool/o.db")),
        ("postgresql://h/db", "", Path("/state"), Path("/state/audit-outbox.db")),
        ("postgresql://h/db", "", None, Path("/var/lib/kubernaut/audit-outbox.db")),
    ],
)
def test_build_outbox_path(url: str, buffer_path: str, state_dir: Path | None, expected: Path) -> None:
    assert build_outbox_path(AuditConfig(url=url, buffer_path=buffer_path), state_dir) == expected


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("WorkflowExecution/we-1", ("WorkflowExecution", "we-1")), ("we-1", (None, "we-1"))],
)
def test_parse_resource_filter(text: str, parsed: tuple[str | None, str]) -> None:
    assert parse_resource_filter(text) == parsed


@pytest.mark.parametrize(
    ("since", "bound"),
    [
        (datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC), datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC)),
        (datetime(2025, 1, 1, 0, 0, 5, 1, tzinfo=UTC), datetime(2025, 1, 1, 0, 0, 6, tzinfo=UTC)),
        (datetime(2025, 1, 1, 0, 0, 5), datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC)),
    ],
)
def test_since_bound_rounds_up_to_the_second(since: datetime, bound: datetime) -> None:
    assert build_since_bound(since) == bound
