"""One error tree (rag.errors), mapped once to HTTP statuses (service.errors) and once to CLI exit codes
(service.cli): each kind through both front ends, with the error's code, field and hint in the HTTP body and one
line on the CLI's stderr."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from rag.application import Application
from rag.builds import BuildError, BuildLocked
from rag.config import ConfigError, load_settings
from rag.errors import Busy, Conflict, InvalidInput, NotFound, RagError, TooLarge, Unavailable
from rag.generators import GeneratorBusy
from rag.published import NoSnapshot
from rag.snapshot_files import SnapshotNotFound
from rag.state import StateLocked
from rag.summarize import UnknownDocument
from service.app import create_app
from service.cli import exit_code, main
from service.errors import http_status

KINDS = {  # name -> (error, HTTP status, exit code)
    "invalid": (InvalidInput("top_k must be at least 1", field="top_k"), 400, 2),
    "too-large": (TooLarge("document is 2000 bytes; the limit is 1000", field="text"), 413, 2),
    "not-found": (NotFound("no job 'x'", field="job_id"), 404, 2),
    "conflict": (Conflict("an index rebuild is already running", code="job_running"), 409, 3),
    "busy": (Busy("all 2 generator slots are busy", retry_after_s=2.5), 503, 4),
    "unavailable": (Unavailable("the snapshot will not load"), 503, 5),
}


@pytest.mark.parametrize("error, status, code", [
    *KINDS.values(),
    (ConfigError("RAG_X: x: unknown field", field="x"), 400, 2),
    (BuildError("no documents found", field="sources"), 400, 2),
    (UnknownDocument("d1", "g1"), 404, 2),
    (SnapshotNotFound("generation 'g' does not exist", field="generation_id"), 404, 2),
    (BuildLocked("another index build is running"), 409, 3),
    (GeneratorBusy("busy", retry_after_s=1), 503, 4),
    (NoSnapshot("no index generation is published"), 503, 5),
    (StateLocked("the state database is open in another process"), 503, 5),
    (RagError("a kind nobody maps"), 500, 1),
])
def test_each_kind_has_one_status_and_one_exit_code(error, status, code):
    assert http_status(error) == status and exit_code(error) == code


class Raising(Application):
    """The real application over an empty home, except that `job(name)` raises the error of KINDS[name]."""

    def job(self, job_id: str):
        raise KINDS[job_id][0]

    def snapshot_info(self, snapshot_id=None):
        raise KINDS[snapshot_id][0]


@pytest.fixture
def raising(tmp_path):
    settings = load_settings(environ={}, home=str(tmp_path / "home"), service={"open_mode": True})
    return settings, Raising(settings)


def test_each_kind_over_http(raising):
    settings, application = raising
    with TestClient(create_app(settings, application), raise_server_exceptions=False) as c:
        for name, (error, status, _) in KINDS.items():
            r = c.get(f"/v1/admin/jobs/{name}")
            assert r.status_code == status, (name, r.text)
            body = r.json()["error"]
            assert body["code"] == error.code and body["message"] == error.message
            assert body.get("field") == error.field and body["request_id"] == r.headers["x-request-id"]
            assert r.headers.get("retry-after") == ("3" if name == "busy" else None)
        r = c.post("/v1/search", json={"query": "etf"})  # nothing published under this home
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_index"
        assert r.json()["error"]["hint"] and r.headers["retry-after"] == "30"


def test_each_kind_on_the_command_line(raising, monkeypatch, capsys):
    settings, _ = raising
    monkeypatch.setattr(Application, "snapshot_info", Raising.snapshot_info)
    for name, (error, _, code) in KINDS.items():
        assert main(["--home", str(settings.home_path), "index", "show", name]) == code, name
        assert capsys.readouterr().err == f"rag: error: {error.message}\n"
    assert main(["--home", str(settings.home_path), "search", "etf"]) == 5  # nothing published
    assert "no index generation is published" in capsys.readouterr().err
