"""Find or build the control-plane binaries: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (the fake kubelet); and, when asked, Tekton Pipelines' controller and
resolvers plus crane (the local OCI registry) from `tools/tekton/` and `tools/crane/`.

Order per binary: `KUBEBUILDER_ASSETS` (setup-envtest ships etcd and kube-apiserver; the others are
used from there when present), then the cache `~/.cache/kubernaut/controlplane/<versions>/`, else a
build from the pinned Go modules in `tools/controlplane/` with the machine's Go toolchain.

Each cached binary has a `<binary>.json` stamp recording its version and build recipe (package,
ldflags, hash of the module's go.mod and go.sum); a binary whose recipe changed is rebuilt.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernaut.errors import ControlPlaneError

_REPO_ROOT = Path(__file__).resolve().parents[3]
_PROGRESS_EVERY = 15.0  # seconds between "still compiling" lines
_BUILD_FLAGS = ("-trimpath",)
_BUILD_ENV = {"CGO_ENABLED": "0"}  # static binaries


@dataclass(frozen=True)
class ControlPlaneBinaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path


@dataclass(frozen=True)
class TektonBinaries:
    controller: Path
    resolvers: Path
    crane: Path


@dataclass(frozen=True)
class _Component:
    binary: str
    module_dir: str
    package: str
    version_module: str
    # Kubernetes components report this version at /version and in --version (clients such as
    # knative refuse a server whose version does not parse).
    stamp_kube_version: bool = False
    # None: a control-plane binary, in `tools/controlplane/` and the shared versions directory;
    # else a module directly under `tools/`, cached in `<group>-<version>/`.
    group: str | None = None


_COMPONENTS = (
    _Component("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
    _Component("kube-apiserver", "apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes", True),
    _Component(
        "kube-controller-manager",
        "apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes",
        True,
    ),
    _Component("kube-scheduler", "apiserver", "k8s.io/kubernetes/cmd/kube-scheduler", "k8s.io/kubernetes", True),
    _Component("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok", "sigs.k8s.io/kwok"),
)
_TEKTON_COMPONENTS = (
    _Component(
        "tekton-controller",
        "tekton",
        "github.com/tektoncd/pipeline/cmd/controller",
        "github.com/tektoncd/pipeline",
        group="tekton",
    ),
    _Component(
        "tekton-resolvers",
        "tekton",
        "github.com/tektoncd/pipeline/cmd/resolvers",
        "github.com/tektoncd/pipeline",
        group="tekton",
    ),
    _Component(
        "crane",
        "crane",
        "github.com/google/go-containerregistry/cmd/crane",
        "github.com/google/go-containerregistry",
        group="crane",
    ),
)
_FROM_ENVTEST = ("etcd", "kube-apiserver")  # what KUBEBUILDER_ASSETS must hold


def source_dir() -> Path:
    return Path(os.environ.get("KUBERNAUT_CONTROLPLANE_SRC", _REPO_ROOT / "tools" / "controlplane"))


def tools_dir() -> Path:
    """The Go modules of the tools beside the control plane (Tekton, crane)."""
    return Path(os.environ.get("KUBERNAUT_TOOLS_SRC", _REPO_ROOT / "tools"))


def _module_dir(component: _Component) -> Path:
    return (source_dir() if component.group is None else tools_dir()) / component.module_dir


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubernaut" / "controlplane"


def pinned_version(component: _Component) -> str:
    """The version a component's go.mod pins (the single source of truth)."""
    return read_pin(_module_dir(component) / "go.mod", component.version_module)


def read_pin(go_mod: Path, module: str) -> str:
    """The version of `module` that `go_mod` requires."""
    try:
        text = go_mod.read_text()
    except OSError as exc:
        raise ControlPlaneError(f"cannot read {go_mod}: {exc.strerror}") from None
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if not match:
        raise ControlPlaneError(f"{go_mod} does not pin {module}")
    return match.group(1)


