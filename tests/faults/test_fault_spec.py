"""The crash-point spec read from KUBERNAUT_FAULT_EXIT_AFTER (pure parsing)."""

import pytest

from kubernaut.kube.faults import parse_fault_spec


@pytest.mark.parametrize(
    ("value", "points"),
    [
        ("", {}),
        ("executor.pipelinerun-created:1", {"executor.pipelinerun-created": 1}),
        ("a:1, b:3", {"a": 1, "b": 3}),
        ("a", {"a": 1}),
        ("a:2,,b:1,", {"a": 2, "b": 1}),
    ],
)
def test_parse_fault_spec(value: str, points: dict[str, int]) -> None:
    assert parse_fault_spec(value) == points


@pytest.mark.parametrize("value", ["a:0", "a:-1", ":1", "a:x"])
def test_malformed_fault_spec_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="bad entry"):
        parse_fault_spec(value)
