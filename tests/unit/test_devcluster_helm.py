"""Where the helm of the chart tests comes from: the release tools/helm/go.mod pins, a cache path
per release, the build stamps, and KUBERNAUT_HELM."""

from pathlib import Path

import pytest

from kubernaut.devcluster import helm
from kubernaut.errors import ControlPlaneError


def test_the_pinned_release_names_the_cache_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNAUT_HELM", raising=False)
    version = helm.pinned_version()
    assert version.startswith("v3.")
    assert helm.cached_path() == tmp_path / "kubernaut" / "helm" / version / "helm"
    assert helm.find_helm() is None  # nothing built in an empty cache


def test_the_build_stamps_the_version_and_the_kubernetes_release_of_client_go() -> None:
    flags = helm._ldflags("v3.19.5")
    assert "-X helm.sh/helm/v3/internal/version.version=v3.19.5" in flags
    minor = helm._module_version("k8s.io/client-go").split(".")[1]
    assert f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}" in flags
    assert f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}" in flags


def test_kubernaut_helm_chooses_the_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "helm"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv("KUBERNAUT_HELM", str(binary))
    assert helm.find_helm() == binary
    monkeypatch.setenv("KUBERNAUT_HELM", str(tmp_path / "missing"))
    with pytest.raises(ControlPlaneError, match="is not a file"):
        helm.find_helm()
