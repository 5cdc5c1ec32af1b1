"""The `retrieval` command: build-index, search, serve, watch, mcp, eval.

User errors become one line on stderr and a documented exit code (see `retrieval.errors.ERROR_CODES`:
2 usage, 3 corpus, 4 no index, 5 damaged index, 6 model mismatch, 7 locked, 8 model, 9 no such paper,
10 service, 11 no such day, 12 closed searcher); never a traceback. Flags override the
`RETRIEVAL_*` environment only when given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from retrieval import __version__
from retrieval.config import DEFAULT_INDEX, Settings
from retrieval.embedding import DEFAULT_MODEL
from retrieval.errors import RetrievalError, error_codes
from retrieval.requests import InvalidRequest, parse_search_request

INDEX_HELP = f"index directory (default: $RETRIEVAL_INDEX_DIR, else {DEFAULT_INDEX})"
POLLING_HELP = (
    "poll the folder for changes instead of native file events, e.g. on network or container mounts "
    "(default: $RETRIEVAL_WATCH_FORCE_POLLING; polling is also used when native events are unavailable)"
)


# The flags that choose the retrieval backend, on every command that opens or builds an index.
BACKEND_FLAGS = {"backend": "backend", "milvus_uri": "milvus_uri"}


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=["embedded", "milvus"],
        help="where the ranking legs find candidates (default: $RETRIEVAL_BACKEND, else embedded)",
    )
    parser.add_argument(
        "--milvus-uri",
        help="Milvus server URL (http://host:19530) or Milvus Lite file (*.db) (default: $RETRIEVAL_MILVUS_URI); "
        "the token comes from $RETRIEVAL_MILVUS_TOKEN only",
    )


def settings_from(args: argparse.Namespace, **flags: str) -> Settings:
    """Settings from the environment, overridden by the flags the user actually gave.

    `flags` maps setting names to argparse destinations; a flag left at None was not given.
    """
    given = {name: getattr(args, dest) for name, dest in flags.items() if getattr(args, dest, None) is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:  # a flag or RETRIEVAL_* value out of range: one line, exit 2
        problems = InvalidRequest.from_validation(exc).problems

        def source(field: str) -> str:
            return f"--{flags[field].replace('_', '-')}" if field in given else f"RETRIEVAL_{field.upper()}"

        named = [replace(p, field=source(p.field)) for p in problems]
        raise InvalidRequest(named) from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from exc
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def cmd_build_index(args: argparse.Namespace) -> int:
    from retrieval.backends.choice import connect_backend
    from retrieval.embedding import load_embedder
    from retrieval.indexer import build_index

    settings = settings_from(
        args,
        index_dir="index",
        model="model",
        batch_size="batch_size",
        tuning_queries="tuning_queries",
        **BACKEND_FLAGS,
    )
    embedder = load_embedder(settings.model, batch_size=settings.batch_size)
    backend = connect_backend(settings, embedder.dim)  # unreachable: one line before any work
    try:
        report = build_index(
            args.corpus,
            settings.index_dir,
            embedder,
            show_progress=sys.stderr.isatty() and not args.json,
            batch_size=settings.batch_size,
            backend=backend,
            learning=settings.learn_options(),
        )
    finally:
        if backend is not None:
            backend.close()
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
        f"in {report.seconds:.1f}s [{report.model}]; {learned_summary(report.learned)}"
    )
    return 0


def learned_summary(learned: dict[str, Any]) -> str:
    """The build's learned-models outcome in a few words (retrieval/learning.py)."""
    if learned.get("action") == "defaults":
        return f"learned models: none, code defaults ({learned.get('note') or learned.get('reason')})"
    took = f" in {learned['seconds']:.1f}s" if learned.get("action") == "fitted" else ""
    return f"learned models: {learned.get('action')} ({learned.get('reason')}){took}"


