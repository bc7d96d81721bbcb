"""Admission rules for our kinds: who cleared an execution block, and checks the CRD schemas cannot express.

Pure: every function takes the objects of one AdmissionReview (plain dicts) and returns a verdict.
Messages are written for the person whose `kubectl apply` was refused: they name the field, say
what is wrong and show what a good value looks like.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernaut.domain.approval import (
    ANNOTATION_DECIDED_BY,
    ANNOTATION_DECIDED_VIA,
    ANNOTATION_DECISION,
    ANNOTATION_DECISION_REASON,
    DECISIONS,
    build_decided_via,
    decide_approval,
)
from kubernaut.domain.duration import format_rfc3339, parse_go_duration
from kubernaut.domain.execution import ANNOTATION_CLEAR_BLOCK, ANNOTATION_CLEARED_BY
from kubernaut.domain.gates import (
    ANNOTATION_RESET_AT,
    ANNOTATION_RESET_BY,
    ANNOTATION_RESET_REASON,
    ANNOTATION_RESET_REQUESTED_AT,
)
from kubernaut.domain.target import build_target_string, parse_target
from kubernaut.errors import InvalidTargetError

Body = Mapping[str, Any]

BUNDLE_EXAMPLE = "ghcr.io/acme/workflows/restart-pod:v1.2.0"
RESERVED_PARAMETERS = frozenset({"TARGET_RESOURCE"})
SEVERITIES = ("critical", "warning", "info")

_PARAMETER_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,62}$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_NAME = 255


@dataclass(frozen=True)
class AdmissionVerdict:
    """The answer to one AdmissionReview: allowed or not, why, and a JSON Patch for mutations."""

    allowed: bool
    message: str = ""
    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


ALLOWED = AdmissionVerdict(allowed=True)


# -- who cleared an execution block ------------------------------------------------------------------


def _annotations(body: Body | None) -> Mapping[str, str]:
    if not body:
        return {}
    return ((body.get("metadata") or {}).get("annotations")) or {}


def _reason(body: Body | None) -> str:
    return str(_annotations(body).get(ANNOTATION_CLEAR_BLOCK) or "").strip()


def build_expected_cleared_by(obj: Body, old: Body | None, username: str) -> str | None:
    """Who the clearance annotation must name after this request: the requester when the request sets
    or changes the reason, nobody when the reason is gone, otherwise whoever it named before."""
    reason, old_reason = _reason(obj), _reason(old)
    if reason and reason != old_reason:
        return username
    if not reason:
        return None
    previous = _annotations(old).get(ANNOTATION_CLEARED_BY)
    return None if previous is None else str(previous)


def decide_clearance_stamp(obj: Body, old: Body | None, username: str) -> AdmissionVerdict:
    """Mutating: write the requester into the cleared-by annotation; refuse a hand-written one."""
    written = _annotations(obj).get(ANNOTATION_CLEARED_BY)
    before = _annotations(old).get(ANNOTATION_CLEARED_BY)
    withdrawn = written is None and not _reason(obj)
    if written != before and not withdrawn:
        return AdmissionVerdict(
            allowed=False,
            message=(
                f"the annotation {ANNOTATION_CLEARED_BY} cannot be set or changed by hand: kubernaut writes it "
                f"from the identity of whoever sets {ANNOTATION_CLEAR_BLOCK}. Set only "
                f"{ANNOTATION_CLEAR_BLOCK}=<reason> (for example with `kubernaut clear-block`)."
            ),
        )
    if _reason(obj) and _reason(obj) != _reason(old) and not username:
        return AdmissionVerdict(
            allowed=False, message=f"{ANNOTATION_CLEAR_BLOCK} needs an authenticated user; this request has none"
        )
    expected = build_expected_cleared_by(obj, old, username)
    if expected == written:
        return ALLOWED
    path = "/metadata/annotations/" + ANNOTATION_CLEARED_BY.replace("~", "~0").replace("/", "~1")
    if expected is None:
        return AdmissionVerdict(allowed=True, patch=({"op": "remove", "path": path},))
    return AdmissionVerdict(allowed=True, patch=({"op": "add", "path": path, "value": expected},))


def decide_clearance_identity(obj: Body, old: Body | None, username: str) -> AdmissionVerdict:
    """Validating, after every mutation: the cleared-by annotation names exactly who it must."""
    expected = build_expected_cleared_by(obj, old, username)
    written = _annotations(obj).get(ANNOTATION_CLEARED_BY)
    if written == expected:
        return ALLOWED
    wanted = f"'{expected}'" if expected is not None else "no value"
    return AdmissionVerdict(
        allowed=False,
        message=(
            f"the annotation {ANNOTATION_CLEARED_BY} must name the user who set {ANNOTATION_CLEAR_BLOCK} "
            f"({wanted}, found {written!r}); it cannot be set or changed by hand"
        ),
    )


# -- who decided an approval -------------------------------------------------------------------------


def _json_pointer(annotation: str) -> str:
    return "/metadata/annotations/" + annotation.replace("~", "~0").replace("/", "~1")


def _decision_refusal(obj: Body, old: Body | None, username: str, now: datetime) -> str:
    """Why this write's decision annotations cannot be admitted; "" when they can."""
    name = (obj.get("metadata") or {}).get("name") or ""
    new, before = _annotations(obj), _annotations(old)
    decision, old_decision = new.get(ANNOTATION_DECISION), before.get(ANNOTATION_DECISION)
    changed = decision != old_decision or new.get(ANNOTATION_DECISION_REASON) != before.get(ANNOTATION_DECISION_REASON)
    stamps = (ANNOTATION_DECIDED_BY, ANNOTATION_DECIDED_VIA)
    forged = next((a for a in stamps if new.get(a) != before.get(a)), None)
    if forged is not None:
        return (
            f"the annotation {forged} cannot be set or changed by hand: kubernaut writes it from "
            f"the identity of whoever sets {ANNOTATION_DECISION}. Set only {ANNOTATION_DECISION}=Approved|Rejected "
            f"(for example with `kubernaut approve` or `kubernaut reject`)."
        )
    if not changed:
        return ""
    if old is not None:
        state = decide_approval(old, now)
        if state.decided:
            when = f" at {format_rfc3339(state.decided_at)}" if state.decided_at else ""
            if state.phase.value == "Expired":
                return f"RemediationApprovalRequest {name} has expired ({state.message}); an approval decides once"
            return (
                f"RemediationApprovalRequest {name} was already {state.phase.value.lower()} by "
                f"{state.decided_by}{when}; an approval decides once"
            )
    if decision not in DECISIONS:
        return f"{ANNOTATION_DECISION} must be Approved or Rejected, not {str(decision)[:40]!r}"
    if not username:
        return f"{ANNOTATION_DECISION} needs an authenticated user; this request has none"
    return ""


