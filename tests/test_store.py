"""The persisted index: validated load, refusal of damaged or mismatched indexes, atomic publish."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE

from retrieval.corpus import Bullet, Paper
from retrieval.embedding import FakeEmbedder
from retrieval.errors import IndexCorruptError, IndexLockedError, IndexMismatchError, IndexNotFoundError
from retrieval.indexer import build_index
from retrieval.lexical import KoreanEnglishTokenizer
from retrieval.store import (
    BULLETS_FAISS,
    CURRENT_FILE,
    MANIFEST_FILE,
    PAPERS_FILE,
    TITLES_FAISS,
    TMP_PREFIX,
    EmbeddingCache,
    IndexDirectory,
    load_index,
    paper_from_json,
    paper_to_json,
)


@pytest.fixture()
def index(tmp_path: Path, fake_sample_index: Path) -> Path:
    """A private copy of the session's fake-model sample index, free to damage."""
    target = tmp_path / "index"
    shutil.copytree(fake_sample_index, target)
    return target


def live_version(index: Path) -> Path:
    return index / "versions" / (index / CURRENT_FILE).read_text(encoding="utf-8").strip()


def version_names(index: Path) -> list[str]:
    return sorted(p.name for p in (index / "versions").iterdir())


def test_load_valid_index(index: Path) -> None:
    data = load_index(index, expected_model="fake:64")
    assert data.manifest.model == "fake:64"
    assert data.manifest.dim == 64
    assert (data.manifest.papers, data.manifest.bullets) == (12, 52)
    assert data.bullet_vectors.ntotal == 52 and data.title_vectors.ntotal == 12
    assert len(data.papers) == 12
    assert len(data.bullet_rows) == 52
    assert {"bm25_bullets", "bm25_titles"} <= set(data.bm25_dirs)
    assert data.path == live_version(index)


def test_other_model_is_refused_with_advice(index: Path) -> None:
    with pytest.raises(IndexMismatchError) as info:
        load_index(index, expected_model="e5-small-q4")
    message = str(info.value)
    assert "'fake:64'" in message and "'e5-small-q4'" in message
    assert "--model fake:64" in message and "rebuild" in message


def test_other_dimension_is_refused(index: Path) -> None:
    with pytest.raises(IndexMismatchError, match="fake:32"):
        load_index(index, expected_model="fake:32")


def test_manifest_dim_not_matching_vectors_is_corrupt(index: Path) -> None:
    manifest_path = live_version(index) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["dim"] = 32
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="dim 64, the manifest says 32"):
        load_index(index)


def test_manifest_count_not_matching_vectors_is_corrupt(index: Path) -> None:
    manifest_path = live_version(index) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["bullets"] = 51
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="inconsistent"):
        load_index(index)


@pytest.mark.parametrize("name", [BULLETS_FAISS, TITLES_FAISS, PAPERS_FILE, "bm25_bullets"])
def test_missing_file_is_refused(index: Path, name: str) -> None:
    target = live_version(index) / name
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(IndexCorruptError, match="is missing; rebuild"):
        load_index(index)


def test_truncated_file_is_refused(index: Path) -> None:
    target = live_version(index) / BULLETS_FAISS
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorruptError, match="truncated or altered") as info:
        load_index(index)
    assert BULLETS_FAISS in str(info.value)


@pytest.mark.parametrize("name", [PAPERS_FILE, BULLETS_FAISS])
def test_altered_byte_fails_the_checksum(index: Path, name: str) -> None:
    target = live_version(index) / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="checksum"):
        load_index(index)


def test_damaged_manifest_is_refused(index: Path) -> None:
    manifest_path = live_version(index) / MANIFEST_FILE
    manifest_path.write_text('{"format_version": 2, "model": ', encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="damaged"):
        load_index(index)
    manifest_path.write_text('["a list, not an object"]', encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="damaged"):
        load_index(index)
    manifest_path.unlink()
    with pytest.raises(IndexCorruptError, match="missing"):
        load_index(index)


def test_manifest_without_file_list_is_refused(index: Path) -> None:
    manifest_path = live_version(index) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"] = {}
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="lists no files"):
        load_index(index)


def test_other_format_version_is_a_mismatch(index: Path) -> None:
    manifest_path = live_version(index) / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["format_version"] = 999
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexMismatchError, match="format version 999"):
        load_index(index)


def test_current_pointing_to_a_missing_version(index: Path) -> None:
    (index / CURRENT_FILE).write_text("v-gone\n", encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="which is missing"):
        load_index(index)
    for bad in ("../elsewhere", ".tmp-abc", ""):
        (index / CURRENT_FILE).write_text(bad, encoding="utf-8")
        with pytest.raises(IndexCorruptError, match="damaged"):
            load_index(index)


