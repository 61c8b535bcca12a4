"""The `incident-operator` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__, crd


def _crds(args: argparse.Namespace) -> int:
    if args.write is None:
        sys.stdout.write(crd.render_all())
        return 0
    args.write.mkdir(parents=True, exist_ok=True)
    for name, definition in crd.file_names().items():
        (args.write / name).write_text(crd.render(definition))
        print(f"wrote {args.write / name}", file=sys.stderr)
    return 0


def _webhook(args: argparse.Namespace) -> int:
    import uvicorn

    from . import logs
    from .config import Settings
    from .ingest.app import create_app
    from .ingest.policies import PolicyWatch
    from .ingest.recorder import AlarmRecorder
    from .kube import api_client

    logs.configure(args.log_level, component="webhook")
    overrides = {"incident_namespace": args.namespace} if args.namespace else {}
    settings = Settings(**overrides)
    if not settings.ingest_auth_disabled and not (
        settings.ingest_token_set_static() or settings.ingest_tokens_file
    ):
        print(
            "refusing to start: no ingest token. Set INGEST_TOKENS (or INGEST_TOKENS_FILE), "
            "or INGEST_AUTH_DISABLED=true to accept unauthenticated alarms.",
            file=sys.stderr,
        )
        return 2
    api = api_client()
    # Grouping is decided here, from the policies (read-only, followed by a watch).
    policies = PolicyWatch(api=api, namespace=settings.incident_namespace).start()
    policies.wait_synced(timeout=10)
    recorder = AlarmRecorder(
        api=api,
        namespace=settings.incident_namespace,
        groups=policies.group,
        write_interval=settings.ingest_write_interval_seconds,
    )
    app = create_app(settings=settings, recorder=recorder, api=api)
    # Keep idle connections longer than the load balancers in front usually
    # do (60 s), so the balancer, not us, closes them: a request it sends
    # on a connection we just closed would fail. uvloop and httptools (C)
    # instead of asyncio's loop and h11 (pure Python): the HTTP parser was a
    # fifth of the webhook's CPU time per alarm.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_keep_alive=75,
    )
    return 0


def _ui(args: argparse.Namespace) -> int:
    from .ui.serve import serve

    return serve(host=args.host, port=args.port, namespace=args.namespace, log_level=args.log_level)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from . import logs
    from .config import Settings
    from .reconcile import handlers  # noqa: F401 - registers the handlers with kopf
    from .reconcile.leadership import LeaseConfig, default_identity
    from .reconcile.run import RunOptions, run

    logs.configure(args.log_level, component="operator")
    configured = [n.strip() for n in Settings().watch_namespaces.split(",") if n.strip()]
    namespaces = args.namespace or configured
    lease = None
    if args.leader_elect:
        try:
            lease = LeaseConfig(
                name=args.lease_name,
                namespace=args.lease_namespace or _own_namespace(namespaces),
                identity=args.identity or default_identity(),
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
            )
        except ValueError as error:
            print(f"refusing to start: {error}", file=sys.stderr)
            return 2
    options = RunOptions(
        namespaces=namespaces,
        listen=args.liveness,
        lease=lease,
        shutdown_grace=args.shutdown_grace,
    )
    return asyncio.run(run(options))


def _own_namespace(watched: list[str]) -> str:
    """Where the Lease lives unless told: the pod's namespace, else the first watched."""
    mounted = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if mounted.exists():
        return mounted.read_text().strip()
    return watched[0] if watched else "default"


