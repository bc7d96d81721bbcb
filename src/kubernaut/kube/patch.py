"""JSON merge patches (RFC 7386) between two JSON documents."""

from typing import Any


def build_merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The patch turning `old` into `new`: changed keys, `None` for removed ones; lists replace."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = build_merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch
