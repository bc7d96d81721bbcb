"""Alertmanager payloads -> signals: parsing real captures, targets, fingerprints, rejections."""

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kubernaut.api.v1alpha1 import RemediationRequest
from kubernaut.domain.signals import (
    RESOLVED_ANNOTATION,
    SignalTarget,
    SignalValidationError,
    build_deduplication_status,
    build_first_deduplication,
    build_remediation_name,
    build_remediation_request,
    build_resolved_patch,
    compute_fingerprint,
    decide_deduplication,
    decide_severity,
    decide_target,
    is_late_notice,
    parse_alertmanager_payload,
    parse_time,
)
from kubernaut.errors import InvalidTargetError

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


def minimal(**alert_overrides: Any) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "status": "firing",
        "labels": {"alertname": "HighMemory", "namespace": "shop", "deployment": "cart", "severity": "warning"},
        "annotations": {"summary": "memory high"},
        "startsAt": "2026-01-02T03:04:05.123456789Z",
    }
    alert.update(alert_overrides)
    return {"version": "4", "status": "firing", "alerts": [alert]}


def test_captured_firing_payload() -> None:
    payload = parse_alertmanager_payload(load("alertmanager_firing.json"), max_alerts=1000)
    assert len(payload.signals) == 2
    first = payload.signals[0]
    assert first.firing
    assert first.name == "KubePodCrashLooping"
    assert first.severity == "critical"
    assert first.target == SignalTarget("Pod", "api-7d9f-abcde", "payments")
    assert first.labels["job"] == "kube-state-metrics"
    assert first.annotations["summary"].startswith("Pod payments/api-7d9f-abcde")
    assert first.ends_at is None  # Alertmanager's zero time means "not set"
    assert len(first.fingerprint) == 64
    assert payload.signals[0].fingerprint != payload.signals[1].fingerprint
    assert payload.receiver
    assert payload.group_key.startswith("{}:")


def test_captured_resolved_payload_keeps_identity() -> None:
    firing = parse_alertmanager_payload(load("alertmanager_firing.json"), max_alerts=1000)
    resolved = parse_alertmanager_payload(load("alertmanager_resolved.json"), max_alerts=1000)
    assert [s.firing for s in resolved.signals] == [False, True]
    assert resolved.signals[0].fingerprint == firing.signals[0].fingerprint
    assert resolved.signals[0].ends_at is not None
    assert resolved.signals[0].starts_at == firing.signals[0].starts_at


