"""Build (once) the `helm` binary that tests and the dev stack use.

helm's go.mod has no replace directives, so unlike kube-apiserver it can be
`go install`ed straight from the module proxy at a pinned version. The
binary goes into a versioned directory next to the control plane's, under
the same cache root, and is reused while the pin does not change.

    python -m incident_operator.devstack.helm      # build or reuse, print the path
"""

from __future__ import annotations

import sys
from pathlib import Path

from .binaries import CACHE_ROOT, go_install, locked_cache

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
    say = _say if log else _quiet
    # Without the version ldflag `helm version` says "v4.3" and charts'
    # kubeVersion / helm version checks see the wrong thing.
    ldflags = " ".join(
        [
            "-s -w",
            f"-X {HELM_MODULE}/internal/version.version={version}",
            f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
        ]
    )
    say(f"building helm {version} (a cold build takes a few minutes)")
    go_install(f"{HELM_MODULE}/cmd/helm", version, binary=binary, ldflags=ldflags, say=say)


def _say(message: str) -> None:
    print(f"[helm] {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


def main() -> None:
    print(f"helm {HELM_VERSION}: {ensure_helm()}")


if __name__ == "__main__":
    main()
