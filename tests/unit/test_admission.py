"""Admission rules: who cleared a block, and the checks beyond the CRD schemas. Table-driven."""

from typing import Any

import pytest

from kubernaut.domain.admission import (
    decide_clearance_identity,
    decide_clearance_stamp,
    decide_reset_identity,
    decide_reset_stamp,
    decide_validation,
    parse_bundle_reference,
)

CLEAR = "kubernaut.ai/clear-execution-block"
BY = "kubernaut.ai/execution-block-cleared-by"
BY_PATH = "/metadata/annotations/kubernaut.ai~1execution-block-cleared-by"


def wfe(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": "we-1", "namespace": "ns"},
        "spec": {
            "remediationRequestRef": {"name": "rr-1"},
            "workflowRef": {"workflowId": "restart", "version": "1", "containerImage": "ghcr.io/acme/restart:v1"},
            "targetResource": "ns/Deployment/api",
            **spec,
        },
    }
    if annotations is not None:
        body["metadata"]["annotations"] = annotations
    return body


# -- identity of block clearance -----------------------------------------------------------------------

STAMP_CASES = [
    # (id, old annotations (None: CREATE), new annotations, expected: "allow" | "deny" | patch op + value)
    ("set the reason on create", None, {CLEAR: "ack"}, ("add", "alice")),
    ("set the reason on update", {}, {CLEAR: "ack"}, ("add", "alice")),
    ("change the reason: the new author", {CLEAR: "ack", BY: "bob"}, {CLEAR: "again", BY: "bob"}, ("add", "alice")),
    ("unrelated change keeps the stamp", {CLEAR: "ack", BY: "bob"}, {CLEAR: "ack", BY: "bob", "x": "y"}, "allow"),
    ("no clearance at all", {}, {"x": "y"}, "allow"),
    ("withdraw the reason: the stamp goes", {CLEAR: "ack", BY: "bob"}, {BY: "bob"}, ("remove", None)),
    ("withdraw both at once", {CLEAR: "ack", BY: "bob"}, {}, "allow"),
    ("empty reason counts as none", {CLEAR: "ack", BY: "bob"}, {CLEAR: " ", BY: "bob"}, ("remove", None)),
    ("cleared-by on create", None, {CLEAR: "ack", BY: "alice"}, "deny"),
    ("cleared-by alone", {}, {BY: "alice"}, "deny"),
    ("reason with someone else's name", {}, {CLEAR: "ack", BY: "carol"}, "deny"),
    ("reason with one's own name", {}, {CLEAR: "ack", BY: "alice"}, "deny"),
    ("rewrite the author", {CLEAR: "ack", BY: "bob"}, {CLEAR: "ack", BY: "alice"}, "deny"),
    ("drop the author, keep the reason", {CLEAR: "ack", BY: "bob"}, {CLEAR: "ack"}, "deny"),
]


@pytest.mark.parametrize(("old", "new", "expected"), [c[1:] for c in STAMP_CASES], ids=[c[0] for c in STAMP_CASES])
def test_clearance_stamp(old: dict[str, str] | None, new: dict[str, str], expected: object) -> None:
    verdict = decide_clearance_stamp(wfe(new), None if old is None else wfe(old), "alice")
    if expected == "deny":
        assert not verdict.allowed
        assert BY in verdict.message
        assert "by hand" in verdict.message
        return
    assert verdict.allowed
    if expected == "allow":
        assert verdict.patch == ()
        return
    op, value = expected  # type: ignore[misc]
    assert verdict.patch == (({"op": op, "path": BY_PATH, "value": value}) if value else {"op": op, "path": BY_PATH},)


def test_a_reason_needs_an_authenticated_user() -> None:
    verdict = decide_clearance_stamp(wfe({CLEAR: "ack"}), wfe({}), "")
    assert not verdict.allowed
    assert "authenticated" in verdict.message


IDENTITY_CASES = [
    ("stamped by the mutation", {}, {CLEAR: "ack", BY: "alice"}, True),
    ("unchanged stamp", {CLEAR: "ack", BY: "bob"}, {CLEAR: "ack", BY: "bob"}, True),
    ("nothing to do with clearance", {}, {"x": "y"}, True),
    ("stamp missing after the mutations", {}, {CLEAR: "ack"}, False),
    ("stamp names someone else", {}, {CLEAR: "ack", BY: "bob"}, False),
    ("stamp left after the reason went", {CLEAR: "ack", BY: "bob"}, {BY: "bob"}, False),
]


@pytest.mark.parametrize(("old", "new", "allowed"), [c[1:] for c in IDENTITY_CASES], ids=[c[0] for c in IDENTITY_CASES])
def test_clearance_identity_after_mutation(old: dict[str, str], new: dict[str, str], allowed: bool) -> None:
    assert decide_clearance_identity(wfe(new), wfe(old), "alice").allowed is allowed


