"""The `retrieval` command: build-index, search, serve, mcp, eval.

Domain errors become one line on stderr and a non-zero exit code; never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from retrieval.config import DEFAULT_INDEX, Settings
from retrieval.embedding import DEFAULT_MODEL
from retrieval.errors import (
    CorpusError,
    EmbedderError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    PaperNotFoundError,
    RetrievalError,
)

EXIT_CODES: dict[type[RetrievalError], int] = {
    CorpusError: 3,
    IndexNotFoundError: 4,
    IndexCorruptError: 5,
    IndexMismatchError: 6,
    IndexLockedError: 7,
    EmbedderError: 8,
    PaperNotFoundError: 9,
}


def _iso_date(value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from exc


def _limit(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 100:
        raise argparse.ArgumentTypeError("must be between 1 and 100")
    return number


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from exc
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def cmd_build_index(args: argparse.Namespace) -> int:
    from retrieval.embedding import load_embedder
    from retrieval.indexer import build_index

    embedder = load_embedder(args.model, batch_size=args.batch_size)
    report = build_index(
        args.corpus,
        args.index,
        embedder,
        show_progress=sys.stderr.isatty() and not args.json,
        batch_size=args.batch_size,
    )
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False))
        return 0
    for problem in report.files_skipped:
        print(f"skipped {problem['path']}: {problem['reason']}", file=sys.stderr)
    for problem in report.problems:
        print(f"warning {problem['path']}:{problem['line']}: {problem['reason']}", file=sys.stderr)
    state = "unchanged" if report.unchanged else f"version {report.version}"
    print(
        f"index {report.index} ({state}): {report.files} files, {report.papers} papers, {report.bullets} bullets; "
        f"embedded {report.embedded}, reused {report.reused}, removed {report.removed} "
        f"in {report.seconds:.1f}s [{report.model}]"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from retrieval.search import Filters
    from retrieval.service import open_searcher

    searcher = open_searcher(args.index)
    query = args.query.strip()
    if not query:
        print("error: the query is empty", file=sys.stderr)
        return 2
    response = searcher.search(
        query,
        mode=args.mode,
        limit=args.k,
        offset=args.offset,
        filters=Filters(date_from=args.date_from, date_to=args.date_to, min_votes=args.min_votes, author=args.author),
    )
    if args.json:
        print(response.model_dump_json())
        return 0
    from retrieval.render import render_text

    print(render_text(response))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from retrieval.api import run_server

    settings = Settings(index_dir=args.index, host=args.host, port=args.port)
    run_server(settings)
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from retrieval.mcp_server import run_stdio

    run_stdio(Settings(index_dir=args.index))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from retrieval.evaluation import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrieval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build-index", help="parse digests, embed bullets, write the index")
    build.add_argument("corpus", type=Path, help="folder searched recursively for *.md digests, or one file")
    build.add_argument("--index", type=Path, default=DEFAULT_INDEX, help=f"index directory (default {DEFAULT_INDEX})")
    build.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model spec (default {DEFAULT_MODEL}; or st:<name or path>)"
    )
    build.add_argument("--batch-size", type=int, default=256, help="texts per embedding call")
    build.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    build.set_defaults(func=cmd_build_index)

    search = sub.add_parser("search", help="search an index from the command line")
    search.add_argument("query")
    search.add_argument("--index", type=Path, default=DEFAULT_INDEX)
    search.add_argument("-k", type=_limit, default=10, help="results per page (1-100)")
    search.add_argument("--offset", type=int, default=0)
    search.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default="hybrid")
    search.add_argument("--date-from", type=_iso_date)
    search.add_argument("--date-to", type=_iso_date)
    search.add_argument("--min-votes", type=int)
    search.add_argument("--author")
    search.add_argument("--json", action="store_true", help="print the same JSON object as the HTTP API")
    search.set_defaults(func=cmd_search)

    serve = sub.add_parser("serve", help="serve the HTTP API and the search page")
    serve.add_argument("--index", type=Path, default=DEFAULT_INDEX)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    mcp = sub.add_parser("mcp", help="run the MCP server on stdio")
    mcp.add_argument("--index", type=Path, default=DEFAULT_INDEX)
    mcp.set_defaults(func=cmd_mcp)

    evaluate = sub.add_parser("eval", help="measure retrieval quality")
    evaluate.add_argument("--corpus", type=Path, help="corpus folder (title task; builds or reuses --index)")
    evaluate.add_argument("--index", type=Path, default=DEFAULT_INDEX)
    evaluate.add_argument("--queries", type=Path, help="JSON lines {q, ids, lang?}: the query-file task")
    evaluate.add_argument(
        "--known-items",
        action="store_true",
        help="the known-item task: papers' short names and arXiv ids (4 spellings) as queries",
    )
    evaluate.add_argument(
        "--name-max-words",
        type=_positive,
        help="known-item task: longest title head (words before the colon) taken as a name (default 5)",
    )
    evaluate.add_argument("--mode", choices=["dense", "lexical", "hybrid"])
    evaluate.add_argument("--all-modes", action="store_true", help="evaluate every mode")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument(
        "--misses", action="store_true", help="with --json: list the queries whose answer is not first"
    )
    evaluate.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except RetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CODES.get(type(exc), 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
