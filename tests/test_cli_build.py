"""`retrieval build-index` and `scripts/build_index.py`: JSON report, readable summary, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT

from retrieval.cli import main
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.store import IndexDirectory, load_index

REPORT_KEYS = {"files", "files_skipped", "papers", "bullets", "embedded", "reused", "removed", "seconds"}
RETRIEVAL = Path(sys.executable).with_name("retrieval")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """Three good digests (6 papers, 20 bullets) and two files that must be skipped."""
    target = tmp_path / "corpus"
    for rel in ("era_plain.md", "era_vote_authors.md", "era_labelled.md", "bad/empty.md", "bad/invalid_utf8.md"):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / rel, target / rel)
    return target


@pytest.fixture(autouse=True)
def shared_tokenizer(monkeypatch: pytest.MonkeyPatch, tokenizer: KoreanEnglishTokenizer) -> None:
    """In-process builds reuse the session's loaded Kiwi instead of loading it again (seconds each)."""
    monkeypatch.setattr("retrieval.indexer.KoreanEnglishTokenizer", lambda: tokenizer)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main(["build-index", *args, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    return report


def check_first_report(report: dict) -> None:
    assert set(report) >= REPORT_KEYS
    assert (report["files"], report["papers"], report["bullets"]) == (5, 6, 20)
    assert (report["embedded"], report["reused"], report["removed"]) == (20, 0, 0)
    assert isinstance(report["seconds"], int | float) and report["seconds"] >= 0
    skipped = sorted(report["files_skipped"], key=lambda s: s["path"])
    assert [s["path"] for s in skipped] == ["bad/empty.md", "bad/invalid_utf8.md"]
    assert all(isinstance(s["reason"], str) and s["reason"] for s in skipped)
    assert "UTF-8" in skipped[1]["reason"]


def test_build_index_json_then_nothing_to_embed(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index"
    first = run_json(capsys, str(corpus), "--index", str(index), "--model", "fake:32")
    check_first_report(first)
    assert first["model"] == "fake:32"
    assert load_index(index, expected_model="fake:32").manifest.dim == 32

    second = run_json(capsys, str(corpus), "--index", str(index), "--model", "fake:32")
    assert (second["embedded"], second["reused"], second["removed"]) == (0, 20, 0)
    assert second["unchanged"] is True
    assert second["version"] == first["version"]


def test_readable_summary(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build-index", str(corpus), "--index", str(tmp_path / "index"), "--model", "fake:32"])
    captured = capsys.readouterr()
    assert code == 0
    summary = captured.out.strip()
    assert len(summary.splitlines()) == 1
    assert "5 files, 6 papers, 20 bullets" in summary
    assert "embedded 20, reused 0, removed 0" in summary
    assert "[fake:32]" in summary and not summary.startswith("{")
    assert "skipped bad/empty.md: empty file" in captured.err
    assert "skipped bad/invalid_utf8.md:" in captured.err

    main(["build-index", str(corpus), "--index", str(tmp_path / "index"), "--model", "fake:32"])
    assert "(unchanged)" in capsys.readouterr().out


def test_corpus_without_papers_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "nothing"
    corpus.mkdir()
    shutil.copyfile(FIXTURES / "bad/empty.md", corpus / "empty.md")
    code = main(["build-index", str(corpus), "--index", str(tmp_path / "index"), "--model", "fake:32", "--json"])
    captured = capsys.readouterr()
    assert code == 3
    assert captured.out == ""
    assert captured.err.startswith("error: no paper found under")
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_unknown_model_exits_8(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build-index", str(corpus), "--index", str(tmp_path / "index"), "--model", "word2vec"])
    assert code == 8
    assert "unknown model spec 'word2vec'" in capsys.readouterr().err


def test_locked_index_exits_7(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    with IndexDirectory(index).build_lock():
        code = main(["build-index", str(corpus), "--index", str(index), "--model", "fake:32"])
    assert code == 7
    assert "another build is running" in capsys.readouterr().err


def test_bad_corpus_path_exits_3_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus"
    result = subprocess.run(
        [str(RETRIEVAL), "build-index", str(missing), "--index", str(tmp_path / "index"), "--model", "fake:32"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: corpus path {missing} does not exist"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_build_script_matches_the_command(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "build_index.py"),
            str(corpus),
            "--index",
            str(index),
            "--model",
            "fake:32",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    check_first_report(json.loads(lines[0]))
    # the command line agrees that the script's index is up to date
    second = run_json(capsys, str(corpus), "--index", str(index), "--model", "fake:32")
    assert (second["embedded"], second["unchanged"]) == (0, True)

    missing = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_index.py"), str(tmp_path / "missing"), "--index", str(index)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 3
    assert missing.stderr.startswith("error: corpus path") and "Traceback" not in missing.stderr
