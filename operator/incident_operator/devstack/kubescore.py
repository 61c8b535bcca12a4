"""Build (once) kube-score, the best-practice checker the chart is scored with.

kube-score's go.mod has no replace directives, so, like helm, it is
`go install`ed from the module proxy at a pinned version, into a versioned
directory under the same cache root as the control plane, helm and
Alertmanager, and reused while the pin does not change. It runs offline on
`helm template` output (tests/test_chart_score.py).

    python -m incident_operator.devstack.kubescore   # build or reuse, print the path
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .binaries import CACHE_ROOT, go_install, locked_cache

# The newest release the Go module proxy served (`go list -m -versions
# github.com/zegl/kube-score`).
KUBE_SCORE_VERSION = "v1.20.0"
KUBE_SCORE_MODULE = "github.com/zegl/kube-score"


def cache_dir(version: str = KUBE_SCORE_VERSION) -> Path:
    return CACHE_ROOT / f"kube-score-{version}"


def ensure_kube_score(*, version: str = KUBE_SCORE_VERSION, log: bool = True) -> Path:
    """Return the path of kube-score `version`, building it when the cache lacks it."""
    with locked_cache(cache_dir(version)) as target:
        binary = target / "kube-score"
        if not binary.exists():
            say = _say if log else _quiet
            say(f"building kube-score {version}")
            # Its goreleaser stamps these; without them `kube-score version`
            # says "development".
            ldflags = " ".join(
                [
                    "-s -w",
                    f"-X main.version={version.lstrip('v')}",
                    f"-X main.date={_release_time(version, cwd=target)}",
                ]
            )
            go_install(f"{KUBE_SCORE_MODULE}/cmd/kube-score", version,
                       binary=binary, ldflags=ldflags, say=say)  # fmt: skip
    return binary


def _release_time(version: str, *, cwd: Path) -> str:
    """The release's time as the module proxy records it, so two builds are identical.

    Outside any module, `go mod download -json module@version` fetches the
    module (or finds it in the module cache) and names its .info file.
    """
    go = shutil.which("go") or "go"
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{KUBE_SCORE_MODULE}@{version}"],
        cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    try:
        info = json.loads(download.stdout)
        return str(json.loads(Path(info["Info"]).read_text())["Time"])
    except (KeyError, OSError, ValueError):
        # The build that follows says what went wrong, if anything did.
        return "unknown"


def _say(message: str) -> None:
    print(f"[kube-score] {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


def main() -> None:
    print(f"kube-score {KUBE_SCORE_VERSION}: {ensure_kube_score()}")


if __name__ == "__main__":
    main()
