"""Build the product's image from the repository's Dockerfile, without Docker.

There is no Docker engine here, so the one-node cluster tests build the image
the way a Docker user would, with buildah instead:

1. A local base image standing in for `python:3.11-slim-bookworm`:
   `debootstrap --variant=minbase bookworm` plus Debian's python3, a venv
   first on PATH (so `python` and `pip` are the commands the Dockerfile
   calls), and this machine's CA certificates (TLS is intercepted here, and
   pip inside the build must trust it). Built once, tagged by a hash of what
   goes into it, and kept in a buildah store under the cache root.
2. `buildah bud --isolation chroot --build-arg PYTHON_IMAGE=<that base>` of the
   Dockerfile as it is, with layer caching, so an unchanged tree rebuilds in
   seconds.
3. A pause image (Kubernetes' own pause.c, compiled statically) for the
   sandboxes, since no registry is reachable to pull one from.

Images leave the store as archives that `ctr images import` reads.

    python -m incident_operator.devstack.image     # base and pause: build or reuse
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .binaries import CACHE_ROOT, REPO_ROOT, pinned_versions

SUITE = "bookworm"
# What the base image holds besides minbase: the interpreter, venv support
# (ensurepip's wheels), the CA store.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bump when the recipe below changes in a way the hash cannot see.
BASE_RECIPE = "2"
BASE_VENV = "/usr/local/python"
BASE_PATH = f"{BASE_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MACHINE_CA_DIR = Path("/usr/local/share/ca-certificates")
PAUSE_VERSION = "3.10"

STORE = CACHE_ROOT / "images"


@dataclass(frozen=True)
class BuiltImage:
    name: str
    archive: Path
    size_bytes: int
    seconds: float


def _buildah_command(*args: str) -> list[str]:
    # The project's own store under the cache, never the machine's default one.
    store = ["--root", str(STORE / "storage"), "--runroot", str(STORE / "run")]
    return ["buildah", *store, "--storage-driver", "overlay", *args]


def buildah(*args: str) -> str:
    result = subprocess.run(_buildah_command(*args), capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stderr[-4000:] + result.stdout[-4000:]
        raise RuntimeError(f"buildah {' '.join(args[:2])} failed:\n{output}")
    return result.stdout


def _has(name: str) -> bool:
    inspect = _buildah_command("inspect", "--type", "image", name)
    return subprocess.run(inspect, capture_output=True).returncode == 0


def ensure_base_image(*, log: bool = True) -> str:
    """The local stand-in for python:3.11-slim-bookworm; built when missing."""
    name = f"localhost/incident-operator-base:{_base_digest()}"
    if _has(name):
        return name
    started = time.monotonic()
    _say(f"building the base image {name} (debootstrap {SUITE}, about a minute)", log)
    with tempfile.TemporaryDirectory(prefix="base-", dir=_scratch()) as scratch:
        rootfs = Path(scratch) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                _debian_mirror(),
            ]
        )
        for certificate in sorted(MACHINE_CA_DIR.glob("*.crt")):
            shutil.copy(certificate, rootfs / "usr/local/share/ca-certificates")
        _run(["chroot", str(rootfs), "update-ca-certificates"])
        # The venv stands in for the python image's /usr/local/bin: `python`
        # and `pip` are the commands the Dockerfile calls.
        _run(["chroot", str(rootfs), "python3", "-m", "venv", BASE_VENV])
        # A slim image: no apt lists, no docs.
        for leftover in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(rootfs / leftover, ignore_errors=True)
        with _new_image(name) as container:
            mountpoint = Path(buildah("mount", container).strip())
            _run(["cp", "-a", f"{rootfs}/.", str(mountpoint)])
            buildah("umount", container)
            buildah(
                "config",
                "--env",
                f"PATH={BASE_PATH}",
                # pip trusts the system store (with this machine's CA) in the build stage.
                "--env",
                "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
                "--cmd",
                "python3",
                container,
            )
    _say(f"built {name} in {time.monotonic() - started:.0f}s", log)
    return name


@contextlib.contextmanager
def _new_image(name: str) -> Iterator[str]:
    """A working container from scratch, committed as `name` if the block succeeds."""
    container = buildah("from", "scratch").strip()
    try:
        yield container
        buildah("commit", "--rm", container, name)
    except BaseException:
        subprocess.run(_buildah_command("rm", container), capture_output=True)
        raise


def _base_digest() -> str:
    """What the base image is made of: recipe, suite, packages, the machine's CAs."""
    digest = hashlib.sha256(f"{BASE_RECIPE}|{SUITE}|{','.join(BASE_PACKAGES)}".encode())
    for certificate in sorted(MACHINE_CA_DIR.glob("*.crt")):
        digest.update(certificate.read_bytes())
    return digest.hexdigest()[:12]