def cmd_search(args: argparse.Namespace) -> int:
    from retrieval.service import open_searcher, search_settings

    settings = settings_from(args, index_dir="index", **BACKEND_FLAGS)
    fields: dict[str, Any] = {"q": args.query, "k": args.k, "offset": args.offset, "mode": args.mode}
    fields |= {"date_from": args.date_from, "date_to": args.date_to, "min_votes": args.min_votes}
    fields |= {"author": args.author}
    request = parse_search_request(fields, settings.request_limits())  # before the index loads: fail fast
    searcher = open_searcher(settings.index_dir, settings=search_settings(settings), config=settings)
    response = searcher.search(
        request.q.strip(), mode=request.mode, limit=request.k, offset=request.offset, filters=request.filters()
    )
    if args.json:
        print(response.model_dump_json())
        return 0
    from retrieval.render import render_text

    print(render_text(response))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from retrieval.api import run_server

    run_server(
        settings_from(
            args,
            index_dir="index",
            host="host",
            port="port",
            watch_corpus="watch",
            watch_force_polling="force_polling",
            **BACKEND_FLAGS,
        )
    )
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from retrieval.api.app import configure_logging
    from retrieval.refresh import run_watch

    settings = settings_from(
        args,
        index_dir="index",
        model="model",
        batch_size="batch_size",
        watch_force_polling="force_polling",
        watch_debounce_ms="debounce_ms",
        **BACKEND_FLAGS,
    )
    configure_logging()
    return run_watch(settings, args.corpus, reload_url=args.reload_url)


