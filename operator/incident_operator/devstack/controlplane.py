"""Start a real etcd + kube-apiserver on loopback, for tests and the dev stack.

    with ControlPlane.start() as cp:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)

Everything lives in one temporary directory: etcd's data, the API server's
certificates, the service-account signing key, the admin token and the
kubeconfig. Authorization is RBAC, as in a real cluster, with an admin token
in `system:masters`. There is no controller manager and no kubelet: pods never
run, namespaces never finish deleting, nothing is garbage-collected.

The processes die with their parent (PR_SET_PDEATHSIG), so even a SIGKILLed
test run leaves nothing behind; `stop()` ends them politely first.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .binaries import Binaries, ensure_binaries

_PR_SET_PDEATHSIG = 1
# Services' cluster IPs; the `kubernetes` Service gets the first one.
SERVICE_CIDR = "10.96.0.0/16"


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If the parent dies, even by
    # SIGKILL, the kernel kills the child too: no orphaned API servers. (A
    # SIGTERM would not do: the API server would wait for the dead etcd.)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ControlPlane:
    workdir: Path
    binaries: Binaries
    url: str = ""
    token: str = ""
    kubeconfig: Path = field(default_factory=Path)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _own_workdir: bool = True

    @classmethod
    def start(cls, *, workdir: Path | None = None, timeout: float = 120.0) -> ControlPlane:
        """Build or reuse the binaries, start etcd and kube-apiserver, wait for /readyz."""
        binaries = ensure_binaries()
        own = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="incident-cp-")) if workdir is None else workdir
        plane = cls(workdir=workdir, binaries=binaries, _own_workdir=own)
        try:
            plane._launch(timeout)
        except BaseException:
            plane.stop()
            raise
        return plane

    @property
    def service_account_key(self) -> Path:
        """The key that signs (and verifies) ServiceAccount tokens."""
        return self.workdir / "sa.key"

    @property
    def ca_file(self) -> Path:
        """What verifies the API server's serving certificate (the kubeconfig's CA)."""
        return self.workdir / "certs" / "apiserver.crt"

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self, timeout: float) -> None:
        etcd_url = self._start_etcd()
        for attempt in range(3):
            port = free_port()
            self.url = f"https://127.0.0.1:{port}"
            apiserver = self._start_apiserver(etcd_url, port)
            try:
                self._wait_ready(apiserver, timeout)
                break
            except _PortTaken:
                # Another process took the port between our probe and bind.
                apiserver.kill()
                apiserver.wait()
                self.processes.remove(apiserver)
                if attempt == 2:
                    raise
        self._write_kubeconfig()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            cwd=self.workdir,
        )
        log.close()
        self.processes.append(process)
        return process

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        process = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"etcd exited early:\n{self._tail('etcd')}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{client_url}/health", timeout=1) as response,
            ):
                if json.load(response).get("health") == "true":
                    return client_url
            time.sleep(0.1)
        raise TimeoutError(f"etcd not healthy after 30s:\n{self._tail('etcd')}")

    def _start_apiserver(self, etcd_url: str, port: int) -> subprocess.Popen[bytes]:
        key_file = self.workdir / "sa.key"
        if not key_file.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            self.token = secrets.token_urlsafe(32)
            # token,user,uid,"group1,group2"
            (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        return self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--secure-port={port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # No kubernetes Service endpoints to keep: nothing in-cluster
                # dials the API server here, and loopback is refused for them.
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={key_file}",
                f"--service-account-signing-key-file={key_file}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--allow-privileged=true",
                "--shutdown-delay-duration=0s",
                "--v=1",
            ],
        )

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"}
        )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = self._tail("kube-apiserver")
                if "address already in use" in tail:
                    raise _PortTaken()
                raise RuntimeError(f"kube-apiserver exited early:\n{tail}")
            try:
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                last = f"/readyz answered {error.code}"
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        tail = self._tail("kube-apiserver")
        raise TimeoutError(f"kube-apiserver not ready after {timeout:.0f}s ({last}):\n{tail}")

    def _write_kubeconfig(self) -> None:
        # The API server signs its serving certificate itself (--cert-dir);
        # trust exactly that certificate rather than skipping verification.
        ca = (self.workdir / "certs" / "apiserver.crt").read_bytes()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """End the processes (SIGTERM, then SIGKILL) and remove the work directory."""
        # One at a time, newest first: the API server shuts down cleanly only
        # while etcd is still there to answer it.
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane."""
        return subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=check,
        )


class _PortTaken(Exception):
    pass


def main() -> None:
    """Start a control plane and keep it until Ctrl-C: `python -m ...controlplane`."""
    with ControlPlane.start() as plane:
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
