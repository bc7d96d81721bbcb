"""The control-plane binary cache against a stand-in `go` that records what it is asked to build."""

import json
import shutil
import stat
from pathlib import Path

import pytest

from kubernaut.devcluster import binaries

_FAKE_GO = """#!/bin/sh
# `go env GOVERSION` or `go build -v -trimpath -ldflags=... -o OUT PACKAGE`
if [ "$1" = env ]; then echo go1.99.0; exit 0; fi
while [ "$1" != -o ]; do shift; done
echo "$3 $(pwd)" >> "$GO_LOG"
echo built > "$2"
"""

_MODULES = {
    "apiserver": "require k8s.io/kubernetes v1.34.4\n",
    "etcd": "require go.etcd.io/etcd/server/v3 v3.5.35\n",
    "kwok": "require sigs.k8s.io/kwok v0.8.0\n",
}


@pytest.fixture
def go_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pinned modules, an empty cache and the stand-in `go` first on PATH; the file it logs to."""
    src = tmp_path / "src"
    for module, pin in _MODULES.items():
        (src / module).mkdir(parents=True)
        (src / module / "go.mod").write_text(f"module example.com/{module}\n\n{pin}")
        (src / module / "go.sum").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(_FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "go.log"
    monkeypatch.setenv("KUBERNAUT_CONTROLPLANE_SRC", str(src))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("GO_LOG", str(log))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    assert shutil.which("go") == str(go)
    return log


def _built(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_builds_each_binary_once_and_records_its_version(go_log: Path) -> None:
    first = binaries.build_binaries(log=lambda line: None)
    assert _built(go_log) == [
        "go.etcd.io/etcd/server/v3",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "sigs.k8s.io/kwok/cmd/kwok",
    ]
    assert first.kwok.parent.name == "v1.34.4-v3.5.35-v0.8.0"
    stamp = json.loads(first.kube_apiserver.with_name("kube-apiserver.json").read_text())
    assert stamp["go"] == "go1.99.0"
    assert stamp["recipe"]["version"] == "v1.34.4"
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in stamp["recipe"]["ldflags"]
    assert "-X k8s.io/component-base/version.gitMinor=34" in stamp["recipe"]["ldflags"]
    assert "gitVersion" not in json.loads(first.etcd.with_name("etcd.json").read_text())["recipe"]["ldflags"]

    assert binaries.find_binaries() == first
    binaries.build_binaries(log=lambda line: None)
    assert len(_built(go_log)) == 5  # nothing rebuilt


def test_a_changed_recipe_rebuilds_only_its_binaries(go_log: Path) -> None:
    binaries.build_binaries(log=lambda line: None)
    go_sum = Path(binaries.source_dir()) / "kwok" / "go.sum"
    go_sum.write_text("sigs.k8s.io/kwok v0.8.0 h1:changed\n")
    assert binaries.find_binaries() is None
    binaries.build_binaries(log=lambda line: None)
    assert _built(go_log)[5:] == ["sigs.k8s.io/kwok/cmd/kwok"]


def test_a_binary_without_its_stamp_is_rebuilt(go_log: Path) -> None:
    built = binaries.build_binaries(log=lambda line: None)
    built.kube_apiserver.with_name("kube-apiserver.json").unlink()  # e.g. built before stamps existed
    binaries.build_binaries(log=lambda line: None)
    assert _built(go_log)[5:] == ["k8s.io/kubernetes/cmd/kube-apiserver"]


def test_tekton_and_crane_are_built_on_request_into_caches_of_their_own(
    go_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "tools"
    for module, pin in {
        "tekton": "require github.com/tektoncd/pipeline v1.6.0\n",
        "crane": "require github.com/google/go-containerregistry v0.20.6\n",
    }.items():
        (tools / module).mkdir(parents=True)
        (tools / module / "go.mod").write_text(f"module example.com/{module}\n\n{pin}")
        (tools / module / "go.sum").write_text("")
    monkeypatch.setenv("KUBERNAUT_TOOLS_SRC", str(tools))

    built = binaries.build_tekton_binaries(log=lambda line: None)
    assert _built(go_log) == [
        "github.com/tektoncd/pipeline/cmd/controller",
        "github.com/tektoncd/pipeline/cmd/resolvers",
        "github.com/google/go-containerregistry/cmd/crane",
    ]
    assert (built.controller.parent.name, built.crane.parent.name) == ("tekton-v1.6.0", "crane-v0.20.6")
    assert json.loads(built.resolvers.with_name("tekton-resolvers.json").read_text())["recipe"]["version"] == "v1.6.0"
    assert binaries.find_tekton_binaries() == built
    binaries.build_tekton_binaries(log=lambda line: None)
    assert len(_built(go_log)) == 3  # nothing rebuilt
    assert binaries.find_binaries() is None  # the control plane is a separate set, not built by this
