"""Run the code blocks of the docs that are marked `<!-- snippet-test -->`, so they cannot rot.

Blocks are collected from README.md. In Python
blocks, the index path `index/daily` becomes the real-model sample index and the service URL
`http://127.0.0.1:8000` a live test server; every Python block must print the LoRA paper's id for
its example query. JSON blocks holding an MCP client configuration must name a command that
exists and arguments the `retrieval` CLI accepts (or the service's `/mcp` URL).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT

from retrieval.api import create_app, serve_in_thread
from retrieval.cli import build_parser
from retrieval.config import Settings
from retrieval.search import Searcher

DOCS = (ROOT / "README.md",)
MARKER = "<!-- snippet-test -->"
INDEX_PLACEHOLDER = "index/daily"
URL_PLACEHOLDER = "http://127.0.0.1:8000"
LORA = "2106.09685"


@dataclass(frozen=True)
class Snippet:
    where: str
    language: str
    code: str


def marked_blocks(path: Path) -> list[Snippet]:
    """Fenced blocks whose opening fence follows a marker line (blank lines allowed between)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    armed = False
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line == MARKER:
            armed = True
        elif armed and line.startswith("```"):
            start, language = i + 1, line.strip("`").strip()
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise AssertionError(f"{path.name}:{i + 1}: unclosed code block")
            snippets.append(Snippet(f"{path.relative_to(ROOT)}:{start}", language, "\n".join(lines[start:end])))
            armed, i = False, end
        elif line:
            armed = False
        i += 1
    return snippets


SNIPPETS = [snippet for doc in DOCS if doc.is_file() for snippet in marked_blocks(doc)]
PYTHON = [s for s in SNIPPETS if s.language == "python"]
JSON = [s for s in SNIPPETS if s.language == "json"]


def test_the_docs_keep_a_tested_example_of_each_integration() -> None:
    code = "\n".join(s.code for s in PYTHON)
    for needle in ("retrieval.integrations.langchain", "retrieval.integrations.llamaindex", "from mcp import"):
        assert needle in code, f"no tested snippet uses {needle}"
    assert any("url=" in s.code for s in PYTHON), "no tested snippet of the remote mode"
    assert any("mcpServers" in s.code for s in JSON), "no tested MCP client configuration"


@pytest.fixture(scope="module")
def service_url(e5_sample_index: Path, e5_searcher: Searcher) -> Iterator[str]:
    with serve_in_thread(create_app(Settings(index_dir=e5_sample_index), e5_searcher)) as base:
        yield base


@pytest.fixture
def venv_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the `retrieval` executable of this interpreter's environment findable, as after `pip install`."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.slow
@pytest.mark.parametrize("snippet", PYTHON, ids=[s.where for s in PYTHON])
def test_python_snippet_runs(
    snippet: Snippet,
    e5_sample_index: Path,
    service_url: str,
    venv_on_path: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert INDEX_PLACEHOLDER in snippet.code or URL_PLACEHOLDER in snippet.code, "a snippet must use the test index"
    code = snippet.code.replace(f'"{INDEX_PLACEHOLDER}"', json.dumps(str(e5_sample_index)))
    code = code.replace(f'"{URL_PLACEHOLDER}', f'"{service_url}')
    exec(compile(code, snippet.where, "exec"), {"__name__": "__snippet__"})
    assert LORA in capfd.readouterr().out


@pytest.mark.parametrize("snippet", JSON, ids=[s.where for s in JSON])
def test_mcp_client_config_is_valid(snippet: Snippet, venv_on_path: None) -> None:
    servers = json.loads(snippet.code)["mcpServers"]
    assert servers
    for name, server in servers.items():
        if "url" in server:
            assert server["url"] == f"{URL_PLACEHOLDER}/mcp", f"{name}: the service answers MCP at /mcp"
            continue
        command = shutil.which(server["command"])
        assert command, f"{name}: {server['command']!r} is not an installed command"
        args = build_parser().parse_args(server["args"])
        assert args.command == "mcp", f"{name}: {shlex.join(server['args'])} does not start the MCP server"
        assert str(args.index) == INDEX_PLACEHOLDER
