"""The learned fusion weights (benchmarks/learned_fusion.py): the fitter, the mapping to
SearchSettings, and the per-language dense weights in the searcher."""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import Any

import numpy as np
import pytest
from conftest import ROOT

from retrieval import training
from retrieval.search import Searcher, SearchSettings


@functools.cache
def load_fitter() -> Any:
    """benchmarks/learned_fusion.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("learned_fusion", ROOT / "benchmarks" / "learned_fusion.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def synthetic_block(fitter: Any, english: float, answer_leg: int, seed: int) -> Any:
    """Queries whose answer (candidate 0) stands out on one leg only; every other leg is noise."""
    rng = np.random.default_rng(seed)
    queries = 300
    z = rng.normal(size=(queries, fitter.TOP, len(fitter.LEGS))).astype(np.float32)
    z[:, 0, answer_leg] += 2.5
    label = np.zeros((queries, fitter.TOP), dtype=bool)
    label[:, 0] = True
    return fitter.Block(z, label, np.full(queries, english), np.full(queries, 8), np.array(["x"] * queries))


def test_fit_learns_which_leg_finds_the_answer_for_each_language() -> None:
    fitter = load_fitter()
    korean = synthetic_block(fitter, 0.0, fitter.LEGS.index("lexical_paper"), seed=1)  # BM25 finds it
    english = synthetic_block(fitter, 1.0, fitter.LEGS.index("dense_max"), seed=2)  # the dense leg does
    coef = fitter.fit([korean, english], 1.0)
    named = dict(zip(fitter.FEATURES, coef, strict=True))
    assert named["lex_paper"] > 5 * abs(named["max"])  # Korean: summary BM25 carries the ranking
    assert named["max"] + named["max*e"] > 5 * abs(named["lex_paper"] + named["lex_paper*e"])  # English: dense
    hand = fitter.settings_coef(fitter.HAND_TUNED)
    assert fitter.summary(fitter.ranks(korean, coef))[2] > fitter.summary(fitter.ranks(korean, hand))[2]


def test_the_script_fits_with_the_package() -> None:
    """One definition of the features and the fit: the build's (retrieval/training.py)."""
    fitter = load_fitter()
    assert fitter.fit_fusion is training.fit_fusion and fitter.collect is training.collect
    assert fitter.base_design is training.design and fitter.HAND_TUNED is training.HAND_TUNED


def test_settings_and_coefficients_map_both_ways() -> None:
    fitter = load_fitter()
    coef = fitter.settings_coef(SearchSettings())
    text = fitter.coef_settings(coef)
    values = dict(item.split("=") for item in text.split(", "))
    rebuilt = SearchSettings(**{name: float(value) for name, value in values.items()})
    assert np.allclose(fitter.settings_coef(rebuilt), coef / coef[0], atol=1e-3)


def test_dense_weights_follow_the_query_language(fake_searcher: Searcher) -> None:
    s = fake_searcher.settings
    qvec = fake_searcher.embedder.embed_queries(["state space"])[0]
    weights = [[leg.weight for leg in fake_searcher.dense_legs(qvec, e, ("bullets",), 100)] for e in (0.0, 0.5, 1.0)]
    assert weights[0] == pytest.approx([s.weight_dense_max, s.weight_dense_centroid])
    assert weights[2] == pytest.approx([s.weight_dense_max_english, s.weight_dense_centroid_english])
    assert weights[1] == pytest.approx([(a + b) / 2 for a, b in zip(weights[0], weights[2], strict=True)])
    # the learned weights: English queries lean on the best bullet, Korean ones on the summary BM25
    assert s.weight_dense_max_english > s.weight_dense_max
    assert s.weight_lexical_paper > s.weight_lexical_paper_english
