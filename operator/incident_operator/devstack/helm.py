"""Build (once) the `helm` binary that tests and the dev stack use.

helm's go.mod has no replace directives, so unlike kube-apiserver it can be
`go install`ed straight from the module proxy at a pinned version. The
binary goes into a versioned directory next to the control plane's, under
the same cache root, and is reused while the pin does not change.

    python -m incident_operator.devstack.helm      # build or reuse, print the path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .binaries import CACHE_ROOT, locked_cache

# The newest release the Go module proxy served (`go list -m -versions
# helm.sh/helm/v4`). The chart itself sticks to apiVersion v2 features, so
# helm 3 users can install it too.
HELM_VERSION = "v4.3.2"
HELM_MODULE = "helm.sh/helm/v4"


def cache_dir(version: str = HELM_VERSION) -> Path:
    return CACHE_ROOT / f"helm-{version}"


def ensure_helm(*, version: str = HELM_VERSION, log: bool = True) -> Path:
    """Return the path of helm `version`, building it when the cache lacks it."""
    with locked_cache(cache_dir(version)) as target:
        binary = target / "helm"
        if not binary.exists():
            _build(version, binary, log=log)
    return binary


def _build(version: str, binary: Path, *, log: bool) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("building helm needs Go (`go` is not on PATH)")
    # `go install` has no -o: install into a scratch GOBIN, then rename, so an
    # interrupted build never leaves a half-written `helm` that looks done.
    scratch = binary.parent / "partial"
    shutil.rmtree(scratch, ignore_errors=True)
    # Without the version ldflag `helm version` says "v4.3" and charts'
    # kubeVersion / helm version checks see the wrong thing.
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {HELM_MODULE}/internal/version.version={version}",
            f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
        ]
    )
    env = {**os.environ, "GOBIN": str(scratch), "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    command = [go, "install", "-trimpath", "-ldflags", ldflags, f"{HELM_MODULE}/cmd/helm@{version}"]
    if log:
        _say(f"building helm {version} (a cold build takes a few minutes)")
    started = time.monotonic()
    # Outside any module: `go install pkg@version` then uses helm's own go.mod.
    result = subprocess.run(command, env=env, cwd=binary.parent, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building helm {version} failed:\n{result.stderr[-4000:]}")
    (scratch / "helm").rename(binary)
    scratch.rmdir()
    if log:
        _say(f"built {binary} in {time.monotonic() - started:.0f}s")


def _say(message: str) -> None:
    print(f"[helm] {message}", file=sys.stderr, flush=True)


def main() -> None:
    print(f"helm {HELM_VERSION}: {ensure_helm()}")


if __name__ == "__main__":
    main()
