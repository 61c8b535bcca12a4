"""Build (once) the Kubernetes binaries that tests and the dev stack run.

There is no Docker here, so tests and `incident-operator dev` run a real
kube-apiserver and etcd as plain processes; the one-node cluster tests add
a kubelet, kube-controller-manager, kube-scheduler and kube-proxy. All are
compiled from Go modules by the small module in `tests/controlplane/` (see
its `update.sh` for how the versions are pinned) into one cache outside the
repository, keyed by those versions and by go.sum, so a second run finds
them and starts in seconds. Every Kubernetes command is built the same way
(`_kubernetes_command`); the node's are built only when asked for.

    python -m incident_operator.devstack.binaries          # control plane: build or reuse
    python -m incident_operator.devstack.binaries --node   # and the node's binaries
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
GO_MODULE = Path(
    os.environ.get("INCIDENT_OPERATOR_GO_MODULE", REPO_ROOT / "tests" / "controlplane")
)
CACHE_ROOT = Path(
    os.environ.get(
        "INCIDENT_OPERATOR_CACHE",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "incident-operator",
    )
)

KUBERNETES_COMMANDS = "k8s.io/kubernetes/cmd"
ETCD = "./etcd"


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    kubernetes_version: str
    etcd_version: str


@dataclass(frozen=True)
class NodeBinaries:
    """What turns the control plane into a one-node cluster."""

    kubelet: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kube_proxy: Path
    kubernetes_version: str


def pinned_versions(go_module: Path = GO_MODULE) -> tuple[str, str]:
    """The Kubernetes and etcd versions that go.mod pins."""
    gomod = (go_module / "go.mod").read_text()
    k8s = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", gomod, re.M)
    etcd = re.search(r"^\s*go\.etcd\.io/etcd/server/v3 (v\S+)", gomod, re.M)
    if not k8s or not etcd:
        raise RuntimeError(f"{go_module}/go.mod does not pin k8s.io/kubernetes and etcd")
    return k8s.group(1), etcd.group(1)


def cache_dir(go_module: Path = GO_MODULE) -> Path:
    k8s, etcd = pinned_versions(go_module)
    digest = hashlib.sha256((go_module / "go.sum").read_bytes()).hexdigest()[:12]
    return CACHE_ROOT / f"controlplane-{k8s}-etcd-{etcd}-{digest}"


def ensure_binaries(*, go_module: Path = GO_MODULE, log: bool = True) -> Binaries:
    """Return the control-plane binaries, building what the cache lacks."""
    k8s, etcd = pinned_versions(go_module)
    with _build_lock(go_module) as target:
        say = _say if log else _quiet
        apiserver = _kubernetes_command(go_module, "kube-apiserver", target, say)
        etcd_bin = _build(go_module, ETCD, target / "etcd", "", say)
        system_kubectl = shutil.which("kubectl")
        if system_kubectl:
            kubectl = Path(system_kubectl)
        else:
            kubectl = _kubernetes_command(go_module, "kubectl", target, say)
    return Binaries(apiserver, etcd_bin, kubectl, k8s, etcd)


def ensure_node_binaries(*, go_module: Path = GO_MODULE, log: bool = True) -> NodeBinaries:
    """Return the node's binaries (same release, same cache), building what it lacks."""
    k8s, _ = pinned_versions(go_module)
    with _build_lock(go_module) as target:
        say = _say if log else _quiet
        built = {
            name: _kubernetes_command(go_module, name, target, say)
            for name in ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy")
        }
    return NodeBinaries(
        kubelet=built["kubelet"],
        kube_controller_manager=built["kube-controller-manager"],
        kube_scheduler=built["kube-scheduler"],
        kube_proxy=built["kube-proxy"],
        kubernetes_version=k8s,
    )


def _build_lock(go_module: Path) -> contextlib.AbstractContextManager[Path]:
    return locked_cache(cache_dir(go_module))


@contextlib.contextmanager
def locked_cache(target: Path) -> Iterator[Path]:
    """A versioned cache directory, held by this process alone while in use.

    One builder at a time: parallel test sessions would otherwise compile the
    same binary twice and race on the rename. Every tool built from Go here
    (control plane, node, helm, Alertmanager) goes through it.
    """
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield target


