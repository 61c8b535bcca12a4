"""Build (once) the Prometheus Alertmanager that the interop tests run.

`go install github.com/prometheus/alertmanager/cmd/alertmanager@VERSION`
fails: the web UI is embedded with `//go:embed app/dist`, and the module zip
ships without the built UI, so the pattern matches nothing. The tests never
use the UI, so the builder copies the module's source out of the (read-only)
module cache, adds a placeholder `ui/app/dist/{elm,mantine}/index.html`, and
builds `./cmd/alertmanager` with the module's own go.mod and go.sum. The
binary goes into a versioned directory under the same cache root as the
control plane and helm, and is reused while the pin does not change.

    python -m incident_operator.devstack.alertmanager   # build or reuse, print the path
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from .binaries import CACHE_ROOT, go_build, locked_cache

ALERTMANAGER_VERSION = "v0.35.0"
ALERTMANAGER_MODULE = "github.com/prometheus/alertmanager"
# Where `alertmanager --version` reads its version from (promu's ldflags).
VERSION_PACKAGE = "github.com/prometheus/common/version"
PLACEHOLDER_UI = ("ui/app/dist/elm/index.html", "ui/app/dist/mantine/index.html")


def cache_dir(version: str = ALERTMANAGER_VERSION) -> Path:
    return CACHE_ROOT / f"alertmanager-{version}"


def ensure_alertmanager(*, version: str = ALERTMANAGER_VERSION, log: bool = True) -> Path:
    """Return the path of alertmanager `version`, building it when the cache lacks it."""
    with locked_cache(cache_dir(version)) as target:
        binary = target / "alertmanager"
        if not binary.exists():
            _build(version, binary, log=log)
    return binary


def _build(version: str, binary: Path, *, log: bool) -> None:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("building alertmanager needs Go (`go` is not on PATH)")
    say = _say if log else _quiet
    # GOWORK=off: a go.work above the build directory must not take part.
    env = {
        **os.environ,
        "GOFLAGS": "-mod=readonly -buildvcs=false",
        "GOWORK": "off",
        "CGO_ENABLED": "0",
    }
    started = time.monotonic()
    say(f"building alertmanager {version} (a cold build takes a few minutes)")
    with tempfile.TemporaryDirectory(prefix="build-", dir=binary.parent) as scratch:
        # Outside any module, `go mod download -json module@version` fetches
        # the module (or finds it in the module cache) and says where it is.
        download = _run([go, "mod", "download", "-json", f"{ALERTMANAGER_MODULE}@{version}"],
                        cwd=Path(scratch), env=env)  # fmt: skip
        info = json.loads(download)
        if info.get("Error"):
            raise RuntimeError(f"go mod download {ALERTMANAGER_MODULE}@{version}: {info['Error']}")
        source = Path(scratch) / "src"
        _copy_writable(Path(info["Dir"]), source)
        for placeholder in PLACEHOLDER_UI:
            page = source / placeholder
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(
                "<!doctype html><title>Alertmanager</title>"
                "<p>This build has no web UI (built by incident-operator for tests).</p>\n"
            )
        ldflags = " ".join(
            [
                "-s -w",
                f"-X {VERSION_PACKAGE}.Version={version.lstrip('v')}",
                f"-X {VERSION_PACKAGE}.Branch=HEAD",
                f"-X {VERSION_PACKAGE}.BuildUser=incident-operator",
                f"-X {VERSION_PACKAGE}.BuildDate={_release_date(info)}",
            ]
        )
        partial = binary.with_name(binary.name + ".partial")
        command = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(partial),
                   "./cmd/alertmanager"]  # fmt: skip
        go_build(command, name="alertmanager", cwd=source, env=env, say=say, every=15)
        # Rename only a finished binary: an interrupted build leaves nothing
        # that looks done.
        partial.rename(binary)
    size = binary.stat().st_size / 1e6
    say(f"built {binary} ({size:.0f} MB) in {time.monotonic() - started:.0f}s")


def _run(command: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{result.stderr[-4000:]}{result.stdout[-4000:]}"
        )
    return result.stdout


def _copy_writable(source: Path, destination: Path) -> None:
    """Copy the module's source; the module cache's files and folders are read-only."""
    shutil.copytree(source, destination, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(destination):
        os.chmod(folder, 0o755)


def _release_date(download: dict[str, str]) -> str:
    """The release's time (from the module's .info) as promu writes BuildDate,
    so that two builds of one version are identical."""
    try:
        moment = json.loads(Path(download["Info"]).read_text())["Time"]
    except (KeyError, OSError, ValueError):
        return "unknown"
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).strftime("%Y%m%d-%H:%M:%S")


def _say(message: str) -> None:
    print(f"[alertmanager] {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


def main() -> None:
    print(f"alertmanager {ALERTMANAGER_VERSION}: {ensure_alertmanager()}")


if __name__ == "__main__":
    main()
