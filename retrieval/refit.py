"""When a build refits what it fitted on the whole corpus, and when it carries it forward.

Two fits are carried across incremental builds: the query map (with every hubness offset it
moves) and the learned models. Each keeps a drift, the papers added, removed or changed by every
build since its fit; one rule says when the drift is large enough to refit. Carrying matters:
unchanged papers keep identical records, so an external backend rewrites only what changed, and
a day's digest (about 0.3 % of the corpus) costs no refit.
"""

from __future__ import annotations

REFIT_PERCENT = 5.0  # of the papers at the fit
# Below this many changed papers nothing is refitted, whatever the share: on a small corpus one
# edited paper is already several percent.
REFIT_MIN_PAPERS = 25


def refit_share(drift: int, papers: int) -> float:
    """The percent of `papers` that `drift` changed papers are."""
    return 100.0 * drift / max(papers, 1)


def refit_due(drift: int, papers: int, percent: float | None = None) -> bool:
    """True once `drift` papers changed since a fit over `papers` reach `percent` of them
    (default `REFIT_PERCENT`) and at least `REFIT_MIN_PAPERS`."""
    limit = REFIT_PERCENT if percent is None else percent
    return drift >= REFIT_MIN_PAPERS and refit_share(drift, papers) >= limit
