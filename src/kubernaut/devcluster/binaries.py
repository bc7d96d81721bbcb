"""Find or build the control-plane binaries (kube-apiserver, etcd).

Order: `KUBEBUILDER_ASSETS` (binaries from setup-envtest or a package), then the cache
`~/.cache/kubernaut/controlplane/<k8s>-<etcd>/`, else a build from the pinned Go modules in
`tools/controlplane/` with the machine's Go toolchain.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernaut.errors import ControlPlaneError

_REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ControlPlaneBinaries:
    kube_apiserver: Path
    etcd: Path


@dataclass(frozen=True)
class _Component:
    binary: str
    module_dir: str
    package: str
    version_module: str


_COMPONENTS = (
    _Component("etcd", "etcd", "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
    _Component("kube-apiserver", "apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes"),
)


def source_dir() -> Path:
    return Path(os.environ.get("KUBERNAUT_CONTROLPLANE_SRC", _REPO_ROOT / "tools" / "controlplane"))


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubernaut" / "controlplane"


def pinned_version(component: _Component) -> str:
    """The version a component's go.mod pins (the single source of truth)."""
    go_mod = source_dir() / component.module_dir / "go.mod"
    try:
        text = go_mod.read_text()
    except OSError as exc:
        raise ControlPlaneError(f"cannot read {go_mod}: {exc.strerror}") from None
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(component.version_module)}\s+(v\S+)", text, re.M)
    if not match:
        raise ControlPlaneError(f"{go_mod} does not pin {component.version_module}")
    return match.group(1)


def cache_dir() -> Path:
    versions = "-".join(pinned_version(c) for c in reversed(_COMPONENTS))
    return cache_root() / versions


def _from_assets() -> ControlPlaneBinaries | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return None
    found = ControlPlaneBinaries(Path(assets) / "kube-apiserver", Path(assets) / "etcd")
    if not (found.kube_apiserver.is_file() and found.etcd.is_file()):
        raise ControlPlaneError(f"KUBEBUILDER_ASSETS={assets} does not contain both kube-apiserver and etcd")
    return found


def find_binaries() -> ControlPlaneBinaries | None:
    """Binaries ready to use without building, or None."""
    assets = _from_assets()
    if assets:
        return assets
    cached = ControlPlaneBinaries(cache_dir() / "kube-apiserver", cache_dir() / "etcd")
    if cached.kube_apiserver.is_file() and cached.etcd.is_file():
        return cached
    return None


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise ControlPlaneError(
            "the Go toolchain is needed to build kube-apiserver and etcd once: install Go 1.24 "
            "or newer (e.g. `apt-get install golang` or https://go.dev/dl), or set "
            "KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd"
        )
    return go


def build_binaries(log: Callable[[str], None] | None = None) -> ControlPlaneBinaries:
    """Build both binaries into the cache; prints progress; reuses what is already there."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    go = _go()
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    for component in _COMPONENTS:
        out = target / component.binary
        if out.is_file():
            say(f"controlplane: {component.binary} {pinned_version(component)} already built at {out}")
            continue
        say(
            f"controlplane: building {component.binary} {pinned_version(component)} (first time only, a few minutes)..."
        )
        started = time.monotonic()
        tmp = out.with_suffix(".partial")
        cmd = [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), component.package]
        proc = subprocess.Popen(
            cmd,
            cwd=source_dir() / component.module_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        output: list[str] = []
        for line in proc.stdout:
            output.append(line.rstrip())
            if line.startswith("go: downloading"):
                say(f"controlplane:   {line.strip()}")
        if proc.wait() != 0:
            tail = "\n".join(output[-30:])
            raise ControlPlaneError(f"building {component.binary} failed:\n{tail}")
        tmp.rename(out)
        say(f"controlplane: built {component.binary} in {time.monotonic() - started:.0f}s")
    return ControlPlaneBinaries(target / "kube-apiserver", target / "etcd")


def ensure_binaries() -> ControlPlaneBinaries:
    return find_binaries() or build_binaries()


def main() -> int:
    try:
        found = ensure_binaries()
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"kube-apiserver: {found.kube_apiserver}\netcd: {found.etcd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