def kube_version() -> str:
    """The pinned Kubernetes version (kube-apiserver's)."""
    return pinned_version(_component("kube-apiserver"))


def _component(binary: str) -> _Component:
    return next(c for c in (*_COMPONENTS, *_TEKTON_COMPONENTS) if c.binary == binary)


def tekton_version() -> str:
    return pinned_version(_component("tekton-controller"))


def cache_dir() -> Path:
    """One directory per set of pinned versions: Kubernetes, etcd, kwok."""
    versions = [pinned_version(_component(binary)) for binary in ("kube-apiserver", "etcd", "kwok")]
    return cache_root() / "-".join(versions)


def _target_dir(component: _Component) -> Path:
    if component.group is None:
        return cache_dir()
    return cache_root() / f"{component.group}-{pinned_version(component)}"


def ldflags(component: _Component) -> str:
    flags = ["-s", "-w"]
    if component.stamp_kube_version:
        version = pinned_version(component)
        major, minor = version.removeprefix("v").split(".")[:2]
        base = "k8s.io/component-base/version"
        flags += [f"-X {base}.gitVersion={version}", f"-X {base}.gitMajor={major}", f"-X {base}.gitMinor={minor}"]
    return " ".join(flags)


def recipe(component: _Component) -> dict[str, str]:
    """Everything a cached binary depends on; a different recipe means a rebuild."""
    module = _module_dir(component)
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        try:
            digest.update((module / name).read_bytes())
        except OSError as exc:
            raise ControlPlaneError(f"cannot read {module / name}: {exc.strerror}") from None
    return {
        "package": component.package,
        "version": pinned_version(component),
        "flags": " ".join(_BUILD_FLAGS),
        "ldflags": ldflags(component),
        "env": " ".join(f"{k}={v}" for k, v in sorted(_BUILD_ENV.items())),
        "modules": digest.hexdigest(),
    }


def _stamp_path(binary: Path) -> Path:
    return binary.with_name(f"{binary.name}.json")


def _read_stamp(binary: Path) -> dict[str, Any]:
    try:
        stamp: dict[str, Any] = json.loads(_stamp_path(binary).read_text())
    except (OSError, ValueError):
        return {}
    return stamp


def _cached(component: _Component) -> Path | None:
    path = _target_dir(component) / component.binary
    if not path.is_file():
        return None
    stamp = _read_stamp(path)
    return path if stamp.get("recipe") == recipe(component) else None


def _from_assets(component: _Component) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets or component.group is not None:
        return None
    if not all((Path(assets) / name).is_file() for name in _FROM_ENVTEST):
        raise ControlPlaneError(f"KUBEBUILDER_ASSETS={assets} does not contain both kube-apiserver and etcd")
    path = Path(assets) / component.binary
    return path if path.is_file() else None


def _found(component: _Component) -> Path | None:
    return _from_assets(component) or _cached(component)


def _binaries(paths: dict[str, Path]) -> ControlPlaneBinaries:
    return ControlPlaneBinaries(**{name.replace("-", "_"): path for name, path in paths.items()})


def find_binaries() -> ControlPlaneBinaries | None:
    """Binaries ready to use without building, or None."""
    paths = {c.binary: _found(c) for c in _COMPONENTS}
    if any(path is None for path in paths.values()):
        return None
    return _binaries({name: path for name, path in paths.items() if path is not None})


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise ControlPlaneError(
            "the Go toolchain is needed to build the control plane once: install Go 1.26 "
            "or newer (e.g. https://go.dev/dl), or set KUBEBUILDER_ASSETS to a directory holding "
            "etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok"
        )
    return go


