"""The learned models of an index version: fusion weights, relevance calibration and re-ranker.

`build-index` fits them (retrieval/training.py) and stores them in the version as `learned.json`,
listed and checked in the manifest like every other file; nothing is fitted at query time. A
searcher takes its fusion weights and its relevance calibration from there (`search_settings`,
`calibration_of`) and its second-stage re-ranker (`reranker_of`, retrieval/rerank.py: a LightGBM
model kept as text inside the JSON); the defaults in code (`SearchSettings`, `relevance.calibration_for`) remain
only for an index whose build had too little training data (the 12-paper sample, the test
fixtures) or that predates this file.

A rebuild whose corpus changed little since the models were fitted (retrieval/refit.py: fewer
than `refit_percent` of the papers, counted over every build since the fit) carries them forward
unchanged: the fit
costs seconds, and a day of new papers does not move a logistic regression over five legs.
Everything is plain JSON, never pickle.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from retrieval.refit import REFIT_PERCENT, refit_due, refit_share
from retrieval.relevance import Calibration, calibration_for
from retrieval.rerank import FEATURES_ID, Reranker

if TYPE_CHECKING:
    from retrieval.search import SearchSettings

log = logging.getLogger("retrieval.learned")

LEARNED_FILE = "learned.json"
# The dev set (reader-style queries about papers of the real corpus, every language) ships with
# the package: a build fits its models on it unless told otherwise (`LearnOptions.tuning_queries`).
DEV_QUERIES = Path(__file__).resolve().parent / "data" / "dev.jsonl"
NO_TUNING = "none"  # `--tuning-queries none`: fit nothing, serve the code defaults
TuningChoice = Path | Literal["none"] | None
SCHEMA = 1
# The `SearchSettings` fields the fusion model sets (bullet legs per language, title legs).
FUSION_FIELDS = (
    "weight_dense_max",
    "weight_dense_max_english",
    "weight_dense_centroid",
    "weight_dense_centroid_english",
    "weight_dense_title",
    "weight_lexical_paper",
    "weight_lexical_paper_english",
    "weight_lexical_title",
)
_CALIBRATION_FIELDS = tuple(f.name for f in fields(Calibration))


@dataclass(frozen=True)
class LearnOptions:
    """What a build fits the models on (the inputs) and when it refits them.

    `tuning_queries`: a JSON-lines file `{q, ids, lang}` of reader-style queries; None (not
    chosen): the file the live models were fitted on while it exists, else the bundled dev set
    `DEV_QUERIES`; `NO_TUNING`: nothing is fitted and the code defaults serve. Only the queries
    that name a paper of the corpus count (none of the bundled ones names a sample paper).
    `title_sample`: at most this many title-task queries of fold 0, drawn with `seed` (300: a
    larger sample measured the same and costs about 10 ms a query). `refit_percent`: carry the
    previous models forward while fewer than this share of the papers changed since their fit.
    `min_queries`: with fewer training queries that have their answer among the candidates, the
    code defaults are kept. `rerank`: also fit the second-stage re-ranker (retrieval/rerank.py) on
    the tuning queries and `rerank_title_sample` fold-0 titles (it gains with more titles than the
    linear fusion needs: EVALUATION.md). `title_fold`: the title task's half the models learn
    from (0; 1 fits them on the other half, so that each half can be measured held out).
    """

    tuning_queries: TuningChoice = None
    title_sample: int = 300
    title_fold: int = 0
    seed: int = 0
    refit_percent: float = REFIT_PERCENT
    min_queries: int = 100
    rerank: bool = True
    rerank_title_sample: int = 5000


@dataclass(frozen=True)
class LearnedModels:
    """What `learned.json` holds. `fusion`, `calibration` and `reranker` are None when not fitted
    (`note` says why)."""

    fusion: Mapping[str, float] | None
    calibration: Calibration | None
    fitted_on: Mapping[str, Any] = field(default_factory=dict)  # counts, fold, seed, inputs, fingerprint, date
    drift: int = 0  # papers added, removed or changed by the builds since the fit
    note: str = ""
    reranker: Reranker | None = None

    @property
    def fitted(self) -> bool:
        return self.fusion is not None or self.calibration is not None or self.reranker is not None

    def to_json(self) -> str:
        calibration = (
            None if self.calibration is None else {k: getattr(self.calibration, k) for k in _CALIBRATION_FIELDS}
        )
        payload = {
            "schema": SCHEMA,
            "fusion": None if self.fusion is None else dict(self.fusion),
            "calibration": calibration,
            "fitted_on": dict(self.fitted_on),
            "drift": self.drift,
            "note": self.note,
            "reranker": None if self.reranker is None else self.reranker.to_dict(),
        }
        return json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LearnedModels:
        """Parse and check `learned.json`; `ValueError` naming what is wrong."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, this program reads {SCHEMA}")
        fusion = data.get("fusion")
        if fusion is not None:
            if not isinstance(fusion, dict) or not fusion or set(fusion) - set(FUSION_FIELDS):
                raise ValueError(f"'fusion' must map some of {', '.join(FUSION_FIELDS)} to numbers")
            fusion = {name: _number(value, f"fusion.{name}") for name, value in fusion.items()}
        calibration = data.get("calibration")
        if calibration is not None:
            if not isinstance(calibration, dict) or set(calibration) != set(_CALIBRATION_FIELDS):
                raise ValueError(f"'calibration' must have exactly {', '.join(_CALIBRATION_FIELDS)}")
            calibration = Calibration(**{k: _number(v, f"calibration.{k}") for k, v in calibration.items()})
            if not 0.0 <= calibration.threshold <= 1.0:
                raise ValueError(f"calibration.threshold {calibration.threshold} is not between 0 and 1")
        fitted_on, drift = data.get("fitted_on", {}), data.get("drift", 0)
        if not isinstance(fitted_on, dict) or not isinstance(drift, int) or drift < 0:
            raise ValueError("'fitted_on' must be an object and 'drift' a count")
        note, reranker = str(data.get("note", "")), data.get("reranker")
        if isinstance(reranker, dict) and reranker.get("features") != FEATURES_ID:
            reranker = None  # fitted by another version of this program: the next build refits it
            note = "; ".join(filter(None, [note, "re-ranker fitted on other features: not used"]))
        reranker = Reranker.from_dict(reranker) if reranker is not None else None
        return cls(fusion, calibration, fitted_on, drift, note, reranker)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    return float(value)


