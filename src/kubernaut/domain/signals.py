"""Alertmanager webhook payloads turned into signals: validation, fingerprint, target and names.

Pure: the gateway hands in the decoded JSON and gets back frozen signals or a list of every
problem found, so a bad request is rejected whole with a precise answer and nothing is created.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernaut.domain.target import parse_target
from kubernaut.errors import InvalidTargetError

SOURCE = "alertmanager"
SUPPORTED_VERSION = "4"
SEVERITIES = ("critical", "warning", "info")
DEFAULT_SEVERITY = "warning"
RESOLVED_ANNOTATION = "kubernaut.ai/signal-resolved-at"

# Label -> kind, in the order they are tried: the most specific owner of a problem first, so an
# alert about a Deployment's pod names the Deployment when both labels are present. `job` is not
# here on purpose: Prometheus puts the scrape job in it; kube-state-metrics names Jobs `job_name`.
NAMESPACED_TARGET_LABELS: tuple[tuple[str, str], ...] = (
    ("deployment", "Deployment"),
    ("statefulset", "StatefulSet"),
    ("daemonset", "DaemonSet"),
    ("cronjob", "CronJob"),
    ("job_name", "Job"),
    ("replicaset", "ReplicaSet"),
    ("pod", "Pod"),
    ("service", "Service"),
    ("persistentvolumeclaim", "PersistentVolumeClaim"),
)
CLUSTER_TARGET_LABELS: tuple[tuple[str, str], ...] = (
    ("node", "Node"),
    ("persistentvolume", "PersistentVolume"),
)
# Alert rules may name the target outright; these win over the table above.
TARGET_KIND_LABEL = "kubernaut_target_kind"
TARGET_NAME_LABEL = "kubernaut_target_name"

_FRACTION = re.compile(r"^(?P<head>[^.]+)\.(?P<digits>\d+)(?P<tail>.*)$")


class SignalValidationError(ValueError):
    """The payload cannot be accepted; `details` says what is wrong, one line per problem."""

    def __init__(self, error: str, details: list[str]) -> None:
        super().__init__(error)
        self.error = error
        self.details = details


@dataclass(frozen=True)
class SignalTarget:
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class Signal:
    """One alert, ready to become (or to be folded into) a RemediationRequest."""

    fingerprint: str
    name: str
    severity: str
    target: SignalTarget
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None
    firing: bool


@dataclass(frozen=True)
class ParsedPayload:
    signals: tuple[Signal, ...]
    receiver: str = ""
    group_key: str = ""

    @property
    def firing(self) -> tuple[Signal, ...]:
        return tuple(s for s in self.signals if s.firing)

    @property
    def resolved(self) -> tuple[Signal, ...]:
        return tuple(s for s in self.signals if not s.firing)


def compute_fingerprint(labels: Mapping[str, str]) -> str:
    """SHA-256 (64 hex) over the canonical JSON of all labels, keys sorted.

    All labels identify an alert (Alertmanager's own notion of identity); JSON keeps the encoding
    unambiguous whatever characters the values hold.
    """
    canonical = json.dumps(dict(sorted(labels.items())), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_remediation_name(fingerprint: str, starts_at: datetime, generation: int = 1) -> str:
    """The deterministic RemediationRequest name of one firing episode of a signal.

    Every delivery of the same episode (same fingerprint, same start) computes the same name, so
    concurrent or repeated deliveries collide on creation instead of doubling. `generation` > 1
    names the next request of the same episode after an earlier one has ended.
    """
    stamp = hashlib.sha256(format_time(starts_at).encode()).hexdigest()[:8]
    base = f"rr-{fingerprint[:16]}-{stamp}"
    return base if generation <= 1 else f"{base}-{generation}"


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: the canonical form hashed into names."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    """RFC 3339 as Alertmanager writes it (nanoseconds, `Z` or an offset); always timezone-aware."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    match = _FRACTION.match(text)
    if match:  # Python keeps microseconds; Go writes up to nanoseconds
        text = f"{match.group('head')}.{match.group('digits')[:6].ljust(6, '0')}{match.group('tail')}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("time has no UTC offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


def decide_severity(labels: Mapping[str, str]) -> str:
    """critical, warning or info from the `severity` label; anything else is treated as warning."""
    value = labels.get("severity", "").strip().lower()
    return value if value in SEVERITIES else DEFAULT_SEVERITY


def decide_target(labels: Mapping[str, str]) -> SignalTarget:
    """The resource the alert is about, from its labels (see the tables above)."""
    namespace = labels.get("namespace", "")
    explicit_kind = labels.get(TARGET_KIND_LABEL, "")
    explicit_name = labels.get(TARGET_NAME_LABEL, "")
    if explicit_kind or explicit_name:
        if not (explicit_kind and explicit_name):
            raise InvalidTargetError(f"labels {TARGET_KIND_LABEL} and {TARGET_NAME_LABEL} go together")
        return _validated(SignalTarget(explicit_kind, explicit_name, namespace))
    for label, kind in NAMESPACED_TARGET_LABELS:
        if labels.get(label):
            if not namespace:
                raise InvalidTargetError(f"label {label!r} names a {kind} but the alert has no 'namespace' label")
            return _validated(SignalTarget(kind, labels[label], namespace))
    for label, kind in CLUSTER_TARGET_LABELS:
        if labels.get(label):
            return _validated(SignalTarget(kind, labels[label]))
    known = ", ".join(label for label, _ in NAMESPACED_TARGET_LABELS + CLUSTER_TARGET_LABELS)
    raise InvalidTargetError(f"labels name no target resource: expected 'namespace' plus one of {known}")


def _validated(target: SignalTarget) -> SignalTarget:
    ns = f"{target.namespace}/" if target.namespace else ""
    parse_target(f"{ns}{target.kind}/{target.name}")
    return target


def _string_map(value: Any, where: str, problems: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected an object of strings, got {_type_name(value)}")
        return {}
    bad = [key for key, item in value.items() if not isinstance(item, str)]
    if bad:
        problems.append(f"{where}: values must be strings ({', '.join(sorted(bad)[:5])})")
        return {}
    return dict(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )


def _parse_alert(raw: Any, index: int, problems: list[str]) -> Signal | None:
    where = f"alerts[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected an object, got {_type_name(raw)}")
        return None
    before = len(problems)
    status = raw.get("status")
    if status not in ("firing", "resolved"):
        problems.append(f"{where}.status: expected 'firing' or 'resolved', got {status!r:.60}")
    labels = _string_map(raw.get("labels"), f"{where}.labels", problems)
    annotations = _string_map(raw.get("annotations"), f"{where}.annotations", problems)
    if "labels" not in raw:
        problems.append(f"{where}.labels: required")
    elif len(problems) == before and not labels.get("alertname"):
        problems.append(f"{where}.labels.alertname: required")
    starts_at = _time_field(raw, "startsAt", where, problems, required=True)
    ends_at = _time_field(raw, "endsAt", where, problems, required=False)
    target: SignalTarget | None = None
    if labels:
        try:
            target = decide_target(labels)
        except InvalidTargetError as exc:
            problems.append(f"{where}.labels: {exc}")
    if len(problems) != before or target is None or starts_at is None:
        return None
    return Signal(
        fingerprint=compute_fingerprint(labels),
        name=labels["alertname"],
        severity=decide_severity(labels),
        target=target,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        firing=status == "firing",
    )


def _time_field(raw: dict[str, Any], key: str, where: str, problems: list[str], *, required: bool) -> datetime | None:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            problems.append(f"{where}.{key}: required")
        return None
    if not isinstance(value, str):
        problems.append(f"{where}.{key}: expected an RFC 3339 string, got {_type_name(value)}")
        return None
    try:
        parsed = parse_time(value)
    except ValueError:
        problems.append(f"{where}.{key}: not an RFC 3339 time: {value!r:.60}")
        return None
    if parsed.year <= 1:  # Go's zero time: Alertmanager's "not set"
        if required:
            problems.append(f"{where}.{key}: required (got the zero time)")
        return None
    return parsed


def parse_alertmanager_payload(data: Any, *, max_alerts: int) -> ParsedPayload:
    """Validate a decoded webhook body (version 4) and return its signals, or raise
    SignalValidationError listing every problem (at most 20 lines)."""
    if not isinstance(data, dict):
        raise SignalValidationError("payload must be a JSON object", [f"got {_type_name(data)}"])
    problems: list[str] = []
    version = data.get("version")
    if version != SUPPORTED_VERSION:
        problems.append(f"version: expected '{SUPPORTED_VERSION}', got {version!r:.40}")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        problems.append(f"alerts: expected an array, got {_type_name(alerts)}")
        alerts = []
    elif len(alerts) > max_alerts:
        raise SignalValidationError(
            "too many alerts in one request", [f"alerts: {len(alerts)} given, at most {max_alerts} accepted"]
        )
    signals = [_parse_alert(raw, index, problems) for index, raw in enumerate(alerts)]
    if problems:
        shown = problems[:20]
        if len(problems) > 20:
            shown.append(f"... and {len(problems) - 20} more")
        raise SignalValidationError("invalid Alertmanager payload", shown)
    receiver = data.get("receiver")
    group_key = data.get("groupKey")
    return ParsedPayload(
        signals=tuple(s for s in signals if s is not None),
        receiver=receiver if isinstance(receiver, str) else "",
        group_key=group_key if isinstance(group_key, str) else "",
    )


@dataclass(frozen=True)
class Deduplication:
    occurrence_count: int
    first_seen_at: datetime
    last_seen_at: datetime


def decide_deduplication(
    current: Mapping[str, Any] | None, created_at: datetime | None, now: datetime
) -> Deduplication:
    """The next `status.deduplication` after one more arrival of the signal.

    `current` is the wire form already on the request (absent when the gateway stopped between
    creating the request and writing its first count: the creation then counts as the first).
    """
    current = current or {}
    count = current.get("occurrenceCount")
    count = count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else 1
    first = _wire_time(current.get("firstSeenAt")) or created_at or now
    return Deduplication(occurrence_count=count + 1, first_seen_at=first, last_seen_at=now)


def build_first_deduplication(now: datetime) -> Deduplication:
    return Deduplication(occurrence_count=1, first_seen_at=now, last_seen_at=now)


def build_deduplication_status(dedup: Deduplication) -> dict[str, Any]:
    return {
        "deduplication": {
            "occurrenceCount": dedup.occurrence_count,
            "firstSeenAt": _wire(dedup.first_seen_at),
            "lastSeenAt": _wire(dedup.last_seen_at),
        }
    }


def build_remediation_request(signal: Signal, *, name: str, namespace: str) -> dict[str, Any]:
    """The wire body of a new RemediationRequest for a firing signal."""
    target: dict[str, str] = {"kind": signal.target.kind, "name": signal.target.name}
    if signal.target.namespace:
        target["namespace"] = signal.target.namespace
    spec: dict[str, Any] = {
        "signalFingerprint": signal.fingerprint,
        "signalName": signal.name,
        "severity": signal.severity,
        "targetResource": target,
        "signalLabels": dict(signal.labels),
        "signalAnnotations": dict(signal.annotations),
        "source": SOURCE,
        "firingTime": _wire(signal.starts_at),
    }
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernaut.ai/signal-source": SOURCE, "kubernaut.ai/severity": signal.severity},
        },
        "spec": spec,
    }