# -- bundle references ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "ghcr.io/acme/workflows/restart-pod:v1.2.0",
        "kubernaut.local/samples/succeed:2tasks-3s",
        "localhost:5000/restart:1",
        "registry.example.com:443/team/a__b/c.d-e:latest",
        "docker.io/library/restart@sha256:" + "a" * 64,
        "ghcr.io/acme/restart:v1@sha256:" + "0123456789abcdef" * 4,
        "restart",
    ],
)
def test_good_bundle_references(reference: str) -> None:
    assert parse_bundle_reference(reference) == []


@pytest.mark.parametrize(
    ("reference", "says"),
    [
        ("", "is required"),
        ("   ", "is required"),
        ("ghcr.io/acme/restart pod:v1", "must not contain spaces"),
        ("https://ghcr.io/acme/restart:v1", "must not start with a scheme"),
        ("ghcr.io/Acme/restart:v1", "repository path component 'Acme' must be lower-case"),
        ("ghcr.io/acme//restart:v1", "repository path component ''"),
        ("ghcr.io/acme/restart:-v1", "tag '-v1'"),
        ("ghcr.io/acme/restart:", "tag ''"),
        ("ghcr.io/acme/restart@sha256:abc", "digest 'sha256:abc' must be sha256: followed by 64"),
        ("ghcr.io/acme/restart@md5:" + "a" * 32, "digest"),
        ("-bad-.io/acme/restart:v1", "registry '-bad-.io' is not a host name"),
        (":v1", "has no repository name"),
        ("ghcr.io/" + "a" * 260 + ":v1", "at most 255"),
    ],
)
def test_bad_bundle_references_say_what_is_wrong(reference: str, says: str) -> None:
    problems = parse_bundle_reference(reference)
    assert problems, reference
    assert any(says in p for p in problems), problems


# -- validation of our kinds ---------------------------------------------------------------------------


def rr(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "RemediationRequest",
        "metadata": {"name": "rr-1", "namespace": "ns"},
        "spec": {
            "signalFingerprint": "a" * 64,
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "targetResource": {"kind": "Deployment", "name": "api", "namespace": "ns"},
        },
    }
    body["spec"].update(spec)
    return body


def workflow(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "RemediationWorkflow",
        "metadata": {"name": "restart"},
        "spec": {"workflowId": "restart", "version": "1", "containerImage": "ghcr.io/acme/restart:v1"},
    }
    body["spec"].update(spec)
    return body


VALIDATION_CASES = [
    (
        "rr target kind",
        rr(targetResource={"kind": "Deploy ment", "name": "api", "namespace": "ns"}),
        "is not a valid kind",
    ),
    ("rr target ns", rr(targetResource={"kind": "Deployment", "name": "api", "namespace": "NS"}), "namespace 'NS'"),
    ("rr target name", rr(targetResource={"kind": "Deployment", "name": "a/b", "namespace": "ns"}), "targetResource"),
    ("rr bundle", rr(workflowRef={"workflowId": "w", "containerImage": "Ghcr.io/A/B"}), "containerImage"),
    ("rr parameter", rr(workflowRef={"workflowId": "w", "parameters": {"memLimit": "1"}}), "'memLimit'"),
    ("rr timeout", rr(timeoutConfig={"executing": "5 minutes"}), "spec.timeoutConfig.executing '5 minutes'"),
    ("wfe target", wfe(targetResource="ns/Deployment/"), "spec.targetResource: targetResource has an empty part"),
    ("wfe target parts", wfe(targetResource="a/b/c/d"), "4 parts"),
    ("wfe parameter", wfe(parameters={"lower": "1"}), "'lower' must be UPPER_SNAKE_CASE"),
    ("wfe reserved parameter", wfe(parameters={"TARGET_RESOURCE": "x"}), "TARGET_RESOURCE is set by kubernaut"),
    (
        "wfe empty bundle",
        wfe(workflowRef={"workflowId": "w", "version": "1", "containerImage": ""}),
        "containerImage is required",
    ),
    (
        "wfe digest",
        wfe(workflowRef={"workflowId": "w", "version": "1", "containerImage": "a/b:1", "containerDigest": "x"}),
        "containerDigest 'x'",
    ),
    ("workflow bundle", workflow(containerImage="ghcr.io/acme/Restart"), "spec.containerImage"),
    ("workflow no bundle", workflow(containerImage=""), "spec.containerImage is required"),
    ("workflow parameter", workflow(parameters={"2FAST": "1"}), "'2FAST'"),
    ("workflow kind", workflow(match={"targetKinds": ["Deployment", "pods/x"]}), "targetKinds[1] 'pods/x'"),
    ("workflow severity", workflow(match={"severities": ["urgent"]}), "severities[0] 'urgent'"),
]


@pytest.mark.parametrize(("obj", "says"), [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES])
def test_bad_objects_are_refused_with_a_reason(obj: dict[str, Any], says: str) -> None:
    verdict = decide_validation(obj["kind"], "CREATE", obj, None)
    assert not verdict.allowed
    assert says in verdict.message, verdict.message
    assert verdict.message.startswith(f"{obj['kind']} {obj['metadata']['name']} is not valid: ")


