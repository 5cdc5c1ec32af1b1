#!/usr/bin/env python3
"""Serve a Milvus Lite file over gRPC on a TCP address, as a stand-in Milvus server.

    python scripts/milvus_lite_server.py /tmp/milvus-test.db --address 127.0.0.1:19530 &
    RETRIEVAL_TEST_MILVUS_URI=http://127.0.0.1:19530 python -m pytest -q tests/test_backends.py

Needs `pip install '.[milvus]'`. Runs until interrupted (Ctrl-C or SIGTERM). The file name may
hold only letters, digits, `.`, `-` and `_` (at most 36 characters), a Milvus Lite rule.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db_file", type=Path, help="the Milvus Lite data file (*.db), created when missing")
    parser.add_argument("--address", default="127.0.0.1:19530", help="host:port to listen on (default: %(default)s)")
    args = parser.parse_args()
    with warnings.catch_warnings():  # milvus-lite 2.5.1 imports the deprecated pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        try:
            from milvus_lite.server import Server
        except ImportError:
            print("milvus_lite_server: error: Milvus Lite is not installed; pip install '.[milvus]'", file=sys.stderr)
            return 2
    try:
        server = Server(str(args.db_file), args.address)
    except RuntimeError as exc:
        print(f"milvus_lite_server: error: {exc}", file=sys.stderr)
        return 2
    if not server.init() or not server.start():
        print(f"milvus_lite_server: error: Milvus Lite did not start on {args.address}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"Milvus Lite serving {args.db_file} on http://{args.address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