def _timeline(args: argparse.Namespace) -> int:
    import asyncio

    from .config import Settings
    from .timeline.dynamodb import DynamoTimeline

    settings = Settings()
    if not settings.timeline_table:
        print("TIMELINE_TABLE is not set: there is no timeline to read.", file=sys.stderr)
        return 2
    timeline = DynamoTimeline(settings.timeline_table)
    entries = asyncio.run(timeline.read(f"{args.namespace}/{args.name}"))
    if not entries:
        print(f"no timeline entries for {args.namespace}/{args.name}", file=sys.stderr)
        return 1
    if args.output == "json":
        import json

        print(json.dumps([entry.model_dump(mode="json") for entry in entries], indent=2))
        return 0
    for entry in entries:
        when = entry.ts.split("#", 1)[0]
        print(f"{when}  {entry.kind:<18} {entry.phase or '':<17} {entry.message}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from .devstack.stack import serve

    return serve(
        port=args.port, state_dir=args.state_dir, use_current_context=args.use_current_context
    )


def lease_seconds(value: str) -> int:
    """Whole seconds, at least 1: the Lease stores leaseDurationSeconds as an integer."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: whole seconds, at least 1")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-operator",
        description="Automated, auditable incident response on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = commands.add_parser("crds", help="print the CustomResourceDefinitions")
    crds.add_argument(
        "--write", type=Path, metavar="DIR", help="write one file per CRD into DIR instead"
    )
    crds.set_defaults(handler=_crds)

    webhook = commands.add_parser("webhook", help="serve the ingest webhook")
    webhook.add_argument("--host", default="0.0.0.0", help="address to listen on")
    webhook.add_argument("--port", type=int, default=8080, help="port to listen on")
    webhook.add_argument(
        "--namespace", help="namespace for new Incidents (default: INCIDENT_NAMESPACE)"
    )
    webhook.add_argument("--log-level", default="info")
    webhook.set_defaults(handler=_webhook)

    ui = commands.add_parser("ui", help="serve the read-only web UI")
    ui.add_argument("--host", default="0.0.0.0", help="address to listen on")
    ui.add_argument("--port", type=int, default=8090, help="port to listen on")
    ui.add_argument("--namespace", help="the Incidents' namespace (default: INCIDENT_NAMESPACE)")
    ui.add_argument("--log-level", default="info")
    ui.set_defaults(handler=_ui)

    run = commands.add_parser("run", help="run the operator")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="watch this namespace (repeatable; default: WATCH_NAMESPACES, else all)",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        default="http://0.0.0.0:8081/healthz",
        help="serve the health check here, and /metrics beside it (default: %(default)s)",
    )
    election = run.add_argument_group(
        "leader election", "one replica acts, the others stand by (a coordination.k8s.io Lease)"
    )
    election.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="elect a leader through a Lease (default: on); off, this process acts at once",
    )
    election.add_argument("--lease-name", default="incident-operator", help="default: %(default)s")
    election.add_argument(
        "--lease-namespace",
        help="default: POD_NAMESPACE, the pod's namespace, else the first watched namespace",
    )
    election.add_argument(
        "--identity", help="this replica's name in the Lease (default: POD_NAME, else host_pid)"
    )
    election.add_argument(
        "--lease-duration",
        type=lease_seconds,
        default=15,
        metavar="SECONDS",
        help="how long a standby waits for a silent leader (default: %(default)s)",
    )
    election.add_argument(
        "--renew-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a leader that has not renewed for this long stops; < lease duration "
        "(default: %(default)s)",
    )
    election.add_argument(
        "--retry-period",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the leader renews and a standby looks (default: %(default)s)",
    )
    run.add_argument(
        "--shutdown-grace",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running passes may finish before they are abandoned "
        "(default: %(default)s)",
    )
    run.add_argument("--log-level", default="info")
    run.set_defaults(handler=_run)

    timeline = commands.add_parser("timeline", help="print an Incident's timeline")
    timeline.add_argument("name", help="the Incident's name")
    timeline.add_argument("-n", "--namespace", default="default")
    timeline.add_argument("-o", "--output", choices=["text", "json"], default="text")
    timeline.set_defaults(handler=_timeline)

    dev = commands.add_parser(
        "dev", help="run everything locally: control plane, moto, operator, webhook"
    )
    dev.add_argument("--port", type=int, default=8080, help="the webhook's port")
    dev.add_argument(
        "--use-current-context",
        action="store_true",
        help="use the cluster of the current kube context instead of a local control plane",
    )
    dev.add_argument("--state-dir", type=Path, default=Path(".dev"), help="where logs and env go")
    dev.set_defaults(handler=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
