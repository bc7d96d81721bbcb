"""Target strings (`namespace/kind/name` or `kind/name`) and the lock derived from them."""

import hashlib
import re
from dataclasses import dataclass

from kubernaut.errors import InvalidTargetError

TARGET_FORMAT = "{namespace}/{kind}/{name} or {kind}/{name}"
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?$")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Target:
    kind: str
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        return build_target_string(self.kind, self.name, self.namespace)


def build_target_string(kind: str, name: str, namespace: str = "") -> str:
    """The canonical target: kind copied verbatim; namespace omitted when cluster-scoped."""
    return f"{namespace}/{kind}/{name}" if namespace else f"{kind}/{name}"


def parse_target(target: str) -> Target:
    """Split and validate a target string; the error message says exactly what is wrong."""
    if not target:
        raise InvalidTargetError("targetResource is required")
    parts = target.split("/")
    if len(parts) < 2 or len(parts) > 3:
        raise InvalidTargetError(f"targetResource must have the format {TARGET_FORMAT}, got {len(parts)} parts")
    for index, part in enumerate(parts):
        if not part:
            raise InvalidTargetError(f"targetResource has an empty part at position {index}: {target!r}")
    *namespace, kind, name = parts
    if namespace and (len(namespace[0]) > 63 or not _NAMESPACE.match(namespace[0])):
        raise InvalidTargetError(
            f"targetResource namespace {namespace[0][:80]!r} is not a valid namespace name "
            "(lower-case letters, digits and '-', at most 63 characters)"
        )
    if len(kind) > 63 or not _KIND.match(kind):
        raise InvalidTargetError(
            f"targetResource kind {kind[:80]!r} is not a valid kind (letters and digits, at most 63 characters)"
        )
    if len(name) > 253 or not _NAME.match(name):
        raise InvalidTargetError(
            f"targetResource name {name[:80]!r} is not a valid object name (at most 253 "
            "characters of letters, digits, '-', '.', '_' and ':')"
        )
    return Target(kind=kind, name=name, namespace=namespace[0] if namespace else "")


def build_lock_name(target: str) -> str:
    """The PipelineRun name that is the lock on a target: `wfe-` + 16 hex of SHA-256."""
    return "wfe-" + hashlib.sha256(target.encode("utf-8")).hexdigest()[:16]


def build_target_label(target: str) -> str:
    """A label-safe form of the target: `/` becomes `__`, at most 63 characters."""
    label = _LABEL_UNSAFE.sub("_", target.replace("/", "__"))[:63]
    return label.strip("._-")