def test_fingerprint_is_sha256_of_canonical_sorted_labels() -> None:
    labels = {"b": "2", "a": "1"}
    expected = hashlib.sha256(b'{"a":"1","b":"2"}').hexdigest()
    assert compute_fingerprint(labels) == expected
    assert compute_fingerprint({"a": "1", "b": "2"}) == expected
    # unambiguous encoding: moving characters between keys and values changes the fingerprint
    assert compute_fingerprint({"a": "1,b=2"}) != compute_fingerprint({"a": "1", "b": "2"})
    assert compute_fingerprint({"a": "1"}) != compute_fingerprint({"a": "1", "severity": "warning"})


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"namespace": "n", "deployment": "d"}, SignalTarget("Deployment", "d", "n")),
        ({"namespace": "n", "statefulset": "s"}, SignalTarget("StatefulSet", "s", "n")),
        ({"namespace": "n", "daemonset": "ds"}, SignalTarget("DaemonSet", "ds", "n")),
        ({"namespace": "n", "replicaset": "rs"}, SignalTarget("ReplicaSet", "rs", "n")),
        ({"namespace": "n", "pod": "p"}, SignalTarget("Pod", "p", "n")),
        ({"namespace": "n", "service": "svc"}, SignalTarget("Service", "svc", "n")),
        ({"namespace": "n", "job_name": "backup-1"}, SignalTarget("Job", "backup-1", "n")),
        ({"namespace": "n", "cronjob": "backup"}, SignalTarget("CronJob", "backup", "n")),
        ({"namespace": "n", "persistentvolumeclaim": "data"}, SignalTarget("PersistentVolumeClaim", "data", "n")),
        ({"node": "worker-1"}, SignalTarget("Node", "worker-1")),
        ({"persistentvolume": "pv-1"}, SignalTarget("PersistentVolume", "pv-1")),
        # the owner wins over the pod; the scrape job label never names a target
        ({"namespace": "n", "deployment": "d", "pod": "d-1"}, SignalTarget("Deployment", "d", "n")),
        ({"namespace": "n", "job": "kube-state-metrics", "pod": "p"}, SignalTarget("Pod", "p", "n")),
        ({"namespace": "n", "pod": "p", "node": "w1"}, SignalTarget("Pod", "p", "n")),
        # a node alert scraped from a namespaced exporter still names the node
        ({"namespace": "monitoring", "node": "w1", "instance": "10.0.0.1:9100"}, SignalTarget("Node", "w1")),
        # explicit labels win
        (
            {"namespace": "n", "pod": "p", "kubernaut_target_kind": "Rollout", "kubernaut_target_name": "r"},
            SignalTarget("Rollout", "r", "n"),
        ),
    ],
)
def test_target_from_labels(labels: dict[str, str], expected: SignalTarget) -> None:
    assert decide_target(labels) == expected


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"alertname": "X"}, "labels name no target resource"),
        ({"job": "kube-state-metrics", "namespace": "n"}, "labels name no target resource"),
        ({"pod": "p"}, "no 'namespace' label"),
        ({"namespace": "n", "pod": "Bad Name!"}, "not a valid object name"),
        ({"namespace": "Bad_NS", "pod": "p"}, "not a valid namespace"),
        ({"kubernaut_target_kind": "Pod"}, "go together"),
    ],
)
def test_target_errors(labels: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidTargetError, match=message):
        decide_target(labels)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("critical", "critical"),
        ("WARNING", "warning"),
        ("info", "info"),
        (" info ", "info"),
        ("page", "warning"),
        ("", "warning"),
        (None, "warning"),
    ],
)
def test_severity(value: str | None, expected: str) -> None:
    labels = {} if value is None else {"severity": value}
    assert decide_severity(labels) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", T0),
        ("2026-01-02T03:04:05.123456789Z", T0.replace(microsecond=123456)),
        ("2026-01-02T03:04:05.5Z", T0.replace(microsecond=500000)),
        ("2026-01-02T05:04:05+02:00", T0),
        ("2026-01-02T03:04:05.000000001-00:00", T0),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["2026-01-02T03:04:05", "yesterday", "", "2026-13-01T00:00:00Z"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_time(text)


def test_remediation_name_is_deterministic_per_episode() -> None:
    fp = "ab" * 32
    name = build_remediation_name(fp, T0)
    assert name == build_remediation_name(fp, T0.replace(tzinfo=UTC))
    assert name.startswith("rr-abababababababab-")
    assert len(name) == len("rr-") + 16 + 1 + 8
    assert build_remediation_name(fp, T0.replace(second=6)) != name
    assert build_remediation_name(fp, T0, 2) == f"{name}-2"


def _problems(data: Any, max_alerts: int = 1000) -> tuple[str, list[str]]:
    with pytest.raises(SignalValidationError) as err:
        parse_alertmanager_payload(data, max_alerts=max_alerts)
    return err.value.error, err.value.details


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ([], "got array"),
        ("x", "got string"),
        ({**minimal(), "version": "3"}, "version: expected '4', got '3'"),
        ({**minimal(), "version": 4}, "version: expected '4', got 4"),
        ({"version": "4"}, "alerts: expected an array, got null"),
        ({"version": "4", "alerts": {}}, "alerts: expected an array, got object"),
        ({"version": "4", "alerts": [1]}, "alerts[0]: expected an object, got number"),
        (minimal(status="pending"), "alerts[0].status: expected 'firing' or 'resolved'"),
        (minimal(labels=["a"]), "alerts[0].labels: expected an object of strings, got array"),
        (minimal(labels={"alertname": 5}), "alerts[0].labels: values must be strings (alertname)"),
        (minimal(labels={"namespace": "n", "pod": "p"}), "alerts[0].labels.alertname: required"),
        (minimal(labels={"alertname": "X", "severity": "critical"}), "labels name no target resource"),
        (minimal(annotations="text"), "alerts[0].annotations: expected an object of strings, got string"),
        (minimal(startsAt=None), "alerts[0].startsAt: required"),
        (minimal(startsAt="0001-01-01T00:00:00Z"), "alerts[0].startsAt: required (got the zero time)"),
        (minimal(startsAt=12), "alerts[0].startsAt: expected an RFC 3339 string, got number"),
        (minimal(startsAt="soon"), "alerts[0].startsAt: not an RFC 3339 time"),
        (minimal(endsAt="later"), "alerts[0].endsAt: not an RFC 3339 time"),
    ],
)
def test_invalid_payloads_say_what_is_wrong(data: Any, detail: str) -> None:
    _, details = _problems(data)
    assert any(detail in line for line in details), details


def test_labels_missing_entirely() -> None:
    data = minimal()
    del data["alerts"][0]["labels"]
    _, details = _problems(data)
    assert details == ["alerts[0].labels: required"]


def test_one_bad_alert_rejects_the_whole_payload_and_every_problem_is_listed() -> None:
    data = load("alertmanager_firing.json")
    data["alerts"].append({"status": "firing", "labels": {"alertname": "NoTarget"}, "startsAt": "2026-01-01T00:00:00Z"})
    data["alerts"].append({"status": "firing", "labels": {"alertname": "X", "node": "n1"}})
    error, details = _problems(data)
    assert error == "invalid Alertmanager payload"
    assert [line.split(":")[0] for line in details] == ["alerts[2].labels", "alerts[3].startsAt"]


def test_problem_list_is_capped() -> None:
    data = {"version": "4", "alerts": [1] * 50}
    _, details = _problems(data)
    assert len(details) == 21
    assert details[-1] == "... and 30 more"


def test_too_many_alerts() -> None:
    data = minimal()
    data["alerts"] = data["alerts"] * 3
    error, details = _problems(data, max_alerts=2)
    assert error == "too many alerts in one request"
    assert details == ["alerts: 3 given, at most 2 accepted"]


