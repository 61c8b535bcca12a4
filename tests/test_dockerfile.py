"""The Dockerfile, checked without a Docker engine: what it copies exists and is
in the build context, what it runs is the package's console script, it runs
as an unprivileged numeric user, its base is pinned, and the chart only
calls subcommands and options the CLI has."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from incident_operator.cli import build_parser
from incident_operator.devstack.helm import ensure_helm

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "incident-operator"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def of(kind: str) -> list[str]:
    return [arguments for instruction, arguments in instructions() if instruction == kind]


def test_base_images_are_a_pinned_slim_python_311() -> None:
    args = dict(a.split("=", 1) for a in of("ARG") if "=" in a)
    stages = {line.split()[-1] for line in of("FROM") if " AS " in line.upper()}
    bases = []
    for line in of("FROM"):
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image not in stages:
            bases.append(image)
    assert len(of("FROM")) >= 2, "build and run stages"
    for image in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image


def context_allows(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (last match wins)."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negated
    return allowed


def test_everything_it_copies_exists_and_is_in_the_build_context() -> None:
    copies = [shlex.split(c) for c in of("COPY") if not c.startswith("--from")]
    sources = [source for copy in copies for source in copy[:-1]]
    assert {"pyproject.toml", "README.md", "requirements.lock", "operator"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert context_allows(source), f"{source} is excluded by .dockerignore"
    # The rest of the repository stays out: no tests, venvs or git history.
    for outside in (".venv", ".git", "tests", "charts", ".dev"):
        assert not context_allows(outside), outside


def test_it_installs_the_locked_runtime_dependencies() -> None:
    runs = " ".join(of("RUN"))
    assert "--constraint requirements.lock" in runs
    assert "/wheels/*.whl" in runs


def test_the_entry_point_is_the_console_script_and_the_command_a_subcommand() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = of("ENTRYPOINT")
    assert json.loads(entrypoint) == ["incident-operator"]
    assert scripts["incident-operator"] == "incident_operator.cli:main"
    (command,) = of("CMD")
    build_parser().parse_args(json.loads(command))


def chart_deployments(values: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    rendered = subprocess.run(
        [str(ensure_helm()), "template", "io", str(CHART), "-n", "ops", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]


def test_it_runs_as_the_numeric_non_root_user_the_chart_expects(tmp_path: Path) -> None:
    user = of("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit())
    # A passwd entry for it: kopf names itself after the user.
    assert f"--uid {uid}" in " ".join(of("RUN"))
    for deployment in chart_deployments({}, tmp_path):
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_no_secret_is_baked_in() -> None:
    for line in of("ENV") + of("ARG"):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY", line, re.I), line


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watchNamespaces": ["ops", "payments"], "operator": {"shutdownGraceSeconds": 2.5},
         "webhook": {"authDisabled": True}},
    ],
)  # fmt: skip
def test_the_charts_containers_call_real_subcommands_and_options(
    values: dict[str, Any], tmp_path: Path
) -> None:
    called = set()
    for deployment in chart_deployments(values, tmp_path):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "command" not in container, "the image's ENTRYPOINT is the command"
            # argparse exits on an unknown subcommand or option.
            parsed = build_parser().parse_args(container["args"])
            called.add(parsed.command)
    assert called == {"run", "webhook"}