def cmd_mcp(args: argparse.Namespace) -> int:
    from retrieval.mcp_server import run_stdio

    run_stdio(settings_from(args, index_dir="index", **BACKEND_FLAGS))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from retrieval.evaluation import run_cli

    settings = settings_from(args, index_dir="index", **BACKEND_FLAGS)
    args.index = settings.index_dir
    return run_cli(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build-index", help="parse digests, embed bullets, write the index")
    build.add_argument("corpus", type=Path, help="folder searched recursively for *.md digests, or one file")
    build.add_argument("--index", type=Path, help=INDEX_HELP)
    build.add_argument(
        "--model",
        help=f"model spec: {DEFAULT_MODEL} or st:<name or path> (default: $RETRIEVAL_MODEL, else {DEFAULT_MODEL})",
    )
    build.add_argument(
        "--batch-size", type=int, help="texts per embedding call (default: $RETRIEVAL_BATCH_SIZE, else 256)"
    )
    build.add_argument(
        "--tuning-queries",
        metavar="FILE",
        help="JSON lines {q, ids, lang}: reader-style queries the learned fusion weights, re-ranker and relevance "
        "calibration are fitted on, with the titles of half the papers; 'none': fit nothing, serve the code defaults "
        "(default: $RETRIEVAL_TUNING_QUERIES, else the file the index was fitted on, else the bundled dev set)",
    )
    build.add_argument("--json", action="store_true", help="print one JSON summary on stdout (default: a line of text)")
    add_backend_flags(build)
    build.set_defaults(func=cmd_build_index, command_parser=build)

    search = sub.add_parser("search", help="search an index from the command line")
    search.add_argument("query", help="what to look for, in Korean or English")
    search.add_argument("--index", type=Path, help=INDEX_HELP)
    search.add_argument("-k", type=int, default=10, help="results per page, 1-100 (default: 10)")
    search.add_argument("--offset", type=int, default=0, help="results to skip, for paging (default: 0)")
    search.add_argument(
        "--mode", choices=["dense", "lexical", "hybrid"], default="hybrid", help="ranking (default: hybrid)"
    )
    search.add_argument(
        "--date-from", metavar="YYYY-MM-DD", help="only papers on or after this digest date (default: any)"
    )
    search.add_argument(
        "--date-to", metavar="YYYY-MM-DD", help="only papers on or before this digest date (default: any)"
    )
    search.add_argument("--min-votes", type=int, help="only papers with at least this many votes (default: any)")
    search.add_argument("--author", help="only papers with an author containing this text (default: any)")
    search.add_argument(
        "--json", action="store_true", help="print the same JSON object as the HTTP API (default: a table)"
    )
    add_backend_flags(search)
    search.set_defaults(func=cmd_search, command_parser=search)

    serve = sub.add_parser("serve", help="serve the HTTP API and the search page")
    serve.add_argument("--index", type=Path, help=INDEX_HELP)
    serve.add_argument("--host", help="address to listen on (default: $RETRIEVAL_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: $RETRIEVAL_PORT, else 8000)")
    serve.add_argument(
        "--watch",
        type=Path,
        metavar="CORPUS_DIR",
        help="watch this digest folder: rebuild and hot-reload the index when digests are added, changed or deleted "
        "(default: $RETRIEVAL_WATCH_CORPUS, else no watching)",
    )
    serve.add_argument("--force-polling", action="store_true", default=None, help=POLLING_HELP)
    add_backend_flags(serve)
    serve.set_defaults(func=cmd_serve, command_parser=serve)

    watch = sub.add_parser(
        "watch", help="rebuild an index whenever the digest folder changes (run beside `serve`, or alone)"
    )
    watch.add_argument("corpus", type=Path, help="folder of *.md digests to watch (searched recursively)")
    watch.add_argument("--index", type=Path, help=INDEX_HELP)
    watch.add_argument(
        "--model",
        help=f"model spec for a new index (an existing index keeps its own model; default: $RETRIEVAL_MODEL, "
        f"else {DEFAULT_MODEL})",
    )
    watch.add_argument(
        "--batch-size", type=int, help="texts per embedding call (default: $RETRIEVAL_BATCH_SIZE, else 256)"
    )
    watch.add_argument("--force-polling", action="store_true", default=None, help=POLLING_HELP)
    watch.add_argument(
        "--debounce-ms",
        type=int,
        help="longest time one burst of file events is grouped into one build (default: $RETRIEVAL_WATCH_DEBOUNCE_MS, "
        "else 1600)",
    )
    watch.add_argument(
        "--reload-url",
        metavar="URL",
        help="after each build, POST URL/admin/reload so a running server switches to the new version "
        "(sends $RETRIEVAL_API_TOKEN as bearer token when set; default: no reload, use SIGHUP or POST yourself)",
    )
    add_backend_flags(watch)
    watch.set_defaults(func=cmd_watch, command_parser=watch)

    mcp = sub.add_parser("mcp", help="run the MCP server on stdio")
    mcp.add_argument("--index", type=Path, help=INDEX_HELP)
    add_backend_flags(mcp)
    mcp.set_defaults(func=cmd_mcp, command_parser=mcp)

    evaluate = sub.add_parser("eval", help="measure retrieval quality")
    evaluate.add_argument(
        "--corpus",
        type=Path,
        help="corpus folder: build or update --index from it first (default: use the index as is)",
    )
    evaluate.add_argument("--index", type=Path, help=INDEX_HELP)
    evaluate.add_argument(
        "--queries", type=Path, help="JSON lines {q, ids, lang?}: the query-file task (default: the title task)"
    )
    evaluate.add_argument(
        "--known-items",
        action="store_true",
        help="the known-item task: papers' short names and arXiv ids (4 spellings) as queries (default: off)",
    )
    evaluate.add_argument(
        "--name-max-words",
        type=_positive,
        help="known-item task: longest title head (words before the colon) taken as a name (default: 5)",
    )
    evaluate.add_argument(
        "--title-fold",
        type=int,
        choices=[0, 1],
        help="title task: only this half of the titles (the learned models train on fold 0; default: both)",
    )
    evaluate.add_argument("--mode", choices=["dense", "lexical", "hybrid"], help="ranking to measure (default: hybrid)")
    evaluate.add_argument("--all-modes", action="store_true", help="measure every mode (default: only --mode)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table (default: a table)")
    evaluate.add_argument(
        "--misses", action="store_true", help="with --json: list the queries whose answer is not first (default: off)"
    )
    add_backend_flags(evaluate)
    evaluate.set_defaults(func=cmd_eval, command_parser=evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except InvalidRequest as exc:
        # argparse's own form for bad arguments: usage line, "error: ...", exit 2.
        args.command_parser.error(str(exc).replace("q: ", "query: ", 1))
    except RetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return error_codes(exc)[0]
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
