"""`retrieval search`: JSON equal to the API's, a readable table, one-line errors with exit codes."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retrieval import cli
from retrieval.api import create_app
from retrieval.config import Settings
from retrieval.search import Searcher
from retrieval.store import IndexDirectory

LORA = "2106.09685"
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in err


@pytest.fixture()
def damaged_index(tmp_path: Path, fake_sample_index: Path) -> Path:
    index = tmp_path / "damaged"
    shutil.copytree(fake_sample_index, index)
    live = IndexDirectory(index).current_version()
    assert live is not None
    (live / "bullets.faiss").write_bytes(b"not a faiss file")
    return index


@pytest.mark.parametrize(
    ("query", "extra"),
    [
        ("LoRA 저랭크 적응", []),
        ("state space models", ["--mode", "dense"]),
        ("언어 모델", ["--min-votes", "70", "--offset", "1"]),
    ],
)
def test_json_is_the_api_object(
    capsys: pytest.CaptureFixture[str], fake_sample_index: Path, fake_searcher: Searcher, query: str, extra: list[str]
) -> None:
    code, out, err = run_cli(capsys, "search", query, "--index", str(fake_sample_index), "-k", "4", "--json", *extra)
    assert code == 0, err
    from_cli = json.loads(out)
    params: dict[str, str | int] = {"q": query, "k": 4}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        params[flag.removeprefix("--").replace("-", "_")] = value
    with TestClient(create_app(Settings(index_dir=fake_sample_index), fake_searcher)) as client:
        from_api = client.get("/search", params=params).json()
    assert set(from_cli) == set(from_api)
    assert from_cli["results"], "the query should match something"
    for key in ("query", "mode", "total", "offset", "limit"):
        assert from_cli[key] == from_api[key], key
    strip = [{**hit, "score": round(hit["score"], 5)} for hit in from_cli["results"]]
    assert strip == [{**hit, "score": round(hit["score"], 5)} for hit in from_api["results"]]


def test_filters_reach_the_search(capsys: pytest.CaptureFixture[str], fake_sample_index: Path) -> None:
    argv = [
        "search",
        "model",
        "--index",
        str(fake_sample_index),
        "--json",
        "--date-from",
        "2024-11-01",
        "--author",
        "Touvron",
    ]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    found = json.loads(out)["results"]
    assert {hit["paper"]["id"] for hit in found} == {"2302.13971", "2307.09288"}


def test_table_output_is_readable(capsys: pytest.CaptureFixture[str], fake_sample_index: Path) -> None:
    code, out, _ = run_cli(capsys, "search", "LoRA low-rank adaptation", "--index", str(fake_sample_index), "-k", "2")
    assert code == 0
    assert "LoRA: Low-Rank Adaptation of Large Language Models" in out
    assert f"https://arxiv.org/abs/{LORA}" in out
    bullets = [line for line in out.splitlines() if line.lstrip().startswith("- [")]
    assert len(bullets) >= 2
    assert "{" not in out.splitlines()[0], "the table is not JSON"


def test_missing_index_exits_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "search", "LoRA", "--index", str(tmp_path / "nowhere"))
    assert code == 4
    assert out == ""
    assert_one_line_error(err, "build-index")


def test_damaged_index_exits_5(capsys: pytest.CaptureFixture[str], damaged_index: Path) -> None:
    code, out, err = run_cli(capsys, "search", "LoRA", "--index", str(damaged_index))
    assert code == 5
    assert out == ""
    assert_one_line_error(err, "bullets.faiss")


def test_empty_query_exits_2(capsys: pytest.CaptureFixture[str], fake_sample_index: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", "   ", "--index", str(fake_sample_index)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "retrieval search: error: query: the query is empty" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-k", "0"], "k: must be at least 1"),
        (["-k", "101"], "k: must be at most 100"),
        (["--date-from", "2024-13-01"], "date_from: must be a date"),
        (["--offset", "-1"], "offset: must be at least 0"),
        (["--offset", "10001"], "offset: must be at most 10000"),
        (["--min-votes", "-3"], "min_votes: must be at least 0"),
        (["--date-from", "2024-05-01", "--date-to", "2024-01-01"], "date_from (2024-05-01) is after date_to"),
        (["--mode", "fuzzy"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], fake_sample_index: Path, argv: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", "LoRA", "--index", str(fake_sample_index), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("retrieval search: error: ")


def test_overlong_query_exits_2(capsys: pytest.CaptureFixture[str], fake_sample_index: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["search", "a" * 1001, "--index", str(fake_sample_index)])
    assert exit_info.value.code == 2
    assert "query: the query has 1001 characters; at most 1000 are allowed" in capsys.readouterr().err


def test_the_environment_limits_apply_to_the_cli(
    capsys: pytest.CaptureFixture[str], fake_sample_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRIEVAL_MAX_LIMIT", "5")
    with pytest.raises(SystemExit):
        cli.main(["search", "LoRA", "-k", "6", "--index", str(fake_sample_index)])
    assert "k: must be at most 5" in capsys.readouterr().err


def test_index_dir_comes_from_the_environment_unless_a_flag_is_given(
    capsys: pytest.CaptureFixture[str], fake_sample_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRIEVAL_INDEX_DIR", str(fake_sample_index))
    code, out, _ = run_cli(capsys, "search", "LoRA", "--json")
    assert code == 0 and json.loads(out)["results"]
    code, _, err = run_cli(capsys, "search", "LoRA", "--index", str(tmp_path / "nowhere"))
    assert code == 4
    assert_one_line_error(err, f"no index at {tmp_path / 'nowhere'}")


def test_a_missing_index_names_the_ones_beside_it(capsys: pytest.CaptureFixture[str], fake_sample_index: Path) -> None:
    code, _, err = run_cli(capsys, "search", "LoRA", "--index", str(fake_sample_index.parent / "default"))
    assert code == 4
    assert_one_line_error(err, f"use an existing one with --index or RETRIEVAL_INDEX_DIR: {fake_sample_index}")


@pytest.mark.parametrize("command", ["search", "build-index"])
def test_index_path_that_is_a_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    regular = tmp_path / "regular-file"
    regular.write_text("not an index")
    argv = ["search", "LoRA"] if command == "search" else ["build-index", str(SAMPLE), "--model", "fake:8"]
    code, _, err = run_cli(capsys, *argv, "--index", str(regular))
    assert code == 2
    assert_one_line_error(err, f"index path {regular} is a file, not a directory")
    code, _, err = run_cli(capsys, "search", "LoRA", "--index", str(regular / "inside"))
    assert code == 2
    assert_one_line_error(err, "which is a file, not a directory")


@pytest.mark.parametrize("command", ["search", "serve", "mcp", "eval", "build-index"])
def test_every_option_has_help_and_default(command: str) -> None:
    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = [a for a in subcommands.choices[command]._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert action.help and "default" in action.help, (command, action.option_strings)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    from retrieval import __version__

    assert capsys.readouterr().out.strip() == f"retrieval {__version__}"


def test_real_process(fake_sample_index: Path, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "retrieval.cli",
        "search",
        "Low-Rank Adaptation of Large Language Models",
        "--index",
        str(fake_sample_index),
        "-k",
        "3",
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["results"][0]["paper"]["id"] == LORA
    assert len(body["results"]) == 3

    missing = subprocess.run(
        [*command[:5], "--index", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 4
    assert_one_line_error(missing.stderr, "no index at")
