"""Freshness of `retrieval serve --watch`: seconds from a new day's digest file landing in the corpus
folder until `/search` returns its papers, on a copy of a full index.

Usage::

    python benchmarks/watch_latency.py --index /work/idx/daily \\
        --corpus ../shared/corpus/daily_papers_ko/paper_logs [--day YYYY-MM-DD] [--runs 3]
        [--workdir DIR] [--max-wait 120] [--json-out FILE]

What it does:

1. copies the index and the corpus into a temporary folder (the originals are only read);
2. takes the day's digest (default: the newest) out of the corpus copy, and picks as probe the
   first paper of that digest that appears on no other day; the probe query is its title;
3. starts `retrieval serve --index COPY --watch CORPUS_COPY` on a free loopback port and waits
   until the watcher's first build (which drops the day) is live and the probe is not found;
4. per run: writes the day's file back (one write, as a `git pull` does) and polls `GET /search`
   (hybrid, k=10) every `--poll` seconds until the probe is in the results: that is the latency.
   Between runs the file is removed again and the benchmark waits until the probe is gone, so every
   run embeds the day's bullets anew (the build prunes them from the embedding cache on removal);
5. stops the server with SIGTERM and reports its exit code and how long shutdown took.

Prints one JSON object: per run the latency, the watcher's build-and-reload seconds (`/readyz`
`last_build.seconds`) and the 1-minute load average (the figures depend on what else the machine
runs), and the median and worst latency against the 30 s goal. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from retrieval.corpus import date_from_path, find_digests, load_corpus, parse_digest

HOST = "127.0.0.1"
GOAL_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def day_file(corpus: Path, day: str | None) -> Path:
    """The digest file of `day` (default: the newest dated one)."""
    dated = {date_from_path(p.relative_to(corpus).as_posix()): p for p in find_digests(corpus)}
    dated.pop(None, None)
    if not dated:
        sys.exit(f"error: no dated digest under {corpus}")
    if day is None:
        day = max(d for d in dated if d is not None)
    if day not in dated:
        sys.exit(f"error: no digest file for {day} under {corpus}")
    return dated[day]


def probe_paper(corpus: Path, digest: Path) -> tuple[str, str, int]:
    """(arXiv id, title, bullets of the day) of the day's first paper listed on no other day."""
    papers, _ = parse_digest(digest.read_text(encoding="utf-8"), digest.relative_to(corpus).as_posix())
    merged = {p.arxiv_id: p for p in load_corpus(corpus).papers}
    bullets = sum(len(p.bullets) for p in papers)
    for paper in papers:
        if len(merged[paper.arxiv_id].dates) == 1:
            return paper.arxiv_id, paper.title, bullets
    sys.exit(f"error: every paper of {digest} also appears on another day; choose another --day")


def found(http: httpx.Client, title: str, arxiv_id: str) -> bool:
    response = http.get("/search", params={"q": title, "k": 10})
    response.raise_for_status()
    return arxiv_id in [hit["paper"]["id"] for hit in response.json()["results"]]


def wait(check: Any, limit: float, poll: float, what: str) -> float:
    """Seconds until `check()` is true, polling every `poll` s; exits the benchmark after `limit` s."""
    started = time.perf_counter()
    while True:
        if check():
            return time.perf_counter() - started
        if time.perf_counter() - started > limit:
            sys.exit(f"error: gave up after {limit:.0f} s waiting for {what}")
        time.sleep(poll)


def readiness(http: httpx.Client) -> dict[str, Any]:
    try:
        response = http.get("/readyz")
    except httpx.HTTPError:
        return {}
    return dict(response.json()) if response.status_code == 200 else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="a built index of the corpus (copied, not changed)")
    parser.add_argument("--corpus", type=Path, required=True, help="the corpus folder (copied, not changed)")
    parser.add_argument("--day", help="the day to add back, YYYY-MM-DD (default: the newest digest)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between /search polls")
    parser.add_argument("--max-wait", type=float, default=120.0, help="give up on a run after this many seconds")
    parser.add_argument("--workdir", type=Path, help="where the copies go (default: a new temporary folder)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report here")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="watch-latency-"))
    index, corpus = work / "index", work / "corpus"
    for target in (index, corpus):
        shutil.rmtree(target, ignore_errors=True)
    copy_started = time.perf_counter()
    shutil.copytree(args.index, index)
    shutil.copytree(args.corpus, corpus, ignore=shutil.ignore_patterns(".git"))
    copy_s = time.perf_counter() - copy_started
    digest = day_file(corpus, args.day)
    day = date_from_path(digest.relative_to(corpus).as_posix())
    probe_id, probe_title, day_bullets = probe_paper(corpus, digest)
    content = digest.read_bytes()
    digest.unlink()

    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [sys.executable, "-m", "retrieval.cli", "serve", "--index", str(index), "--port", str(port)]
    command += ["--watch", str(corpus)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRIEVAL_")}
    log_path = work / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    runs: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=url, timeout=60) as http:

            def settled_without_day() -> bool:
                if server.poll() is not None:
                    sys.exit(f"error: the server exited with {server.returncode}; see {log_path}")
                ready = readiness(http)
                last = ready.get("last_build")
                return bool(last and last["ok"] and ready.get("latest_day") != day) and not found(
                    http, probe_title, probe_id
                )

            start_s = wait(settled_without_day, 600, 0.5, "the server and its first watch build")
            for run in range(1, args.runs + 1):
                if run > 1:
                    digest.unlink()
                    wait(settled_without_day, args.max_wait, args.poll, "the day to be removed again")
                    time.sleep(1.0)  # let the removal's events settle before the next write
                before = readiness(http)["version"]
                digest.parent.mkdir(parents=True, exist_ok=True)
                with digest.open("wb") as handle:
                    handle.write(content)
                latency = wait(
                    lambda: found(http, probe_title, probe_id), args.max_wait, args.poll, "the new day in /search"
                )
                ready = readiness(http)
                runs.append(
                    {
                        "run": run,
                        "latency_s": round(latency, 2),
                        "build_and_reload_s": ready["last_build"]["seconds"],
                        "load_avg_1m": round(os.getloadavg()[0], 2),
                        "version_before": before,
                        "version_after": ready["version"],
                        "papers": ready["papers"],
                    }
                )
                print(
                    f"run {run}: {latency:.1f} s (build + reload {ready['last_build']['seconds']:.1f} s)",
                    file=sys.stderr,
                )
    finally:
        stop_started = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        stop_s = time.perf_counter() - stop_started

    latencies = [r["latency_s"] for r in runs]
    result = {
        "benchmark": "watch_latency",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "index": str(args.index),
        "corpus": str(args.corpus),
        "day": day,
        "day_file": digest.relative_to(corpus).as_posix(),
        "day_bullets": day_bullets,
        "probe": {"id": probe_id, "title": probe_title},
        "copy_s": round(copy_s, 1),
        "server_ready_s": round(start_s, 1),
        "runs": runs,
        "median_latency_s": round(statistics.median(latencies), 2) if latencies else None,
        "max_latency_s": max(latencies) if latencies else None,
        "goal_s": GOAL_S,
        "goal_met": bool(latencies) and max(latencies) <= GOAL_S,
        "server_exit_code": code,  # uvicorn re-raises SIGTERM after a graceful shutdown: -15
        "server_shutdown_clean": "Application shutdown complete" in log_path.read_text(errors="replace"),
        "server_stop_s": round(stop_s, 2),
        "server_log": str(log_path),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
    }
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")
    return 0 if result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
