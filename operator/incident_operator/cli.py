"""The `incident-operator` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import crd


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
    from .ingest.recorder import AlarmRecorder
    from .kube import api_client

    logs.configure(args.log_level)
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
    recorder = AlarmRecorder(api=api, namespace=settings.incident_namespace)
    app = create_app(settings=settings, recorder=recorder, api=api)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incident-operator",
        description="Automated, auditable incident response on Kubernetes.",
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
