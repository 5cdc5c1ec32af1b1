#!/usr/bin/env python3
"""Same job as `retrieval build-index`: scripts/build_index.py CORPUS_DIR [--index DIR] [--model SPEC] [--json]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["build-index", *sys.argv[1:]]))
