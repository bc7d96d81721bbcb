"""The Prometheus binaries the observability tests run (Debian package `prometheus`)."""

import os
import shutil

import pytest


def prometheus_tool(name: str) -> str:
    """Path of `prometheus` or `promtool`; a missing one skips the test, except in CI where it fails."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed: apt-get install -y --no-install-recommends prometheus"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