def read_learned(version: Path) -> LearnedModels | None:
    """The models stored in a version directory; None when absent or unreadable (a build then refits)."""
    try:
        return LearnedModels.from_json((version / LEARNED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- refit or carry
def refit_reason(
    previous: LearnedModels | None, inputs: Mapping[str, Any], changed: int, refit_percent: float
) -> str | None:
    """Why the models must be refitted, or None to carry `previous` forward.

    `inputs` identify what a fit reads (model, features, tuning file, sample); `changed` is the
    number of papers this build adds, removes or changes.
    """
    if previous is None:
        return "no models in the previous version"
    if dict(previous.fitted_on.get("inputs", {})) != dict(inputs):
        return "the training inputs changed"
    papers, drift = int(previous.fitted_on.get("papers", 0)), previous.drift + changed
    if refit_due(drift, papers, refit_percent):
        share = refit_share(drift, papers)
        return f"{share:.1f}% of the papers changed since the fit (refit at {refit_percent:g}%)"
    return None


def carried(previous: LearnedModels, changed: int) -> LearnedModels:
    """`previous` with this build's changed papers added to its drift; the models themselves unchanged."""
    return replace(previous, drift=previous.drift + changed)


# ----------------------------------------------------------------------------- applying them
def search_settings(learned: LearnedModels | None, base: SearchSettings | None = None) -> SearchSettings:
    """`base` (default: `SearchSettings()`) with the learned fusion weights in every weight field
    that `base` leaves at its code default: a caller's explicit weights win."""
    from retrieval.search import SearchSettings

    settings = base if base is not None else SearchSettings()
    if learned is None or learned.fusion is None:
        return settings
    default = SearchSettings()
    chosen: dict[str, Any] = {k: v for k, v in learned.fusion.items() if getattr(settings, k) == getattr(default, k)}
    return replace(settings, **chosen)


def without_learned(settings: SearchSettings, learned: LearnedModels | None) -> SearchSettings:
    """Undo `search_settings`: the weight fields holding `learned`'s values go back to the code
    defaults (a reload applies the new version's models to what the caller chose)."""
    from retrieval.search import SearchSettings

    if learned is None or learned.fusion is None:
        return settings
    default = SearchSettings()
    reverted: dict[str, Any] = {k: getattr(default, k) for k, v in learned.fusion.items() if getattr(settings, k) == v}
    return replace(settings, **reverted)


def calibration_of(learned: LearnedModels | None, model: str) -> Calibration:
    """The stored relevance calibration, else the code default for `model`."""
    if learned is not None and learned.calibration is not None:
        return learned.calibration
    return calibration_for(model)


def reranker_of(learned: LearnedModels | None) -> Reranker | None:
    """The stored re-ranker (None: the fused order serves)."""
    return learned.reranker if learned is not None else None


def describe(learned: LearnedModels | None, version: Path) -> None:
    """One log line: which models the searcher of `version` uses."""
    if learned is None:
        log.info("index %s has no %s (built before it existed): code default weights and calibration", version.name,
                 LEARNED_FILE)  # fmt: skip
    elif not learned.fitted:
        log.info("index %s has no learned models (%s): code default weights and calibration", version.name,
                 learned.note)  # fmt: skip
    else:
        models = (("fusion weights", learned.fusion), ("calibration", learned.calibration),
                  ("re-ranker", learned.reranker))  # fmt: skip
        parts = [name for name, model in models if model is not None]
        extra = f"; {learned.note}" if learned.note else ""
        log.info("index %s: learned %s (fitted %s)%s", version.name, " and ".join(parts),
                 learned.fitted_on.get("date", "?"), extra)  # fmt: skip
