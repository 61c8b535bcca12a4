"""The webhook's API docs (issue 12, item 12): off unless asked for, and when
on, served from the package, with nothing for a browser to fetch elsewhere."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from kubernetes import client

from incident_operator.devstack.stack import DevStack
from incident_operator.ingest import docs
from webhook_support import new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

REPO = Path(__file__).resolve().parents[1]


async def test_docs_and_the_openapi_document_are_off_by_default(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token()) as http:
        answers = {path: await http.get(path) for path in ("/docs", "/redoc", "/openapi.json")}
        root = (await http.get("/")).json()
    assert {path: a.status_code for path, a in answers.items()} == {
        "/docs": 404, "/redoc": 404, "/openapi.json": 404,
    }  # fmt: skip
    assert all(a.json()["error"] == "not_found" for a in answers.values())
    assert root["docs"] is None


async def test_docs_when_on_load_nothing_from_elsewhere(
    api: client.ApiClient, namespace: str
) -> None:
    async with webhook(api, namespace, token=new_token(), ingest_docs_enabled=True) as http:
        page = await http.get("/docs")
        references = re.findall(r'(?:src|href)="([^"]*)"|url: \'([^\']*)\'', page.text)
        urls = [a or b for a, b in references]
        fetched = {url: await http.get(url) for url in urls if url.startswith("/")}
        spec = await http.get("/openapi.json")
        redoc = await http.get("/redoc")
    assert page.status_code == 200
    # Every reference is on this origin (or inline): no CDN, nothing fetched
    # from the internet; the browser is told to keep it that way.
    assert urls and all(url.startswith("/") or url.startswith("data:") for url in urls), urls
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert '"validatorUrl": null' in page.text  # Swagger UI's online validator is off
    assert set(fetched) == {
        "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json",
    }  # fmt: skip
    for url, answer in fetched.items():
        assert answer.status_code == 200, url
    js = fetched["/docs/assets/swagger-ui-bundle.js"]
    assert js.content == (docs.ASSETS / "swagger-ui-bundle.js").read_bytes()
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert fetched["/docs/assets/swagger-ui.css"].headers["content-type"].startswith("text/css")
    assert "/alerts/sns" in spec.json()["paths"]
    assert redoc.status_code == 404  # one UI is enough


def test_the_vendored_assets_say_what_they_are() -> None:
    notice = (docs.ASSETS / "NOTICE").read_text()
    assert "Swagger UI 5.32.6" in notice and "Apache License" in notice
    assert (docs.ASSETS / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_the_dev_stack_turns_docs_on_and_names_its_sns_topics(tmp_path: Path) -> None:
    env = DevStack(state_dir=tmp_path, port=8080).child_env()
    assert env["INGEST_DOCS_ENABLED"] == "true"
    assert env["SNS_TOPIC_ARNS"]


def test_the_package_carries_the_docs_assets(tmp_path: Path) -> None:
    # The image installs the wheel, not the source tree. Built from a copy,
    # so that setuptools leaves nothing in the repository.
    source = tmp_path / "source"
    shutil.copytree(
        REPO / "operator", source / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("incident_operator-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"):
        assert f"incident_operator/ingest/docs_assets/{asset}" in names