def test_empty_alert_list_is_valid() -> None:
    assert parse_alertmanager_payload({"version": "4", "alerts": []}, max_alerts=10).signals == ()


def test_remediation_request_body_validates_against_the_model() -> None:
    signal = parse_alertmanager_payload(load("alertmanager_firing.json"), max_alerts=10).signals[0]
    name = build_remediation_name(signal.fingerprint, signal.starts_at)
    body = build_remediation_request(signal, name=name, namespace="kubernaut-system")
    rr = RemediationRequest.from_wire(body)
    assert rr.metadata.name == name
    assert rr.spec.signal_fingerprint == signal.fingerprint
    assert rr.spec.signal_name == "KubePodCrashLooping"
    assert rr.spec.severity == "critical"
    assert rr.spec.target_resource.kind == "Pod"
    assert rr.spec.target_resource.namespace == "payments"
    assert rr.spec.source == "alertmanager"
    assert rr.spec.firing_time == signal.starts_at.replace(microsecond=0)  # metav1.Time: seconds
    assert rr.spec.signal_labels == dict(signal.labels)
    assert body["spec"]["firingTime"].endswith("Z")


def test_cluster_scoped_target_has_no_namespace_on_the_wire() -> None:
    signal = parse_alertmanager_payload(
        minimal(labels={"alertname": "NodeDown", "node": "worker-1"}), max_alerts=10
    ).signals[0]
    body = build_remediation_request(signal, name="rr-x", namespace="ns")
    assert body["spec"]["targetResource"] == {"kind": "Node", "name": "worker-1"}


@pytest.mark.parametrize(
    ("current", "created", "expected_count", "expected_first"),
    [
        (None, T0, 2, T0),
        ({}, None, 2, T0.replace(minute=9)),
        ({"occurrenceCount": 4, "firstSeenAt": "2026-01-01T00:00:00Z"}, T0, 5, datetime(2026, 1, 1, tzinfo=UTC)),
        ({"occurrenceCount": "x", "firstSeenAt": 7}, T0, 2, T0),
        ({"occurrenceCount": True}, T0, 2, T0),
    ],
)
def test_deduplication(
    current: dict[str, Any] | None, created: datetime | None, expected_count: int, expected_first: datetime
) -> None:
    now = T0.replace(minute=9)
    dedup = decide_deduplication(current, created, now)
    assert dedup.occurrence_count == expected_count
    assert dedup.first_seen_at == expected_first
    assert dedup.last_seen_at == now


def test_deduplication_status_wire_form() -> None:
    assert build_deduplication_status(build_first_deduplication(T0)) == {
        "deduplication": {
            "occurrenceCount": 1,
            "firstSeenAt": "2026-01-02T03:04:05Z",
            "lastSeenAt": "2026-01-02T03:04:05Z",
        }
    }


def test_resolved_patch_uses_ends_at_or_now() -> None:
    resolved = parse_alertmanager_payload(load("alertmanager_resolved.json"), max_alerts=10).signals[0]
    patch = build_resolved_patch(resolved, T0)
    assert patch["metadata"]["annotations"][RESOLVED_ANNOTATION] == resolved.ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[union-attr]
    no_end = copy.deepcopy(resolved)
    object.__setattr__(no_end, "ends_at", None)
    assert build_resolved_patch(no_end, T0)["metadata"]["annotations"][RESOLVED_ANNOTATION] == "2026-01-02T03:04:05Z"


def test_resolved_patch_is_not_older_than_the_last_repeat_heard() -> None:
    resolved = parse_alertmanager_payload(load("alertmanager_resolved.json"), max_alerts=10).signals[0]
    assert resolved.ends_at is not None
    later = {"lastSeenAt": (resolved.ends_at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    earlier = {"lastSeenAt": "2000-01-01T00:00:00Z"}
    assert (
        build_resolved_patch(resolved, T0, later)["metadata"]["annotations"][RESOLVED_ANNOTATION] == later["lastSeenAt"]
    )
    assert build_resolved_patch(resolved, T0, earlier) == build_resolved_patch(resolved, T0)


@pytest.mark.parametrize(
    ("annotations", "starts_at", "late"),
    [
        pytest.param({}, T0, False, id="not-resolved"),
        pytest.param({RESOLVED_ANNOTATION: "2026-01-02T03:04:05Z"}, T0 - timedelta(minutes=5), True, id="same-episode"),
        pytest.param({RESOLVED_ANNOTATION: "2026-01-02T03:04:05Z"}, T0, True, id="started-at-the-resolution"),
        pytest.param(
            {RESOLVED_ANNOTATION: "2026-01-02T03:04:05Z"}, T0 + timedelta(milliseconds=200), False, id="new-episode"
        ),
        pytest.param({RESOLVED_ANNOTATION: "yesterday"}, T0, False, id="unreadable-resolution"),
    ],
)
def test_a_firing_notice_of_the_resolved_episode_is_late(
    annotations: dict[str, str], starts_at: datetime, late: bool
) -> None:
    assert is_late_notice(annotations, starts_at) is late
