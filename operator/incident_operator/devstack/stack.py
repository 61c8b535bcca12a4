"""`incident-operator dev`: the whole product on one machine, on embedded defaults.

    control plane (real kube-apiserver + etcd, or your current kube context)
    moto server   (DynamoDB timeline table, an ECS cluster "demo" with services)
    operator      (incident-operator run)
    webhook       (incident-operator webhook, with a generated token)
    ui            (incident-operator ui, the read-only dashboard, its own token)

Everything stops together on Ctrl-C or SIGTERM; the child processes also die
with this one if it is killed outright. The operator alone is restarted when
it dies, after a short backoff, as a Deployment would restart its pod: its
pid is in STATE_DIR/operator.pid, so `kill -9` crash-tests it by hand.
Settings for real services in the environment (GEMINI_API_KEY,
SLACK_BOT_TOKEN, JIRA_URL, SES_SENDER...) are passed through; without them
the rules assessor decides and notifications go to the log.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
from kubernetes import client, config

from ..crd import all_crds
from ..timeline.dynamodb import create_table
from .controlplane import ControlPlane, _die_with_parent, free_port
from .waiting import wait_for

REGION = "us-east-1"
TIMELINE_TABLE = "incident-timeline"
CLUSTER = "demo"
DEV_ACCOUNT = "123456789012"  # moto's account id
# Sample ECS services: checkout's restarts complete at once in moto;
# payments' never do (moto does not roll deployments forward), so a restart
# there shows what a stuck rollout looks like.
SERVICES = {"checkout": 2, "payments": 0, "search": 2, "orders": 2}
# The images each service was released with, oldest first (else one release
# of nginx:stable): orders was deployed twice, and its alarm follows the
# second deployment, which the demo rolls back.
RELEASES = {"orders": ("nginx:1.27", "nginx:1.28")}
# A dead operator is started again after 1 s, then 2, 4... up to 30 s while it
# keeps dying within a minute of its start.
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
RESTART_STABLE_SECONDS = 60.0


def say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


@dataclass
class DevStack:
    state_dir: Path
    port: int
    use_current_context: bool = False
    control_plane: ControlPlane | None = None
    kubeconfig: Path | None = None
    moto: Any = None
    aws_endpoint: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespace: str = "default"
    # The operator's /healthz and /metrics: one port, kept across its restarts.
    operator_port: int = field(default_factory=free_port)
    # The web UI: chosen first, so every process links to it (UI_PUBLIC_URL).
    ui_port: int = field(default_factory=free_port)
    ui_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> DevStack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A stack killed before it could clean up left its exports: they name
        # servers that are gone. The new ones are written once all is up.
        self._env_file.unlink(missing_ok=True)
        try:
            self._start_kubernetes()
            self._install_crds()
            self._start_aws()
            self._start_operator()
            self._start_webhook()
            self._start_ui()
            self._write_env()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # First, so that no other shell sources exports of a stack going away.
        self._env_file.unlink(missing_ok=True)
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                say(f"stopping {name}")
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
        (self.state_dir / "operator.pid").unlink(missing_ok=True)
        if self.moto is not None:
            say("stopping moto")
            self.moto.stop()
            self.moto = None
        if self.control_plane is not None:
            say("stopping the control plane")
            self.control_plane.stop()
            self.control_plane = None

    # --- the parts ----------------------------------------------------------------

    def _start_kubernetes(self) -> None:
        if self.use_current_context:
            path = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
            self.kubeconfig = Path(path.split(os.pathsep)[0])
            say(f"using the current kube context from {self.kubeconfig}")
            return
        say("starting a local control plane (kube-apiserver + etcd)")
        started = time.monotonic()
        self.control_plane = ControlPlane.start()
        self.kubeconfig = self.control_plane.kubeconfig
        say(f"control plane ready in {time.monotonic() - started:.1f}s")

    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def _install_crds(self) -> None:
        extensions = client.ApiextensionsV1Api(self.api())
        for definition in all_crds():
            name = definition["metadata"]["name"]
            try:
                extensions.create_custom_resource_definition(definition)
            except client.ApiException as error:
                if error.status != 409:
                    raise
                current = extensions.read_custom_resource_definition(name)
                definition["metadata"]["resourceVersion"] = current.metadata.resource_version
                extensions.replace_custom_resource_definition(name, definition)
            wait_for(f"CRD {name} to be established", partial(_established, extensions, name))
        say("CRDs installed: incidents, responsepolicies")

    def _start_aws(self) -> None:
        from .moto import start_moto  # moto is a dev dependency, not a runtime one

        self.moto, self.aws_endpoint, _ = start_moto()
        session = boto3.session.Session(
            aws_access_key_id="dev", aws_secret_access_key="dev", region_name=REGION
        )
        create_table(session.client("dynamodb", endpoint_url=self.aws_endpoint), TIMELINE_TABLE)
        ecs = session.client("ecs", endpoint_url=self.aws_endpoint)
        ecs.create_cluster(clusterName=CLUSTER)
        for service, running in SERVICES.items():
            first, *later = [
                ecs.register_task_definition(
                    family=service,
                    containerDefinitions=[{"name": "app", "image": image, "memory": 128}],
                )["taskDefinition"]["taskDefinitionArn"]
                for image in RELEASES.get(service, ("nginx:stable",))
            ]
            # moto reads this while creating a service, in its own process
            # (this one): it decides whether the service's rollouts complete.
            with _env(MOTO_ECS_SERVICE_RUNNING=str(running)):
                ecs.create_service(
                    cluster=CLUSTER, serviceName=service, taskDefinition=first, desiredCount=2
                )
            for release in later:
                ecs.update_service(cluster=CLUSTER, service=service, taskDefinition=release)
        say(
            f"moto (AWS) on {self.aws_endpoint}: table {TIMELINE_TABLE}, "
            f"ECS cluster {CLUSTER} with services {', '.join(SERVICES)}"
        )

    def child_env(self) -> dict[str, str]:
        env = {
            **os.environ,
            **self.exports(),
            "ECS_CLUSTER_NAME": CLUSTER,
            "INCIDENT_NAMESPACE": self.namespace,
            "INGEST_TOKENS": self.token,
        }
        env.pop("AWS_PROFILE", None)  # never real AWS from the dev stack
        # The webhook refuses SNS from topics it was not given: here, those of
        # the dev stack's own (moto) account, unless the environment names others.
        env.setdefault("SNS_TOPIC_ARNS", f"arn:aws:sns:{REGION}:{DEV_ACCOUNT}:*")
        # Swagger UI at /docs, served from the package; off by default elsewhere.
        env.setdefault("INGEST_DOCS_ENABLED", "true")
        # Jira, email and Slack link to the Incident's page on the dev UI.
        env.setdefault("UI_PUBLIC_URL", self.ui_url)
        return env

    def _spawn(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_path = self.state_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "incident_operator.cli", *args],
                env={**self.child_env(), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        self.processes[name] = process
        return process

    def _start_operator(self) -> None:
        health = self.operator_port
        # One identity across restarts, as a container restarted in its pod:
        # the new process takes the dead one's Lease back at once.
        process = self._spawn(
            "operator", "run", "--namespace", self.namespace,
            "--liveness", f"http://127.0.0.1:{health}/healthz", "--identity", "dev-operator",
        )  # fmt: skip
        wait_for(
            "the operator to come up",
            lambda: _http_ok(f"http://127.0.0.1:{health}/healthz", process, "operator", self),
            timeout=60,
        )
        (self.state_dir / "operator.pid").write_text(f"{process.pid}\n")
        say(f"operator running, pid {process.pid} (log: {self.state_dir / 'operator.log'})")

    def supervise(self, *, poll: float = 0.5) -> list[str]:
        """Keep the stack up: restart the operator whenever it dies, with
        backoff; return the names of the other parts once one of them exits."""
        delay, started = RESTART_FIRST_SECONDS, time.monotonic()
        while True:
            dead = [name for name, p in self.processes.items() if p.poll() is not None]
            if [name for name in dead if name != "operator"]:
                return dead
            if "operator" in dead:
                if time.monotonic() - started >= RESTART_STABLE_SECONDS:
                    delay = RESTART_FIRST_SECONDS
                process = self.processes["operator"]
                say(
                    f"operator (pid {process.pid}) {_exit_status(process.returncode)}; "
                    f"restarting it in {delay:.0f}s"
                )
                time.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_SECONDS)
                started = time.monotonic()
                try:
                    self._start_operator()
                except (RuntimeError, TimeoutError) as error:
                    # Died again while starting, or slow: the loop looks again.
                    say(f"the restarted operator is not up: {str(error).splitlines()[0]}")
            time.sleep(poll)

    def _start_webhook(self) -> None:
        process = self._spawn("webhook", "webhook", "--host", "127.0.0.1", "--port", str(self.port))
        wait_for(
            "the webhook to be ready",
            lambda: _http_ok(f"{self.webhook_url}/readyz", process, "webhook", self),
            timeout=60,
        )
        say(f"webhook ready on {self.webhook_url} (log: {self.state_dir / 'webhook.log'})")

    def _start_ui(self) -> None:
        process = self._spawn(
            "ui", "ui", "--host", "127.0.0.1", "--port", str(self.ui_port),
            env={"UI_TOKENS": self.ui_token},
        )  # fmt: skip
        wait_for(
            "the UI to be ready",
            lambda: _http_ok(f"{self.ui_url}/readyz", process, "ui", self),
            timeout=60,
        )
        say(f"UI ready on {self.ui_url} (log: {self.state_dir / 'ui.log'})")

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exports(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "INCIDENT_WEBHOOK_URL": self.webhook_url,
            "INCIDENT_WEBHOOK_TOKEN": self.token,
            "INCIDENT_OPERATOR_METRICS_URL": f"http://127.0.0.1:{self.operator_port}/metrics",
            "INCIDENT_UI_URL": self.ui_url,
            "INCIDENT_UI_TOKEN": self.ui_token,
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_ACCESS_KEY_ID": "dev",
            "AWS_SECRET_ACCESS_KEY": "dev",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "TIMELINE_TABLE": TIMELINE_TABLE,
        }

    @property
    def _env_file(self) -> Path:
        return self.state_dir / "env"

    def _write_env(self) -> None:
        """The exports, whole or not at all: written aside (readable by us
        alone from the start, it holds the token), then renamed into place."""
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.exports().items()]
        text = "# Written by `incident-operator dev`; `source` it.\n" + "\n".join(lines) + "\n"
        partial = self._env_file.with_name(f".env.{os.getpid()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.replace(partial, self._env_file)

    def describe(self) -> str:
        env = self.state_dir / "env"
        return "\n".join(
            [
                "",
                "incident-operator dev stack is up.",
                f"  webhook     {self.webhook_url}   (token: {self.token})",
                f"  ui          {self.ui_url}   (sign in with: {self.ui_token})",
                f"  KUBECONFIG  {self.kubeconfig}",
                f"  AWS (moto)  {self.aws_endpoint}",
                f"  operator    pid {self.processes['operator'].pid} "
                f"(in {self.state_dir / 'operator.pid'}; `kill -9` it: it is restarted)",
                f"  metrics     http://127.0.0.1:{self.operator_port}/metrics",
                "",
                f"In another shell:  source {env}",
                "  curl -sS $INCIDENT_WEBHOOK_URL/alert \\",
                '    -H "Authorization: Bearer $INCIDENT_WEBHOOK_TOKEN" \\',
                "    -H 'Content-Type: application/json' -d @examples/alarms/generic-search.json",
                "  kubectl get incidents",
                "  incident-operator timeline NAME",
                "",
                "Ctrl-C stops everything.",
            ]
        )


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    current = extensions.read_custom_resource_definition(name)
    return any(
        c.type == "Established" and c.status == "True" for c in (current.status.conditions or [])
    )


def _http_ok(url: str, process: subprocess.Popen[bytes], name: str, stack: DevStack) -> bool:
    if process.poll() is not None:
        log = (stack.state_dir / f"{name}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the {name} exited with {process.returncode}:\n{log}")
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def running(**options: Any) -> Iterator[DevStack]:
    stack = DevStack(**options).start()
    try:
        yield stack
    finally:
        stack.stop()


def serve(*, port: int, state_dir: Path, use_current_context: bool) -> int:
    """Run the stack until Ctrl-C or SIGTERM."""
    # Signals become a clean stop (KeyboardInterrupt unwinds `running`).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with running(
            port=port, state_dir=state_dir, use_current_context=use_current_context
        ) as stack:
            print(stack.describe(), flush=True)
            dead = stack.supervise()
            say(f"{', '.join(dead)} exited; see {state_dir}/*.log. Stopping.")
            return 1
    except KeyboardInterrupt:
        say("stopped")
        return 0