def decide_decision_stamp(
    obj: Body, old: Body | None, username: str, now: datetime, field_manager: str = ""
) -> AdmissionVerdict:
    """Mutating: write the requester (and its client) into the decided-by (decided-via) annotation of
    a new decision; refuse a hand-written one, a second decision, and one after expiry."""
    refusal = _decision_refusal(obj, old, username, now)
    if refusal:
        return AdmissionVerdict(allowed=False, message=refusal)
    if _annotations(obj).get(ANNOTATION_DECISION) == _annotations(old).get(ANNOTATION_DECISION):
        return ALLOWED
    via = build_decided_via(field_manager).value
    return AdmissionVerdict(
        allowed=True,
        patch=(
            {"op": "add", "path": _json_pointer(ANNOTATION_DECIDED_BY), "value": username},
            {"op": "add", "path": _json_pointer(ANNOTATION_DECIDED_VIA), "value": via},
        ),
    )


def decide_decision_identity(obj: Body, old: Body | None, username: str) -> AdmissionVerdict:
    """Validating, after every mutation: decided-by names the user who set the decision, or is unchanged."""
    new, before = _annotations(obj), _annotations(old)
    decided = new.get(ANNOTATION_DECISION) != before.get(ANNOTATION_DECISION)
    expected = username if decided else before.get(ANNOTATION_DECIDED_BY)
    written = new.get(ANNOTATION_DECIDED_BY)
    if written == expected:
        return ALLOWED
    return AdmissionVerdict(
        allowed=False,
        message=(
            f"the annotation {ANNOTATION_DECIDED_BY} must name the user who set {ANNOTATION_DECISION} "
            f"({expected!r}, found {written!r}); it cannot be set or changed by hand"
        ),
    )


# -- who reset the circuit breaker, and when ------------------------------------------------------------

_STAMPS = (ANNOTATION_RESET_BY, ANNOTATION_RESET_AT)


def _reset_request(body: Body | None) -> tuple[str, str]:
    annotations = _annotations(body)
    return (
        str(annotations.get(ANNOTATION_RESET_REASON) or "").strip(),
        str(annotations.get(ANNOTATION_RESET_REQUESTED_AT) or ""),
    )


def _is_new_reset(obj: Body, old: Body | None) -> bool:
    reason, _ = _reset_request(obj)
    return bool(reason) and _reset_request(obj) != _reset_request(old)


def _annotation_path(name: str) -> str:
    return "/metadata/annotations/" + name.replace("~", "~0").replace("/", "~1")


