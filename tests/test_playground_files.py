"""The playground's files as the app serves them (no browser needed): the page at /, its assets under
/playground/ with a same-origin Content-Security-Policy, nothing that loads from elsewhere, the API's own 404s
unchanged, and every file declared as package data so a non-editable install ships it."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from litestar.testing import TestClient

from rag.config import load_settings
from service.app import create_app
from service.playground import STATIC_DIR

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # No generation is needed to serve static files: the app starts without one (/ready says 503).
    home = tmp_path_factory.mktemp("playground-files")
    settings = load_settings(environ={}, home=str(home), service={"api_keys": {"files-key": "reader"}})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_page_and_assets_are_served_with_a_same_origin_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "connect-src 'self'", "style-src 'self'"):
        assert directive in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.text == (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for name in sorted(p.name for p in STATIC_DIR.iterdir()):
        r = client.get(f"/playground/{name}")
        assert r.status_code == 200, name
        assert r.content == (STATIC_DIR / name).read_bytes()
        assert "content-security-policy" in r.headers
    assert client.get("/playground/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/playground/nope.js").status_code == 404


def test_no_file_refers_to_another_origin():
    # Every URL in the page and its modules is a path on this origin; modules import each other relatively.
    imported = set()
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}", text), path.name
        imports = re.findall(r"""^import .* from "([^"]+)";""", text, flags=re.M)
        assert all(i.startswith("./") for i in imports), (path.name, imports)
        imported |= {i[2:] for i in imports}
    modules = {p.name for p in STATIC_DIR.glob("*.js")}
    assert imported == modules - {"app.js"}  # every module is used; app.js is the page's entry point


def test_the_api_keeps_its_own_not_found_and_method_errors(client):
    # The assets are not mounted at / itself, whose catch-all path would turn these into 405s.
    for method in ("GET", "POST"):
        r = client.request(method, "/v1/nope", headers={"X-API-Key": "files-key"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.post("/").status_code == 405
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/playground") for p in paths)


def test_every_static_file_is_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["service.playground"]
    files = sorted(p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.iterdir())
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert missing == [], f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"
