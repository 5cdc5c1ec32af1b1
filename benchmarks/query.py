"""Query latency: in-process per mode, query embedding alone, and HTTP at concurrency 1 and 4.

Usage::

    python benchmarks/query.py --index index/daily [--corpus DIR] [--passes 3] [--json-out FILE]

Builds the index first when `--index` holds none. Every timed query is a cache miss: the
searcher is opened with `query_cache_size=0`, here and in the server subprocess this script
starts (it runs this file with `--serve`), so the figures include one query embedding each.
Prints a JSON summary and a markdown table with the two goal ratios:
hybrid p50 / embed p50 (goal <= 1.3) and HTTP c4 p99 / in-process hybrid p50 (goal <= 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "daily_papers_ko" / "paper_logs"
MODES = ("dense", "lexical", "hybrid")
GOAL_HYBRID_OVER_EMBED = 1.3
GOAL_HTTP_C4_P99_OVER_HYBRID = 3.0

# Written for this benchmark: Korean, English and mixed queries of different lengths and styles.
QUERIES: tuple[str, ...] = (
    "저랭크 행렬로 미세조정",
    "대규모 언어 모델의 환각을 줄이는 방법",
    "긴 문맥을 효율적으로 처리하는 어텐션",
    "이미지에서 3D 장면을 재구성",
    "텍스트로 동영상 생성하는 확산 모델",
    "강화학습으로 수학 추론 능력 향상",
    "작은 모델로 큰 모델의 지식을 증류",
    "음성 인식과 음성 합성을 함께 하는 모델",
    "코드 생성 벤치마크",
    "로봇 조작을 위한 비전 언어 행동 모델",
    "양자화로 추론 메모리 줄이기",
    "검색 증강 생성의 한계",
    "멀티모달 모델의 시각적 추론 평가",
    "에이전트가 웹 브라우저를 조작",
    "선호 데이터로 정렬하는 방법",
    "토크나이저 없이 바이트 단위로 학습",
    "혼합 전문가 모델의 라우팅",
    "상태 공간 모델이 트랜스포머를 대체할 수 있을까",
    "의료 영상 분할",
    "합성 데이터로 사전 학습",
    "추론 시간에 계산을 더 써서 성능 올리기",
    "얼굴 사진 한 장으로 말하는 영상 만들기",
    "LLM 평가에서 데이터 오염 문제",
    "장기 기억을 가진 대화 에이전트",
    "low-rank adaptation for fine-tuning large language models",
    "reducing hallucination in large language models",
    "efficient attention for long context",
    "text-to-video diffusion",
    "reinforcement learning from human feedback",
    "mixture of experts routing",
    "vision language action model for robot manipulation",
    "4-bit quantization of LLM weights",
    "speculative decoding speedup",
    "retrieval augmented generation benchmark",
    "3D gaussian splatting from a few images",
    "multimodal reasoning benchmark for charts and documents",
    "small language models trained on synthetic data",
    "tokenizer-free byte-level language model",
    "test-time compute scaling for reasoning",
    "GUI agents that operate smartphones",
    "state space models vs transformers",
    "image editing with instructions",
    "LoRA",
    "Mamba",
    "DPO",
    "CLIP",
    "Llama 3",
    "GPT-4o",
    "diffusion transformer",
    "KV cache compression",
    "Mamba 기반 비전 모델",
    "LoRA 변형 기법 비교",
    "DPO 없이 선호 최적화",
    "RAG 파이프라인에서 retriever 성능 개선",
    "Diffusion 모델로 이미지 편집",
    "GPT-4 수준의 오픈소스 모델",
    "KV 캐시 압축으로 긴 문맥 추론",
    "CLIP 임베딩을 활용한 zero-shot 분류",
    "MoE 구조의 학습 안정성",
    "Transformer 추론 속도 최적화 kernel",
)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p90_ms": round(percentile(values, 90), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "mean_ms": round(statistics.fmean(values), 2),
    }


def timed(call: Callable[[str], Any], query: str) -> float:
    started = time.perf_counter()
    call(query)
    return (time.perf_counter() - started) * 1000


# --------------------------------------------------------------------------- index and searcher
def ensure_index(index: Path, corpus: Path) -> None:
    if (index / "CURRENT").exists():
        return
    print(f"no index at {index}; building it from {corpus} (takes a while)", file=sys.stderr)
    command = [sys.executable, "-m", "retrieval.cli", "build-index", str(corpus), "--index", str(index)]
    subprocess.run(command, check=True)


def open_uncached(index: Path) -> Any:
    """The searcher the server uses, without its query-vector cache."""
    from retrieval.config import Settings
    from retrieval.search import SearchSettings
    from retrieval.service import open_searcher

    settings = Settings(index_dir=index)
    search = SearchSettings(candidate_depth=settings.candidate_depth, query_cache_size=0)
    return open_searcher(index, settings=search)


def in_process(index: Path, queries: Sequence[str], passes: int) -> dict[str, Any]:
    """Embed alone and each mode, interleaved per query so machine noise hits all alike."""
    started = time.perf_counter()
    searcher = open_uncached(index)
    load_s = time.perf_counter() - started
    from retrieval.api import warm_up

    warm_up(searcher)
    searcher.search("warm-up 준비", mode="hybrid")
    times: dict[str, list[float]] = {name: [] for name in ("embed", *MODES)}

    def mode_step(mode: str) -> Callable[[str], Any]:
        return lambda q: searcher.search(q, mode=mode, limit=10)

    steps: list[tuple[str, Callable[[str], Any]]] = [
        ("embed", lambda q: searcher.embedder.embed_queries([q])),
        *[(mode, mode_step(mode)) for mode in MODES],
    ]
    for round_ in range(passes):
        for i, query in enumerate(queries):
            rotation = (i + round_) % len(steps)
            for name, step in steps[rotation:] + steps[:rotation]:
                times[name].append(timed(step, query))
    if searcher._query_cache:
        raise SystemExit("the query cache filled up: the figures would include cache hits")
    manifest = searcher.index.manifest
    return {
        "index": {
            "version": searcher.index.path.name,
            "model": manifest.model,
            "papers": manifest.papers,
            "bullets": manifest.bullets,
        },
        "load_s": round(load_s, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "latency": {name: summary(values) for name, values in times.items()},
    }


# --------------------------------------------------------------------------- HTTP
def serve(index: Path, port: int) -> None:
    """The server subprocess: the real app over an uncached searcher."""
    import uvicorn

    from retrieval.api import create_app
    from retrieval.config import Settings

    app = create_app(Settings(index_dir=index), open_uncached(index))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(index: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--index", str(index), "--port", str(port)]
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    process.kill()
    raise SystemExit("the server did not become ready in 300 s")


def http_run(url: str, queries: Sequence[str], concurrency: int) -> tuple[list[float], int, float]:
    """Each query once, `concurrency` clients at a time: (latencies ms, errors, wall seconds)."""
    work: queue.Queue[str] = queue.Queue()
    for query in queries:
        work.put(query)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                try:
                    query = work.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                response = client.get("/search", params={"q": query, "mode": "hybrid", "k": 10})
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, len(errors), time.perf_counter() - started


def http_bench(index: Path, queries: Sequence[str], passes: int) -> dict[str, Any]:
    """Hybrid searches over HTTP against a server subprocess.

    The server's searcher has no query cache, so every request embeds. The two concurrency
    levels take turns, one block of all queries each, so a change in machine load hits both.
    """
    process, url = start_server(index)
    try:
        with httpx.Client(base_url=url) as client:
            client.get("/search", params={"q": "warm-up 준비", "k": 10})
        runs: dict[int, list[tuple[list[float], int, float]]] = {1: [], 4: []}
        for _ in range(passes):
            for level, blocks in runs.items():
                blocks.append(http_run(url, queries, level))
        return {f"c{level}": _merge(blocks) for level, blocks in runs.items()}
    finally:
        process.terminate()
        process.wait(30)


def _merge(blocks: list[tuple[list[float], int, float]]) -> dict[str, Any]:
    latencies = [ms for block in blocks for ms in block[0]]
    wall = sum(block[2] for block in blocks)
    return {
        **summary(latencies),
        "errors": sum(block[1] for block in blocks),
        "requests_per_s": round(len(latencies) / wall, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------- report
def report(result: dict[str, Any]) -> str:
    latency = result["in_process"]["latency"]
    lines = [
        f"index {result['in_process']['index']['version']}: {result['in_process']['index']['papers']} papers, "
        f"{result['in_process']['index']['bullets']} bullets, model {result['in_process']['index']['model']}",
        "",
        "| measure | n | p50 ms | p90 ms | p99 ms | mean ms | load avg after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    load = {"loadavg_1m_after": result["in_process"]["loadavg_1m_after"]}
    rows = [(f"in-process {name}", {**latency[name], **load}) for name in ("embed", *MODES)]
    rows += [(f"HTTP hybrid {level}", stats) for level, stats in result["http"].items()]
    for name, stats in rows:
        cells = [stats[key] for key in ("n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "loadavg_1m_after")]
        lines.append(f"| {name} | " + " | ".join(str(cell) for cell in cells) + " |")
    ratios = result["ratios"]
    http = result["http"]
    lines += [
        "",
        f"hybrid p50 / embed p50 = {ratios['hybrid_p50_over_embed_p50']} (goal <= {GOAL_HYBRID_OVER_EMBED})",
        f"HTTP c4 p99 / in-process hybrid p50 = {ratios['http_c4_p99_over_hybrid_p50']} "
        f"(goal <= {GOAL_HTTP_C4_P99_OVER_HYBRID})",
        f"HTTP throughput: c1 {http['c1']['requests_per_s']} req/s, c4 {http['c4']['requests_per_s']} req/s",
    ]
    return "\n".join(lines)


def run(index: Path, corpus: Path, passes: int) -> dict[str, Any]:
    ensure_index(index, corpus)
    local = in_process(index, QUERIES, passes)
    remote = http_bench(index, QUERIES, passes)
    hybrid_p50 = local["latency"]["hybrid"]["p50_ms"]
    return {
        "queries": len(QUERIES),
        "passes": passes,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "in_process": local,
        "http": remote,
        "ratios": {
            "hybrid_p50_over_embed_p50": round(hybrid_p50 / local["latency"]["embed"]["p50_ms"], 3),
            "http_c4_p99_over_hybrid_p50": round(remote["c4"]["p99_ms"] / hybrid_p50, 3),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=ROOT / "index" / "daily")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="built into --index when it holds no index")
    parser.add_argument("--passes", type=int, default=3, help="times each query is run per measure")
    parser.add_argument("--json-out", type=Path, help="also write the JSON summary here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.index, args.port)
        return 0
    result = run(args.index, args.corpus, args.passes)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    print()
    print(report(result))
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
