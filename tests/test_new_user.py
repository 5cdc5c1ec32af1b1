"""What a new user hit in the first hour: ids in any spelling, readable errors, configuration that
does what it says, a busy port, a failed first build, and the line `make run` prints."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retrieval import cli
from retrieval.api import create_app
from retrieval.config import Settings
from retrieval.errors import ERROR_CODES, QueryFileError, RetrievalError, ServiceError, UsageError, error_codes
from retrieval.search import Searcher

LORA = "2106.09685"
LOOPBACK = ("127.0.0.1", 50000)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client(fake_sample_index: Path, fake_searcher: Searcher) -> Any:
    with TestClient(create_app(Settings(index_dir=fake_sample_index), fake_searcher), client=LOOPBACK) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "spelling",
    [LORA, f"{LORA}v2", f"arXiv:{LORA}", f"https://arxiv.org/abs/{LORA}", f"https://arxiv.org/pdf/{LORA}v1.pdf"],
)
def test_papers_route_takes_every_id_spelling(client: TestClient, spelling: str) -> None:
    response = client.get(f"/papers/{spelling}")
    assert response.status_code == 200, response.text
    assert response.json()["paper"]["id"] == LORA
    similar = client.get(f"/papers/{spelling}/similar", params={"k": 2})
    assert similar.status_code == 200 and LORA not in [h["paper"]["id"] for h in similar.json()["results"]]


def test_an_unknown_id_is_still_404(client: TestClient) -> None:
    assert client.get("/papers/arXiv:0000.00000").status_code == 404


def test_malformed_json_body_names_the_character(client: TestClient) -> None:
    response = client.post("/search", content=b'{"q": nope}', headers={"content-type": "application/json"})
    assert response.status_code == 422
    reason = response.json()["reason"]
    assert reason.startswith("body: the body is not valid JSON (at character 6"), reason
    assert "JSON decode error" not in reason


def test_every_domain_error_has_an_exit_code_and_a_status() -> None:
    assert error_codes(QueryFileError("x")) == (2, 422)
    assert error_codes(ServiceError("x")) == (10, 502)
    assert error_codes(UsageError("x"))[0] == 2
    assert error_codes(RetrievalError("x")) == (1, 500)
    exit_codes = [codes[0] for codes in ERROR_CODES.values()]
    assert len(exit_codes) == len(set(exit_codes))


def test_a_bad_query_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], fake_sample_index: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "LoRA", "ids": ["2106.09685"]}\nnot json\n', encoding="utf-8")
    code = cli.main(["eval", "--index", str(fake_sample_index), "--queries", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and f"{bad}:2" in err and "Traceback" not in err


def test_serve_and_mcp_read_the_environment_and_flags_override_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr("retrieval.api.run_server", seen.append)
    monkeypatch.setattr("retrieval.mcp_server.run_stdio", seen.append)
    monkeypatch.setenv("RETRIEVAL_INDEX_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("RETRIEVAL_HOST", "127.0.0.2")
    monkeypatch.setenv("RETRIEVAL_PORT", "8123")
    assert cli.main(["serve"]) == 0
    assert (seen[-1].index_dir, seen[-1].host, seen[-1].port) == (tmp_path / "from-env", "127.0.0.2", 8123)
    assert cli.main(["serve", "--index", str(tmp_path / "flag"), "--port", "9000"]) == 0
    assert (seen[-1].index_dir, seen[-1].host, seen[-1].port) == (tmp_path / "flag", "127.0.0.2", 9000)
    assert cli.main(["mcp"]) == 0
    assert seen[-1].index_dir == tmp_path / "from-env"


def test_make_run_index_is_the_cli_default() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"INDEX ?= {Settings.model_fields['index_dir'].default}" in makefile


def test_a_busy_port_fails_before_the_index_loads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        started = time.perf_counter()
        # No index at all: the port is checked first, so the port is what the error names.
        code = cli.main(["serve", "--index", str(tmp_path / "none"), "--port", str(port)])
        took = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"error: port {port} on 127.0.0.1 is already in use; choose another with --port"
    assert took < 5


def test_a_failed_first_build_leaves_nothing_behind(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    index = tmp_path / "index" / "new"
    code = cli.main(["build-index", str(empty), "--index", str(index), "--model", "fake:8"])
    assert code == 3 and "Traceback" not in capsys.readouterr().err
    assert not index.exists()
    index.mkdir(parents=True)
    (index / "keep.txt").write_text("mine")
    assert cli.main(["build-index", str(empty), "--index", str(index), "--model", "fake:8"]) == 3
    assert sorted(p.name for p in index.iterdir()) == ["keep.txt"]  # a folder it did not create stays


def test_serve_prints_the_page_url_and_logs_reloads(fake_sample_index: Path, tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    command = [sys.executable, "-m", "retrieval.cli", "serve", "--index", str(fake_sample_index), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"search page: http://127.0.0.1:{port}/"), line
        assert str(fake_sample_index) in line and "papers" in line
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        reload = httpx.post(f"http://127.0.0.1:{port}/admin/reload", timeout=60)
        assert reload.status_code == 200 and json.loads(reload.text)["reloaded"] is False
        process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "Traceback" not in err
    version = json.loads(reload.text)["version"]
    assert err.count(f"index reload: {version} is still current, nothing to do") == 2, err
    assert "SIGHUP: reloading the index" in err
