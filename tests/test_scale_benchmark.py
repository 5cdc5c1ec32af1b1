"""benchmarks/scale.py at tiny sizes: the report's shape, exact search as its own ground truth, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval import ann

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "scale.py"
KINDS = ("flat", "sq8", "hnsw32-sq8", "ivf-sq8")


def run_scale(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def check_results(report: dict, set_names: set[str]) -> None:
    assert [r["kind"] for r in report["results"]] == list(KINDS)
    for result in report["results"]:
        assert result["build_s"] >= 0 and result["bytes_per_vector"] > 0
        assert result["sweep"], result["kind"]
        values = [p["value"] for p in result["sweep"]]
        assert values == sorted(values)
        for point in result["sweep"]:
            assert set(point["recall_by_set"]) == set_names
            assert 0.0 <= point["recall"] <= 1.0
            assert 0 < point["p50_ms"] <= point["p99_ms"]
    flat = report["results"][0]
    assert flat["knob"] is None and len(flat["sweep"]) == 1
    assert flat["sweep"][0]["recall"] == 1.0
    assert all(r == 1.0 for r in flat["sweep"][0]["recall_by_set"].values())
    assert flat["operating_point"]["meets_recall"] is True
    # float32 codes: 4 bytes per dimension, plus a small header shared by all vectors
    dim = report["data"]["dim"]
    assert 4 * dim <= flat["bytes_per_vector"] < 4 * dim + 1
    sq8 = report["results"][1]
    assert dim <= sq8["bytes_per_vector"] < 4 * dim


def test_synthetic_smoke_run(tmp_path: Path) -> None:
    out, table = tmp_path / "scale.json", tmp_path / "scale.md"
    done = run_scale(
        "--n",
        "3000",
        "--queries",
        "50",
        "--real-index",
        "none",
        "--kinds",
        ",".join(KINDS),
        "--ef-search",
        "16,64",
        "--nprobe",
        "4,16",
        "--out",
        str(out),
        "--markdown",
        str(table),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["data"]["ntotal"] == 3000 and report["data"]["real"] == 0
    assert report["data"]["queries"] == {"synthetic": 50}
    assert report["config"]["query_threads"] == 1
    check_results(report, {"synthetic"})
    assert report["choice"]["kind"] in (*KINDS, None)
    text = table.read_text(encoding="utf-8")
    for kind in KINDS:
        assert f"| {kind} |" in text


def test_real_vectors_are_appended_and_queried(tmp_path: Path, fake_sample_index: Path) -> None:
    out = tmp_path / "scale.json"
    done = run_scale(
        "--n",
        "2000",
        "--dim",
        "64",
        "--queries",
        "30",
        "--real-index",
        str(fake_sample_index),
        "--kinds",
        ",".join(KINDS),
        "--ef-search",
        "32",
        "--nprobe",
        "8",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    data = report["data"]
    assert data["real"] > 0 and data["ntotal"] == 2000 + data["real"]
    assert set(data["queries"]) == {"titles", "perturbed-real", "synthetic"}
    assert set(data["calibration"]) == {"real", "synthetic_same_size"}
    check_results(report, {"titles", "perturbed-real", "synthetic"})


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--kinds", "flat,bogus"], "--kinds"),
        (["--ef-search", "16,x"], "--ef-search"),
        (["--real-index", "/nonexistent/index-dir"], "--real-index"),
        (["--n", "0", "--real-index", "none"], "--n 0"),
    ],
)
def test_bad_input_is_one_line(args: list[str], names: str) -> None:
    done = run_scale("--n", "100", "--queries", "10", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], done.stderr


# ---------------------------------------------------------------- retrieval/ann.py


def clustered_unit_vectors(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    points = centres[rng.integers(0, 20, count)] + 0.5 * rng.standard_normal((count, dim))
    return np.ascontiguousarray(points / np.linalg.norm(points, axis=1, keepdims=True), dtype=np.float32)


@pytest.mark.parametrize("kind", ann.KINDS)
def test_make_index_finds_each_member_first(kind: str) -> None:
    vectors = clustered_unit_vectors(2000, 32)
    index = ann.make_index(kind, 32, len(vectors))
    assert index.d == 32 and index.metric_type == faiss.METRIC_INNER_PRODUCT and index.ntotal == 0
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    _, ids = index.search(vectors[:200], 1)
    assert (ids[:, 0] == np.arange(200)).mean() >= 0.99


def test_make_index_sets_the_measured_knobs() -> None:
    big = ann.HNSW_EF_SEARCH[-1][0] * 10
    hnsw = ann.make_index("hnsw-sq8", 384, big)
    assert isinstance(hnsw, faiss.IndexHNSWSQ)
    assert hnsw.hnsw.efConstruction == ann.HNSW_EF_CONSTRUCTION
    assert hnsw.hnsw.efSearch == ann.HNSW_EF_SEARCH[-1][1]
    assert ann.make_index("hnsw-sq8", 384, 1000).hnsw.efSearch == ann.HNSW_EF_SEARCH[0][1]
    ivf = ann.make_index("ivf-sq8", 384, 1_000_000)
    assert isinstance(ivf, faiss.IndexIVFScalarQuantizer)
    assert ivf.nlist == 4000 and ivf.nprobe == ann.IVF_NPROBE[-1][1]
    assert ann.make_index("ivf-sq8", 384, 100).nprobe == ann.make_index("ivf-sq8", 384, 100).nlist == 40
    # between two measured sizes, the knob of the bigger one
    assert ann.make_index("hnsw-sq8", 384, ann.HNSW_EF_SEARCH[0][0] + 1).hnsw.efSearch == ann.HNSW_EF_SEARCH[1][1]
    size, nprobe = ann.IVF_NPROBE[1]
    assert ann.make_index("ivf-sq8", 384, size).nprobe == min(nprobe, ann.ivf_nlist(size))
    for table in (ann.HNSW_EF_SEARCH, ann.IVF_NPROBE):
        assert [s for s, _ in table] == sorted({s for s, _ in table})
    # a bigger graph never gets a smaller efSearch (IVF's nprobe may shrink: its lists grow with n)
    assert [v for _, v in ann.HNSW_EF_SEARCH] == sorted(v for _, v in ann.HNSW_EF_SEARCH)


def test_choose_kind_is_exact_up_to_the_measured_size() -> None:
    assert ann.choose_kind(0) == ann.choose_kind(21_388) == ann.choose_kind(ann.EXACT_UP_TO) == "flat"
    assert ann.choose_kind(ann.EXACT_UP_TO + 1) == ann.choose_kind(15_000_000) == "ivf-sq8"


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: ann.make_index("ivf-pq", 384, 10), "'ivf-pq'"),
        (lambda: ann.make_index("flat", 0, 10), "dim"),
        (lambda: ann.make_index("flat", 384, -1), "n_hint"),
        (lambda: ann.choose_kind(-5), "-5"),
    ],
)
def test_ann_rejects_bad_arguments(call, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        call()
