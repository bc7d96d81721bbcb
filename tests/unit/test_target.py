import pytest

from kubernaut.domain.target import build_lock_name, build_target_label, build_target_string, parse_target
from kubernaut.errors import InvalidTargetError


@pytest.mark.parametrize(
    ("target", "lock"),
    [
        ("Node/worker-1", "wfe-94e99fa683de6e08"),
        ("default/Pod/test-pod", "wfe-47fb0c00c339abf8"),
        ("default/deployment/test-app", "wfe-196200272a2c85fd"),
    ],
)
def test_lock_name_is_sha256_prefix(target: str, lock: str) -> None:
    assert build_lock_name(target) == lock
    assert len(lock) == 20


def test_case_is_significant() -> None:
    assert build_lock_name("Node/worker-1") != build_lock_name("node/worker-1")


def test_canonical_target() -> None:
    assert build_target_string("Deployment", "api", "payment") == "payment/Deployment/api"
    assert build_target_string("Node", "worker-1") == "Node/worker-1"
    assert str(parse_target("payment/Deployment/api")) == "payment/Deployment/api"


def test_target_label() -> None:
    assert build_target_label("payment/Deployment/payment-api") == "payment__Deployment__payment-api"
    assert len(build_target_label("ns/Deployment/" + "a" * 200)) <= 63


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "targetResource is required"),
        ("deployment", "got 1 parts"),
        ("a/b/c/d", "got 4 parts"),
        ("/Deployment/x", "empty part at position 0"),
        ("ns//x", "empty part at position 1"),
        ("ns/Deployment/", "empty part at position 2"),
        ("ns/Deployment/" + "a" * 300, "not a valid object name"),
        ("Bad_NS/Deployment/x", "not a valid namespace"),
        ("ns/Deploy ment/x", "not a valid kind"),
    ],
)
def test_invalid_targets(target: str, message: str) -> None:
    with pytest.raises(InvalidTargetError, match=message):
        parse_target(target)
    if "parts" in message:
        with pytest.raises(InvalidTargetError, match=r"\{namespace\}/\{kind\}/\{name\} or \{kind\}/\{name\}"):
            parse_target(target)