def decide_reset_stamp(obj: Body, old: Body | None, username: str, now: str) -> AdmissionVerdict:
    """Mutating: a new reset (reason or request time changed) is stamped with the requester and the
    admission time `now`; a stamp written or changed by hand is refused."""
    written = {key: _annotations(obj).get(key) for key in _STAMPS}
    before = {key: _annotations(old).get(key) for key in _STAMPS}
    if written != before:
        return AdmissionVerdict(
            allowed=False,
            message=(
                f"the annotations {ANNOTATION_RESET_BY} and {ANNOTATION_RESET_AT} cannot be set or changed by hand: "
                f"kubernaut writes them from the identity of whoever sets {ANNOTATION_RESET_REASON}. "
                "Reset the breaker with `kubernaut breaker reset --reason <text>`."
            ),
        )
    if not _is_new_reset(obj, old):
        return ALLOWED
    if not username:
        return AdmissionVerdict(
            allowed=False, message=f"{ANNOTATION_RESET_REASON} needs an authenticated user; this request has none"
        )
    return AdmissionVerdict(
        allowed=True,
        patch=tuple(
            {"op": "add", "path": _annotation_path(key), "value": value}
            for key, value in ((ANNOTATION_RESET_BY, username), (ANNOTATION_RESET_AT, now))
        ),
    )


def decide_reset_identity(obj: Body, old: Body | None, username: str) -> AdmissionVerdict:
    """Validating, after every mutation: a new reset names exactly the requester; otherwise the stamp
    is the one it was."""
    by, at = (_annotations(obj).get(key) for key in _STAMPS)
    if _is_new_reset(obj, old):
        if by == username and at and at != _annotations(old).get(ANNOTATION_RESET_AT):
            return ALLOWED
        wanted = f"'{username}'"
    else:
        if (by, at) == tuple(_annotations(old).get(key) for key in _STAMPS):
            return ALLOWED
        wanted = "the previous reset's"
    return AdmissionVerdict(
        allowed=False,
        message=(
            f"the annotation {ANNOTATION_RESET_BY} must name the user who set {ANNOTATION_RESET_REASON} "
            f"({wanted}, found {by!r}); it cannot be set or changed by hand"
        ),
    )


# -- checks beyond the schema ----------------------------------------------------------------------