def build_resolved_patch(
    signal: Signal, now: datetime, deduplication: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Annotation recording that the alert resolved: its endsAt (or when we heard of it), raised to
    the last repeat counted on the request (`deduplication`, its wire form). Alertmanager notifies
    a group in order, so every firing notice heard before this one came before the resolution,
    even one that arrived after the endsAt; only a repeat after the recorded time fires again."""
    resolved = signal.ends_at or now
    last_seen = _wire_time((deduplication or {}).get("lastSeenAt"))
    if last_seen is not None and last_seen > resolved:
        resolved = last_seen
    return {"metadata": {"annotations": {RESOLVED_ANNOTATION: _wire(resolved)}}}


def recorded_resolution(annotations: Mapping[str, str]) -> datetime | None:
    """The resolution the gateway recorded on a request (None when absent or unreadable)."""
    return _wire_time(annotations.get(RESOLVED_ANNOTATION))


def is_late_notice(annotations: Mapping[str, str], starts_at: datetime) -> bool:
    """A firing notice of the alert episode whose resolution the request already records (it
    started no later than that resolution): sent while it still fired and delivered after its
    resolution, so not a repeat. A repeat would read as the alert firing again."""
    resolved = recorded_resolution(annotations)
    return resolved is not None and starts_at <= resolved


def _wire(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wire_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None
