"""Load test of the HTTP API: N search requests at concurrency C against `retrieval serve` on loopback.

Usage::

    python benchmarks/load.py --index /work/cache/full [--requests 2000] [--concurrency 16]
        [--max-seconds 600] [--vary] [--json-out FILE]

Starts `retrieval serve --index INDEX --host 127.0.0.1 --port <free port>` as a subprocess,
waits for `/readyz`, sends `GET /search` requests cycling through 50 Korean, English and mixed
queries (a fixed shuffle), then stops the server. Bounded twice: it stops after `--requests`
requests or `--max-seconds` seconds, whichever comes first. Reports errors (non-200 answers and
transport failures), throughput and latency percentiles as JSON on stdout.

The server caches query vectors, so after the first round of the 50 queries most requests skip
the query embedding. `--vary` appends the request number to every query, so each one is new to
the server (a cache miss: one query embedding per request).
Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import httpx

HOST = "127.0.0.1"

# Written for this benchmark: what a reader of the digests might type, in Korean, English or both.
QUERIES: tuple[str, ...] = (
    "저랭크 어댑터로 대형 언어 모델 미세 조정",
    "상태 공간 모델로 트랜스포머 대체하기",
    "1비트 가중치 양자화 언어 모델",
    "선호 데이터로 보상 모델 없이 정렬",
    "검색 증강 생성으로 환각 줄이기",
    "이미지와 텍스트를 함께 학습하는 대조 학습",
    "긴 문맥을 처리하는 효율적인 어텐션",
    "비디오 생성 확산 모델",
    "코드 생성 벤치마크",
    "수학 문제 풀이 추론 능력 향상",
    "로봇 조작을 위한 비전 언어 행동 모델",
    "텍스트에서 3D 객체 생성",
    "음성 인식과 음성 합성",
    "에이전트가 웹 브라우저를 조작",
    "추측 디코딩으로 추론 속도 향상",
    "전문가 혼합 라우팅",
    "지식 증류로 작은 모델 학습",
    "합성 데이터로 지시 따르기 학습",
    "멀티모달 대형 언어 모델 환각 평가",
    "강화 학습으로 추론 길이 늘리기",
    "KV 캐시 압축",
    "문서 이미지 이해와 OCR",
    "의료 영상 분석",
    "한국어 언어 모델 평가",
    "low-rank adaptation of large language models",
    "state space models for long sequences",
    "direct preference optimization",
    "retrieval augmented generation for question answering",
    "contrastive language image pretraining",
    "mixture of experts routing",
    "speculative decoding speedup",
    "text to video diffusion",
    "vision language action models for robotics",
    "long context extension with rotary embeddings",
    "reward models for RLHF",
    "chain of thought reasoning benchmark",
    "quantization of LLM weights to 4 bits",
    "multimodal agents for GUI navigation",
    "image editing with diffusion models",
    "tokenizer free byte level models",
    "LoRA 미세 조정",
    "Mamba 선택적 상태 공간",
    "DPO 선호 최적화",
    "RAG 검색기 학습",
    "CLIP 제로샷 분류",
    "GPT-4o 평가",
    "Llama 3 instruction tuning 데이터",
    "Stable Diffusion 3 텍스트 렌더링",
    "ViT 패치 크기",
    "BitNet b1.58 ternary weights",
)


@dataclass
class Result:
    """What one load run measured."""

    index: str
    version: str | None
    model: str | None
    papers: int | None
    requests_planned: int
    requests_done: int
    concurrency: int
    errors: int
    error_samples: list[str]
    seconds: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    vary: bool
    stopped_by: str
    machine: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(index: Path, port: int, ready_timeout: float) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run `retrieval serve` on loopback; yield its URL and `/readyz` body; stop it afterwards."""
    command = [
        sys.executable,
        "-m",
        "retrieval.cli",
        "serve",
        "--index",
        str(index),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True, env=env)
        try:
            yield url, wait_ready(url, process, log, ready_timeout)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def wait_ready(url: str, process: subprocess.Popen[str], log: IO[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"the server exited with {process.returncode}: {log.read().strip()[-2000:]}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready after {timeout:.0f} s")


class LoadRun:
    """Workers share a request counter; each has its own keep-alive connection."""

    def __init__(self, url: str, queries: Sequence[str], total: int, deadline: float, vary: bool) -> None:
        self.url = url
        self.queries = queries
        self.total = total
        self.deadline = deadline
        self.vary = vary
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._next = 0
        self._lock = threading.Lock()

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.total or time.monotonic() >= self.deadline:
                return None
            self._next += 1
            return self._next - 1

    def worker(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while (number := self._take()) is not None:
                query = self.queries[number % len(self.queries)]
                if self.vary:
                    query = f"{query} {number}"
                started = time.perf_counter()
                try:
                    response = client.get("/search", params={"q": query, "k": 10})
                    failure = None if response.status_code == 200 else f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - started) * 1000
                with self._lock:
                    self.latencies.append(elapsed)
                    if failure is not None:
                        self.errors.append(failure)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (fraction in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def run(index: Path, requests: int, concurrency: int, max_seconds: float, vary: bool, ready_timeout: float) -> Result:
    queries = list(QUERIES)
    random.Random(7).shuffle(queries)
    with serve(index, free_port(), ready_timeout) as (url, ready):
        started = time.monotonic()
        load = LoadRun(url, queries, requests, started + max_seconds, vary)
        threads = [threading.Thread(target=load.worker, name=f"load-{i}") for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
    done = len(load.latencies)
    return Result(
        index=str(index),
        version=ready.get("version"),
        model=ready.get("model"),
        papers=ready.get("papers"),
        requests_planned=requests,
        requests_done=done,
        concurrency=concurrency,
        errors=len(load.errors),
        error_samples=load.errors[:5],
        seconds=round(seconds, 3),
        throughput_rps=round(done / seconds, 2) if seconds else 0.0,
        p50_ms=round(percentile(load.latencies, 0.50), 2),
        p90_ms=round(percentile(load.latencies, 0.90), 2),
        p99_ms=round(percentile(load.latencies, 0.99), 2),
        max_ms=round(max(load.latencies, default=float("nan")), 2),
        vary=vary,
        stopped_by="count" if done >= requests else "time",
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="built index directory (read only)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /readyz")
    parser.add_argument("--vary", action="store_true", help="make every query new to the server (no query cache)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    if not (args.index / "CURRENT").is_file():
        parser.error(f"no built index at {args.index} (no CURRENT file)")
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    result = run(args.index, args.requests, args.concurrency, args.max_seconds, args.vary, args.ready_timeout)
    text = json.dumps(asdict(result), ensure_ascii=False, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0 if result.errors == 0 and result.requests_done == result.requests_planned else 1


if __name__ == "__main__":
    sys.exit(main())