def parse_bundle_reference(reference: str) -> list[str]:
    """Problems with an OCI bundle reference (`[registry/]repository[:tag][@sha256:digest]`); [] when fine."""
    ref = reference.strip()
    if not ref:
        return [f"is required: the OCI reference of the Tekton bundle, e.g. {BUNDLE_EXAMPLE}"]
    if ref != reference or any(ch.isspace() for ch in ref):
        return [f"{reference[:80]!r} must not contain spaces"]
    if "://" in ref:
        return [f"{ref[:80]!r} must not start with a scheme such as https://; write it as {BUNDLE_EXAMPLE}"]
    problems: list[str] = []
    name, _, digest = ref.partition("@")
    if "@" in ref and not _DIGEST.match(digest):
        problems.append(f"digest {digest[:80]!r} must be sha256: followed by 64 lower-case hex digits")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            problems.append(
                f"tag {tag[:80]!r} must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            )
    if not name:
        return [*problems, f"{ref[:80]!r} has no repository name; write it as {BUNDLE_EXAMPLE}"]
    if len(name) > _MAX_NAME:
        problems.append(f"repository name is {len(name)} characters long; at most {_MAX_NAME} are allowed")
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.match(first):
            problems.append(f"registry {first[:80]!r} is not a host name with an optional :port")
        components = components[1:]
    for component in components:
        if not _PATH_COMPONENT.match(component):
            problems.append(
                f"repository path component {component[:80]!r} must be lower-case letters and digits, "
                "separated by '.', '_', '__' or '-'"
            )
            break
    return problems


def _bundle_warnings(reference: str) -> list[str]:
    name = reference.partition("@")[0]
    if "@" not in reference and name.rfind(":") <= name.rfind("/"):
        return [f"bundle {reference!r} has neither tag nor digest: Tekton pulls ':latest', which can change under you"]
    return []


def _parameter_problems(where: str, parameters: Any) -> list[str]:
    if not isinstance(parameters, Mapping):
        return []
    problems = []
    for name in sorted(parameters):
        if not _PARAMETER_NAME.match(str(name)):
            problems.append(
                f"{where} name {str(name)[:80]!r} must be UPPER_SNAKE_CASE (A-Z, 0-9 and _, starting with a "
                "letter), e.g. MEMORY_LIMIT"
            )
        elif name in RESERVED_PARAMETERS:
            problems.append(f"{where} {name} is set by kubernaut from the target; remove it")
    return problems


def _digest_problems(where: str, digest: Any) -> list[str]:
    if digest and not _DIGEST.match(str(digest)):
        return [f"{where} {str(digest)[:80]!r} must be sha256: followed by 64 lower-case hex digits"]
    return []


def _target_problems(where: str, target: str) -> list[str]:
    try:
        parse_target(target)
    except InvalidTargetError as exc:
        return [f"{where}: {exc}"]
    return []


def validate_remediation_request(obj: Body) -> list[str]:
    spec = obj.get("spec") or {}
    problems: list[str] = []
    target = spec.get("targetResource") or {}
    if isinstance(target, Mapping) and target.get("kind") and target.get("name"):
        problems += _target_problems(
            "spec.targetResource",
            build_target_string(str(target["kind"]), str(target["name"]), str(target.get("namespace") or "")),
        )
    ref = spec.get("workflowRef")
    if isinstance(ref, Mapping):
        if ref.get("containerImage") is not None:
            bundle = str(ref["containerImage"])
            problems += [f"spec.workflowRef.containerImage {p}" for p in parse_bundle_reference(bundle)]
        problems += _parameter_problems("spec.workflowRef.parameters: parameter", ref.get("parameters"))
    timeouts = spec.get("timeoutConfig")
    if isinstance(timeouts, Mapping):
        for key in sorted(timeouts):
            value = timeouts[key]
            if value in (None, ""):
                continue
            try:
                parse_go_duration(str(value))
            except ValueError:
                problems.append(
                    f"spec.timeoutConfig.{key} {str(value)[:40]!r} is not a duration; use Go notation such as 90s, "
                    "5m or 1h30m"
                )
    return problems


def validate_workflow_execution(obj: Body) -> list[str]:
    spec = obj.get("spec") or {}
    problems: list[str] = []
    if isinstance(spec.get("targetResource"), str):
        problems += _target_problems("spec.targetResource", spec["targetResource"])
    ref = spec.get("workflowRef") or {}
    if isinstance(ref, Mapping):
        problems += [
            f"spec.workflowRef.containerImage {p}" for p in parse_bundle_reference(str(ref.get("containerImage") or ""))
        ]
        problems += _digest_problems("spec.workflowRef.containerDigest", ref.get("containerDigest"))
    problems += _parameter_problems("spec.parameters: parameter", spec.get("parameters"))
    return problems


def validate_remediation_workflow(obj: Body) -> list[str]:
    spec = obj.get("spec") or {}
    problems = [f"spec.containerImage {p}" for p in parse_bundle_reference(str(spec.get("containerImage") or ""))]
    problems += _digest_problems("spec.containerDigest", spec.get("containerDigest"))
    problems += _parameter_problems("spec.parameters: parameter", spec.get("parameters"))
    match = spec.get("match") or {}
    if isinstance(match, Mapping):
        for index, kind in enumerate(match.get("targetKinds") or []):
            if not _KIND.match(str(kind)):
                problems.append(
                    f"spec.match.targetKinds[{index}] {str(kind)[:80]!r} is not a kind name (letters and digits, "
                    "starting with a letter, e.g. Deployment)"
                )
        for index, severity in enumerate(match.get("severities") or []):
            if severity not in SEVERITIES:
                problems.append(
                    f"spec.match.severities[{index}] {str(severity)[:40]!r} is not one of {', '.join(SEVERITIES)}"
                )
    return problems


_VALIDATORS = {
    "RemediationRequest": validate_remediation_request,
    "WorkflowExecution": validate_workflow_execution,
    "RemediationWorkflow": validate_remediation_workflow,
}


def _bundles(kind: str, obj: Body) -> list[str]:
    spec = obj.get("spec") or {}
    if kind == "RemediationWorkflow":
        return [str(spec.get("containerImage") or "")]
    ref = spec.get("workflowRef") or {}
    return [str(ref["containerImage"])] if isinstance(ref, Mapping) and ref.get("containerImage") else []


def decide_validation(kind: str, operation: str, obj: Body, old: Body | None) -> AdmissionVerdict:
    """Validating: refuse a spec with problems. An update that leaves the spec as it was is always
    allowed, so objects stored before a rule existed can still get labels, finalizers or status."""
    validate = _VALIDATORS.get(kind)
    if validate is None or operation not in ("CREATE", "UPDATE"):
        return ALLOWED
    if operation == "UPDATE" and old is not None and obj.get("spec") == old.get("spec"):
        return ALLOWED
    problems = validate(obj)
    if problems:
        name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName") or ""
        return AdmissionVerdict(allowed=False, message=f"{kind} {name} is not valid: " + "; ".join(problems))
    warnings = tuple(w for bundle in _bundles(kind, obj) if bundle for w in _bundle_warnings(bundle))
    return AdmissionVerdict(allowed=True, warnings=warnings)