def _kubernetes_command(
    go_module: Path, name: str, target: Path, say: Callable[[str], None]
) -> Path:
    """Build k8s.io/kubernetes/cmd/<name> at the pinned release, version stamped."""
    k8s, _ = pinned_versions(go_module)
    minor = k8s.lstrip("v").split(".")[1]
    # Without these, /version and `kubelet --version` say v0.0.0 and helm's
    # kubeVersion checks fail.
    ldflags = " ".join(
        f"-X k8s.io/component-base/version.{key}={value}"
        for key, value in {
            "gitVersion": k8s,
            "gitMajor": "1",
            "gitMinor": minor,
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
        }.items()
    )
    return _build(go_module, f"{KUBERNETES_COMMANDS}/{name}", target / name, ldflags, say)


def _build(
    go_module: Path, package: str, output: Path, ldflags: str, say: Callable[[str], None]
) -> Path:
    if output.exists():
        return output
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("building the local control plane needs Go (`go` is not on PATH)")
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}
    deps = subprocess.run(
        [go, "list", "-deps", package], cwd=go_module, env=env, capture_output=True, text=True
    )
    if deps.returncode != 0:
        raise RuntimeError(f"go list {package} failed:\n{deps.stderr[-4000:]}")
    total = len(deps.stdout.split())
    say(f"building {output.name} ({total} packages; a cold build takes many minutes)")
    partial = output.with_name(output.name + ".partial")
    command = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(partial), package]
    started = time.monotonic()
    go_build(command, name=output.name, cwd=go_module, env=env, say=say, total=total)
    partial.rename(output)
    say(f"built {output} in {time.monotonic() - started:.0f}s")
    return output


def go_build(
    command: list[str],
    *,
    name: str,
    cwd: Path,
    env: dict[str, str],
    say: Callable[[str], None],
    total: int | None = None,
    every: float = 30.0,
) -> None:
    """Run `go build -v ...`, saying how far it got every `every` seconds.

    `go build -v` names each package as it compiles it: counted, they make a
    progress line instead of thousands of lines of noise (the first build
    also downloads the dependencies). A failure raises with the output's tail.
    """
    started = last_report = time.monotonic()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    tail = collections.deque[str](maxlen=40)
    for compiled, line in enumerate(process.stdout, start=1):
        tail.append(line)
        now = time.monotonic()
        if now - last_report >= every:
            done = f"{min(compiled, total)}/{total}" if total else str(compiled)
            say(f"  {name}: {done} packages, {now - started:.0f}s")
            last_report = now
    if process.wait() != 0:
        raise RuntimeError(f"building {name} failed:\n{''.join(tail)}")


def go_install(
    package: str,
    version: str,
    *,
    binary: Path,
    ldflags: str,
    say: Callable[[str], None],
) -> None:
    """`go install package@version` into `binary`, for a module that, unlike
    Kubernetes, needs no replace directives (helm, kube-score).

    Run outside any module, so the tool's own go.mod decides. `go install` has
    no -o: it installs into a scratch GOBIN, then the binary is renamed, so an
    interrupted build never leaves a half-written one that looks done.
    """
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"building {binary.name} needs Go (`go` is not on PATH)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="build-", dir=binary.parent) as scratch:
        env = {**os.environ, "GOBIN": scratch, "GOWORK": "off", "CGO_ENABLED": "0",
               "GOFLAGS": "-buildvcs=false"}  # fmt: skip
        command = [go, "install", "-v", "-trimpath", "-ldflags", ldflags, f"{package}@{version}"]
        go_build(command, name=binary.name, cwd=Path(scratch), env=env, say=say, every=15)
        (Path(scratch) / package.rsplit("/", 1)[1]).rename(binary)
    say(f"built {binary} in {time.monotonic() - started:.0f}s")


def _say(message: str) -> None:
    print(f"[controlplane] {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m incident_operator.devstack.binaries")
    parser.add_argument(
        "--node", action="store_true", help="also kubelet, controller-manager, scheduler, proxy"
    )
    arguments = parser.parse_args()
    binaries = ensure_binaries()
    print(f"kube-apiserver {binaries.kubernetes_version}: {binaries.kube_apiserver}")
    print(f"etcd {binaries.etcd_version}: {binaries.etcd}")
    print(f"kubectl: {binaries.kubectl}")
    if arguments.node:
        node = ensure_node_binaries()
        print(f"kubelet: {node.kubelet}")
        print(f"kube-controller-manager: {node.kube_controller_manager}")
        print(f"kube-scheduler: {node.kube_scheduler}")
        print(f"kube-proxy: {node.kube_proxy}")


if __name__ == "__main__":
    main()