def _debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 or one-line sources)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for stanza in sources.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
            if SUITE in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    raise RuntimeError(f"no apt source for Debian {SUITE} on this machine to debootstrap from")


def pause_image_name() -> str:
    k8s, _ = pinned_versions()
    return f"localhost/incident-operator-pause:{PAUSE_VERSION}-{k8s}"


def ensure_pause_image(*, log: bool = True) -> str:
    """Kubernetes' pause container, built from the pinned release's pause.c."""
    name = pause_image_name()
    if _has(name):
        return name
    started = time.monotonic()
    source = _kubernetes_source() / "build/pause/linux/pause.c"
    with tempfile.TemporaryDirectory(prefix="pause-", dir=_scratch()) as scratch:
        binary = Path(scratch) / "pause"
        _run(["gcc", "-Os", "-Wall", "-static", f"-DVERSION=v{PAUSE_VERSION}-incident",
              "-o", str(binary), str(source)])  # fmt: skip
        _run(["strip", str(binary)])
        with _new_image(name) as container:
            buildah("copy", "--chmod", "0755", container, str(binary), "/pause")
            buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container)
    _say(f"built {name} in {time.monotonic() - started:.0f}s", log)
    return name


def _kubernetes_source() -> Path:
    k8s, _ = pinned_versions()
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("finding pause.c needs Go (`go` is not on PATH)")
    answer = _run([go, "mod", "download", "-json", f"k8s.io/kubernetes@{k8s}"], cwd=_scratch())
    return Path(json.loads(answer)["Dir"])


def build_project_image(*, tag: str, base: str, context: Path = REPO_ROOT, log: bool = True) -> str:
    """`buildah bud` of the repository's Dockerfile, unchanged, on the local base."""
    started = time.monotonic()
    _say(f"building {tag} from {context / 'Dockerfile'}", log)
    buildah(
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--pull-never",
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        "--tag",
        tag,
        "--file",
        str(context / "Dockerfile"),
        str(context),
    )
    # Layers of earlier builds of this tag are garbage now.
    subprocess.run(_buildah_command("rmi", "--prune"), capture_output=True)
    _say(f"built {tag} in {time.monotonic() - started:.0f}s", log)
    return tag


def export_image(name: str, archive: Path, *, reference: str) -> Path:
    """Write `name` as an OCI archive whose image is called `reference`."""
    archive.unlink(missing_ok=True)
    buildah("push", "--quiet", name, f"oci-archive:{archive}:{reference}")
    return archive


def image_size(name: str) -> int:
    """Bytes of the image's layers, uncompressed, as `docker images` shows them."""
    manifest = json.loads(json.loads(buildah("inspect", "--type", "image", name))["Manifest"])
    return sum(int(layer["size"]) for layer in manifest["layers"])


def _run(command: Sequence[str], *, cwd: Path | None = None) -> str:
    result = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])} ... failed:\n{result.stderr[-4000:]}{result.stdout[-2000:]}"
        )
    return result.stdout


def _scratch() -> Path:
    path = STORE / "scratch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _say(message: str, log: bool) -> None:
    if log:
        print(f"[image] {message}", file=sys.stderr, flush=True)


def main() -> None:
    """Build or reuse what does not change with the sources: the base and pause images.
    (The project image is built by the test session, from the tree as it is.)"""
    for name in (ensure_base_image(), ensure_pause_image()):
        print(f"{name}: {image_size(name) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
