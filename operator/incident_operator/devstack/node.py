"""A one-node cluster on this machine, next to a ControlPlane: real pods, no Docker.

    with Node.start(plane, images=[archive, ...]) as node:
        ...  # helm install --wait works; pods run in containerd

What runs, and where:

- containerd (Debian's 1.6: kubelet 1.37 still accepts it, falling back to
  the kubelet's cgroup driver) and the kubelet run inside their own PID and
  mount namespaces, under a small supervisor that is PID 1 there. When that
  supervisor ends, even by SIGKILL when the test run dies, the kernel kills
  every process of the namespace (shims, containers) and drops every mount
  made in it (overlay snapshots, secret volumes, netns bind mounts, shim
  sockets): nothing of that can be left behind.
- kube-controller-manager, kube-scheduler and kube-proxy are plain processes
  that die with their parent, like the control plane's.
- What outlives a crash is host state: the bridge, iptables chains, cgroup
  directories, sysctls, files. `clean_leftovers()` removes all of it, at
  the start of a node (after a crashed run) and at its end.

The network stays on this machine. Pods live on a bridge with their own
range; they get routes to that range and to the Service range only (no
default route); nothing is masqueraded out and nothing is forwarded (a
FORWARD rule drops whatever enters or leaves the bridge). A pod reaches
exactly two kinds of host addresses, through DNAT to loopback: the API
server (the `kubernetes` Service IP) and the host ports a test exposes with
`expose()` (moto, fakes); everything else from the bridge to the host is
rejected. The ranges are checked against the machine's addresses and
routes first, and the node refuses to start when they overlap.

One node per machine (port 10250, the bridge, the cgroup root are global):
a file lock serialises sessions.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .binaries import NodeBinaries, ensure_node_binaries
from .controlplane import SERVICE_CIDR, ControlPlane, _die_with_parent, free_port

NODE_NAME = "localhost"  # resolves to 127.0.0.1: the API server reaches the kubelet there
WORKDIR = Path("/var/tmp/incident-operator-node")
LOCK_FILE = Path("/var/tmp/incident-operator-node.lock")
# Sysctl values before the node changed them; outside WORKDIR, so a crashed
# run's values are restored before anything else is cleaned.
SAVED_SYSCTLS = Path("/var/tmp/incident-operator-node.sysctl.json")
BRIDGE = "incnode0"
POD_CIDR = ipaddress.ip_network("10.244.0.0/24")
GATEWAY = POD_CIDR.network_address + 1
CGROUP_ROOT = "incident-operator-node"
CHAIN = "INCIDENT-NODE"
# Marks of the chains left in iptables by this node: ours, and the kubelet's
# and kube-proxy's (no other Kubernetes node runs here: the lock).
CHAIN_MARKERS = (CHAIN, "KUBE-")
CNI_BIN_DIR = "/usr/lib/cni"


@dataclass
class Node:
    plane: ControlPlane
    binaries: NodeBinaries
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _lock: IO[str] | None = None

    @property
    def containerd_socket(self) -> Path:
        return WORKDIR / "containerd" / "containerd.sock"

    @property
    def gateway(self) -> str:
        """The host's address on the pods' bridge."""
        return str(GATEWAY)

    @classmethod
    def start(cls, plane: ControlPlane, *, images: list[Path], timeout: float = 180.0) -> Node:
        """Bring the node up (images imported into containerd) and wait until it is Ready."""
        node = cls(plane=plane, binaries=ensure_node_binaries())
        node._lock = _take_lock()
        try:
            node._launch(images, timeout)
        except BaseException:
            node.stop()
            raise
        return node

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- bring-up -----------------------------------------------------------------

    def _launch(self, images: list[Path], timeout: float) -> None:
        started = time.monotonic()
        clean_leftovers(self.binaries)
        refuse_overlaps([POD_CIDR, ipaddress.ip_network(SERVICE_CIDR)])
        WORKDIR.mkdir(parents=True)
        self._network()
        self._write_configs()
        self._start_runtime_and_kubelet()
        self._wait_socket(self.containerd_socket, timeout=30)
        for archive in images:
            self.ctr("images", "import", "--no-unpack", str(archive))
        self._spawn("kube-controller-manager", self._controller_manager_argv())
        self._spawn("kube-scheduler", self._scheduler_argv())
        self._spawn("kube-proxy", self._proxy_argv())
        self._wait_ready(timeout)
        self.timings["node_ready_seconds"] = time.monotonic() - started

    def _network(self) -> None:
        """The bridge, routes, sysctls and iptables rules, before any pod exists."""
        _save_sysctls({"net/ipv4/ip_forward": _read_sysctl("net/ipv4/ip_forward")})
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{GATEWAY}/{POD_CIDR.prefixlen}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        # The host reaches Services (kube-proxy's DNAT) from its bridge address.
        _ip("route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", str(GATEWAY))
        # Lets DNAT to 127.0.0.1 work for packets from the bridge; the setting
        # goes away with the bridge.
        _write_sysctl(f"net/ipv4/conf/{BRIDGE}/route_localnet", "1")
        api = urllib.parse.urlsplit(self.plane.url)
        service_ip = str(ipaddress.ip_network(SERVICE_CIDR).network_address + 1)
        rules = [
            # The API server, as pods find it: the `kubernetes` Service IP.
            ("nat", ["-N", f"{CHAIN}-DNAT"]),
            ("nat", ["-A", f"{CHAIN}-DNAT", "-d", service_ip, "-p", "tcp", "--dport", "443",
                     "-j", "DNAT", "--to-destination", f"127.0.0.1:{api.port}"]),
            ("nat", ["-I", "PREROUTING", "1", "-i", BRIDGE, "-j", f"{CHAIN}-DNAT"]),
            # From the bridge to the host: answers, and what was DNATed above.
            ("filter", ["-N", f"{CHAIN}-INPUT"]),
            ("filter", ["-A", f"{CHAIN}-INPUT", "-m", "conntrack", "--ctstate",
                        "ESTABLISHED,RELATED,DNAT", "-j", "ACCEPT"]),
            ("filter", ["-A", f"{CHAIN}-INPUT", "-j", "REJECT"]),
            ("filter", ["-I", "INPUT", "1", "-i", BRIDGE, "-j", f"{CHAIN}-INPUT"]),
            # Nothing is routed in or out of the bridge (the bridge plugin turns
            # ip_forward on; this keeps it from mattering).
            ("filter", ["-N", f"{CHAIN}-FORWARD"]),
            ("filter", ["-A", f"{CHAIN}-FORWARD", "-j", "DROP"]),
            ("filter", ["-I", "FORWARD", "1", "-i", BRIDGE, "-j", f"{CHAIN}-FORWARD"]),
            ("filter", ["-I", "FORWARD", "1", "-o", BRIDGE, "-j", f"{CHAIN}-FORWARD"]),
        ]  # fmt: skip
        for table, rule in rules:
            _iptables("-t", table, *rule)

    def expose(self, port: int) -> str:
        """Let pods reach a server on the host's 127.0.0.1:`port`; return its URL base."""
        _iptables("-t", "nat", "-A", f"{CHAIN}-DNAT", "-d", str(GATEWAY), "-p", "tcp",
                  "--dport", str(port), "-j", "DNAT",
                  "--to-destination", f"127.0.0.1:{port}")  # fmt: skip
        return f"{GATEWAY}:{port}"

    def _write_configs(self) -> None:
        (WORKDIR / "cni" / "net.d").mkdir(parents=True)
        network = {
            "cniVersion": "1.0.0",
            "name": "incident-node",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(POD_CIDR), "gateway": str(GATEWAY)}]],
                        # Only the Service range, through the host: no default route.
                        "routes": [{"dst": SERVICE_CIDR}],
                        "dataDir": str(WORKDIR / "cni" / "ipam"),
                    },
                }
            ],
        }
        (WORKDIR / "cni" / "net.d" / "10-incident-node.conflist").write_text(json.dumps(network))
        containerd = WORKDIR / "containerd"
        containerd.mkdir()
        (containerd / "config.toml").write_text(
            _CONTAINERD_CONFIG.format(
                root=containerd / "root",
                state=containerd / "state",
                socket=self.containerd_socket,
                sandbox_image=self.sandbox_image,
                cni_bin=CNI_BIN_DIR,
                cni_conf=WORKDIR / "cni" / "net.d",
            )
        )
        kubelet = WORKDIR / "kubelet"
        kubelet.mkdir()
        # Pods get no name servers: nothing outside this machine is theirs to ask.
        (WORKDIR / "resolv.conf").write_text("options ndots:1\n")
        for controller in ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer",
                           "blkio", "systemd"):  # fmt: skip
            _make_cgroup(controller)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 0,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            # Only the API server (on this machine) talks to it; pods cannot (INPUT).
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failSwapOn": False,
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "resolvConf": str(WORKDIR / "resolv.conf"),
            "podLogsDir": str(WORKDIR / "pod-logs"),
            "volumePluginDir": str(kubelet / "volume-plugins"),
            # The disk is shared with other work: never evict for it.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
        }  # fmt: skip
        (WORKDIR / "kubelet.yaml").write_text(json.dumps(config))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.plane.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": str(POD_CIDR),
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the machine's conntrack sysctls and route_localnet alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
            "nodePortAddresses": [f"{GATEWAY}/32"],
        }  # fmt: skip
        (WORKDIR / "kube-proxy.yaml").write_text(json.dumps(proxy))

    @property
    def sandbox_image(self) -> str:
        from .image import pause_image_name

        return pause_image_name()

    def _start_runtime_and_kubelet(self) -> None:
        spec = {
            # Private to the namespace and gone with it: shim sockets, runc's
            # state, the pods' network namespace files.
            "tmpfs": ["/run/containerd", "/run/netns", "/var/run/netns"],
            "processes": [
                {
                    "name": "containerd",
                    "argv": ["containerd", "--config", str(WORKDIR / "containerd/config.toml")],
                    "socket": str(self.containerd_socket),
                },
                {"name": "kubelet", "argv": self._kubelet_argv()},
            ],
        }
        (WORKDIR / "supervisor.json").write_text(json.dumps(spec))
        self._spawn(
            "supervisor",
            [
                "unshare", "--pid", "--fork", "--kill-child", "--mount",
                "--propagation", "private", "--mount-proc",
                sys.executable, "-m", "incident_operator.devstack.node", "--supervise",
                str(WORKDIR / "supervisor.json"),
            ],
        )  # fmt: skip

    def _kubelet_argv(self) -> list[str]:
        return [
            str(self.binaries.kubelet),
            f"--config={WORKDIR / 'kubelet.yaml'}",
            f"--kubeconfig={self.plane.kubeconfig}",
            f"--root-dir={WORKDIR / 'kubelet'}",
            f"--cert-dir={WORKDIR / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            # Its InternalIP: the bridge address (loopback is refused there).
            f"--node-ip={GATEWAY}",
            "--v=1",
        ]

    def _controller_manager_argv(self) -> list[str]:
        controllers = [
            "namespace", "garbage-collector", "serviceaccount", "serviceaccount-token",
            "root-ca-certificate-publisher", "deployment", "replicaset", "endpointslice",
            "endpoints", "pod-garbage-collector", "node-lifecycle",
        ]  # fmt: skip
        return [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={self.plane.kubeconfig}",
            f"--authentication-kubeconfig={self.plane.kubeconfig}",
            f"--authorization-kubeconfig={self.plane.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={WORKDIR / 'controller-manager'}",
            f"--service-account-private-key-file={self.plane.service_account_key}",
            f"--root-ca-file={self.plane.ca_file}",
            "--use-service-account-credentials=true",
            f"--controllers={','.join(f'{c}-controller' for c in controllers)}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _scheduler_argv(self) -> list[str]:
        return [
            str(self.binaries.kube_scheduler),
            f"--kubeconfig={self.plane.kubeconfig}",
            f"--authentication-kubeconfig={self.plane.kubeconfig}",
            f"--authorization-kubeconfig={self.plane.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={WORKDIR / 'scheduler'}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _proxy_argv(self) -> list[str]:
        return [str(self.binaries.kube_proxy), f"--config={WORKDIR / 'kube-proxy.yaml'}", "--v=1"]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(WORKDIR / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            cwd=WORKDIR,
        )
        log.close()

    def _wait_socket(self, socket: Path, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not socket.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {socket} after {timeout:.0f}s:\n{self.tail('containerd')}")
            time.sleep(0.1)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            answer = self.plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if answer.returncode == 0:
                conditions = json.loads(answer.stdout)["status"].get("conditions", [])
                ready = {c["type"]: c for c in conditions}.get("Ready", {})
                if ready.get("status") == "True":
                    return
                last = ready.get("message", "")
            time.sleep(0.5)
        raise TimeoutError(f"node not Ready after {timeout:.0f}s ({last}):\n{self.tail('kubelet')}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.tail(name)}")

    # --- use ----------------------------------------------------------------------

    def ctr(self, *args: str) -> str:
        """containerd's own client, in the namespace the kubelet's images live in."""
        command = ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io"]
        result = subprocess.run([*command, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def tail(self, name: str, lines: int = 40) -> str:
        path = WORKDIR / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- teardown -------------------------------------------------------------------

    def stop(self, grace: float = 20.0) -> None:
        """Stop everything and put the machine back as it was; release the lock."""
        try:
            supervisor = self.processes.pop("supervisor", None)
            # The kubelet first (it stops its pods' containers), then the rest.
            for process in [p for p in [supervisor] if p] + list(self.processes.values()):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self.processes.clear()
            clean_leftovers(self.binaries)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None


_CONTAINERD_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # root here lacks CAP_SYS_RESOURCE: without this, runc cannot set a
  # container's oom_score_adj below its own and every sandbox fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""


# --- the machine's state: checks, changes, and undoing them ---------------------


def _take_lock() -> IO[str]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    lock = open(LOCK_FILE, "w")  # noqa: SIM115 - held for the node's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("[node] another one-node cluster runs on this machine; waiting for it",
              file=sys.stderr, flush=True)  # fmt: skip
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def refuse_overlaps(ranges: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    """Fail if a range is already an address or a route of this machine (default routes aside)."""
    taken: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for entry in json.loads(_ip("-j", "addr", "show")):
        if entry["ifname"] == BRIDGE:
            continue
        for address in entry.get("addr_info", []):
            network = ipaddress.ip_network(f"{address['local']}/{address['prefixlen']}", False)
            taken.append((f"address {address['local']} on {entry['ifname']}", network))
    for route in json.loads(_ip("-j", "route", "show", "table", "all")):
        destination = route.get("dst", "default")
        if destination == "default" or route.get("dev") == BRIDGE:
            continue
        with contextlib.suppress(ValueError):
            taken.append((f"route {destination} dev {route.get('dev')}",
                          ipaddress.ip_network(destination, False)))  # fmt: skip
    for wanted in ranges:
        for what, network in taken:
            if network.version == wanted.version and network.overlaps(wanted):
                raise RuntimeError(
                    f"the node's range {wanted} overlaps {what}: refusing to start "
                    f"(change POD_CIDR/SERVICE_CIDR in incident_operator.devstack)"
                )


def clean_leftovers(binaries: NodeBinaries | None = None) -> None:
    """Remove what a node (this one, or a crashed one) left on the machine."""
    _kill_our_processes()
    _unmount_under(WORKDIR)
    if binaries is not None and binaries.kube_proxy.exists():
        subprocess.run([str(binaries.kube_proxy), "--cleanup"], capture_output=True)
    _remove_chains()
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _ip("link", "del", BRIDGE)
    _remove_cgroups()
    _restore_sysctls()
    shutil.rmtree(WORKDIR, ignore_errors=True)


def _kill_our_processes() -> None:
    """Any process still running from the node's directory (a crashed run's)."""
    marker = str(WORKDIR).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def _unmount_under(root: Path) -> None:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def _remove_chains() -> None:
    """Every chain of ours, the kubelet's and kube-proxy's, and the jumps to them."""
    for save, restore in (("iptables-save", "iptables-restore"),
                          ("ip6tables-save", "ip6tables-restore")):  # fmt: skip
        if shutil.which(save) is None:
            continue
        for table in ("nat", "filter", "mangle"):
            dump = subprocess.run([save, "-t", table], capture_output=True, text=True).stdout
            if not any(marker in dump for marker in CHAIN_MARKERS):
                continue
            kept = [
                line
                for line in dump.splitlines()
                if not any(marker in line for marker in CHAIN_MARKERS)
            ]
            subprocess.run(
                [restore, "-T", table], input="\n".join(kept) + "\n", text=True, check=True
            )


def _cgroup_hierarchies() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    return [path for path in base.iterdir() if path.is_dir() and not path.is_symlink()]


def _make_cgroup(controller: str) -> None:
    parent = Path("/sys/fs/cgroup") / controller
    if not parent.is_dir():
        return
    path = parent / CGROUP_ROOT
    path.mkdir(exist_ok=True)
    if controller == "cpuset":
        # A new cpuset has no CPUs or memory nodes until given its parent's.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            (path / knob).write_text((parent / knob).read_text())


def _remove_cgroups() -> None:
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / CGROUP_ROOT
        if not root.exists():
            continue
        # Deepest first: a cgroup can only go when it has no children.
        folders = [path for path in root.rglob("*") if path.is_dir()]
        for folder in sorted(folders, key=lambda path: -len(path.parts)):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def _read_sysctl(name: str) -> str:
    return (Path("/proc/sys") / name).read_text().strip()


def _write_sysctl(name: str, value: str) -> None:
    (Path("/proc/sys") / name).write_text(value)


def _save_sysctls(values: dict[str, str]) -> None:
    SAVED_SYSCTLS.write_text(json.dumps(values))


def _restore_sysctls() -> None:
    if not SAVED_SYSCTLS.exists():
        return
    for name, value in json.loads(SAVED_SYSCTLS.read_text()).items():
        _write_sysctl(name, value)
    SAVED_SYSCTLS.unlink()


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _iptables(*args: str) -> None:
    result = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {result.stderr.strip()}")


# --- PID 1 of the node's namespaces -----------------------------------------------


def supervise(spec_path: Path) -> None:
    """Start containerd, then the kubelet; on SIGTERM stop the kubelet and end.

    Runs as PID 1 of a fresh PID namespace (`unshare --pid --fork`), so it
    also reaps the shims that daemonize, and its exit takes every process
    of the namespace with it.
    """
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    for point in spec["tmpfs"]:
        Path(point).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", point], check=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for entry in spec["processes"]:
        log = open(spec_path.parent / f"{entry['name']}.log", "ab")  # noqa: SIM115
        children[entry["name"]] = subprocess.Popen(
            entry["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        socket = entry.get("socket")
        deadline = time.monotonic() + 30
        while socket and not Path(socket).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    while not stopping and all(child.poll() is None for child in children.values()):
        # Reap whatever was reparented to us (shims, their children).
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        time.sleep(0.2)
    for name in reversed(list(children)):
        child = children[name]
        if child.poll() is None:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
    # Leaving kills what is left in the namespace: containers and shims.


if __name__ == "__main__":
    if sys.argv[1:2] == ["--supervise"]:
        supervise(Path(sys.argv[2]))
