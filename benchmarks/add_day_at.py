#!/usr/bin/env python3
"""Time part (c) of benchmarks/build.py (add the corpus's last day to a full index) with the code
of another checkout, so two versions can be measured alternately in one session.

    git worktree add /tmp/before <commit>
    python benchmarks/add_day_at.py --checkout /tmp/before --index <full index of its format>
    python benchmarks/add_day_at.py --checkout .            --index <full index of this format>

The index is copied to a temporary directory first (never written). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "daily_papers_ko" / "paper_logs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout whose retrieval/ is timed")
    parser.add_argument("--index", type=Path, required=True, help="a full index built by that checkout")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--model", default="e5-small-q4")
    args = parser.parse_args()

    checkout = args.checkout.resolve()
    sys.path.insert(0, str(checkout))
    # An editable install of this repository would otherwise win over the path entry.
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    import retrieval
    from benchmarks.build import part_c
    from retrieval.lexical import KoreanEnglishTokenizer

    with tempfile.TemporaryDirectory(prefix="add-day-") as tmp:
        work = Path(tmp)
        shutil.copytree(args.index, work / "index")
        result = part_c(args.corpus.resolve(), work / "index", KoreanEnglishTokenizer(), args.model, work)
    print(json.dumps({"code": str(Path(retrieval.__file__).parent), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