def _go_version(go: str) -> str:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _build(component: _Component, out: Path, go: str, say: Callable[[str], None]) -> None:
    # The machine's Go unless GOTOOLCHAIN says otherwise (kwok needs Go 1.26: GOTOOLCHAIN=auto fetches it).
    env = {**os.environ, "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local"), **_BUILD_ENV}
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")  # builds in two processes do not mix
    started = time.monotonic()
    cmd = [go, "build", "-v", *_BUILD_FLAGS, f"-ldflags={ldflags(component)}", "-o", str(tmp), component.package]
    output: list[str] = []
    compiled = 0
    last_note = started
    with subprocess.Popen(
        cmd,
        cwd=_module_dir(component),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line.rstrip())
            if line.startswith("go: downloading"):
                say(f"controlplane:   {line.strip()}")
            elif not line.startswith(("go: ", "#")) and " " not in line.strip():
                compiled += 1  # `go build -v` names each package it compiles
            if time.monotonic() - last_note >= _PROGRESS_EVERY:
                last_note = time.monotonic()
                say(f"controlplane:   {component.binary}: {compiled} packages compiled, {last_note - started:.0f}s")
    if proc.returncode != 0:
        tail = "\n".join(output[-30:])
        raise ControlPlaneError(f"building {component.binary} failed:\n{tail}")
    tmp.rename(out)
    seconds = time.monotonic() - started
    stamp = {"recipe": recipe(component), "go": _go_version(go), "buildSeconds": round(seconds)}
    _stamp_path(out).write_text(json.dumps(stamp, indent=2) + "\n")
    say(f"controlplane: built {component.binary} {pinned_version(component)} in {seconds:.0f}s")


def _build_missing(components: tuple[_Component, ...], log: Callable[[str], None] | None) -> dict[str, Path]:
    """Build what is missing or stale into the cache; prints progress; reuses the rest."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    paths: dict[str, Path] = {}
    for component in components:
        found = _found(component)
        if found:
            say(f"controlplane: {component.binary} {pinned_version(component)} ready at {found}")
            paths[component.binary] = found
            continue
        target = _target_dir(component)
        target.mkdir(parents=True, exist_ok=True)
        paths[component.binary] = target / component.binary
        why = "its recipe changed" if paths[component.binary].is_file() else "once, minutes when cold"
        say(f"controlplane: building {component.binary} {pinned_version(component)} ({why})...")
        _build(component, paths[component.binary], _go(), say)
    return paths


def build_binaries(log: Callable[[str], None] | None = None) -> ControlPlaneBinaries:
    return _binaries(_build_missing(_COMPONENTS, log))


def ensure_binaries() -> ControlPlaneBinaries:
    return find_binaries() or build_binaries()


def find_tekton_binaries() -> TektonBinaries | None:
    """Tekton's binaries and crane if all are cached with their current recipe, else None."""
    paths = {c.binary: _cached(c) for c in _TEKTON_COMPONENTS}
    controller, resolvers, crane = paths["tekton-controller"], paths["tekton-resolvers"], paths["crane"]
    if controller is None or resolvers is None or crane is None:
        return None
    return TektonBinaries(controller=controller, resolvers=resolvers, crane=crane)


def build_tekton_binaries(log: Callable[[str], None] | None = None) -> TektonBinaries:
    """Tekton's controller and resolvers, and crane: built on first use, not by `make setup`."""
    paths = _build_missing(_TEKTON_COMPONENTS, log)
    return TektonBinaries(
        controller=paths["tekton-controller"], resolvers=paths["tekton-resolvers"], crane=paths["crane"]
    )


def tekton_module_dir() -> Path:
    """The pinned Tekton module's source in the Go module cache (its `config/` manifests)."""
    version = tekton_version()
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"github.com/tektoncd/pipeline@{version}"],
        cwd=tools_dir() / "tekton",
        env={**os.environ, "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise ControlPlaneError(
            f"go mod download github.com/tektoncd/pipeline@{version} failed: {out.stdout}{out.stderr}"
        )
    return Path(json.loads(out.stdout)["Dir"])


def main() -> int:
    try:
        if "--tekton" in sys.argv[1:]:
            build_tekton_binaries()
        else:
            build_binaries()
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