@pytest.mark.parametrize("obj", [rr(), wfe(), workflow(), rr(workflowRef={"workflowId": "w"})])
def test_good_objects_pass(obj: dict[str, Any]) -> None:
    verdict = decide_validation(obj["kind"], "CREATE", obj, None)
    assert verdict.allowed
    assert verdict.warnings == ()


def test_an_update_that_keeps_the_spec_is_allowed_even_if_the_spec_is_bad() -> None:
    old = wfe(targetResource="bad")
    new = wfe(targetResource="bad")
    new["metadata"]["labels"] = {"x": "y"}
    assert decide_validation("WorkflowExecution", "UPDATE", new, old).allowed
    changed = wfe(targetResource="still/bad/x/y")
    assert not decide_validation("WorkflowExecution", "UPDATE", changed, old).allowed


def test_a_bundle_without_tag_or_digest_is_allowed_with_a_warning() -> None:
    verdict = decide_validation("RemediationWorkflow", "CREATE", workflow(containerImage="ghcr.io/acme/restart"), None)
    assert verdict.allowed
    assert verdict.warnings
    assert "':latest'" in verdict.warnings[0]


def test_other_kinds_and_operations_pass() -> None:
    assert decide_validation("ConfigMap", "CREATE", {"spec": {}}, None).allowed
    assert decide_validation("WorkflowExecution", "DELETE", wfe(targetResource="x"), None).allowed


# -- identity of a breaker reset -----------------------------------------------------------------------

REASON = "kubernaut.ai/breaker-reset-reason"
ASKED = "kubernaut.ai/breaker-reset-requested-at"
RESET_BY = "kubernaut.ai/breaker-reset-by"
RESET_AT = "kubernaut.ai/breaker-reset-at"
NOW_TEXT = "2026-02-01T00:00:00+00:00"
STAMPED = {REASON: "fixed", ASKED: "t1", RESET_BY: "bob", RESET_AT: "2026-01-01T00:00:00+00:00"}


def breaker(annotations: dict[str, str]) -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": "kubernaut-breaker", "annotations": annotations}}


@pytest.mark.parametrize(
    ("case", "old", "new", "outcome"),
    [
        ("no reset at all", {}, {"x": "y"}, "allow"),
        ("a first reset", None, {REASON: "fixed", ASKED: "t1"}, "stamp"),
        ("a new reason", STAMPED, {**STAMPED, REASON: "again", ASKED: "t2"}, "stamp"),
        ("the same reason asked again", STAMPED, {**STAMPED, ASKED: "t2"}, "stamp"),
        ("an unrelated edit", STAMPED, {**STAMPED, "x": "y"}, "allow"),
        ("a hand-written identity", STAMPED, {**STAMPED, RESET_BY: "mallory"}, "refuse"),
        ("a hand-written identity with a reset", STAMPED, {**STAMPED, REASON: "r", RESET_BY: "alice"}, "refuse"),
        ("a hand-written time", STAMPED, {**STAMPED, RESET_AT: "2030-01-01T00:00:00+00:00"}, "refuse"),
        ("a stamp on create", None, {REASON: "fixed", ASKED: "t1", RESET_BY: "alice"}, "refuse"),
    ],
)
def test_reset_stamp(case: str, old: dict[str, str] | None, new: dict[str, str], outcome: str) -> None:
    verdict = decide_reset_stamp(breaker(new), None if old is None else breaker(old), "alice", NOW_TEXT)
    assert verdict.allowed is (outcome != "refuse"), case
    if outcome == "stamp":
        assert {op["path"]: op["value"] for op in verdict.patch} == {
            "/metadata/annotations/kubernaut.ai~1breaker-reset-by": "alice",
            "/metadata/annotations/kubernaut.ai~1breaker-reset-at": NOW_TEXT,
        }
    if outcome == "allow":
        assert verdict.patch == ()
    if outcome == "refuse":
        assert "cannot be set or changed by hand" in verdict.message
        assert "kubernaut breaker reset" in verdict.message


def test_a_reset_needs_an_authenticated_user() -> None:
    verdict = decide_reset_stamp(breaker({REASON: "fixed", ASKED: "t1"}), None, "", NOW_TEXT)
    assert not verdict.allowed
    assert "authenticated user" in verdict.message


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (STAMPED, {**STAMPED, "x": "y"}, True),
        (STAMPED, {**STAMPED, REASON: "again", ASKED: "t2", RESET_BY: "alice", RESET_AT: NOW_TEXT}, True),
        (STAMPED, {**STAMPED, REASON: "again", ASKED: "t2"}, False),  # the stamp was not renewed
        (STAMPED, {**STAMPED, REASON: "again", ASKED: "t2", RESET_AT: NOW_TEXT}, False),  # bob is not the requester
        (STAMPED, {**STAMPED, RESET_BY: "alice"}, False),
    ],
)
def test_reset_identity_after_mutation(old: dict[str, str], new: dict[str, str], allowed: bool) -> None:
    assert decide_reset_identity(breaker(new), breaker(old), "alice").allowed is allowed