def test_no_index_at_all(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="build-index") as info:
        load_index(tmp_path / "nothing-here")
    assert "nothing-here" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError):
        load_index(tmp_path / "empty")


# ---------------------------------------------------------------- atomic publish


def test_build_leaves_exactly_one_version(index: Path, tokenizer: KoreanEnglishTokenizer) -> None:
    names = version_names(index)
    assert len(names) == 1
    assert live_version(index).name == names[0]
    assert not list(index.glob(f"{CURRENT_FILE}{TMP_PREFIX}*"))
    report = build_index(SAMPLE, index, FakeEmbedder(32), tokenizer=tokenizer)  # another model: a new version
    assert not report.unchanged
    after = version_names(index)
    assert len(after) == 1 and after != names
    assert live_version(index).name == report.version == after[0]
    assert load_index(index, expected_model="fake:32").manifest.dim == 32


def test_leftover_temporary_version_is_cleaned_by_next_build(index: Path, tokenizer: KoreanEnglishTokenizer) -> None:
    leftover = index / "versions" / f"{TMP_PREFIX}crashed"
    leftover.mkdir()
    (leftover / PAPERS_FILE).write_text("[", encoding="utf-8")
    stale_pointer = index / f"{CURRENT_FILE}{TMP_PREFIX}abc123"
    stale_pointer.write_text("v-never\n", encoding="utf-8")
    # a reader is not disturbed by a half-written version
    assert load_index(index).manifest.papers == 12
    report = build_index(SAMPLE, index, FakeEmbedder(64), tokenizer=tokenizer)
    assert report.unchanged  # same corpus and model: nothing to rebuild, but still tidied
    assert f"{TMP_PREFIX}crashed" in report.cleaned
    assert not leftover.exists() and not stale_pointer.exists()
    assert version_names(index) == [live_version(index).name]


def test_concurrent_build_is_refused(index: Path, tokenizer: KoreanEnglishTokenizer) -> None:
    directory = IndexDirectory(index)
    before = version_names(index)
    with directory.build_lock(), pytest.raises(IndexLockedError, match="another build is running"):
        build_index(SAMPLE, index, FakeEmbedder(32), tokenizer=tokenizer)
    assert version_names(index) == before
    assert load_index(index).manifest.model == "fake:64"


# ---------------------------------------------------------------- embedding cache


def test_embedding_cache_round_trip_and_prune(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    try:
        vectors = {"a": np.arange(4, dtype=np.float32), "b": np.ones(4, dtype=np.float32)}
        cache.put_vectors("m", vectors)
        cache.put_vectors("other", {"a": np.zeros(4, dtype=np.float32)})
        found = cache.get_vectors("m", ["a", "b", "c"], dim=4)
        assert sorted(found) == ["a", "b"]
        assert np.array_equal(found["a"], vectors["a"])
        assert cache.get_vectors("m", ["a"], dim=8) == {}  # a vector of another size is not reused
        cache.put_tokens("tok", {"a": ["x", "y"], "b": []})
        assert cache.get_tokens("tok", ["a", "b"]) == {"a": ["x", "y"], "b": []}
        cache.put_vectors("m#query", {"b": np.ones(4, dtype=np.float32)})
        assert cache.prune(["m", "m#query"], "tok", keep={"a"}) == 3
        assert sorted(cache.get_vectors("m", ["a", "b"], dim=4)) == ["a"]
        assert cache.get_vectors("m#query", ["b"], dim=4) == {}
        assert sorted(cache.get_tokens("tok", ["a", "b"])) == ["a"]
        assert sorted(cache.get_vectors("other", ["a"], dim=4)) == ["a"]  # other models untouched
    finally:
        cache.close()


def test_paper_json_round_trip_keeps_every_field() -> None:
    paper = Paper(
        arxiv_id="2401.00001",
        title="A title",
        url="https://arxiv.org/abs/2401.00001",
        dates=["2024-01-02", "2024-01-03"],
        votes=7,
        authors=["A. Author"],
        bullets=[Bullet(0, "what's new", "첫 문장"), Bullet(1, None, "둘째 문장")],
        sources=["2024/01/02.md"],
    )
    data = paper_to_json(paper)
    assert set(data) == {f.name for f in dataclasses.fields(Paper)}
    assert set(data["bullets"][0]) == {f.name for f in dataclasses.fields(Bullet)}
    assert paper_from_json(json.loads(json.dumps(data))) == paper
