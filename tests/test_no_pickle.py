"""No pickle anywhere: not in the repository's Python source, not in a built index.

The source scan walks the syntax tree of every module under retrieval/, scripts/, benchmarks/
and tests/, so the forbidden names written in this file's strings and docstrings are not
findings; only real imports and calls are.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

SCANNED = ("retrieval", "scripts", "benchmarks", "tests")

# Modules that deserialise arbitrary objects; importing them at all is refused.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
# (object name, attribute) calls that unpickle. `np.load` is safe unless `allow_pickle` is set,
# which is checked on every call whatever its name (numpy, bm25s, ...).
UNSAFE_CALLS = {
    ("torch", "load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader"}
# Reviewed exceptions, by file and finding: each one runs code, never loads data.
ALLOWED = {
    "tests/test_readme_snippets.py": {"exec() call": "runs the repository's own documentation code blocks"},
}
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    """('np', 'load') for `np.load(...)`; None for anything else."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _call_findings(call: ast.Call) -> list[str]:
    found: list[str] = []
    if isinstance(call.func, ast.Name) and call.func.id in {"eval", "exec"}:
        found.append(f"{call.func.id}() call")
    dotted = _dotted(call.func)
    allow_pickle = _keyword(call, "allow_pickle")
    if allow_pickle is not None and not _is_false(allow_pickle):
        found.append("allow_pickle other than False")
    if dotted in UNSAFE_CALLS:
        found.append(f"{dotted[0]}.{dotted[1]}() call")
    if dotted is not None and dotted[0] in UNSAFE_MODULES:
        found.append(f"{dotted[0]}.{dotted[1]}() call")
    if dotted == ("yaml", "load"):
        loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        name = loader.attr if isinstance(loader, ast.Attribute) else getattr(loader, "id", None)
        if name not in SAFE_YAML_LOADERS:
            found.append("yaml.load() without SafeLoader")
    return found


def findings(source: str, filename: str = "<string>") -> list[str]:
    """Every unsafe-deserialisation construct in a module, as 'line: what'."""
    tree = ast.parse(source, filename=filename)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Call):
            found += [f"{node.lineno}: {what}" for what in _call_findings(node)]
    return found


def python_sources() -> list[Path]:
    files = [p for top in SCANNED if (ROOT / top).is_dir() for p in sorted((ROOT / top).rglob("*.py"))]
    return [p for p in files if ".venv" not in p.parts and "__pycache__" not in p.parts]


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import cPickle as p",
        "from pickle import loads",
        "import marshal",
        "import shelve",
        "import dill",
        "import joblib\nm = joblib.load('x')",
        "from joblib import load",
        "import torch\nt = torch.load('m.pt')",
        "import numpy as np\na = np.load('a.npy', allow_pickle=True)",
        "import numpy\na = numpy.load('a.npy', allow_pickle=flag)",
        "import bm25s\nm = bm25s.BM25.load('d', allow_pickle=True)",
        "import yaml\nd = yaml.load(text)",
        "import yaml\nd = yaml.load(text, Loader=yaml.Loader)",
        "import yaml\nd = yaml.unsafe_load(text)",
        "import pandas as pd\nd = pd.read_pickle('f')",
        "x = eval(data)",
        "exec(code)",
    ],
)
def test_detector_flags_unsafe_constructs(snippet: str) -> None:
    assert findings(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import numpy as np\na = np.load('a.npy')",
        "import numpy as np\na = np.load('a.npy', allow_pickle=False)",
        "import yaml\nd = yaml.load(text, Loader=yaml.SafeLoader)",
        "import yaml\nd = yaml.safe_load(text)",
        "import ast\nv = ast.literal_eval('[1]')",
        "import json\nv = json.loads('{}')",
        "s = 'import pickle; eval(x)'  # only a string",
        "model.eval()",
    ],
)
def test_detector_accepts_safe_constructs(snippet: str) -> None:
    assert findings(snippet) == []


def test_repository_source_has_no_unsafe_deserialisation() -> None:
    sources = python_sources()
    assert any(p.parent.name == "retrieval" for p in sources) and any(p.parent.name == "tests" for p in sources)
    report: dict[str, list[str]] = {}
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        allowed = ALLOWED.get(rel, {})
        found = [f for f in findings(path.read_text(encoding="utf-8"), rel) if f.split(": ", 1)[1] not in allowed]
        if found:
            report[rel] = found
    assert report == {}


def test_built_index_holds_no_pickle(fake_sample_index: Path) -> None:
    files = [p for p in fake_sample_index.rglob("*") if p.is_file()]
    arrays = [p for p in files if p.suffix == ".npy"]
    assert len(arrays) >= 6, "the BM25 legs are saved as .npy arrays"
    for path in arrays:
        array = np.load(path, allow_pickle=False)
        assert array.dtype != np.dtype(object), path
    for path in files:
        with path.open("rb") as handle:
            assert not handle.read(2).startswith(PICKLE_MAGIC), f"{path} starts like a pickle"
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
